// API-shaped JSON (server/API.md) with realistic values, for component tests.
import type {
  ActivationsResult,
  Annotation,
  Comparison,
  FeatureExplanations,
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
  n_features: 4608,
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
  n_features: 64,
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
  n_features: 24576,
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
    { index: 1530, act_count: 33, density: 1.65e-5, max_act: 24.7, mean_act: 5.35, label: "Python imports", bookmarked: true, explanation: null, detection: null, fuzzing: null, layer: null },
    { index: 12, act_count: 322807, density: 0.1614, max_act: 20.1, mean_act: 4.06, label: "", bookmarked: false, explanation: null, detection: null, fuzzing: null, layer: null },
    { index: 3, act_count: 0, density: 0, max_act: 0, mean_act: 0, label: "", bookmarked: false, explanation: null, detection: null, fuzzing: null, layer: null },
  ],
  explanations: null,
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
  n_features: 4608,
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

export const noExplanations: FeatureExplanations = {
  index: 42,
  explanations: [],
  explainer: { backend: "local", model: "SmolLM2-135M-Instruct", scores: true },
};

export const explanationsSummary = {
  set_id: 2,
  explainer_model: "meta-llama/Llama-3.1-8B-Instruct",
  n_explained: 500,
  n_unparsable: 3,
  n_sets: 2,
  score_set_id: 4,
  scorer_model: "meta-llama/Llama-3.1-8B-Instruct",
  n_scored: { detection: 497, fuzzing: 497 },
  mean_balanced_accuracy: { detection: 0.742, fuzzing: 0.681 },
  settings: {},
};

export const featureExplanations: FeatureExplanations = {
  index: 42,
  explanations: [
    {
      set_id: 2,
      default: true,
      explainer_model: "meta-llama/Llama-3.1-8B-Instruct",
      prompt_version: 1,
      set_created_at: "2026-01-02T10:00:00+00:00",
      status: "ok",
      explanation: "Closing brackets of function calls",
      raw_response: "Closing brackets of function calls",
      created_at: "2026-01-02T10:05:00+00:00",
      n_shown: 10,
      n_held_out: 10,
      scorer_model: "meta-llama/Llama-3.1-8B-Instruct",
      scores: [
        { scorer: "detection", status: "ok", n_items: 12, n_failed: 0, accuracy: 0.83, balanced_accuracy: 0.833, precision: 0.8, recall: 0.86, f1: 0.83, auroc: 0.91 },
        { scorer: "fuzzing", status: "ok", n_items: 12, n_failed: 1, accuracy: 0.7, balanced_accuracy: 0.7, precision: 0.7, recall: 0.7, f1: 0.7, auroc: null },
      ],
    },
    {
      set_id: 1,
      default: false,
      explainer_model: "SmolLM2-135M-Instruct",
      prompt_version: 1,
      set_created_at: "2026-01-01T10:00:00+00:00",
      status: "ok",
      explanation: "Python code",
      raw_response: "Python code",
      created_at: "2026-01-01T10:05:00+00:00",
      n_shown: 10,
      n_held_out: 10,
      scorer_model: null,
      scores: [],
    },
  ],
  explainer: { backend: "local", model: "SmolLM2-135M-Instruct", scores: true },
};

/** A cross-layer transcoder over layers 0-2 with its evaluation per layer. */
export const cltDetail: DictionaryDetail = {
  ...dictionaryDetail,
  name: "smollm2-clt:clt",
  run: "smollm2-clt",
  model_name: "SmolLM2-135M-Instruct",
  hook_name: "blocks.0.ln2.hook_normalized",
  hook_out: "blocks.0.hook_mlp_out",
  architecture: "batchtopk",
  kind: "cross_layer_transcoder",
  layers: [0, 1, 2],
  d_in: 576,
  d_sae: 100,
  n_features: 300,
  metrics: { l0: 96, explained_variance: 0.61, ce_loss_recovered: 0.82, kl_divergence: 0.4 },
  analysis_summaries: [{ ...dictionaryDetail.analysis_summaries[0], n_features: 300, n_alive: 280, n_dead: 20 }],
  layer_metrics: [
    { layer: 0, normalized_mse: 0.31, explained_variance: 0.69, l0: 30, unfired_features: 4 },
    { layer: 1, normalized_mse: 0.42, explained_variance: 0.58, l0: 33, unfired_features: 7 },
    { layer: 2, normalized_mse: -0.05, explained_variance: 1.05, l0: 33, unfired_features: 9 },
  ],
};

export const comparison: Comparison = {
  run: "sweep",
  space: { model_name: "gpt2", hook_name: "blocks.6.hook_resid_post", hook_out: null, layers: null },
  spaces: [{ model_name: "gpt2", hook_name: "blocks.6.hook_resid_post", hook_out: null, layers: null, dictionaries: ["sweep:res6-k16", "sweep:res6-k32", "sweep:res6-k64"] }],
  dictionaries: [
    { id: "sweep:res6-k16", architecture: "topk", kind: "sparse_autoencoder", d_sae: 4608, l0: 16, errors: [] },
    { id: "sweep:res6-k32", architecture: "topk", kind: "sparse_autoencoder", d_sae: 4608, l0: 32, errors: [] },
    { id: "sweep:res6-k64", architecture: "topk", kind: "sparse_autoencoder", d_sae: 4608, l0: 64, errors: [] },
  ],
  candidates: ["other:res6"],
  configs: [
    { source: "sparse_probing", dictionaries: ["sweep:res6-k16", "sweep:res6-k32"], reference: true, config: { context_length: 128 }, differences: [] },
    {
      source: "sparse_probing",
      dictionaries: ["sweep:res6-k64"],
      reference: false,
      config: { context_length: 64 },
      differences: [{ field: "context_length", reference: 128, value: 64 }],
    },
  ],
  metrics: [
    { source: "final", metric: "l0", values: [16, 32, 64], excluded: [false, false, false] },
    { source: "final", metric: "explained_variance", values: [0.7, 0.65, 0.86], excluded: [false, false, false] },
    { source: "sparse_probing", metric: "sae.sae_top_1_test_accuracy", values: [0.6, 0.7, 0.9], excluded: [false, false, true] },
  ],
  plots: [
    {
      key: "explained_variance",
      title: "Explained variance against L0",
      y_label: "explained variance",
      source: "final",
      metric: "explained_variance",
      higher_is_better: true,
      points: [
        { dictionary: "sweep:res6-k16", x: 16, y: 0.7, pareto: true },
        { dictionary: "sweep:res6-k32", x: 32, y: 0.65, pareto: false },
        { dictionary: "sweep:res6-k64", x: 64, y: 0.86, pareto: true },
      ],
      excluded: [],
      missing: [],
    },
    {
      key: "sparse_probing",
      title: "Sparse probing accuracy (k = 1) against L0",
      y_label: "top-1 test accuracy",
      source: "sparse_probing",
      metric: "sae.sae_top_1_test_accuracy",
      higher_is_better: true,
      points: [
        { dictionary: "sweep:res6-k16", x: 16, y: 0.6, pareto: true },
        { dictionary: "sweep:res6-k32", x: 32, y: 0.7, pareto: true },
      ],
      excluded: ["sweep:res6-k64"],
      missing: [],
    },
    {
      key: "interpretability",
      title: "Interpretability against L0",
      y_label: "mean balanced accuracy (detection, fuzzing)",
      source: "explanations",
      metric: "interpretability",
      higher_is_better: true,
      points: [],
      excluded: [],
      missing: ["sweep:res6-k16", "sweep:res6-k32", "sweep:res6-k64"],
    },
  ],
};
