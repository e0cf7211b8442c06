// Number formatting shared by every table and stat block.

/** Compact, precision-aware formatting for activations and losses. */
export function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(2);
  return Number(x.toPrecision(digits + (a >= 100 ? 1 : 0))).toString();
}

const SHORT_UNITS = ["", "k", "M", "B", "T"];

/** Short numbers for chart axes and readouts: 3 significant digits, thousands as k, M, B (billion), T
 * (950, 1.23k, 200k, 3.4M, 12B); below a thousand as `fmt` writes them. */
export function fmtShort(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || Number.isNaN(x) || !Number.isFinite(x) || Math.abs(x) < 1000) return fmt(x, digits);
  let unit = Math.min(SHORT_UNITS.length - 1, Math.floor(Math.log10(Math.abs(x)) / 3));
  let scaled = Number((x / 10 ** (3 * unit)).toPrecision(digits));
  if (Math.abs(scaled) >= 1000 && unit < SHORT_UNITS.length - 1) {
    // rounding carried into the next unit (999,950 -> 1000k -> 1M)
    unit += 1;
    scaled = Number((x / 10 ** (3 * unit)).toPrecision(digits));
  }
  return `${scaled}${SHORT_UNITS[unit]}`;
}

export function fmtInt(x: number | null | undefined): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Math.round(x).toLocaleString("en-US");
}

export function fmtPercent(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return `${(x * 100).toFixed(digits)}%`;
}

/** Feature density (fraction of tokens a feature fires on) as a percentage, 3 significant digits. */
export function fmtDensity(d: number): string {
  if (!(d > 0)) return "0";
  const pct = d * 100;
  const decimals = Math.min(12, Math.max(0, 2 - Math.floor(Math.log10(pct))));
  return `${pct.toFixed(decimals)}%`;
}

export function log10Density(d: number): string {
  return d > 0 ? Math.log10(d).toFixed(2) : "−∞";
}
