import { Link } from "react-router";
import type { FeatureRow, FeatureSort } from "../api";
import { fmt, fmtDensity, fmtInt, log10Density } from "../format";

const COLUMNS: { key: FeatureSort; label: string; title: string }[] = [
  { key: "index", label: "Feature", title: "feature index" },
  { key: "density", label: "Density", title: "fraction of analysed tokens the feature fires on" },
  { key: "max_act", label: "Max act", title: "largest activation seen" },
  { key: "mean_act", label: "Mean act", title: "mean activation over the tokens it fires on" },
  { key: "act_count", label: "Fires on", title: "number of tokens with a non-zero activation" },
];

export interface FeatureTableProps {
  features: FeatureRow[];
  sort: FeatureSort;
  order: "asc" | "desc";
  onSort: (key: FeatureSort) => void;
  featureHref: (index: number) => string;
}

/** Feature statistics with labels and bookmarks, one row per feature; headers sort, rows link to the feature page. */
export function FeatureTable({ features, sort, order, onSort, featureHref }: FeatureTableProps) {
  return (
    <div className="table-scroll">
      <table className="data feature-table">
        <thead>
          <tr>
            {COLUMNS.map((c) => {
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
            })}
            <th className="num col-log" title="log10 of the density">log₁₀ d</th>
            <th className="col-label">Label</th>
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
