import { Link, useParams, useSearchParams } from "react-router";
import { api, FEATURE_SORTS, type AnalysisSummary, type DictionaryDetail, type ExplanationsSummary, type FeatureQuery, type FeatureSort } from "../api";
import { FeatureFilters, type FeatureFilterValues } from "../components/FeatureFilters";
import { FeatureTable, ScoreValue } from "../components/FeatureTable";
import { GraphList } from "../components/GraphList";
import { Histogram } from "../components/Histogram";
import { LayerEvaluation } from "../components/LayerEvaluation";
import { MetricsGrid } from "../components/MetricsGrid";
import { Pagination } from "../components/Pagination";
import { ProvenanceCard, SourceTag } from "../components/Provenance";
import { ErrorMessage, Loading } from "../components/QueryState";
import { SearchPanel, type SearchMode } from "../components/SearchPanel";
import { TextActivations } from "../components/TextActivations";
import { fmtInt, fmtPercent } from "../format";
import { architectureLabel, dictionaryLabel, dictionaryParts, dictionaryPath, featurePath, hookLabel, runPath } from "../paths";
import { useDictionary, useFeatureList } from "../queries";
import { useTitle } from "../useTitle";

const numParam = (s: string | null): number | undefined => {
  if (s === null || s.trim() === "") return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
};

/** The feature table's state, read from and written to the URL's query string. */
function useTableState() {
  const [params, setParams] = useSearchParams();
  const sortParam = params.get("sort") as FeatureSort | null;
  const sort: FeatureSort = sortParam && FEATURE_SORTS.includes(sortParam) ? sortParam : "max_act";
  const order: "asc" | "desc" = params.get("order") === "asc" ? "asc" : "desc";
  const limit = Math.min(500, Math.max(1, Math.round(numParam(params.get("limit")) ?? 50)));
  const offset = Math.max(0, Math.round(numParam(params.get("offset")) ?? 0));
  const filters: FeatureFilterValues = {
    min_density: numParam(params.get("min_density")),
    max_density: numParam(params.get("max_density")),
    min_max_act: numParam(params.get("min_max_act")),
    min_detection: numParam(params.get("min_detection")),
    min_fuzzing: numParam(params.get("min_fuzzing")),
  };
  const update = (changes: Record<string, string | number | undefined>, replace = false) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) {
      if (v === undefined || v === "") next.delete(k);
      else next.set(k, String(v));
    }
    setParams(next, { replace });
  };
  const bookmarked = params.get("bookmarked") === "1";
  const layer = numParam(params.get("layer"));
  const searchParam = params.get("search");
  const searchMode: SearchMode = searchParam === "label" || searchParam === "explanation" ? searchParam : "token";
  const searchQuery = params.get("q") ?? "";
  return { analysisParam: params.get("analysis"), sort, order, limit, offset, filters, bookmarked, layer, searchMode, searchQuery, update };
}

