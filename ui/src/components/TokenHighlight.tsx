import type { MouseEventHandler } from "react";
import { fmt } from "../format";
import { tokenPieces, tokenRepr } from "../tokens";

export interface TokenHighlightProps {
  token: string;
  act: number;
  /** the activation that maps to full intensity (the feature's max); <= 0 means no highlight */
  scale: number;
  position: number;
  /** the sample's maximum-activating token */
  isMax?: boolean;
  onClick?: MouseEventHandler<HTMLSpanElement>;
  selected?: boolean;
}

/** Background opacity for an activation: proportional to act / scale, clipped to [0, 1]. */
export function intensity(act: number, scale: number): number {
  if (!(scale > 0) || !Number.isFinite(act)) return 0;
  return Math.min(1, Math.abs(act) / scale);
}

export function tokenTitle(token: string, act: number, scale: number, position: number): string {
  const rel = scale > 0 ? ` (${Math.round((act / scale) * 100)}% of max ${fmt(scale)})` : "";
  return `${tokenRepr(token)}\nactivation: ${fmt(act, 4)}${rel}\nposition: ${position}`;
}

/** One token, shaded in proportion to its activation, with a tooltip giving the numbers. */
export function TokenHighlight({ token, act, scale, position, isMax, onClick, selected }: TokenHighlightProps) {
  const alpha = intensity(act, scale);
  const rgb = act < 0 ? "37, 99, 235" : "234, 88, 12";
  const pieces = tokenPieces(token);
  const cls = ["tok", isMax ? "tok-max" : "", act !== 0 ? "tok-on" : "", onClick ? "tok-click" : "", selected ? "tok-selected" : ""]
    .filter(Boolean)
    .join(" ");
  return (
    <span
      className={cls}
      style={alpha > 0 ? { backgroundColor: `rgba(${rgb}, ${Number(alpha.toFixed(3))})` } : undefined}
      title={tokenTitle(token, act, scale, position)}
      data-act={act}
      data-intensity={alpha.toFixed(3)}
      data-pos={position}
      onClick={onClick}
    >
      {pieces.map((p, i) => (
        <span key={i} className={p.marker ? "tok-ws" : undefined}>
          {p.text}
          {p.breakAfter && <br />}
        </span>
      ))}
    </span>
  );
}
