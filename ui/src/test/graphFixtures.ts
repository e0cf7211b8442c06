// An attribution graph as the server serves it (two layers, three tokens), for component tests.
import type { DictionaryDetail, GraphFile, GraphNode } from "../api";
import { dictionaryDetail } from "./fixtures";

const node = (over: Partial<GraphNode> & Pick<GraphNode, "node_id" | "layer" | "ctx_idx" | "feature_type">): GraphNode => ({
  feature: null, jsNodeId: over.node_id, clerp: "", influence: null, activation: null, token_prob: 0, is_target_logit: false,
  feature_index: null, ...over,
});

export const graphFile: GraphFile = {
  metadata: {
    slug: "cat", scan: "gpt2", prompt: "The cat", prompt_tokens: ["<|endoftext|>", "The", " cat"], node_threshold: 0.8,
    scores: { replacement: 0.71, completeness: 0.9 },
  },
  qParams: { pinnedIds: [], supernodes: [], linkType: "both", clickedId: "", sg_pos: "" },
  nodes: [
    node({ node_id: "E_50256_0", layer: "E", ctx_idx: 0, feature_type: "embedding", feature: 0, influence: 0.3 }),
    node({ node_id: "E_464_1", layer: "E", ctx_idx: 1, feature_type: "embedding", feature: 1, influence: 0.2 }),
    node({ node_id: "E_3797_2", layer: "E", ctx_idx: 2, feature_type: "embedding", feature: 2, influence: 0.1 }),
    node({ node_id: "0_7_2", layer: "0", ctx_idx: 2, feature_type: "cross layer transcoder", feature: 35, influence: 0.25,
           activation: 1.5, clerp: "cats", feature_index: 7 }),
    node({ node_id: "1_3_2", layer: "1", ctx_idx: 2, feature_type: "cross layer transcoder", feature: 9, influence: 0.6,
           activation: 0.75, feature_index: 99 }),
    node({ node_id: "0_-1_2", layer: "0", ctx_idx: 2, feature_type: "mlp reconstruction error", feature: -1, influence: 0.7 }),
    node({ node_id: "3_319_2", layer: "3", ctx_idx: 2, feature_type: "logit", feature: 319, clerp: 'Output " sat" (p=0.412)',
           token_prob: 0.412, is_target_logit: true }),
  ],
  links: [
    { source: "E_3797_2", target: "0_7_2", weight: 2.5 },
    { source: "0_7_2", target: "1_3_2", weight: -1.25 },
    { source: "1_3_2", target: "3_319_2", weight: 0.8 },
    { source: "0_-1_2", target: "3_319_2", weight: 0.4 },
  ],
  replacement: { kind: "cross_layer_transcoder", layers: [0, 1], d_sae: 96 },
};

export const replacementDetail: DictionaryDetail = {
  ...dictionaryDetail, name: "clt-run:clt", kind: "cross_layer_transcoder", layers: [0, 1], graphs: 1,
};