/** `/dictionaries/:name?analysis=...`: metrics, feature density, the feature table and a text probe. */
export function DictionaryPage() {
  const { name = "" } = useParams();
  useTitle(dictionaryLabel(name));
  const dict = useDictionary(name);
  const table = useTableState();
  const detail = dict.data;
  const analysis = table.analysisParam ?? detail?.analyses[0] ?? undefined;
  const summary = detail?.analysis_summaries.find((s) => s.name === analysis);
  const unknownAnalysis = !!detail && !!analysis && !detail.analyses.includes(analysis);

  return (
    <main className="page">
      <nav className="breadcrumbs">
        <Link to="/">Dictionaries</Link> / <Link to={runPath(dictionaryParts(name).run)}>{dictionaryParts(name).run}</Link>
        {dictionaryParts(name).name !== null && <> / <span>{dictionaryParts(name).name}</span></>}
      </nav>
      {dict.isPending && <Loading label="Loading dictionary…" />}
      {dict.isError && <ErrorMessage error={dict.error} onRetry={() => dict.refetch()} />}
      {detail && (
        <>
          <DictionaryHeader detail={detail} />
          <section className="card">
            <h2>Evaluation</h2>
            {detail.layer_metrics && (
              <p className="muted small">Of the whole replacement: every covered MLP replaced at once, errors compounding through the layers.</p>
            )}
            <MetricsGrid metrics={detail.metrics} />
            {detail.layer_metrics && <LayerEvaluation layers={detail.layer_metrics} />}
          </section>
          {detail.source && <ProvenanceCard source={detail.source} />}
          {detail.kind && detail.kind !== "sparse_autoencoder" && <GraphList dictionary={name} />}
          {unknownAnalysis && (
            <ErrorMessage
              error={new Error(`Dictionary ${name} has no analysis named "${analysis}"; available: ${detail.analyses.join(", ")}.`)}
            />
          )}
          {analysis && !unknownAnalysis && (
            <section className="card">
              <div className="section-head">
                <h2>Analysis</h2>
                <AnalysisPicker detail={detail} current={analysis} />
              </div>
              {summary ? <AnalysisOverview summary={summary} /> : <p className="muted">No summary for this analysis.</p>}
            </section>
          )}
          <section className="card">
            <div className="section-head">
              <h2>Search features</h2>
              <a className="btn btn-small" href={api.exportUrl(name)} download={`${name.replace(/[^\w.-]+/g, "_")}.annotations.json`}>
                Export labels (JSON)
              </a>
            </div>
            <SearchPanel
              dictionary={name}
              analysis={unknownAnalysis ? undefined : analysis}
              mode={table.searchMode}
              query={table.searchQuery}
              onChange={(mode, q) => table.update({ search: mode === "token" ? undefined : mode, q: q || undefined }, true)}
              explained={!!summary?.explanations}
            />
          </section>
          <div className="dict-grid">
            {detail.analyses.length === 0 ? (
              <section className="card">
                <h2>Features</h2>
                <p className="muted">No analysis yet for this dictionary. Run run_analyze_example.py to record what each feature responds to.</p>
              </section>
            ) : analysis && !unknownAnalysis ? (
              <FeatureSection name={name} analysis={analysis} table={table} explained={!!summary?.explanations} layers={detail.layers ?? null} />
            ) : (
              <div />
            )}
            <section className="card">
              <h2>Features on your text</h2>
              <TextActivations dictionary={name} analysis={unknownAnalysis ? undefined : analysis} />
            </section>
          </div>
          <details className="card config">
            <summary>Dictionary config.json</summary>
            <pre>{JSON.stringify(detail.config, null, 2)}</pre>
          </details>
        </>
      )}
    </main>
  );
}

function DictionaryHeader({ detail }: { detail: DictionaryDetail }) {
  const { run } = dictionaryParts(detail.name);
  return (
    <header className="page-header">
      <h1 title={`id ${detail.name}`}>{dictionaryLabel(detail.name)}</h1>
      <span className="tags">
        <Link className="tag" to={runPath(run)} title="the training run this dictionary belongs to">
          run {run}
        </Link>
        <span className="tag" title="model">
          {detail.model_name}
        </span>
        <span className="tag mono" title={detail.hook_out ? "transcoder: reads the first hook, writes the second" : "hook point"} data-testid="hook">
          {hookLabel(detail)}
        </span>
        <span className="tag" title="architecture" data-testid="architecture">
          {architectureLabel(detail)}
        </span>
        <span className="tag" title={detail.layers ? "d_in × d_sae per layer" : "d_in × d_sae"}>
          {fmtInt(detail.d_in)} → {fmtInt(detail.d_sae)}
          {detail.layers ? ` per layer (${fmtInt(detail.n_features)} features)` : ""}
        </span>
        {detail.source && <SourceTag source={detail.source} />}
      </span>
    </header>
  );
}

function AnalysisPicker({ detail, current }: { detail: DictionaryDetail; current: string }) {
  if (detail.analyses.length < 2) return <span className="tag">{current}</span>;
  return (
    <span className="link-list" role="tablist">
      {detail.analyses.map((a) => (
        <Link key={a} to={dictionaryPath(detail.name, a)} className={a === current ? "tab active" : "tab"} aria-current={a === current ? "page" : undefined}>
          {a}
        </Link>
      ))}
    </span>
  );
}

function AnalysisOverview({ summary }: { summary: AnalysisSummary }) {
  const logEdges = summary.density_histogram.edges.some((e) => e < 0);
  return (
    <>
    {summary.explanations && <ExplanationsLine summary={summary.explanations} />}
    <div className="overview">
      <dl className="stat-grid narrow" data-testid="analysis-stats">
        <div className="stat">
          <dt>Tokens analysed</dt>
          <dd>{fmtInt(summary.n_tokens)}</dd>
        </div>
        <div className="stat">
          <dt>Features</dt>
          <dd>{fmtInt(summary.n_features)}</dd>
        </div>
        <div className="stat">
          <dt>Alive</dt>
          <dd data-testid="n-alive">
            {fmtInt(summary.n_alive)} <span className="muted small">({fmtPercent(summary.n_features ? summary.n_alive / summary.n_features : 0)})</span>
          </dd>
        </div>
        <div className="stat">
          <dt>Dead</dt>
          <dd data-testid="n-dead">{fmtInt(summary.n_dead)}</dd>
        </div>
      </dl>
      <div className="overview-plot">
        <h3>Feature density{logEdges ? " (alive features, log₁₀)" : ""}</h3>
        <Histogram data={summary.density_histogram} xLabel={logEdges ? "log₁₀ density" : "density"} label="Feature density histogram" color="#2563eb" />
      </div>
    </div>
    </>
  );
}

