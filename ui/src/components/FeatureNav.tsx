import { useEffect, useState } from "react";

export interface FeatureNavProps {
  index: number | null;
  /** number of features, when known: bounds next and the typed index */
  dSae?: number;
  onGo: (index: number) => void;
  onRandom: () => void;
  randomPending?: boolean;
}

/** Previous / next / typed index / random; ← and → keys step too. */
export function FeatureNav({ index, dSae, onGo, onRandom, randomPending }: FeatureNavProps) {
  const [typed, setTyped] = useState(index === null ? "" : String(index));
  const [invalid, setInvalid] = useState<string | null>(null);
  useEffect(() => {
    setTyped(index === null ? "" : String(index));
    setInvalid(null);
  }, [index]);

  const hasPrev = index !== null && index > 0;
  // from an out-of-range index, "previous" goes to the last feature
  const prev = index === null ? 0 : dSae !== undefined ? Math.min(index - 1, dSae - 1) : index - 1;
  const hasNext = index !== null && (dSae === undefined || index < dSae - 1);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement | null;
      if (e.altKey || e.ctrlKey || e.metaKey || (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)))) return;
      if (e.key === "ArrowLeft" && hasPrev) onGo(prev);
      if (e.key === "ArrowRight" && hasNext) onGo(index! + 1);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [index, prev, hasPrev, hasNext, onGo]);

  return (
    <form
      className="feature-nav"
      onSubmit={(e) => {
        e.preventDefault();
        const s = typed.trim();
        if (!/^\d+$/.test(s)) return setInvalid("Type a feature index (a whole number).");
        const n = Number(s);
        if (dSae !== undefined && n >= dSae) return setInvalid(`Feature indices run from 0 to ${dSae - 1}.`);
        setInvalid(null);
        onGo(n);
      }}
    >
      <button type="button" className="btn" disabled={!hasPrev} onClick={() => onGo(prev)} title="Previous feature (←)" aria-label="Previous feature">
        ← Prev
      </button>
      <label className="inline-field">
        <span className="sr-only">Feature index</span>
        <input
          className="index-input"
          inputMode="numeric"
          value={typed}
          onChange={(e) => setTyped(e.target.value)}
          aria-label="Feature index"
          aria-invalid={invalid ? true : undefined}
        />
      </label>
      <button type="submit" className="btn">
        Go
      </button>
      <button type="button" className="btn" disabled={!hasNext} onClick={() => onGo(index! + 1)} title="Next feature (→)" aria-label="Next feature">
        Next →
      </button>
      <button type="button" className="btn" onClick={onRandom} disabled={randomPending} title="A random alive feature">
        {randomPending ? "Random…" : "Random"}
      </button>
      {dSae !== undefined && <span className="muted small">of {dSae.toLocaleString("en-US")}</span>}
      {invalid && (
        <span className="field-error" role="alert">
          {invalid}
        </span>
      )}
    </form>
  );
}
