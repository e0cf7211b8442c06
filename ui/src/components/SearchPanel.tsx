import { useQuery } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { Link } from "react-router";
import { api, type TokenSearch } from "../api";
import { fmt, fmtDensity } from "../format";
import { featurePath } from "../paths";
import { keys } from "../queries";
import { ScoreValue } from "./FeatureTable";
import { ErrorMessage, Loading } from "./QueryState";
import { TokenText } from "./TokenText";

export type SearchMode = "token" | "label" | "explanation";

const MODES: { mode: SearchMode; tab: string; input: string; placeholder: string }[] = [
  { mode: "token", tab: "Token or phrase", input: "Token or phrase", placeholder: "e.g.  import   (a leading space is part of the token)" },
  { mode: "label", tab: "Label or notes", input: "Label text", placeholder: "e.g. brackets" },
  { mode: "explanation", tab: "Explanation", input: "Explanation words", placeholder: "e.g. import statements   (word* matches a prefix)" },
];

export interface SearchPanelProps {
  dictionary: string;
  /** the analysis whose token index is searched and whose feature pages results link to */
  analysis?: string;
  mode: SearchMode;
  query: string;
  onChange: (mode: SearchMode, query: string) => void;
  /** the analysis has explanations (by a language model) to search */
  explained?: boolean;
}

/** Search the dictionary's features: by token or phrase (the analysis' token index), by label / notes, or by
 * the explanations a language model wrote (full-text). */
export function SearchPanel({ dictionary, analysis, mode, query, onChange, explained = false }: SearchPanelProps) {
  const [draft, setDraft] = useState(query);
  useEffect(() => setDraft(query), [query]);
  const current = MODES.find((m) => m.mode === mode)!;
  return (
    <div className="search-panel" data-testid="search-panel">
      <div className="search-modes" role="tablist" aria-label="Search by">
        {MODES.map(({ mode: m, tab }) => (
          <button
            key={m}
            type="button"
            role="tab"
            aria-selected={m === mode}
            className={m === mode ? "tab active" : "tab"}
            onClick={() => onChange(m, query)}
          >
            {tab}
          </button>
        ))}
      </div>
      <form
        className="search-form"
        onSubmit={(e) => {
          e.preventDefault();
          onChange(mode, draft);
        }}
      >
        <input type="search" aria-label={current.input} placeholder={current.placeholder} value={draft} onChange={(e) => setDraft(e.target.value)} />
        <button type="submit" className="btn btn-primary" disabled={mode !== "label" && !draft}>
          Search
        </button>
      </form>
      {mode === "token" ? (
        !analysis ? (
          <p className="muted">Token search needs an analysis of this dictionary; run run_analyze_example.py.</p>
        ) : (
          query && <TokenResults dictionary={dictionary} analysis={analysis} query={query} />
        )
      ) : mode === "explanation" ? (
        !analysis || !explained ? (
          <p className="muted">
            No explanations in this analysis yet: run run_explain_example.py to have a language model explain its features, or explain one from its
            feature page.
          </p>
        ) : (
          query && <ExplanationResults dictionary={dictionary} analysis={analysis} query={query} />
        )
      ) : (
        <LabelResults dictionary={dictionary} analysis={analysis} query={query} />
      )}
    </div>
  );
}

function TokenResults({ dictionary, analysis, query }: { dictionary: string; analysis: string; query: string }) {
  const q = useQuery({
    queryKey: keys.tokenSearch(dictionary, analysis, query),
    queryFn: ({ signal }) => api.searchTokens(dictionary, analysis, { q: query, limit: 30 }, signal),
  });
  if (q.isPending) return <Loading label="Searching…" />;
  if (q.isError) return <ErrorMessage error={q.error} />;
  return <TokenResultTable result={q.data} dictionary={dictionary} analysis={analysis} />;
}

