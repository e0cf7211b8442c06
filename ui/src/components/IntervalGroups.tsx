import type { Group } from "../api";
import { fmt } from "../format";
import { SampleList } from "./SampleList";

/** Samples drawn from activation intervals (highest first), each with its bounds. */
export function IntervalGroups({ groups, scale, window }: { groups: Group[]; scale: number; window?: { before: number; after: number } }) {
  if (groups.length === 0) return <p className="muted small">No interval samples in this analysis.</p>;
  return (
    <div className="interval-groups">
      {groups.map((g, i) => (
        <details key={`${g.name}-${i}`} open className="interval-group" data-testid="interval-group">
          <summary>
            <span className="interval-name">{g.name.replace(/_/g, " ")}</span>{" "}
            <span className="interval-bounds" title="activation bounds of this interval">
              [{fmt(g.lower)}, {fmt(g.upper)}]
            </span>{" "}
            <span className="muted small">
              {g.samples.length} sample{g.samples.length === 1 ? "" : "s"}
            </span>
          </summary>
          <SampleList samples={g.samples} scale={scale} window={window} emptyText="No samples in this interval." />
        </details>
      ))}
    </div>
  );
}