/** Who explained the analysis' features and how well the explanations score. */
function ExplanationsLine({ summary }: { summary: ExplanationsSummary }) {
  const scorers = Object.entries(summary.mean_balanced_accuracy).filter(([, v]) => v !== null);
  return (
    <p className="explanations-line" data-testid="explanations-summary">
      <strong>{fmtInt(summary.n_explained)}</strong> features explained by <span className="mono">{summary.explainer_model}</span>
      {summary.n_unparsable > 0 && <span className="muted"> ({fmtInt(summary.n_unparsable)} answers unparsable)</span>}
      {scorers.length > 0 && (
        <>
          ; mean balanced accuracy{" "}
          {scorers.map(([scorer, v], i) => (
            <span key={scorer}>
              {i > 0 && ", "}
              {scorer} <ScoreValue value={v} /> <span className="muted small">({fmtInt(summary.n_scored[scorer] ?? 0)} scored)</span>
            </span>
          ))}
        </>
      )}
      {summary.n_sets > 1 && <span className="muted"> · {summary.n_sets} explanation sets (the newest shown)</span>}
    </p>
  );
}

type TableState = ReturnType<typeof useTableState>;

interface FeatureSectionProps {
  name: string;
  analysis: string;
  table: TableState;
  /** the analysis has explanations: their columns, sorting and filters */
  explained: boolean;
  /** a replacement model's layers: the table can show one layer's features */
  layers: number[] | null;
}

function FeatureSection({ name, analysis, table, explained, layers }: FeatureSectionProps) {
  const q: FeatureQuery = {
    sort: table.sort,
    order: table.order,
    offset: table.offset,
    limit: table.limit,
    ...table.filters,
    ...(table.bookmarked ? { bookmarked: true } : {}),
    ...(layers && table.layer !== undefined ? { layer: table.layer } : {}),
  };
  const list = useFeatureList(name, analysis, q);
  const onSort = (key: FeatureSort) => {
    const order = key === table.sort ? (table.order === "desc" ? "asc" : "desc") : key === "index" ? "asc" : "desc";
    table.update({ sort: key, order, offset: undefined });
  };
  return (
    <section className="card">
      <div className="section-head">
        <h2>Features</h2>
        <FeatureFilters
          value={table.filters}
          scores={explained}
          onApply={(f) =>
            table.update({
              min_density: f.min_density,
              max_density: f.max_density,
              min_max_act: f.min_max_act,
              min_detection: f.min_detection,
              min_fuzzing: f.min_fuzzing,
              offset: undefined,
            })
          }
        />
        <label className="checkbox">
          <input
            type="checkbox"
            checked={table.bookmarked}
            onChange={(e) => table.update({ bookmarked: e.target.checked ? 1 : undefined, offset: undefined })}
          />{" "}
          bookmarked only
        </label>
        {layers && (
          <label className="inline-field">
            layer
            <select
              aria-label="Layer"
              value={table.layer ?? ""}
              onChange={(e) => table.update({ layer: e.target.value === "" ? undefined : Number(e.target.value), offset: undefined })}
            >
              <option value="">all</option>
              {layers.map((l) => (
                <option key={l} value={l}>
                  {l}
                </option>
              ))}
            </select>
          </label>
        )}
      </div>
      {list.isPending && <Loading label="Loading features…" />}
      {list.isError && <ErrorMessage error={list.error} onRetry={() => list.refetch()} />}
      {list.data && (
        <div className={list.isPlaceholderData ? "stale" : undefined} aria-busy={list.isFetching}>
          <Pagination
            offset={table.offset}
            limit={table.limit}
            total={list.data.total}
            onOffset={(o) => table.update({ offset: o || undefined })}
            onLimit={(l) => table.update({ limit: l, offset: undefined })}
          />
          {list.data.features.length === 0 ? (
            <p className="muted">
              {table.bookmarked ? "No bookmarked feature matches these filters." : "No feature matches these filters."}
              {(table.sort === "detection" || table.sort === "fuzzing") && " Sorting by a score lists only the features with that score."}
            </p>
          ) : (
            <FeatureTable
              features={list.data.features}
              sort={table.sort}
              order={table.order}
              onSort={onSort}
              featureHref={(i) => featurePath(name, analysis, i)}
              explained={explained}
            />
          )}
        </div>
      )}
    </section>
  );
}
