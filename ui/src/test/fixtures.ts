// API-shaped JSON (server/API.md) with realistic values, for component tests.
import type { ActivationsResult, DictionaryDetail, DictionarySummary, FeatureDetail, FeaturePage, Sample } from "../api";

export const dictionarySummary: DictionarySummary = {
  name: "gpt2-res6",
  model_name: "gpt2",
  hook_name: "blocks.6.hook_resid_post",
  architecture: "topk",
  d_in: 768,
  d_sae: 4608,
  metrics: { l0: 32, explained_variance: 0.8734, ce_loss_recovered: 0.9412, mse: 0.0041, unfired_features: 211 },
  analyses: ["default"],
};

export const bareDictionary: DictionarySummary = {
  name: "smollm-mlp3",
  model_name: "SmolLM2-135M",
  hook_name: "blocks.3.hook_mlp_out",
  architecture: "relu",
  d_in: 576,
  d_sae: 64,
  metrics: {},
  analyses: [],
};

export const dictionaryDetail: DictionaryDetail = {
  ...dictionarySummary,
  config: { architecture: "topk", d_in: 768, d_sae: 4608, k: 32 },
  analysis_summaries: [
    {
      name: "default",
      n_tokens: 2_000_000,
      n_features: 4608,
      n_alive: 3950,
      n_dead: 658,
      density_histogram: { edges: [-6, -5, -4, -3, -2, -1, 0], counts: [40, 400, 1200, 1500, 700, 110] },
    },
  ],
};

export const featurePage: FeaturePage = {
  total: 4608,
  offset: 0,
  limit: 50,
  features: [
    { index: 1530, act_count: 33, density: 1.65e-5, max_act: 24.7, mean_act: 5.35 },
    { index: 12, act_count: 322807, density: 0.1614, max_act: 20.1, mean_act: 4.06 },
    { index: 3, act_count: 0, density: 0, max_act: 0, mean_act: 0 },
  ],
};

const sample = (tokens: string[], acts: number[]): Sample => {
  const max_pos = acts.indexOf(Math.max(...acts));
  return { token_ids: tokens.map((_, i) => 100 + i), tokens, acts, max_pos, max_act: acts[max_pos] };
};

export const featureDetail: FeatureDetail = {
  index: 42,
  act_count: 3365,
  density: 0.00168,
  max_act: 8,
  mean_act: 1.5,
  d_sae: 4608,
  histogram: { edges: [0, 2, 4, 6, 8], counts: [3000, 300, 60, 5] },
  logit_lens: {
    positive: [
      { token_id: 262, token: " the", value: 2.5 },
      { token_id: 198, token: "\n", value: 1.2 },
    ],
    negative: [{ token_id: 11, token: ",", value: -1.7 }],
    note: null,
  },
  top: [sample(["The", " cat", " sat", "\n", " on"], [0, 2, 8, 0, 4]), sample([" the", " mat", "\t", "  "], [0, 6, 1, 0])],
  intervals: [
    { name: "interval_1", lower: 4, upper: 8, samples: [sample([" a", " dog"], [0, 5])] },
    { name: "interval_0", lower: 0, upper: 4, samples: [] },
  ],
};

export const deadFeature: FeatureDetail = {
  index: 3,
  act_count: 0,
  density: 0,
  max_act: 0,
  mean_act: 0,
  d_sae: 64,
  histogram: { edges: [0, 1], counts: [0] },
  logit_lens: { positive: [], negative: [], note: "Logit lens is only computed for residual-stream hooks." },
  top: [],
  intervals: [],
};

export const activations: ActivationsResult = {
  token_ids: [464, 3797, 3332, 198],
  tokens: ["The", " cat", " sat", "\n"],
  feature: null,
  top_features: [
    [
      { index: 7, act: 3.5 },
      { index: 9, act: 1.25 },
    ],
    [{ index: 1530, act: 6 }],
    [{ index: 7, act: 2 }],
    [],
  ],
  truncated: false,
};
