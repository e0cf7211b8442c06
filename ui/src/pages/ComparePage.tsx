import { Fragment, useMemo } from "react";
import { Link, useSearchParams } from "react-router";
import type { ComparePlot, Comparison, SourceConfig } from "../api";
import { formatMetric } from "../components/MetricsGrid";
import { ErrorMessage, Loading } from "../components/QueryState";
import { Scatter, type ScatterPoint } from "../components/Scatter";
import { fmt } from "../format";
import { architectureLabel, comparePath, dictionaryLabel, dictionaryParts, dictionaryPath, hookLabel, runPath, shortNames } from "../paths";
import { useComparison } from "../queries";
import { useTitle } from "../useTitle";

const SOURCE_TITLES: Record<string, string> = {
  final: "Final evaluation (the trainer's, in config.json)",
  core: "core (SAEBench's core metrics)",
  absorption_first_letter: "absorption_first_letter (feature absorption)",
  sparse_probing: "sparse_probing",
  synthetic_recovery: "synthetic_recovery (ground-truth features)",
  explanations: "explanations (mean balanced accuracy of the scored explanations)",
};

const sourceTitle = (source: string) => SOURCE_TITLES[source] ?? source;

/** `/compare?run=...&space=...` or `/compare?dictionary=a&dictionary=b`: dictionaries of one model and hook side by side. */
export function ComparePage() {
  const [params] = useSearchParams();
  const run = params.get("run") ?? undefined;
  const space = Math.max(0, Number(params.get("space") ?? 0) || 0);
  const dictionaries = params.getAll("dictionary");
  useTitle(run ? `compare ${run}` : "compare dictionaries");
  const q = useComparison(run, space, dictionaries);
  return (
    <main className="page">
      <nav className="breadcrumbs">
        <Link to="/">Dictionaries</Link> / <Link to="/runs">Runs</Link>
        {run && (
          <>
            {" "}
            / <Link to={runPath(run)}>{run}</Link>
          </>
        )}{" "}
        / <span>compare</span>
      </nav>
      {run === undefined && dictionaries.length === 0 ? (
        <p className="muted">Open the comparison from a run's page, or list dictionaries in the URL: /compare?dictionary=run:a&amp;dictionary=run:b.</p>
      ) : (
        <>
          {q.isPending && <Loading label="Comparing…" />}
          {q.isError && <ErrorMessage error={q.error} onRetry={() => q.refetch()} />}
          {q.data && <CompareBody c={q.data} space={space} />}
        </>
      )}
    </main>
  );
}

function CompareBody({ c, space }: { c: Comparison; space: number }) {
  const ids = c.dictionaries.map((d) => d.id);
  const labels = useMemo(() => {
    const names = ids.map((id) => dictionaryLabel(id));
    const sameRun = new Set(ids.map((id) => dictionaryParts(id).run)).size === 1;
    return shortNames(sameRun ? ids.map((id) => dictionaryParts(id).name ?? id) : names);
  }, [ids]);
  const labelOf = (id: string) => labels[ids.indexOf(id)] ?? id;
  const withoutOne = (id: string) => comparePath({ dictionaries: ids.filter((d) => d !== id) });
  return (
    <>
      <header className="page-header">
        <h1>{c.run ? `Compare: ${c.run}` : `Compare ${ids.length} dictionaries`}</h1>
        <span className="tags">
          <span className="tag">{c.space.model_name}</span>
          <span className="tag mono">{hookLabel(c.space)}</span>
          <span className="tag">{ids.length} dictionaries</span>
        </span>
      </header>
      {c.run && c.spaces.length > 1 && (
        <p className="link-list" role="tablist" aria-label="Model and hook">
          {c.spaces.map((s, i) => (
            <Link key={i} to={comparePath({ run: c.run!, space: i })} className={i === space ? "tab active" : "tab"} aria-current={i === space ? "page" : undefined}>
              {hookLabel(s)} ({s.dictionaries.length})
            </Link>
          ))}
        </p>
      )}
      <section className="card">
        <h2>Dictionaries</h2>
        <ul className="compare-dictionaries" data-testid="compared">
          {c.dictionaries.map((d) => (
            <li key={d.id} data-dictionary={d.id}>
              <Link to={dictionaryPath(d.id)} title={d.id}>
                {dictionaryLabel(d.id)}
              </Link>{" "}
              <span className="muted small">
                {architectureLabel({ ...d, hook_name: c.space.hook_name, hook_out: c.space.hook_out })}, {d.d_sae.toLocaleString("en-US")} features, L0{" "}
                {fmt(d.l0)}
              </span>
              {ids.length > 2 && (
                <Link className="btn btn-quiet btn-small" to={withoutOne(d.id)} aria-label={`leave out ${d.id}`}>
                  ×
                </Link>
              )}
              {d.errors.map((e) => (
                <p key={e} className="field-error">
                  {e}
                </p>
              ))}
            </li>
          ))}
        </ul>
        {c.candidates.length > 0 && (
          <p className="small">
            Also of {c.space.model_name} at this hook:{" "}
            {c.candidates.map((id, i) => (
              <Fragment key={id}>
                {i > 0 && ", "}
                <Link to={comparePath({ dictionaries: [...ids, id] })} title={`add ${id} to the comparison`} data-candidate={id}>
                  + {dictionaryLabel(id)}
                </Link>
              </Fragment>
            ))}
          </p>
        )}
      </section>
      <section className="card">
        <h2>Sparsity against each metric</h2>
        <p className="muted small">
          One point per dictionary (click to open it); x is its L0. Filled points joined by the line are the Pareto frontier: no other dictionary is as sparse
          and at least as good.
        </p>
        <div className="charts">
          {c.plots.map((p) => (
            <ComparePlotFigure key={p.key} plot={p} labelOf={labelOf} />
          ))}
        </div>
      </section>
      <ConfigNotes configs={c.configs} labelOf={labelOf} />
      <section className="card">
        <h2>Every metric</h2>
        <MetricsTable c={c} labels={labels} />
      </section>
    </>
  );
}

