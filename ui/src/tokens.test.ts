import { describe, expect, test } from "vitest";
import { tokenPieces } from "./tokens";

const text = (t: string) => tokenPieces(t).map((p) => p.text).join("");

describe("tokenPieces", () => {
  test("keeps a GPT-2 leading space as a real space", () => {
    expect(tokenPieces(" the")).toEqual([{ text: " the", marker: false, breakAfter: false }]);
  });
  test("shows a newline as ↵ and breaks the line after it", () => {
    expect(tokenPieces("\n")).toEqual([{ text: "↵", marker: true, breakAfter: true }]);
    expect(tokenPieces("\n\n").filter((p) => p.breakAfter)).toHaveLength(2);
  });
  test("shows tabs as →, and a token of only spaces as middle dots", () => {
    expect(text("\tx")).toBe("→x");
    expect(text("  ")).toBe("··");
    expect(tokenPieces("  ").every((p) => p.marker)).toBe(true);
  });
  test("makes empty tokens and control characters visible", () => {
    expect(text("")).toBe("∅");
    expect(text("a\u0000b")).toBe("a␀b");
    expect(text("\r\n")).toBe("␍↵");
  });
});
