import { Link, useParams, useSearchParams } from "react-router";
import { api, FEATURE_SORTS, type AnalysisSummary, type DictionaryDetail, type FeatureQuery, type FeatureSort } from "../api";
import { FeatureFilters, type FeatureFilterValues } from "../components/FeatureFilters";
import { FeatureTable } from "../components/FeatureTable";
import { GraphList } from "../components/GraphList";
import { Histogram } from "../components/Histogram";
import { MetricsGrid } from "../components/MetricsGrid";
import { Pagination } from "../components/Pagination";
import { ProvenanceCard, SourceTag } from "../components/Provenance";
import { ErrorMessage, Loading } from "../components/QueryState";
import { SearchPanel, type SearchMode } from "../components/SearchPanel";
import { TextActivations } from "../components/TextActivations";
import { fmtInt, fmtPercent } from "../format";
import { dictionaryLabel, dictionaryParts, dictionaryPath, featurePath, hookLabel, runPath } from "../paths";
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
  const searchMode: SearchMode = params.get("search") === "label" ? "label" : "token";
  const searchQuery = params.get("q") ?? "";
  return { analysisParam: params.get("analysis"), sort, order, limit, offset, filters, bookmarked, searchMode, searchQuery, update };
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
            <MetricsGrid metrics={detail.metrics} />
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
            />
          </section>
          <div className="dict-grid">
            {detail.analyses.length === 0 ? (
              <section className="card">
                <h2>Features</h2>
                <p className="muted">No analysis yet for this dictionary. Run run_analyze_example.py to record what each feature responds to.</p>
              </section>
            ) : analysis && !unknownAnalysis ? (
              <FeatureSection name={name} analysis={analysis} table={table} />
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
        <span className="tag" title="architecture">
          {detail.kind && detail.kind !== "sparse_autoencoder"
            ? `${detail.kind === "transcoder_set" ? "transcoder set" : "cross-layer transcoder"}, layers ${(detail.layers ?? []).join(", ")}`
            : detail.hook_out ? `${detail.architecture} transcoder` : detail.architecture}
        </span>
        <span className="tag" title="d_in × d_sae">
          {fmtInt(detail.d_in)} → {fmtInt(detail.d_sae)}
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
  );
}

type TableState = ReturnType<typeof useTableState>;

function FeatureSection({ name, analysis, table }: { name: string; analysis: string; table: TableState }) {
  const q: FeatureQuery = {
    sort: table.sort,
    order: table.order,
    offset: table.offset,
    limit: table.limit,
    ...table.filters,
    ...(table.bookmarked ? { bookmarked: true } : {}),
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
          onApply={(f) => table.update({ min_density: f.min_density, max_density: f.max_density, min_max_act: f.min_max_act, offset: undefined })}
        />
        <label className="checkbox">
          <input
            type="checkbox"
            checked={table.bookmarked}
            onChange={(e) => table.update({ bookmarked: e.target.checked ? 1 : undefined, offset: undefined })}
          />{" "}
          bookmarked only
        </label>
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
            <p className="muted">{table.bookmarked ? "No bookmarked feature matches these filters." : "No feature matches these filters."}</p>
          ) : (
            <FeatureTable
              features={list.data.features}
              sort={table.sort}
              order={table.order}
              onSort={onSort}
              featureHref={(i) => featurePath(name, analysis, i)}
            />
          )}
        </div>
      )}
    </section>
  );
}
