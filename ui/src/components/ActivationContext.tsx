import { TokenHighlight } from "./TokenHighlight";

export interface ActivationContextProps {
  tokens: string[];
  acts: number[];
  /** activation drawn at full intensity, usually the feature's max activation */
  scale: number;
  maxPos?: number;
  /** show only this many tokens before / after maxPos (the rest is elided) */
  window?: { before: number; after: number };
  onTokenClick?: (position: number) => void;
  selected?: number | null;
}

/** A run of tokens with per-token activation shading; wraps like text. */
export function ActivationContext({ tokens, acts, scale, maxPos, window, onTokenClick, selected }: ActivationContextProps) {
  let start = 0;
  let end = tokens.length;
  if (window && maxPos !== undefined && maxPos >= 0) {
    start = Math.max(0, maxPos - window.before);
    end = Math.min(tokens.length, maxPos + window.after + 1);
  }
  const shown = [];
  for (let i = start; i < end; i++) {
    shown.push(
      <TokenHighlight
        key={i}
        token={tokens[i]}
        act={acts[i] ?? 0}
        scale={scale}
        position={i}
        isMax={i === maxPos}
        selected={selected === i}
        onClick={onTokenClick ? () => onTokenClick(i) : undefined}
      />,
    );
  }
  return (
    <div className="context" data-testid="activation-context">
      {start > 0 && <span className="elided" title={`${start} earlier tokens hidden`}>…</span>}
      {shown}
      {end < tokens.length && <span className="elided" title={`${tokens.length - end} later tokens hidden`}>…</span>}
    </div>
  );
}
