import { describe, expect, test } from "vitest";
import { edgeColour, layerCount, layoutGraph, logitToken, MARGIN, NEGATIVE, POSITIVE, rowOf, strokeWidth, visibleNodes } from "./graphLayout";
import { graphFile } from "./test/graphFixtures";

const ids = (nodes: { node_id: string }[]) => nodes.map((n) => n.node_id).sort();

describe("the node threshold re-prunes on the client", () => {
  test("features and errors above the threshold go; tokens, logits and pinned nodes stay", () => {
    const all = visibleNodes(graphFile.nodes, 0.8, new Set());
    expect(all).toHaveLength(7);
    const tight = visibleNodes(graphFile.nodes, 0.5, new Set());
    expect(ids(tight)).toEqual(ids(graphFile.nodes.filter((n) => n.node_id !== "1_3_2" && n.node_id !== "0_-1_2")));
    expect(ids(visibleNodes(graphFile.nodes, 0.5, new Set(["1_3_2"])))).toContain("1_3_2");
  });
  test("a subgraph shows its nodes with the tokens and logits", () => {
    const only = visibleNodes(graphFile.nodes, 0.8, new Set(), new Set(["0_7_2"]));
    expect(ids(only)).toEqual(["0_7_2", "3_319_2", "E_3797_2", "E_464_1", "E_50256_0"]);
  });
});

describe("layout", () => {
  test("rows by layer (embeddings at the bottom, logits on top), columns by position", () => {
    expect(layerCount(graphFile.nodes)).toBe(2);
    const layout = layoutGraph(graphFile.nodes, graphFile.links, graphFile.metadata.prompt_tokens, 2,
                               { minColumn: 50, nodeSpacing: 40, rowHeight: 50 });
    expect(layout.rows.map((r) => r.label)).toEqual(["Emb", "L0", "L1", "Logits"]);
    const at = (id: string) => layout.byId.get(id)!;
    expect(at("E_3797_2").y).toBeGreaterThan(at("0_7_2").y);
    expect(at("0_7_2").y).toBeGreaterThan(at("1_3_2").y);
    expect(at("1_3_2").y).toBeGreaterThan(at("3_319_2").y);
    expect(at("3_319_2").y).toBe(MARGIN.top);
    // two nodes in one cell (layer 0, position 2) share its column, the more influential to the left
    expect(at("0_7_2").y).toBe(at("0_-1_2").y);
    expect(at("0_7_2").x).toBeLessThan(at("0_-1_2").x);
    // columns: the empty ones narrow (50), the one with two nodes in a row wider (3 x 40)
    expect(layout.columns.map((c) => c.width)).toEqual([80, 80, 120]);
    expect(at("E_464_1").x).toBe(MARGIN.left + 80 + 40);
    expect(at("0_7_2").x).toBe(MARGIN.left + 160 + 40);
    expect(layout.links).toHaveLength(4);
    expect(layout.links.at(-1)!.link.weight).toBe(2.5); // the strongest drawn last
    expect(layout.maxAbsWeight).toBe(2.5);
    expect(rowOf(graphFile.nodes[6], 2)).toBe(3);
  });
  test("edges: width by |weight|, colour by sign", () => {
    expect(strokeWidth(2.5, 2.5)).toBe(4);
    expect(strokeWidth(-1.25, 2.5)).toBeCloseTo(2.2);
    expect(edgeColour(0.1)).toBe(POSITIVE);
    expect(edgeColour(-0.1)).toBe(NEGATIVE);
  });
  test("a logit node's token comes from its label", () => {
    expect(logitToken(graphFile.nodes[6])).toBe(" sat");
  });
});
