// How an attribution graph is drawn: which nodes show at a node threshold (the client-side re-pruning),
// where each one sits (rows by layer, columns by token position), and how an edge looks.
import type { GraphLink, GraphNode } from "./api";

export const FEATURE = "cross layer transcoder";
export const ERROR = "mlp reconstruction error";
export const TOKEN = "embedding";
export const LOGIT = "logit";

export const isFeature = (n: GraphNode) => n.feature_type === FEATURE;

/**
 * The nodes shown at `threshold`: a node's `influence` is its cumulative influence fraction (the file's
 * pruning kept those at or below its node threshold), so lowering the threshold keeps the most influential
 * features and errors; tokens, logits and pinned nodes always show. `only` (a subgraph): just those ids,
 * with the tokens and logits.
 */
export function visibleNodes(nodes: GraphNode[], threshold: number, pinned: ReadonlySet<string>, only?: ReadonlySet<string>): GraphNode[] {
  return nodes.filter((n) => {
    if (n.feature_type === TOKEN || n.feature_type === LOGIT) return true;
    if (only) return only.has(n.node_id);
    return pinned.has(n.node_id) || n.influence == null || n.influence <= threshold;
  });
}

export interface Placed {
  node: GraphNode;
  x: number;
  y: number;
}

export interface PlacedLink {
  link: GraphLink;
  source: Placed;
  target: Placed;
}

export interface GraphLayout {
  width: number;
  height: number;
  nodes: Placed[];
  byId: Map<string, Placed>;
  links: PlacedLink[];
  /** one per row, bottom (embeddings) to top (logits) */
  rows: { label: string; y: number }[];
  /** one per token position, left to right */
  columns: { token: string; x: number; left: number; width: number }[];
  maxAbsWeight: number;
}

export const MARGIN = { left: 64, right: 16, top: 28, bottom: 44 };

/** The row of a node: 0 for token embeddings, 1 + layer for features and errors, the top row for logits. */
export function rowOf(node: GraphNode, nLayers: number): number {
  if (node.feature_type === TOKEN) return 0;
  if (node.feature_type === LOGIT) return nLayers + 1;
  return Number(node.layer) + 1;
}

/** The model's layers as the graph shows them (the highest feature / error layer + 1). */
export function layerCount(nodes: GraphNode[]): number {
  let top = -1;
  for (const n of nodes) if (n.feature_type === FEATURE || n.feature_type === ERROR) top = Math.max(top, Number(n.layer));
  return top + 1;
}

/**
 * Places the nodes: rows by layer, a column per token position whose width follows its busiest row
 * (between `minColumn` and `maxColumn`: an empty position stays narrow, a crowded one spreads its nodes).
 */
export function layoutGraph(nodes: GraphNode[], links: GraphLink[], promptTokens: string[], nLayers: number,
                            { minColumn = 56, maxColumn = 420, nodeSpacing = 22, rowHeight = 56 }:
                              { minColumn?: number; maxColumn?: number; nodeSpacing?: number; rowHeight?: number } = {}): GraphLayout {
  const nRows = nLayers + 2;
  const height = MARGIN.top + MARGIN.bottom + (nRows - 1) * rowHeight;
  const yOf = (row: number) => MARGIN.top + (nRows - 1 - row) * rowHeight;
  const cells = new Map<string, GraphNode[]>();
  for (const n of nodes) {
    const key = `${rowOf(n, nLayers)}:${n.ctx_idx}`;
    cells.set(key, [...(cells.get(key) ?? []), n]);
  }
  const busiest = promptTokens.map(() => 0);
  for (const [key, cell] of cells) {
    const ctx = Number(key.split(":")[1]);
    if (ctx < busiest.length) busiest[ctx] = Math.max(busiest[ctx], cell.length);
  }
  const widths = busiest.map((n) => Math.min(maxColumn, Math.max(minColumn, (n + 1) * nodeSpacing)));
  const lefts = widths.map((_, i) => MARGIN.left + widths.slice(0, i).reduce((a, b) => a + b, 0));
  const width = MARGIN.left + MARGIN.right + widths.reduce((a, b) => a + b, 0);
  const placed: Placed[] = [];
  for (const [key, cell] of cells) {
    const [row, ctx] = key.split(":").map(Number);
    // The most influential first (lowest cumulative fraction), then by id: the same place on every render.
    cell.sort((a, b) => (a.influence ?? 0) - (b.influence ?? 0) || a.node_id.localeCompare(b.node_id));
    const left = lefts[ctx] ?? MARGIN.left;
    const w = widths[ctx] ?? minColumn;
    cell.forEach((node, i) => placed.push({ node, x: left + ((i + 1) * w) / (cell.length + 1), y: yOf(row) }));
  }
  const byId = new Map(placed.map((p) => [p.node.node_id, p]));
  const shown: PlacedLink[] = [];
  let maxAbsWeight = 0;
  for (const link of links) {
    const source = byId.get(link.source);
    const target = byId.get(link.target);
    if (!source || !target) continue;
    shown.push({ link, source, target });
    maxAbsWeight = Math.max(maxAbsWeight, Math.abs(link.weight));
  }
  shown.sort((a, b) => Math.abs(a.link.weight) - Math.abs(b.link.weight)); // the strongest drawn last, on top
  const rows = Array.from({ length: nRows }, (_, row) => ({
    label: row === 0 ? "Emb" : row === nRows - 1 ? "Logits" : `L${row - 1}`,
    y: yOf(row),
  }));
  const columns = promptTokens.map((token, i) => ({ token, left: lefts[i], width: widths[i], x: lefts[i] + widths[i] / 2 }));
  return { width, height, nodes: placed, byId, links: shown, rows, columns, maxAbsWeight };
}

/** Edge width grows with |weight| relative to the largest shown. */
export function strokeWidth(weight: number, maxAbs: number): number {
  return maxAbs > 0 ? 0.4 + 3.6 * (Math.abs(weight) / maxAbs) : 1;
}

export const POSITIVE = "#2563eb";
export const NEGATIVE = "#ea580c";

/** Blue excites, orange inhibits. */
export const edgeColour = (weight: number) => (weight >= 0 ? POSITIVE : NEGATIVE);

/** (layer, feature) of a feature node id `{layer}_{feature}_{pos}`. */
export function featureOf(node: GraphNode): { layer: number; feature: number } {
  const [layer, feature] = node.node_id.split("_").map(Number);
  return { layer, feature };
}

/** The token a logit node stands for, from its label `Output "tok" (p=0.123)`. */
export function logitToken(node: GraphNode): string {
  const match = /^Output "([\s\S]*)" \(p=/.exec(node.clerp ?? "");
  return match ? match[1] : String(node.feature ?? "");
}

/** A node's one-line description. */
export function nodeTitle(node: GraphNode, promptTokens: string[]): string {
  const token = JSON.stringify(promptTokens[node.ctx_idx] ?? "");
  if (node.feature_type === TOKEN) return `Token ${token} (position ${node.ctx_idx})`;
  if (node.feature_type === LOGIT) return node.clerp || `Output token ${node.feature}`;
  if (node.feature_type === ERROR) return `Error of layer ${node.layer}'s MLP at ${token}`;
  const { layer, feature } = featureOf(node);
  return `${node.clerp ? `${node.clerp} — ` : ""}feature ${feature} of layer ${layer} at ${token}`;
}