function ComparePlotFigure({ plot, labelOf }: { plot: ComparePlot; labelOf: (id: string) => string }) {
  const points: ScatterPoint[] = plot.points.map((p) => ({
    key: p.dictionary,
    name: p.dictionary,
    label: labelOf(p.dictionary),
    x: p.x,
    y: p.y,
    href: dictionaryPath(p.dictionary),
    pareto: p.pareto,
  }));
  const percent = plot.source === "final";
  return (
    <div className="compare-plot" data-plot={plot.key}>
      <Scatter
        title={plot.title}
        xLabel="L0"
        yLabel={plot.y_label}
        points={points}
        frontier
        formatY={percent ? (y) => formatMetric("explained_variance", y) : (y) => fmt(y, 3)}
        emptyText={plot.source === "explanations" ? "No dictionary has scored explanations." : `No dictionary has ${plot.metric} (${plot.source}).`}
      />
      {plot.excluded.length > 0 && (
        <p className="muted small" data-testid="plot-excluded">
          Not plotted, computed with another config: {plot.excluded.map(labelOf).join(", ")}.
        </p>
      )}
      {plot.points.length > 0 && plot.missing.length > 0 && <p className="muted small">Without this metric: {plot.missing.map(labelOf).join(", ")}.</p>}
    </div>
  );
}

/** Which results were left out of the plots, and how their configs differ from the reference. */
function ConfigNotes({ configs, labelOf }: { configs: SourceConfig[]; labelOf: (id: string) => string }) {
  const odd = configs.filter((c) => !c.reference);
  if (odd.length === 0) return null;
  return (
    <section className="card notice" data-testid="config-notes">
      <h2>Results computed differently</h2>
      <p className="small">Only results of one config are compared; these are listed in the table (marked †) but not plotted.</p>
      <ul>
        {odd.map((c, i) => (
          <li key={i}>
            <strong>{c.source}</strong> of {c.dictionaries.map(labelOf).join(", ")}:{" "}
            {c.differences.map((d, j) => (
              <span key={d.field}>
                {j > 0 && "; "}
                <span className="mono">{d.field}</span> {JSON.stringify(d.value)} (the others: {JSON.stringify(d.reference)})
              </span>
            ))}
          </li>
        ))}
      </ul>
    </section>
  );
}

function MetricsTable({ c, labels }: { c: Comparison; labels: string[] }) {
  const sources = [...new Set(c.metrics.map((m) => m.source))];
  return (
    <div className="table-scroll tall">
      <table className="data compact compare-table" data-testid="compare-metrics">
        <thead>
          <tr>
            <th>Metric</th>
            {c.dictionaries.map((d, i) => (
              <th key={d.id} className="num" title={d.id}>
                <Link to={dictionaryPath(d.id)}>{labels[i]}</Link>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {sources.map((source) => (
            <Fragment key={source}>
              <tr className="group-row">
                <th colSpan={c.dictionaries.length + 1}>{sourceTitle(source)}</th>
              </tr>
              {c.metrics
                .filter((m) => m.source === source)
                .map((m) => (
                  <tr key={`${source}.${m.metric}`} data-metric={`${source}.${m.metric}`}>
                    <td className="mono small">{m.metric}</td>
                    {m.values.map((v, i) => (
                      <td key={i} className={m.excluded[i] ? "num excluded" : "num"} title={m.excluded[i] ? "computed with another config" : undefined}>
                        {source === "final" ? formatMetric(m.metric, v) : fmt(v, 4)}
                        {m.excluded[i] && v !== null && " †"}
                      </td>
                    ))}
                  </tr>
                ))}
            </Fragment>
          ))}
        </tbody>
      </table>
    </div>
  );
}
