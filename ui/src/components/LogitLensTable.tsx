import type { LogitToken } from "../api";
import { fmt } from "../format";
import { TokenText } from "./TokenText";

/** Tokens whose logits the feature's decoder direction raises (or lowers) most. */
export function LogitLensTable({ title, tokens, sign }: { title: string; tokens: LogitToken[]; sign: "positive" | "negative" }) {
  const maxAbs = Math.max(1e-12, ...tokens.map((t) => Math.abs(t.value)));
  return (
    <div className={`logit-lens logit-${sign}`} data-testid={`logit-${sign}`}>
      <h4>{title}</h4>
      {tokens.length === 0 ? (
        <div className="muted">none</div>
      ) : (
        <table className="data compact">
          <tbody>
            {tokens.map((t) => (
              <tr key={t.token_id}>
                <td className="logit-token" title={`token id ${t.token_id}`}>
                  <TokenText token={t.token} />
                </td>
                <td className="num logit-value">
                  <span className="logit-bar" style={{ width: `${(Math.abs(t.value) / maxAbs) * 100}%` }} />
                  <span className="logit-num">{fmt(t.value)}</span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