function TokenResultTable({ result, dictionary, analysis }: { result: TokenSearch; dictionary: string; analysis: string }) {
  const never = result.tokens.filter((t) => t.occurrences === 0);
  return (
    <div data-testid="token-results">
      <p className="muted small">
        Tokens:{" "}
        {result.tokens.map((t, i) => (
          <span key={t.token_id}>
            {i > 0 && " · "}
            <TokenText token={t.token} /> <span className="muted">(id {t.token_id}, {t.occurrences.toLocaleString("en-US")}×)</span>
          </span>
        ))}
        . Features ranked by how many of these tokens they fire on most strongly, then by their max activation on them.
      </p>
      {never.length > 0 && (
        <p className="notice">
          {never.map((t) => JSON.stringify(t.token)).join(", ")} never occurred in the analysed text, so no feature is recorded for{" "}
          {never.length === 1 ? "it" : "them"}.
        </p>
      )}
      {result.matches.length === 0 ? (
        <p className="muted">No feature fires on these tokens.</p>
      ) : (
        <div className="table-scroll tall">
          <table className="data compact">
            <thead>
              <tr>
                <th className="num">Feature</th>
                {result.tokens.map((t) => (
                  <th key={t.token_id} className="num" title="the feature's max activation on this token">
                    on <TokenText token={t.token} />
                  </th>
                ))}
                <th className="num">Max act</th>
                <th className="num">Density</th>
                <th className="col-label">Label</th>
              </tr>
            </thead>
            <tbody>
              {result.matches.map((m) => (
                <tr key={m.index} data-feature={m.index}>
                  <td className="num">
                    <Link to={featurePath(dictionary, analysis, m.index)} className="feature-link">
                      #{m.index}
                    </Link>
                  </td>
                  {m.acts.map((a, i) => (
                    <td key={i} className="num">
                      {a === null ? <span className="muted">–</span> : fmt(a)}
                    </td>
                  ))}
                  <td className="num">{fmt(m.max_act)}</td>
                  <td className="num">{fmtDensity(m.density)}</td>
                  <td className="col-label" title={m.label}>
                    {m.label}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function ExplanationResults({ dictionary, analysis, query }: { dictionary: string; analysis: string; query: string }) {
  const q = useQuery({
    queryKey: ["explanation-search", dictionary, analysis, query],
    queryFn: ({ signal }) => api.searchExplanations(dictionary, analysis, { q: query, limit: 50 }, signal),
  });
  if (q.isPending) return <Loading label="Searching…" />;
  if (q.isError) return <ErrorMessage error={q.error} />;
  if (q.data.matches.length === 0) return <p className="muted">No explanation matches "{query}".</p>;
  return (
    <div className="table-scroll tall" data-testid="explanation-results">
      <table className="data compact">
        <thead>
          <tr>
            <th className="num">Feature</th>
            <th className="col-label">Label</th>
            <th>Explanation</th>
            <th className="num" title="detection score: balanced accuracy">Det.</th>
            <th className="num" title="fuzzing score: balanced accuracy">Fuzz.</th>
            <th className="num">Max act</th>
          </tr>
        </thead>
        <tbody>
          {q.data.matches.map((m) => (
            <tr key={m.index} data-feature={m.index}>
              <td className="num">
                <Link to={featurePath(dictionary, analysis, m.index)} className="feature-link">
                  #{m.index}
                </Link>
              </td>
              <td className="col-label" title={m.label}>
                {m.label}
              </td>
              <td className="explanation">
                <Highlighted text={m.highlighted} />
              </td>
              <td className="num">
                <ScoreValue value={m.detection} />
              </td>
              <td className="num">
                <ScoreValue value={m.fuzzing} />
              </td>
              <td className="num">{fmt(m.max_act)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** FTS5's highlight: the matched words between [ and ], shown as <mark>. */
function Highlighted({ text }: { text: string }) {
  const parts = text.split(/(\[[^\]]*\])/);
  return (
    <>
      {parts.map((p, i) => (p.startsWith("[") && p.endsWith("]") && p.length > 2 ? <mark key={i}>{p.slice(1, -1)}</mark> : <span key={i}>{p}</span>))}
    </>
  );
}

function LabelResults({ dictionary, analysis, query }: { dictionary: string; analysis?: string; query: string }) {
  const q = useQuery({
    queryKey: [...keys.labels(dictionary), query],
    queryFn: ({ signal }) => api.searchLabels(dictionary, { q: query, limit: 100 }, signal),
  });
  if (q.isPending) return <Loading label="Searching…" />;
  if (q.isError) return <ErrorMessage error={q.error} />;
  if (q.data.length === 0)
    return <p className="muted">{query ? `No label or note contains "${query}".` : "No feature has a label, a note or a bookmark yet."}</p>;
  return (
    <div className="table-scroll tall" data-testid="label-results">
      <table className="data compact">
        <thead>
          <tr>
            <th className="num">Feature</th>
            <th>Label</th>
            <th>Notes</th>
          </tr>
        </thead>
        <tbody>
          {q.data.map((a) => (
            <tr key={a.index} data-feature={a.index}>
              <td className="num">
                {a.bookmarked && <span className="bookmark-mark" aria-label="bookmarked">★ </span>}
                {analysis ? (
                  <Link to={featurePath(dictionary, analysis, a.index)} className="feature-link">
                    #{a.index}
                  </Link>
                ) : (
                  `#${a.index}`
                )}
              </td>
              <td className="col-label">{a.label}</td>
              <td className="col-label muted" title={a.notes}>
                {a.notes}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
