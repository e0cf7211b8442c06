import type { LayerMetrics } from "../api";
import { fmt, fmtInt, fmtPercent } from "../format";

type Key = "explained_variance" | "normalized_mse" | "l0";

const PLOTS: { key: Key; title: string; format: (v: number) => string; color: string }[] = [
  { key: "explained_variance", title: "Explained variance", format: (v) => fmtPercent(v), color: "#2563eb" },
  { key: "normalized_mse", title: "Normalized MSE", format: (v) => fmt(v, 3), color: "#dc2626" },
  { key: "l0", title: "L0 (active features per token)", format: (v) => fmt(v, 3), color: "#16a34a" },
];

/** A replacement model's final evaluation per covered layer: a table and one bar chart per metric. */
export function LayerEvaluation({ layers }: { layers: LayerMetrics[] }) {
  return (
    <div className="layer-evaluation" data-testid="layer-evaluation">
      <h3>Per layer</h3>
      <div className="layer-plots">
        {PLOTS.map((p) => (
          <LayerBars key={p.key} title={p.title} layers={layers} value={(l) => l[p.key]} format={p.format} color={p.color} />
        ))}
      </div>
      <div className="table-scroll">
        <table className="data compact" data-testid="layer-table">
          <thead>
            <tr>
              <th className="num">Layer</th>
              <th className="num" title="fraction of the MLP output's variance the replacement explains">Expl. var.</th>
              <th className="num" title="squared error / squared norm of the MLP output">Norm. MSE</th>
              <th className="num" title="this layer's active features per token">L0</th>
              <th className="num" title="this layer's features that never fired in the evaluation">Unfired</th>
            </tr>
          </thead>
          <tbody>
            {layers.map((l) => (
              <tr key={l.layer} data-layer={l.layer}>
                <td className="num">{l.layer}</td>
                <td className="num">{fmtPercent(l.explained_variance)}</td>
                <td className="num">{fmt(l.normalized_mse, 3)}</td>
                <td className="num">{fmt(l.l0, 3)}</td>
                <td className="num">{fmtInt(l.unfired_features)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

const W = 260;
const H = 150;
const M = { left: 8, right: 8, top: 18, bottom: 24 };

interface LayerBarsProps {
  title: string;
  layers: LayerMetrics[];
  value: (l: LayerMetrics) => number | null | undefined;
  format: (v: number) => string;
  color: string;
}

/** One bar per layer (SVG, every bar titled with its value); negative values hang below the zero line. */
function LayerBars({ title, layers, value, format, color }: LayerBarsProps) {
  const values = layers.map((l) => value(l) ?? null);
  const known = values.filter((v): v is number => v !== null);
  const hi = Math.max(0, ...known);
  const lo = Math.min(0, ...known);
  const span = hi - lo || 1;
  const sy = (v: number) => M.top + ((hi - v) / span) * (H - M.top - M.bottom);
  const slot = (W - M.left - M.right) / Math.max(1, layers.length);
  const bar = Math.min(36, slot * 0.7);
  return (
    <figure className="layer-plot" aria-label={`${title} per layer`} data-testid="layer-plot">
      <h4>{title}</h4>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title} of layers ${layers.map((l) => l.layer).join(", ")}`}>
        <line className="zero" x1={M.left} x2={W - M.right} y1={sy(0)} y2={sy(0)} />
        {layers.map((l, i) => {
          const v = values[i];
          const x = M.left + slot * i + (slot - bar) / 2;
          return (
            <g key={l.layer} className="layer-bar" data-layer={l.layer}>
              <title>{`layer ${l.layer}: ${v === null ? "not measured" : format(v)}`}</title>
              {v !== null && <rect x={x} width={bar} y={Math.min(sy(v), sy(0))} height={Math.max(1, Math.abs(sy(v) - sy(0)))} fill={color} />}
              {v !== null && (
                <text x={x + bar / 2} y={v >= 0 ? sy(v) - 3 : sy(v) + 10} textAnchor="middle" className="bar-value">
                  {format(v)}
                </text>
              )}
              <text x={x + bar / 2} y={H - 8} textAnchor="middle">
                {l.layer}
              </text>
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
