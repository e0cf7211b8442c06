// API-shaped JSON (server/API.md) with realistic values, for component tests.
import type {
  ActivationsResult,
  Annotation,
  DictionaryDetail,
  DictionarySummary,
  FeatureDetail,
  FeaturePage,
  RunDetail,
  RunDictionary,
  Sample,
  Similar,
  SteerResult,
  TokenSearch,
} from "../api";

export const dictionarySummary: DictionarySummary = {
  name: "gpt2-res6",
  run: "gpt2-res6",
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
  run: "smollm-mlp3",
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

/** A dictionary imported from SAELens's hub (core.import_dictionary), as the server describes it. */
export const importedDictionary: DictionaryDetail = {
  ...dictionaryDetail,
  name: "imported:gpt2-small-res-jb--blocks.8.hook_resid_pre",
  run: "imported",
  hook_name: "blocks.8.hook_resid_pre",
  architecture: "relu",
  d_sae: 24576,
  metrics: {},
  analyses: [],
  analysis_summaries: [],
  source: {
    format: "saelens",
    version: "6.54.12",
    path: "/home/me/.cache/huggingface/hub/models--jbloom--GPT2-Small-SAEs-Reformatted/snapshots/abc/blocks.8.hook_resid_pre",
    release: "gpt2-small-res-jb",
    sae_id: "blocks.8.hook_resid_pre",
    repo_id: "jbloom/GPT2-Small-SAEs-Reformatted",
    repo_folder: "blocks.8.hook_resid_pre",
    model_name: "gpt2-small",
    hook_name: "blocks.8.hook_resid_pre",
    architecture: "standard",
    training_architecture: null,
    neuronpedia_id: "gpt2-small/8-res-jb",
    sha256: "5f1d2c3b4a5968778695a4b3c2d1e0f0123456789abcdef0123456789abcdef0",
    conversions: ["apply_b_dec_to_input=false: b_dec @ W_enc added to b_enc"],
  },
};

export const featurePage: FeaturePage = {
  total: 4608,
  offset: 0,
  limit: 50,
  features: [
    { index: 1530, act_count: 33, density: 1.65e-5, max_act: 24.7, mean_act: 5.35, label: "Python imports", bookmarked: true },
    { index: 12, act_count: 322807, density: 0.1614, max_act: 20.1, mean_act: 4.06, label: "", bookmarked: false },
    { index: 3, act_count: 0, density: 0, max_act: 0, mean_act: 0, label: "", bookmarked: false },
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

/** A transcoder in a run of several dictionaries: id `<run>:<name>`. */
export const transcoderSummary: DictionarySummary = {
  name: "smollm-sweep:mlp3-tc",
  run: "smollm-sweep",
  model_name: "SmolLM2-135M-Instruct",
  hook_name: "blocks.3.ln2.hook_normalized",
  hook_out: "blocks.3.hook_mlp_out",
  architecture: "topk",
  d_in: 576,
  d_sae: 4608,
  metrics: { l0: 24, explained_variance: 0.71 },
  analyses: ["default"],
};

export const tokenSearch: TokenSearch = {
  tokens: [
    { token_id: 1330, token: " import", occurrences: 412 },
    { token_id: 299, token: " numpy", occurrences: 0 },
  ],
  matches: [
    { index: 1530, acts: [22.5, null], n_tokens: 1, score: 22.5, max_act: 24.7, density: 1.65e-5, label: "Python imports" },
    { index: 12, acts: [3.25, null], n_tokens: 1, score: 3.25, max_act: 20.1, density: 0.1614, label: "" },
  ],
  index_size: 32,
};

export const annotation = (over: Partial<Annotation> = {}): Annotation => ({
  index: 42,
  label: "",
  notes: "",
  bookmarked: false,
  version: 0,
  updated_at: null,
  ...over,
});

export const similar: Similar = {
  dictionary: "gpt2-res6",
  analyses: ["default"],
  neighbours: [
    { index: 77, cosine: 0.83, label: "closing brackets" },
    { index: 5, cosine: 0.41, label: "" },
  ],
  comparable: ["gpt2-res6-k64"],
};

export const steerResult: SteerResult = {
  prompt_tokens: ["<|endoftext|>", "The", " weather"],
  prompt_cut: false,
  steered: { token_ids: [1, 2, 3], tokens: [" import", " numpy", "\n"], text: " import numpy\n", stopped: false },
  unsteered: { token_ids: [4, 5, 6], tokens: [" is", " sunny", "."], text: " is sunny.", stopped: false },
  hook_name: "blocks.6.hook_resid_post",
  direction_norm: 16.2,
};

const runDictionary = (name: string, l0: number, ev: number, ce: number, saved = true): RunDictionary => ({
  name,
  id: saved ? `sweep:${name}` : null,
  train: {
    tokens: [1000, 2000, 3000],
    values: { loss: [1, 0.6, 0.5], l0: [l0 * 2, l0 * 1.2, l0], explained_variance: [0.2, ev - 0.1, ev], dead_features: [0, 3, 5] },
    points: 3,
  },
  eval: { tokens: [2000], values: { l0: [l0], explained_variance: [ev], ce_loss_recovered: [ce] }, points: 1 },
  final: saved ? { l0, explained_variance: ev, ce_loss_recovered: ce, mse: 0.01, unfired_features: 4 } : null,
});

export const sweepRun: RunDetail = {
  name: "sweep",
  dictionaries: ["sweep:res3-k16", "sweep:res3-k32", "sweep:res3-k64"],
  has_metrics: true,
  config: { exp_name: "sweep", sweep: ["sae.k=16,32,64"] },
  series: [runDictionary("res3-k16", 16, 0.71, 0.88), runDictionary("res3-k32", 32, 0.8, 0.93), runDictionary("res3-k64", 64, 0.86, 0.96)],
  lines: 120,
  skipped_lines: 0,
  finished: true,
};

export const liveRun: RunDetail = {
  ...sweepRun,
  name: "live",
  dictionaries: [],
  series: [runDictionary("res3-k16", 16, 0.7, 0.8, false)],
  finished: false,
};
