import { useEffect, useMemo, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { fmtShort } from "../format";

export const PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"];
export const colorOf = (i: number) => PALETTE[i % PALETTE.length];

export interface LineSeries {
  label: string;
  x: number[];
  y: (number | null)[];
}

export interface LineChartProps {
  title: string;
  xLabel: string;
  series: LineSeries[];
  height?: number;
}

/** The values under the cursor: x, and each drawn series' y there (null where it has no point). */
interface Hover {
  x: number;
  ys: (number | null)[];
}

/** Several series against a shared x axis (each with its own x values), drawn with uPlot; numbers are
 * short (200k, 3.4M) on the axes and in the readout of the point under the cursor. */
export function LineChart({ title, xLabel, series, height = 200 }: LineChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const [failed, setFailed] = useState(false);
  const [hover, setHover] = useState<Hover | null>(null);
  // Each series keeps the colour of its place in `series` (the same dictionary has the same colour in every chart).
  const drawn = useMemo(
    () => series.map((s, i) => ({ ...s, color: colorOf(i) })).filter((s) => s.y.some((v) => v !== null)),
    [series],
  );

  useEffect(() => {
    const el = container.current;
    if (!el || drawn.length === 0) return;
    let canvasOk = false;
    try {
      canvasOk = !!document.createElement("canvas").getContext("2d");
    } catch {
      canvasOk = false;
    }
    if (!canvasOk) {
      setFailed(true); // e.g. a test DOM: the caption and legend still describe the data
      return;
    }
    const data = uPlot.join(drawn.map((s) => [s.x, s.y] as uPlot.AlignedData));
    const opts: uPlot.Options = {
      width: Math.max(220, el.clientWidth),
      height,
      legend: { show: false },
      cursor: { points: { size: 5 } },
      scales: { x: { time: false } },
      axes: [
        { label: xLabel, labelSize: 16, size: 34, font: "11px system-ui", labelFont: "11px system-ui", stroke: "#555", grid: { stroke: "#eee" }, values: (_u, v) => v.map((x) => fmtShort(x)) },
        { size: 50, font: "11px system-ui", stroke: "#555", grid: { stroke: "#eee" }, values: (_u, v) => v.map((x) => fmtShort(x)) },
      ],
      series: [{ label: xLabel }, ...drawn.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: true, points: { show: false } }))],
      hooks: {
        setCursor: [
          (u) => {
            const i = u.cursor.idx;
            setHover(i === null || i === undefined ? null : { x: u.data[0][i], ys: drawn.map((_, k) => u.data[k + 1][i] ?? null) });
          },
        ],
      },
    };
    setFailed(false);
    const plot = new uPlot(opts, data, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(220, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [drawn, height, xLabel]);

  const points = drawn.reduce((n, s) => n + s.y.filter((v) => v !== null).length, 0);
  return (
    <figure className="chart" aria-label={title} data-testid="line-chart">
      <h3>{title}</h3>
      {drawn.length === 0 ? (
        <div className="histogram-empty">Nothing logged yet.</div>
      ) : (
        <>
          <div ref={container} className="histogram-plot" />
          {failed && <div className="histogram-empty">Plot unavailable in this browser.</div>}
        </>
      )}
      <figcaption>
        {hover ? (
          <span data-testid="chart-readout">
            {xLabel} {fmtShort(hover.x)}:{" "}
            {drawn
              .map((s, k) => (hover.ys[k] === null ? null : `${s.label} ${fmtShort(hover.ys[k])}`))
              .filter(Boolean)
              .join(", ")}
          </span>
        ) : (
          <>
            {drawn.length} series, {points} points
          </>
        )}
      </figcaption>
    </figure>
  );
}
