import { Link } from "react-router";
import { formatMetric } from "../components/MetricsGrid";
import { SourceTag } from "../components/Provenance";
import { ErrorMessage, Loading } from "../components/QueryState";
import { fmtInt } from "../format";
import { architectureLabel, dictionaryLabel, dictionaryPath, hookLabel, runPath, dictionaryParts } from "../paths";
import { useDictionaries, useHealth } from "../queries";
import { useTitle } from "../useTitle";

/** `/`: every dictionary the server found, with its headline metrics. */
export function DictionariesPage() {
  useTitle("Dictionaries");
  const q = useDictionaries();
  const empty = q.data?.length === 0;
  const health = useHealth(!!empty);
  return (
    <main className="page">
      <header className="page-header">
        <h1>Dictionaries</h1>
        {q.data && <span className="muted">{q.data.length} found</span>}
      </header>
      {q.isPending && <Loading label="Loading dictionaries…" />}
      {q.isError && <ErrorMessage error={q.error} onRetry={() => q.refetch()} />}
      {empty && (
        <p className="muted" data-testid="no-dictionaries">
          No dictionaries found{health.data ? ` in ${health.data.results_dir}` : ""}. Train one with run_train_example.py; each
          results/&lt;run&gt;/dictionaries/&lt;name&gt;/ folder appears here.
        </p>
      )}
      {q.data && q.data.length > 0 && (
        <div className="table-scroll">
          <table className="data dictionaries-table" data-testid="dictionaries-table">
            <thead>
              <tr>
                <th>Dictionary (run / name)</th>
                <th>Run</th>
                <th>Model</th>
                <th>Hook</th>
                <th>Arch.</th>
                <th className="num">d_sae</th>
                <th className="num" title="mean active features per token">L0</th>
                <th className="num">Expl. var.</th>
                <th className="num">CE rec.</th>
                <th>Analyses</th>
              </tr>
            </thead>
            <tbody>
              {q.data.map((d) => (
                <tr key={d.name} data-dictionary={d.name}>
                  <td>
                    <Link to={dictionaryPath(d.name)} className="strong" title={`id ${d.name}`}>
                      {dictionaryLabel(d.name)}
                    </Link>
                    {d.source && <> <SourceTag source={d.source} /></>}
                  </td>
                  <td>
                    <Link to={runPath(dictionaryParts(d.name).run)} className="run-link">
                      {dictionaryParts(d.name).run}
                    </Link>
                  </td>
                  <td>{d.model_name}</td>
                  <td className="mono" title={d.layers ? `a replacement model of the MLPs of layers ${d.layers.join(", ")}` : d.hook_out ? "transcoder: reads the first hook, writes the second" : undefined}>
                    {hookLabel(d)}
                  </td>
                  <td>{architectureLabel(d)}</td>
                  <td className="num" title={d.layers ? `d_in ${d.d_in}; ${fmtInt(d.n_features)} features over ${d.layers.length} layers` : `d_in ${d.d_in}`}>
                    {fmtInt(d.d_sae)}
                    {d.layers && <span className="muted small"> × {d.layers.length}</span>}
                  </td>
                  <td className="num">{formatMetric("l0", d.metrics.l0)}</td>
                  <td className="num">{formatMetric("explained_variance", d.metrics.explained_variance)}</td>
                  <td className="num">{formatMetric("ce_loss_recovered", d.metrics.ce_loss_recovered)}</td>
                  <td>
                    {d.analyses.length === 0 ? (
                      <span className="muted">none</span>
                    ) : (
                      <span className="link-list">
                        {d.analyses.map((a) => (
                          <Link key={a} to={dictionaryPath(d.name, a)} className="analysis-link">
                            {a}
                          </Link>
                        ))}
                      </span>
                    )}
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
