import { render, screen } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { ActivationContext } from "../ActivationContext";
import { intensity, TokenHighlight } from "../TokenHighlight";

const tokenSpans = (container: HTMLElement) => Array.from(container.querySelectorAll<HTMLElement>("span.tok"));

describe("TokenHighlight", () => {
  test("intensity is activation / feature max, clipped to [0, 1]", () => {
    expect(intensity(2, 8)).toBe(0.25);
    expect(intensity(8, 8)).toBe(1);
    expect(intensity(12, 8)).toBe(1);
    expect(intensity(0, 8)).toBe(0);
    expect(intensity(3, 0)).toBe(0); // dead feature: nothing to scale by
  });

  test("shades the background in proportion to the activation", () => {
    const { container } = render(
      <>
        <TokenHighlight token=" cat" act={2} scale={8} position={1} />
        <TokenHighlight token=" sat" act={8} scale={8} position={2} isMax />
        <TokenHighlight token=" on" act={0} scale={8} position={3} />
      </>,
    );
    const [cat, sat, on] = tokenSpans(container);
    expect(cat.style.backgroundColor).toBe("rgba(234, 88, 12, 0.25)");
    expect(cat.dataset.intensity).toBe("0.250");
    expect(sat.style.backgroundColor).toBe("rgba(234, 88, 12, 1)");
    expect(sat).toHaveClass("tok-max");
    expect(on.style.backgroundColor).toBe("");
    expect(on.dataset.intensity).toBe("0.000");
  });

  test("the tooltip gives the token, its activation, share of max and position", () => {
    render(<TokenHighlight token={" the"} act={3.25} scale={6.5} position={17} />);
    const tok = screen.getByText(" the", { normalizer: (s) => s }).closest(".tok")!;
    const title = tok.getAttribute("title")!;
    expect(title).toContain('" the"');
    expect(title).toContain("activation: 3.25");
    expect(title).toContain("50% of max 6.5");
    expect(title).toContain("position: 17");
  });

  test("escapes newlines in the tooltip and draws them as ↵ with a line break", () => {
    const { container } = render(<TokenHighlight token={"\n"} act={1} scale={2} position={0} />);
    const tok = tokenSpans(container)[0];
    expect(tok.getAttribute("title")).toContain('"\\n"');
    expect(tok.textContent).toBe("↵");
    expect(tok.querySelector("br")).not.toBeNull();
    expect(tok.querySelector(".tok-ws")).not.toBeNull();
  });

  test("keeps leading spaces and marks whitespace-only tokens and tabs", () => {
    const { container } = render(
      <>
        <TokenHighlight token=" the" act={0} scale={1} position={0} />
        <TokenHighlight token="  " act={0} scale={1} position={1} />
        <TokenHighlight token={"\t"} act={0} scale={1} position={2} />
      </>,
    );
    const [the, spaces, tab] = tokenSpans(container);
    expect(the.textContent).toBe(" the");
    expect(spaces.textContent).toBe("··");
    expect(tab.textContent).toBe("→");
  });
});

describe("ActivationContext", () => {
  const tokens = Array.from({ length: 40 }, (_, i) => ` t${i}`);
  const acts = tokens.map((_, i) => (i === 30 ? 4 : i === 29 ? 1 : 0));

  test("renders every token, marks the max and scales by the given max", () => {
    const { container } = render(<ActivationContext tokens={tokens} acts={acts} scale={8} maxPos={30} />);
    const spans = tokenSpans(container);
    expect(spans).toHaveLength(40);
    expect(spans[30]).toHaveClass("tok-max");
    expect(spans[30].dataset.intensity).toBe("0.500");
    expect(spans[29].dataset.intensity).toBe("0.125");
  });

  test("a window around the max elides the rest with …", () => {
    const { container } = render(<ActivationContext tokens={tokens} acts={acts} scale={4} maxPos={30} window={{ before: 5, after: 2 }} />);
    const spans = tokenSpans(container);
    expect(spans.map((s) => Number(s.dataset.pos))).toEqual([25, 26, 27, 28, 29, 30, 31, 32]);
    expect(container.querySelectorAll(".elided")).toHaveLength(2);
  });
});
