import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { Link } from "react-router";
import { api } from "../api";
import { fmt, fmtInt } from "../format";
import { graphPath } from "../paths";
import { keys, useGraphJob, useGraphs } from "../queries";
import { ErrorMessage, Loading } from "./QueryState";

/** A replacement model's attribution graphs: the saved ones (links to their pages) and a form that computes a new one. */
export function GraphList({ dictionary }: { dictionary: string }) {
  const graphs = useGraphs(dictionary, true);
  return (
    <section className="card" data-testid="graph-list">
      <h2>Attribution graphs</h2>
      <NewGraphForm dictionary={dictionary} />
      {graphs.isPending && <Loading label="Loading graphs…" />}
      {graphs.isError && <ErrorMessage error={graphs.error} onRetry={() => graphs.refetch()} />}
      {graphs.data && graphs.data.length === 0 && <p className="muted small">No graph saved yet: compute one above, or with run_attribution_example.py.</p>}
      {graphs.data && graphs.data.length > 0 && (
        <table className="graph-table">
          <thead>
            <tr><th>graph</th><th>prompt</th><th>nodes</th><th>edges</th><th title="replacement / completeness score">scores</th></tr>
          </thead>
          <tbody>
            {graphs.data.map((g) => (
              <tr key={g.slug} data-testid="graph-row">
                <td>{g.error ? g.slug : <Link to={graphPath(dictionary, g.slug)}>{g.slug}</Link>}</td>
                <td className="prompt-text">{g.error ? <span className="error-detail">{g.error}</span> : g.prompt}</td>
                <td>{fmtInt(g.n_nodes)}</td>
                <td>{fmtInt(g.n_links)}</td>
                <td>{g.scores ? `${fmt(g.scores.replacement, 3)} / ${fmt(g.scores.completeness, 3)}` : "–"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function NewGraphForm({ dictionary }: { dictionary: string }) {
  const client = useQueryClient();
  const [prompt, setPrompt] = useState("");
  const start = useMutation({ mutationFn: (text: string) => api.startGraph(dictionary, { prompt: text }) });
  const job = useGraphJob(start.data?.id ?? null);
  const status = job.data ?? start.data;
  const running = start.isPending || (!!status && !["done", "failed"].includes(status.status));
  const finished = job.data?.status === "done";
  useEffect(() => {
    if (finished) void client.invalidateQueries({ queryKey: keys.graphs(dictionary) });
  }, [finished, client, dictionary]);
  return (
    <form className="new-graph" onSubmit={(e) => { e.preventDefault(); if (prompt.trim()) start.mutate(prompt); }}>
      <input type="text" value={prompt} onChange={(e) => setPrompt(e.target.value)} aria-label="Prompt"
             placeholder="A prompt whose next token the graph explains" maxLength={4000} />
      <button type="submit" className="btn" disabled={running || !prompt.trim()}>Compute graph</button>
      {start.isError && <ErrorMessage error={start.error} />}
      {status && (
        <p className="small" data-testid="graph-job" data-status={status.status}>
          {status.status === "done" ? (
            <>Done in {fmt(status.seconds, 3)} s: <Link to={graphPath(dictionary, status.slug)}>open {status.slug}</Link></>
          ) : status.status === "failed" ? (
            <span className="error-detail">{status.error}</span>
          ) : (
            <>
              {status.status === "loading" ? "Loading the model…" : status.status === "saving" ? "Saving…" : "Computing"}{" "}
              {status.total > 0 && <progress max={status.total} value={status.done} aria-label="graph progress" />}{" "}
              {status.total > 0 && `${fmtInt(status.done)} / ${fmtInt(status.total)} rows`}
            </>
          )}
        </p>
      )}
    </form>
  );
}
