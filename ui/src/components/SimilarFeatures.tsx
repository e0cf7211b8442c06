import { useState } from "react";
import { Link } from "react-router";
import { useSimilar } from "../queries";
import { dictionaryLabel, featurePath } from "../paths";
import { ErrorMessage, Loading } from "./QueryState";

export interface SimilarFeaturesProps {
  dictionary: string;
  /** the analysis the page shows (links within the same dictionary go there) */
  analysis: string;
  index: number;
}

/** The features whose decoder directions are closest to this one's, here or in a comparable dictionary. */
export function SimilarFeatures({ dictionary, analysis, index }: SimilarFeaturesProps) {
  const [other, setOther] = useState<string | undefined>(undefined);
  const q = useSimilar(dictionary, index, other);
  const target = q.data?.dictionary ?? other ?? dictionary;
  const targetAnalysis = target === dictionary ? analysis : q.data?.analyses[0];
  return (
    <div data-testid="similar">
      <label className="inline-field">
        in
        <select aria-label="Dictionary to search" value={other ?? dictionary} onChange={(e) => setOther(e.target.value === dictionary ? undefined : e.target.value)}>
          <option value={dictionary}>this dictionary</option>
          {(q.data?.comparable ?? (other ? [other] : [])).map((d) => (
            <option key={d} value={d}>
              {dictionaryLabel(d)}
            </option>
          ))}
        </select>
      </label>
      {q.data && q.data.comparable.length === 0 && <span className="muted small"> (no other dictionary of this model and hook)</span>}
      {q.isPending && <Loading label="Comparing decoder directions…" />}
      {q.isError && <ErrorMessage error={q.error} onRetry={() => q.refetch()} />}
      {q.data && (
        <>
          {!targetAnalysis && <p className="muted small">{dictionaryLabel(target)} has no analysis yet, so its features have no pages to link to.</p>}
          <table className="data compact">
            <thead>
              <tr>
                <th className="num">Feature</th>
                <th title="cosine similarity of the decoder directions">Cosine</th>
                <th className="col-label">Label</th>
              </tr>
            </thead>
            <tbody>
              {q.data.neighbours.map((n) => (
                <tr key={n.index} data-feature={n.index}>
                  <td className="num">
                    {targetAnalysis ? (
                      <Link to={featurePath(target, targetAnalysis, n.index)} className="feature-link">
                        #{n.index}
                      </Link>
                    ) : (
                      `#${n.index}`
                    )}
                  </td>
                  <td className="num">
                    <span className="cosine-bar" style={{ width: `${Math.max(0, n.cosine) * 4}rem` }} />
                    {n.cosine.toFixed(3)}
                  </td>
                  <td className="col-label" title={n.label}>
                    {n.label}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}
