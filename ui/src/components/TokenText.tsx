import { tokenPieces, tokenRepr } from "../tokens";

/** A token as plain text with visible whitespace markers (no line breaks): for tables. */
export function TokenText({ token }: { token: string }) {
  return (
    <span className="tok-text" title={tokenRepr(token)}>
      {tokenPieces(token).map((p, i) => (
        <span key={i} className={p.marker ? "tok-ws" : undefined}>
          {p.text}
        </span>
      ))}
    </span>
  );
}
