import { useMemo } from "react";
import { Link, useParams } from "react-router";
import type { RunDetail, RunDictionary } from "../api";
import { colorOf, LineChart, type LineSeries } from "../components/LineChart";
import { formatMetric } from "../components/MetricsGrid";
import { ErrorMessage, Loading } from "../components/QueryState";
import { Scatter, type ScatterPoint } from "../components/Scatter";
import { fmtInt } from "../format";
import { comparePath, dictionaryPath, shortNames } from "../paths";
import { useRun } from "../queries";
import { useTitle } from "../useTitle";

const TRAIN_CHARTS: { key: string; title: string }[] = [
  { key: "loss", title: "Loss" },
  { key: "l0", title: "L0 (active features per token)" },
  { key: "explained_variance", title: "Explained variance" },
  { key: "dead_features", title: "Dead features" },
];

const seriesName = (d: RunDictionary) => d.name || "dictionary";

/** `/runs/:run`: a training run's curves (one series per dictionary) and, for a sweep, its dictionaries' trade-offs. */
export function RunPage() {
  const { run = "" } = useParams();
  useTitle(`run ${run}`);
  const q = useRun(run);
  return (
    <main className="page">
      <nav className="breadcrumbs">
        <Link to="/">Dictionaries</Link> / <Link to="/runs">Runs</Link> / <span>{run}</span>
      </nav>
      {q.isPending && <Loading label="Loading the run…" />}
      {q.isError && <ErrorMessage error={q.error} onRetry={() => q.refetch()} />}
      {q.data && <RunBody run={q.data} />}
    </main>
  );
}

function RunBody({ run: unsorted }: { run: RunDetail }) {
  // Natural order (k4, k8, k16), the same everywhere, so a dictionary keeps its colour in every chart.
  const run = useMemo(
    () => ({ ...unsorted, series: [...unsorted.series].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true })) }),
    [unsorted],
  );
  const short = useMemo(() => shortNames(run.series.map(seriesName)), [run]);
  const charts = useMemo(() => {
    const curve = (d: RunDictionary, part: "train" | "eval", key: string): LineSeries => ({
      label: seriesName(d),
      x: d[part].tokens,
      y: d[part].values[key] ?? [],
    });
    return {
      train: TRAIN_CHARTS.map((c) => ({ ...c, series: run.series.map((d) => curve(d, "train", c.key)) })),
      ceRecovered: run.series.map((d) => curve(d, "eval", "ce_loss_recovered")),
    };
  }, [run]);
  const points = (y: "explained_variance" | "ce_loss_recovered"): ScatterPoint[] =>
    run.series.flatMap((d, i) => {
      const l0 = d.final?.l0;
      const v = d.final?.[y];
      return typeof l0 === "number" && typeof v === "number"
        ? [{ key: d.id ?? d.name, name: seriesName(d), label: short[i], x: l0, y: v, href: d.id ? dictionaryPath(d.id) : undefined }]
        : [];
    });
  const percent = (v: number) => formatMetric("explained_variance", v);
  return (
    <>
      <header className="page-header">
        <h1>{run.name}</h1>
        <span className="tags">
          <span className="tag" data-testid="run-state">
            {run.finished ? "finished" : run.has_metrics ? "in progress (refreshes every 10 s)" : "no metrics.jsonl"}
          </span>
          <span className="tag">
            {run.series.length} dictionar{run.series.length === 1 ? "y" : "ies"}
          </span>
          <span className="tag muted">{fmtInt(run.lines)} log lines{run.skipped_lines ? `, ${run.skipped_lines} unreadable` : ""}</span>
        </span>
        {run.dictionaries.length > 0 && (
          <Link className="btn btn-small" to={comparePath({ run: run.name })} data-testid="compare-link">
            Compare dictionaries (every metric and eval, Pareto frontiers)
          </Link>
        )}
      </header>
      <section className="card">
        <h2>Dictionaries</h2>
        <div className="table-scroll">
          <table className="data" data-testid="run-dictionaries">
            <thead>
              <tr>
                <th>Dictionary</th>
                <th className="num">L0</th>
                <th className="num">Expl. var.</th>
                <th className="num">CE rec.</th>
                <th className="num">Unfired</th>
                <th className="num">Steps logged</th>
              </tr>
            </thead>
            <tbody>
              {run.series.map((d, i) => (
                <tr key={d.name} data-dictionary={d.id ?? d.name}>
                  <td>
                    <span className="legend-swatch" style={{ background: colorOf(i) }} />
                    {d.id ? <Link to={dictionaryPath(d.id)}>{seriesName(d)}</Link> : <span title="not saved yet">{seriesName(d)}</span>}
                  </td>
                  <td className="num">{formatMetric("l0", d.final?.l0 ?? undefined)}</td>
                  <td className="num">{formatMetric("explained_variance", d.final?.explained_variance ?? undefined)}</td>
                  <td className="num">{formatMetric("ce_loss_recovered", d.final?.ce_loss_recovered ?? undefined)}</td>
                  <td className="num">{formatMetric("unfired_features", d.final?.unfired_features ?? undefined)}</td>
                  <td className="num">{fmtInt(d.train.points)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
      {run.series.length > 1 && (
        <section className="card">
          <h2>Sparsity against reconstruction (final evaluation)</h2>
          <p className="muted small">One point per dictionary; click one to open it.</p>
          <div className="charts">
            <Scatter title="Explained variance against L0" xLabel="L0" yLabel="explained variance" points={points("explained_variance")} formatY={percent} />
            <Scatter title="CE loss recovered against L0" xLabel="L0" yLabel="CE loss recovered" points={points("ce_loss_recovered")} formatY={percent} />
          </div>
        </section>
      )}
      <section className="card">
        <h2>Training curves</h2>
        <div className="chart-legend">
          {run.series.map((d, i) => (
            <span key={d.name}>
              <span className="legend-swatch" style={{ background: colorOf(i) }} />
              {seriesName(d)}
            </span>
          ))}
        </div>
        <div className="charts">
          {charts.train.map((c) => (
            <LineChart key={c.key} title={c.title} xLabel="training tokens" series={c.series} />
          ))}
          <LineChart title="CE loss recovered (periodic evaluations)" xLabel="training tokens" series={charts.ceRecovered} />
        </div>
      </section>
      {run.config && (
        <details className="card config">
          <summary>Run config.json</summary>
          <pre>{JSON.stringify(run.config, null, 2)}</pre>
        </details>
      )}
    </>
  );
}
