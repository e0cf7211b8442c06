import { Link } from "react-router";
import type { FeatureRow, FeatureSort } from "../api";
import { fmt, fmtDensity, fmtInt, log10Density } from "../format";

interface Column {
  key: FeatureSort;
  label: string;
  title: string;
}

const COLUMNS: Column[] = [
  { key: "index", label: "Feature", title: "feature index" },
  { key: "density", label: "Density", title: "fraction of analysed tokens the feature fires on" },
  { key: "max_act", label: "Max act", title: "largest activation seen" },
  { key: "mean_act", label: "Mean act", title: "mean activation over the tokens it fires on" },
  { key: "act_count", label: "Fires on", title: "number of tokens with a non-zero activation" },
];
const SCORE_COLUMNS: Column[] = [
  { key: "detection", label: "Detection", title: "the explanation's detection score: balanced accuracy, 0.5 is chance (only scored features are listed)" },
  { key: "fuzzing", label: "Fuzzing", title: "the explanation's fuzzing score: balanced accuracy, 0.5 is chance (only scored features are listed)" },
];

export interface FeatureTableProps {
  features: FeatureRow[];
  sort: FeatureSort;
  order: "asc" | "desc";
  onSort: (key: FeatureSort) => void;
  featureHref: (index: number) => string;
  /** the analysis has explanations: show each feature's explanation and its scores (sortable) */
  explained?: boolean;
}

/** Feature statistics with labels and bookmarks (and explanations with their scores), one row per feature;
 * headers sort, rows link to the feature page. A human label comes before the explanation. */
export function FeatureTable({ features, sort, order, onSort, featureHref, explained = false }: FeatureTableProps) {
  const layered = features.some((f) => f.layer !== null && f.layer !== undefined); // a replacement model's
  const header = (c: Column) => {
    const active = c.key === sort;
    return (
      <th key={c.key} aria-sort={active ? (order === "asc" ? "ascending" : "descending") : "none"} className="num">
        <button type="button" className="sort" title={`Sort by ${c.title}`} onClick={() => onSort(c.key)} data-sort={c.key}>
          {c.label}
          <span className="sort-mark" aria-hidden="true">
            {active ? (order === "asc" ? "▲" : "▼") : "↕"}
          </span>
        </button>
      </th>
    );
  };
  return (
    <div className="table-scroll">
      <table className="data feature-table">
        <thead>
          <tr>
            {COLUMNS.slice(0, 1).map(header)}
            {layered && (
              <th className="num" title="the layer whose MLP input the feature reads">
                Layer
              </th>
            )}
            {COLUMNS.slice(1).map(header)}
            <th className="num col-log" title="log10 of the density">log₁₀ d</th>
            <th className="col-label">Label</th>
            {explained && (
              <>
                <th className="col-label" title="written by a language model from the feature's contexts">
                  Explanation
                </th>
                {SCORE_COLUMNS.map(header)}
              </>
            )}
          </tr>
        </thead>
        <tbody>
          {features.map((f) => (
            <tr key={f.index} data-feature={f.index} className={f.act_count === 0 ? "dead" : undefined}>
              <td className="num">
                {f.bookmarked && (
                  <span className="bookmark-mark" title="bookmarked" aria-label="bookmarked">
                    ★{" "}
                  </span>
                )}
                <Link to={featureHref(f.index)} className="feature-link">
                  #{f.index}
                </Link>
              </td>
              {layered && <td className="num">{f.layer}</td>}
              <td className="num">
                {f.act_count === 0 && f.density === 0 ? <span className="muted">0 · dead</span> : fmtDensity(f.density)}
              </td>
              <td className="num">{fmt(f.max_act)}</td>
              <td className="num">{fmt(f.mean_act)}</td>
              <td className="num">{fmtInt(f.act_count)}</td>
              <td className="num col-log">
                <DensityBar density={f.density} />
              </td>
              <td className="col-label feature-label" title={f.label}>
                {f.label}
              </td>
              {explained && (
                <>
                  <td className="col-label explanation" title={f.explanation ?? undefined}>
                    {f.explanation ?? ""}
                  </td>
                  <td className="num" data-score="detection">
                    <ScoreValue value={f.detection} />
                  </td>
                  <td className="num" data-score="fuzzing">
                    <ScoreValue value={f.fuzzing} />
                  </td>
                </>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** log10 density as a small bar over [-7, 0]. */
function DensityBar({ density }: { density: number }) {
  const lg = density > 0 ? Math.log10(density) : -Infinity;
  const width = Number.isFinite(lg) ? Math.max(0, Math.min(1, (lg + 7) / 7)) * 100 : 0;
  return (
    <span className="density-bar" title={`log10 density ${log10Density(density)}`}>
      <span className="density-bar-fill" style={{ width: `${width}%` }} />
      <span className="density-bar-text">{log10Density(density)}</span>
    </span>
  );
}

/** A balanced accuracy (0.5 is chance), shaded from chance (white) to perfect (green). */
export function ScoreValue({ value }: { value: number | null | undefined }) {
  if (value === null || value === undefined) return <span className="muted">–</span>;
  const strength = Math.max(0, Math.min(1, (value - 0.5) * 2));
  return (
    <span className="score" style={{ background: `rgba(22, 163, 74, ${(0.35 * strength).toFixed(3)})` }} title={`balanced accuracy ${value.toFixed(3)} (0.5 is chance)`}>
      {value.toFixed(2)}
    </span>
  );
}
