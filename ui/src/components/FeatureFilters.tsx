import { useEffect, useState } from "react";

export interface FeatureFilterValues {
  min_density?: number;
  max_density?: number;
  min_max_act?: number;
  min_detection?: number;
  min_fuzzing?: number;
}

const FIELDS: { key: keyof FeatureFilterValues; label: string; placeholder: string; title: string; scores?: true }[] = [
  { key: "min_density", label: "min density", placeholder: "e.g. 1e-5", title: "fraction of tokens, 0..1" },
  { key: "max_density", label: "max density", placeholder: "e.g. 0.01", title: "fraction of tokens, 0..1" },
  { key: "min_max_act", label: "min max act", placeholder: "e.g. 0.1", title: "hide features whose max activation is below this" },
  { key: "min_detection", label: "min detection", placeholder: "e.g. 0.7", title: "balanced accuracy of the explanation's detection score, 0..1 (0.5 is chance)", scores: true },
  { key: "min_fuzzing", label: "min fuzzing", placeholder: "e.g. 0.7", title: "balanced accuracy of the explanation's fuzzing score, 0..1 (0.5 is chance)", scores: true },
];

const toText = (v?: number) => (v === undefined ? "" : String(v));

export interface FeatureFiltersProps {
  value: FeatureFilterValues;
  onApply: (v: FeatureFilterValues) => void;
  /** the analysis has scored explanations: filters on their scores too */
  scores?: boolean;
}

/** Filters for the feature table; applied on submit so typing does not spam the server. */
export function FeatureFilters({ value, onApply, scores = false }: FeatureFiltersProps) {
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const fields = FIELDS.filter((f) => scores || !f.scores);
  const { min_density, max_density, min_max_act, min_detection, min_fuzzing } = value;
  useEffect(() => {
    setDraft({
      min_density: toText(min_density),
      max_density: toText(max_density),
      min_max_act: toText(min_max_act),
      min_detection: toText(min_detection),
      min_fuzzing: toText(min_fuzzing),
    });
  }, [min_density, max_density, min_max_act, min_detection, min_fuzzing]);

  return (
    <form
      className="filters"
      onSubmit={(e) => {
        e.preventDefault();
        const next: FeatureFilterValues = {};
        for (const f of fields) {
          const s = (draft[f.key] ?? "").trim();
          if (!s) continue;
          const n = Number(s);
          if (!Number.isFinite(n)) return setError(`${f.label} must be a number, got "${s}".`);
          if (f.scores && (n < 0 || n > 1)) return setError(`${f.label} is a balanced accuracy from 0 to 1, got ${s}.`);
          next[f.key] = n;
        }
        setError(null);
        onApply(next);
      }}
    >
      {fields.map((f) => (
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
