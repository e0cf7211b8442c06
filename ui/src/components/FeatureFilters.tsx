import { useEffect, useState } from "react";

export interface FeatureFilterValues {
  min_density?: number;
  max_density?: number;
  min_max_act?: number;
}

const FIELDS: { key: keyof FeatureFilterValues; label: string; placeholder: string; title: string }[] = [
  { key: "min_density", label: "min density", placeholder: "e.g. 1e-5", title: "fraction of tokens, 0..1" },
  { key: "max_density", label: "max density", placeholder: "e.g. 0.01", title: "fraction of tokens, 0..1" },
  { key: "min_max_act", label: "min max act", placeholder: "e.g. 0.1", title: "hide features whose max activation is below this" },
];

const toText = (v?: number) => (v === undefined ? "" : String(v));

/** Filters for the feature table; applied on submit so typing does not spam the server. */
export function FeatureFilters({ value, onApply }: { value: FeatureFilterValues; onApply: (v: FeatureFilterValues) => void }) {
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setDraft({ min_density: toText(value.min_density), max_density: toText(value.max_density), min_max_act: toText(value.min_max_act) });
  }, [value.min_density, value.max_density, value.min_max_act]);

  return (
    <form
      className="filters"
      onSubmit={(e) => {
        e.preventDefault();
        const next: FeatureFilterValues = {};
        for (const f of FIELDS) {
          const s = (draft[f.key] ?? "").trim();
          if (!s) continue;
          const n = Number(s);
          if (!Number.isFinite(n)) return setError(`${f.label} must be a number, got "${s}".`);
          next[f.key] = n;
        }
        setError(null);
        onApply(next);
      }}
    >
      {FIELDS.map((f) => (
        <label key={f.key} className="inline-field" title={f.title}>
          {f.label}
          <input
            name={f.key}
            inputMode="decimal"
            placeholder={f.placeholder}
            value={draft[f.key] ?? ""}
            onChange={(e) => setDraft({ ...draft, [f.key]: e.target.value })}
          />
        </label>
      ))}
      <button type="submit" className="btn">
        Filter
      </button>
      <button type="button" className="btn btn-quiet" onClick={() => onApply({})}>
        Clear
      </button>
      {error && (
        <span className="field-error" role="alert">
          {error}
        </span>
      )}
    </form>
  );
}
