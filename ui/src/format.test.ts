import { describe, expect, test } from "vitest";
import { fmtShort } from "./format";

describe("fmtShort", () => {
  test("writes thousands, millions and billions as k, M and B with 3 significant digits", () => {
    expect(fmtShort(200_000)).toBe("200k");
    expect(fmtShort(1234)).toBe("1.23k");
    expect(fmtShort(1200)).toBe("1.2k");
    expect(fmtShort(3_400_000)).toBe("3.4M");
    expect(fmtShort(1_000_000)).toBe("1M");
    expect(fmtShort(12_000_000_000)).toBe("12B");
    expect(fmtShort(-45_600)).toBe("-45.6k");
  });
  test("carries a rounding into the next unit", () => {
    expect(fmtShort(999_950)).toBe("1M");
    expect(fmtShort(999_499)).toBe("999k");
  });
  test("leaves numbers below a thousand, and non-numbers, as fmt writes them", () => {
    expect(fmtShort(999)).toBe("999");
    expect(fmtShort(0.5)).toBe("0.5");
    expect(fmtShort(0)).toBe("0");
    expect(fmtShort(null)).toBe("–");
    expect(fmtShort(Number.POSITIVE_INFINITY)).toBe("∞");
  });
});
