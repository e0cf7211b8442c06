import { render, screen } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { Histogram, isGeometric } from "../Histogram";

describe("Histogram", () => {
  test("log-spaced bins are recognised (drawn on a log x axis)", () => {
    expect(isGeometric([0.01, 0.02, 0.04, 0.08])).toBe(true);
    expect(isGeometric([0, 1, 2, 3])).toBe(false);
    expect(isGeometric([-3, -2, -1, 0])).toBe(false);
    expect(isGeometric([1, 2, 3, 4])).toBe(false);
  });

  test("the caption summarises the data, and an all-zero histogram says there is nothing to plot", () => {
    const { rerender } = render(<Histogram data={{ edges: [-6, -4, -2, 0], counts: [5, 10, 1] }} xLabel="x" label="H" />);
    expect(screen.getByRole("figure", { name: "H" })).toHaveTextContent("16 in 3 bins from -6 to 0");
    rerender(<Histogram data={{ edges: [0, 1], counts: [0] }} xLabel="x" label="H" />);
    expect(screen.getByRole("figure", { name: "H" })).toHaveTextContent("Nothing to plot.");
  });
});
