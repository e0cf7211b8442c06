import { useMutation } from "@tanstack/react-query";
import { useMemo, useState } from "react";
import { Link } from "react-router";
import { api, type ActivationsResult } from "../api";
import { fmt } from "../format";
import { featurePath } from "../paths";
import { ActivationContext } from "./ActivationContext";
import { ErrorMessage, Loading } from "./QueryState";
import { TextInputForm } from "./TextInputForm";
import { TokenText } from "./TokenText";
import { TruncatedNote } from "./TruncatedNote";

/** Type text, see which of the dictionary's features fire on each token. */
export function TextActivations({ dictionary, analysis }: { dictionary: string; analysis?: string }) {
  const [topK, setTopK] = useState(5);
  const [selected, setSelected] = useState<number | null>(null);
  const run = useMutation({
    mutationFn: (text: string) => api.activations(dictionary, { text, feature: null, top_k: topK }),
    onSuccess: () => setSelected(null),
  });
  return (
    <div className="text-activations" data-testid="text-activations">
      <TextInputForm label="Text to run through the model" placeholder="Type some text, e.g. The cat sat on the mat." pending={run.isPending} onRun={(t) => run.mutate(t)}>
        <label className="inline-field">
          top k
          <select value={topK} onChange={(e) => setTopK(Number(e.target.value))}>
            {[1, 3, 5, 10, 20].map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </label>
      </TextInputForm>
      {run.isPending && <Loading label="Running the model…" />}
      {run.isError && <ErrorMessage error={run.error} />}
      {run.data && !run.isPending && (
        <TextActivationsResult result={run.data} dictionary={dictionary} analysis={analysis} selected={selected} onSelect={setSelected} />
      )}
    </div>
  );
}

function FeatureChip({ dictionary, analysis, index, act, extra }: { dictionary: string; analysis?: string; index: number; act: number; extra?: string }) {
  const body = (
    <>
      <span className="chip-index">#{index}</span> <span className="chip-act">{fmt(act)}</span>
      {extra && <span className="chip-extra"> {extra}</span>}
    </>
  );
  return analysis ? (
    <Link className="chip" to={featurePath(dictionary, analysis, index)} title={`Open feature ${index} (activation ${act})`}>
      {body}
    </Link>
  ) : (
    <span className="chip" title="No analysis to open this feature in">
      {body}
    </span>
  );
}

interface ResultProps {
  result: ActivationsResult;
  dictionary: string;
  analysis?: string;
  selected: number | null;
  onSelect: (pos: number | null) => void;
}

function TextActivationsResult({ result, dictionary, analysis, selected, onSelect }: ResultProps) {
  const top1 = result.top_features.map((list) => list[0]?.act ?? 0);
  const scale = Math.max(0, ...top1);
  // features ranked by their largest activation anywhere in the text
  const ranked = useMemo(() => {
    const byFeature = new Map<number, { max: number; tokens: number }>();
    for (const list of result.top_features)
      for (const { index, act } of list) {
        if (act <= 0) continue;
        const e = byFeature.get(index) ?? { max: 0, tokens: 0 };
        e.max = Math.max(e.max, act);
        e.tokens += 1;
        byFeature.set(index, e);
      }
    return [...byFeature.entries()].sort((a, b) => b[1].max - a[1].max).slice(0, 16);
  }, [result]);

  return (
    <div className="text-result">
      <p className="muted small">
        {result.tokens.length} tokens; shading is each token's strongest feature activation. Click a token to see its features.
      </p>
      {result.truncated && <TruncatedNote n={result.tokens.length} />}
      <ActivationContext tokens={result.tokens} acts={top1} scale={scale} onTokenClick={(p) => onSelect(p === selected ? null : p)} selected={selected} />
      {ranked.length > 0 && (
        <div className="chips-block">
          <h4>Strongest features on this text</h4>
          <div className="chips">
            {ranked.map(([index, e]) => (
              <FeatureChip key={index} dictionary={dictionary} analysis={analysis} index={index} act={e.max} extra={`×${e.tokens}`} />
            ))}
          </div>
        </div>
      )}
      <div className="table-scroll tall">
        <table className="data compact token-table" data-testid="token-table">
          <thead>
            <tr>
              <th className="num">pos</th>
              <th>token</th>
              <th>top features (activation)</th>
            </tr>
          </thead>
          <tbody>
            {result.tokens.map((tok, pos) => (
              <tr key={pos} className={pos === selected ? "selected" : undefined} onClick={() => onSelect(pos)}>
                <td className="num muted">{pos}</td>
                <td className="token-cell">
                  <TokenText token={tok} />
                </td>
                <td>
                  <div className="chips">
                    {(result.top_features[pos] ?? []).filter((f) => f.act > 0).map((f) => (
                      <FeatureChip key={f.index} dictionary={dictionary} analysis={analysis} index={f.index} act={f.act} />
                    ))}
                    {!(result.top_features[pos] ?? []).some((f) => f.act > 0) && <span className="muted">no feature fires</span>}
                  </div>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
