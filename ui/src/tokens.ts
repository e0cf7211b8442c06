// How a tokenizer's vocabulary string is shown: spaces kept, invisible characters made visible.

export interface TokenPiece {
  /** text to display */
  text: string;
  /** a visible stand-in for whitespace or a control character (styled faintly) */
  marker: boolean;
  /** a line break follows this piece (for "\n") */
  breakAfter: boolean;
}

const CONTROL_MARKERS: Record<string, string> = {
  "\n": "↵",
  "\t": "→",
  "\r": "␍",
  "\f": "␌",
  "\v": "␋",
  "\u00a0": "⍽",
};

/**
 * Split a token into display pieces. Ordinary spaces inside a token are kept as spaces
 * (so " the" reads as text), except in a token made only of spaces, where each space
 * is shown as "·" so the token stays visible. "\n" shows as "↵" and breaks the line,
 * a tab as "→"; other control characters as their Unicode control picture.
 */
export function tokenPieces(token: string): TokenPiece[] {
  if (token === "") return [{ text: "∅", marker: true, breakAfter: false }];
  const onlySpaces = /^ +$/.test(token);
  const pieces: TokenPiece[] = [];
  let plain = "";
  const flush = () => {
    if (plain) pieces.push({ text: plain, marker: false, breakAfter: false });
    plain = "";
  };
  for (const ch of token) {
    const code = ch.codePointAt(0)!;
    if (ch === " " && onlySpaces) {
      flush();
      pieces.push({ text: "·", marker: true, breakAfter: false });
    } else if (ch in CONTROL_MARKERS) {
      flush();
      pieces.push({ text: CONTROL_MARKERS[ch], marker: true, breakAfter: ch === "\n" });
    } else if (code < 0x20 || code === 0x7f) {
      flush();
      pieces.push({ text: String.fromCodePoint(code === 0x7f ? 0x2421 : 0x2400 + code), marker: true, breakAfter: false });
    } else {
      plain += ch;
    }
  }
  flush();
  return pieces;
}

/** A token as a quoted, escaped string for tooltips: " the" -> `" the"`, "\n" -> `"\n"`. */
export function tokenRepr(token: string): string {
  return JSON.stringify(token);
}
