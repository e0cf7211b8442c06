import { Link } from "react-router";
import { fmt } from "../format";

export interface ScatterPoint {
  key: string;
  /** the full name (the link's accessible name) */
  name: string;
  /** drawn next to the point */
  label: string;
  x: number;
  y: number;
  /** where clicking the point goes (none: the point is drawn without a link) */
  href?: string;
  /** on the Pareto frontier (drawn filled, joined by the frontier line) */
  pareto?: boolean;
}

export interface ScatterProps {
  title: string;
  xLabel: string;
  yLabel: string;
  points: ScatterPoint[];
  formatY?: (y: number) => string;
  /** shown instead of the plot when there is no point */
  emptyText?: string;
  /** join the Pareto points (`pareto: true`) by a line, in order of x */
  frontier?: boolean;
}

const W = 420;
const H = 260;
const M = { left: 52, right: 16, top: 12, bottom: 40 };

/** Rounded tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, n = 5): number[] {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function domain(values: number[]): [number, number] {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  return [lo - pad, hi + pad];
}

/** One point per item, each a link (an SVG scatter plot, so every point is a real, clickable element). */
export function Scatter({ title, xLabel, yLabel, points, formatY = (y) => fmt(y, 3), emptyText = "No dictionary has final metrics yet.", frontier = false }: ScatterProps) {
  if (points.length === 0) {
    return (
      <figure className="scatter" aria-label={title} data-testid="scatter-empty">
        <h3>{title}</h3>
        <div className="histogram-empty">{emptyText}</div>
      </figure>
    );
  }
  const [x0, x1] = domain(points.map((p) => p.x));
  const [y0, y1] = domain(points.map((p) => p.y));
  const sx = (x: number) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const sy = (y: number) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const front = frontier ? points.filter((p) => p.pareto).sort((a, b) => a.x - b.x) : [];
  return (
    <figure className="scatter" aria-label={title} data-testid="scatter">
      <h3>{title}</h3>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${yLabel} against ${xLabel}`}>
        <g className="axis">
          <line x1={M.left} x2={W - M.right} y1={H - M.bottom} y2={H - M.bottom} />
          <line x1={M.left} x2={M.left} y1={M.top} y2={H - M.bottom} />
          {ticks(x0, x1).map((t) => (
            <text key={`x${t}`} x={sx(t)} y={H - M.bottom + 14} textAnchor="middle">
              {fmt(t, 3)}
            </text>
          ))}
          {ticks(y0, y1).map((t) => (
            <text key={`y${t}`} x={M.left - 6} y={sy(t) + 3} textAnchor="end">
              {formatY(t)}
            </text>
          ))}
          <text x={(M.left + W - M.right) / 2} y={H - 6} textAnchor="middle">
            {xLabel}
          </text>
          <text x={12} y={(M.top + H - M.bottom) / 2} textAnchor="middle" transform={`rotate(-90 12 ${(M.top + H - M.bottom) / 2})`}>
            {yLabel}
          </text>
        </g>
        {front.length > 1 && (
          <polyline className="pareto-line" data-testid="pareto-line" points={front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ")} />
        )}
        {points.map((p) => {
          const mark = (
            <>
              <title>{`${p.name}: ${xLabel} ${fmt(p.x, 4)}, ${yLabel} ${formatY(p.y)}${frontier && p.pareto ? " (on the Pareto frontier)" : ""}`}</title>
              <circle cx={sx(p.x)} cy={sy(p.y)} r={6} className={frontier ? (p.pareto ? "on-front" : "off-front") : undefined} />
              {/* labels of points in the right half go to their left, so they stay inside the plot */}
              <text x={sx(p.x) + (sx(p.x) > W / 2 ? -8 : 8)} y={sy(p.y) - 8} textAnchor={sx(p.x) > W / 2 ? "end" : "start"}>
                {p.label}
              </text>
            </>
          );
          return p.href ? (
            <Link key={p.key} to={p.href} className="point" data-point={p.key} data-pareto={frontier ? String(!!p.pareto) : undefined} aria-label={p.name}>
              {mark}
            </Link>
          ) : (
            <g key={p.key} className="point" data-point={p.key} data-pareto={frontier ? String(!!p.pareto) : undefined}>
              {mark}
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
