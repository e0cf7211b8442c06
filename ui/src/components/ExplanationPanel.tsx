import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { api, type FeatureExplanation, type Job } from "../api";
import { fmt, fmtInt } from "../format";
import { keys, useFeatureExplanations, useJob } from "../queries";
import { ScoreValue } from "./FeatureTable";
import { ErrorMessage, Loading } from "./QueryState";

export interface ExplanationPanelProps {
  dictionary: string;
  analysis: string;
  index: number;
  /** the feature fired in the analysis (a dead feature has no contexts to explain it from) */
  alive: boolean;
}

/** A feature's explanation by a language model (the default set's first, others below) with its detection and
 * fuzzing scores, and "explain this feature" as a job whose progress is shown until it ends. */
export function ExplanationPanel({ dictionary, analysis, index, alive }: ExplanationPanelProps) {
  const q = useFeatureExplanations(dictionary, analysis, index);
  const queryClient = useQueryClient();
  const [jobId, setJobId] = useState<string | null>(null);
  const [startError, setStartError] = useState<unknown>(null);
  const [starting, setStarting] = useState(false);
  const job = useJob(jobId);
  const finished = job.data?.status === "done" || job.data?.status === "failed";
  useEffect(() => {
    if (job.data?.status === "done") {
      void queryClient.invalidateQueries({ queryKey: keys.explanations(dictionary, analysis, index) });
      void queryClient.invalidateQueries({ queryKey: keys.featureLists(dictionary) });
      void queryClient.invalidateQueries({ queryKey: keys.dictionary(dictionary) });
    }
  }, [job.data?.status, queryClient, dictionary, analysis, index]);

  const explain = async () => {
    setStarting(true);
    setStartError(null);
    try {
      setJobId((await api.explain(dictionary, analysis, index)).id);
    } catch (e) {
      setStartError(e);
    } finally {
      setStarting(false);
    }
  };

  if (q.isPending) return <Loading label="Loading explanations…" />;
  if (q.isError) return <ErrorMessage error={q.error} onRetry={() => q.refetch()} />;
  const [shown, ...others] = q.data.explanations;
  const running = jobId !== null && !finished;
  const explainer = q.data.explainer;
  // The server's explainer has not explained it yet (the explanations shown may be another model's).
  const explainable = alive && !q.data.explanations.some((e) => e.explainer_model === explainer.model && e.status === "ok");
  return (
    <div className="explanation-panel" data-testid="explanation">
      {shown ? <ExplanationBody e={shown} /> : <p className="muted">No explanation yet.</p>}
      {others.length > 0 && (
        <details className="other-explanations">
          <summary>
            {others.length} other explanation{others.length === 1 ? "" : "s"} (other explainers or settings)
          </summary>
          {others.map((e) => (
            <ExplanationBody key={e.set_id} e={e} />
          ))}
        </details>
      )}
      {explainable && (
        <div className="explain-action">
          <button type="button" className="btn btn-small" onClick={explain} disabled={starting || running}>
            {running ? "Explaining…" : shown ? `Explain with ${explainer.model}` : "Explain this feature"}
          </button>
          <span className="muted small">
            {explainer.backend === "local" ? "runs" : "asks"} {explainer.model}
            {explainer.scores ? ", then scores the explanation (detection, fuzzing)" : ""}; it can take a minute.
          </span>
        </div>
      )}
      {startError !== null && <ErrorMessage error={startError} />}
      {job.data && <JobProgress job={job.data} />}
      {job.isError && <ErrorMessage error={job.error} />}
    </div>
  );
}

function ExplanationBody({ e }: { e: FeatureExplanation }) {
  return (
    <div className="explanation-body" data-set={e.set_id}>
      {e.status === "ok" ? (
        <blockquote className="explanation-text" data-testid="explanation-text">
          {e.explanation}
        </blockquote>
      ) : (
        <p className="notice">
          The explainer's answer could not be parsed: <span className="mono">{e.raw_response.slice(0, 200)}</span>
        </p>
      )}
      <p className="muted small">
        by <span className="mono">{e.explainer_model}</span> from {fmtInt(e.n_shown)} contexts ({fmtInt(e.n_held_out)} held out for scoring), prompt
        version {e.prompt_version}
        {e.scorer_model && (
          <>
            ; scored by <span className="mono">{e.scorer_model}</span>
          </>
        )}
      </p>
      {e.scores.length > 0 && (
        <div className="table-scroll">
          <table className="data compact scores" data-testid="explanation-scores">
            <thead>
              <tr>
                <th>Scorer</th>
                <th className="num" title="0.5 is chance">Balanced acc.</th>
                <th className="num">Accuracy</th>
                <th className="num">F1</th>
                <th className="num" title="from the scorer's yes/no probabilities (– when the backend gives none)">AUROC</th>
                <th className="num" title="questions asked (answers that could not be read)">Questions</th>
              </tr>
            </thead>
            <tbody>
              {e.scores.map((s) => (
                <tr key={s.scorer} data-scorer={s.scorer}>
                  <td>{s.scorer}</td>
                  <td className="num">{s.status === "ok" ? <ScoreValue value={s.balanced_accuracy} /> : <span className="muted">{s.status.replace(/_/g, " ")}</span>}</td>
                  <td className="num">{fmt(s.accuracy)}</td>
                  <td className="num">{fmt(s.f1)}</td>
                  <td className="num">{fmt(s.auroc)}</td>
                  <td className="num">
                    {fmtInt(s.n_items)}
                    {s.n_failed > 0 && <span className="muted"> ({s.n_failed} unread)</span>}
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

function JobProgress({ job }: { job: Job }) {
  if (job.status === "failed") return <ErrorMessage error={new Error(job.error ?? "The job failed.")} />;
  return (
    <div className="job-progress" data-testid="job-progress" data-status={job.status}>
      <progress max={job.steps} value={job.status === "done" ? job.steps : job.step} />
      <span className="small">
        {job.status === "done"
          ? job.result.explained
            ? `Explained in ${job.seconds.toFixed(0)} s.`
            : "Done, but the explainer's answer could not be parsed."
          : `${job.stage}… (${job.seconds.toFixed(0)} s)`}
      </span>
    </div>
  );
}
