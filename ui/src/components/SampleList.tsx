import type { Sample } from "../api";
import { fmt } from "../format";
import { ActivationContext } from "./ActivationContext";

export interface SampleListProps {
  samples: Sample[];
  /** activation shown at full intensity: the feature's max activation */
  scale: number;
  window?: { before: number; after: number };
  emptyText: string;
}

/** Sample contexts, each with its max activation in the margin. */
export function SampleList({ samples, scale, window, emptyText }: SampleListProps) {
  if (samples.length === 0) return <p className="muted small">{emptyText}</p>;
  return (
    <ol className="samples">
      {samples.map((s, i) => (
        <li key={i} className="sample" data-testid="sample">
          <span className="sample-max" title="max activation in this context">
            {fmt(s.max_act)}
          </span>
          <ActivationContext tokens={s.tokens} acts={s.acts} scale={scale > 0 ? scale : s.max_act} maxPos={s.max_pos} window={window} />
        </li>
      ))}
    </ol>
  );
}
