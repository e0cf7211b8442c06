import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Histogram as HistogramData } from "../api";
import { fmt, fmtInt } from "../format";

export interface HistogramProps {
  data: HistogramData;
  xLabel: string;
  label: string; // accessible name, e.g. "Activation histogram"
  height?: number;
  color?: string;
}

/** Positive edges with a constant ratio (log-spaced bins): drawn on a log x axis. */
export function isGeometric(edges: number[]): boolean {
  if (edges.length < 3 || edges[0] <= 0) return false;
  const r = edges[1] / edges[0];
  if (!(r > 1.0001)) return false;
  return edges.every((e, i) => i === 0 || Math.abs(e / edges[i - 1] / r - 1) < 1e-3);
}

let canvasOk: boolean | undefined;
function canvasSupported(): boolean {
  if (canvasOk === undefined) {
    try {
      canvasOk = !!document.createElement("canvas").getContext("2d");
    } catch {
      canvasOk = false;
    }
  }
  return canvasOk;
}

/** A binned histogram drawn with uPlot (canvas), with a linear/log count toggle. */
export function Histogram({ data, xLabel, label, height = 170, color = "#ea580c" }: HistogramProps) {
  const container = useRef<HTMLDivElement>(null);
  const [logY, setLogY] = useState(false);
  const [failed, setFailed] = useState(false);
  const { edges, counts } = data;
  const total = counts.reduce((a, b) => a + b, 0);
  const empty = counts.length === 0 || edges.length !== counts.length + 1 || total === 0;

  const logX = isGeometric(edges); // e.g. activation bins spaced evenly in log space

  useEffect(() => {
    const el = container.current;
    if (!el || empty) return;
    // a step per bin: x = the n+1 edges, y = each bin's count held until the next edge
    const ys: (number | null)[] = [...counts, counts[counts.length - 1]].map((c) => (logY && c <= 0 ? null : c));
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: true, live: true },
      cursor: { y: false, points: { show: false } },
      scales: {
        x: { time: false, range: [edges[0], edges[edges.length - 1]], ...(logX ? { distr: 3, log: 10 } : {}) },
        y: logY ? { distr: 3, log: 10 } : { range: (_u, _min, max) => [0, max > 0 ? max * 1.05 : 1] },
      },
      axes: [
        {
          label: logX ? `${xLabel} (log scale)` : xLabel,
          labelSize: 18,
          size: 36,
          font: "11px system-ui",
          labelFont: "11px system-ui",
          stroke: "#555",
          grid: { stroke: "#eee" },
          values: (_u, vals) => vals.map((v) => (v == null ? "" : fmt(v, 2))), // null: unlabelled log minor tick
        },
        { size: 48, font: "11px system-ui", stroke: "#555", grid: { stroke: "#eee" }, values: (_u, vals) => vals.map((v) => fmt(v, 2)) },
      ],
      series: [
        {
          label: "bin",
          value: (_u, _v, _s, idx) => (idx == null || idx >= counts.length ? "–" : `[${fmt(edges[idx], 4)}, ${fmt(edges[idx + 1], 4)})`),
        },
        {
          label: "count",
          fill: color + "b3",
          stroke: color,
          width: 1,
          paths: uPlot.paths.stepped!({ align: 1 }),
          points: { show: false },
          value: (_u, v, _s, idx) => (v == null || idx == null || idx >= counts.length ? "–" : fmtInt(counts[idx])),
        },
      ],
    };
    if (!canvasSupported()) {
      setFailed(true); // e.g. a test DOM: the caption still describes the data
      return;
    }
    setFailed(false);
    const plot = new uPlot(opts, [edges, ys as number[]], el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(200, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [edges, counts, logY, logX, height, xLabel, color, empty]);

  const caption = empty
    ? "no data"
    : `${fmtInt(total)} in ${counts.length} bins from ${fmt(edges[0], 4)} to ${fmt(edges[edges.length - 1], 4)}`;
  return (
    <figure className="histogram" aria-label={label} data-testid="histogram">
      {empty ? (
        <div className="histogram-empty">Nothing to plot.</div>
      ) : (
        <>
          <div ref={container} className="histogram-plot" />
          {failed && <div className="histogram-empty">Plot unavailable in this browser.</div>}
        </>
      )}
      <figcaption>
        <span>{caption}</span>
        {!empty && (
          <label className="checkbox">
            <input type="checkbox" checked={logY} onChange={(e) => setLogY(e.target.checked)} /> log count
          </label>
        )}
      </figcaption>
    </figure>
  );
}
