import { Link } from "react-router";
import { ErrorMessage, Loading } from "../components/QueryState";
import { dictionaryLabel, dictionaryPath, runPath } from "../paths";
import { useRuns } from "../queries";
import { useTitle } from "../useTitle";

/** `/runs`: every training run of the results folder. */
export function RunsPage() {
  useTitle("Runs");
  const q = useRuns();
  return (
    <main className="page">
      <header className="page-header">
        <h1>Training runs</h1>
        {q.data && <span className="muted">{q.data.length} found</span>}
      </header>
      {q.isPending && <Loading label="Loading runs…" />}
      {q.isError && <ErrorMessage error={q.error} onRetry={() => q.refetch()} />}
      {q.data && q.data.length === 0 && <p className="muted">No runs yet. Train one with run_train_example.py.</p>}
      {q.data && q.data.length > 0 && (
        <div className="table-scroll">
          <table className="data" data-testid="runs-table">
            <thead>
              <tr>
                <th>Run</th>
                <th>Dictionaries</th>
              </tr>
            </thead>
            <tbody>
              {q.data.map((r) => (
                <tr key={r.name} data-run={r.name}>
                  <td>
                    <Link to={runPath(r.name)} className="strong">
                      {r.name}
                    </Link>
                    {!r.has_metrics && <span className="muted small"> (no metrics.jsonl)</span>}
                  </td>
                  <td>
                    <span className="link-list">
                      {r.dictionaries.map((d) => (
                        <Link key={d} to={dictionaryPath(d)}>
                          {dictionaryLabel(d).split(" / ").pop()}
                        </Link>
                      ))}
                    </span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </main>
  );
}
