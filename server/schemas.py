"""The JSON shapes of server/API.md that the server itself declares (they document /docs and
validate answers). What a feature store answers is declared once, by its records in `core.store`
(`FeatureRecord`, `Histogram`, `TokenSearch`, ...), which the endpoints return as they are; the
shapes here are the server's own, or a store record with what the server adds (labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from core.annotations import MAX_LABEL_CHARS, MAX_NOTES_CHARS
from core.store import FeatureStats, Histogram, TokenMatch, TokenSearch, described

MAX_INT64 = 2**63 - 1
"""Largest index or offset accepted (SQLite's integers are 64-bit); larger ones are a 422, not a crash."""


class Metrics(BaseModel):
    """Scalar evaluation metrics saved with the dictionary; every key is optional (a dictionary saved
    without evaluation has {}). Other scalar keys pass through."""

    model_config = ConfigDict(extra="allow")

    l0: Optional[float] = None
    explained_variance: Optional[float] = None
    mse: Optional[float] = None
    ce_loss_recovered: Optional[float] = None
    ce_loss_clean: Optional[float] = None
    ce_loss_reconstructed: Optional[float] = None
    ce_loss_zero_ablation: Optional[float] = None
    kl_divergence: Optional[float] = None
    unfired_features: Optional[Union[int, float]] = None
    dead_features: Optional[Union[int, float]] = Field(None, description="older dictionaries' name of unfired_features")
    dense_features: Optional[Union[int, float]] = None


class ExplanationsSummary(BaseModel):
    """An analysis' default explanation set and score set (server/explanations.py)."""

    set_id: int = Field(description="the explanation set shown (the newest with a parsed explanation)")
    explainer_model: str
    n_explained: int = Field(description="features of that set with a parsed explanation")
    n_unparsable: int
    n_sets: int = Field(description="explanation sets in the file (other explainers or settings)")
    score_set_id: Optional[int] = Field(description="its newest score set that is not a control; null: not scored")
    scorer_model: Optional[str]
    n_scored: dict[str, int] = Field(description="per scorer: features with a score")
    mean_balanced_accuracy: dict[str, Optional[float]] = Field(
        description="per scorer: the mean balanced accuracy over its scored features (0.5 is chance)")
    settings: dict[str, Any] = Field(description="the explainer's and scorers' settings (what makes two analyses' "
                                                 "scores comparable)")


class AnalysisSummary(BaseModel):
    name: str
    n_tokens: int
    n_features: int
    n_alive: int
    n_dead: int
    density_histogram: Histogram = Field(description="histogram of log10(density) over alive features")
    explanations: Optional[ExplanationsSummary] = Field(None, description="its explanations by a language model "
                                                                          "(null: none yet)")


class Provenance(BaseModel):
    """Where an imported dictionary came from (`core.import_dictionary` writes it under "source" in
    the copy's config.json). Keys the source's config lacks are null; other keys pass through."""

    model_config = ConfigDict(extra="allow")

    format: str = Field(description="the library whose folder it was: `saelens` or `sparsify`")
    version: Optional[str] = Field(None, description="that format's version, e.g. SAELens `6.54.12` or `pre-6 (5.11.0)`")
    path: Optional[str] = Field(None, description="the folder it was imported from")
    release: Optional[str] = Field(None, description="the SAELens release it was downloaded as")
    sae_id: Optional[str] = Field(None, description="its id in that release")
    repo_id: Optional[str] = Field(None, description="the Hugging Face repository it came from")
    repo_folder: Optional[str] = Field(None, description="the folder in that repository")
    model_name: Optional[str] = Field(None, description="the model name its own config gave")
    hook_name: Optional[str] = Field(None, description="the hook name its own config gave")
    architecture: Optional[str] = Field(None, description="the architecture its own config gave")
    training_architecture: Optional[str] = Field(None, description="what SAELens trained it as (e.g. batchtopk, saved as jumprelu)")
    neuronpedia_id: Optional[str] = None
    sha256: Optional[str] = Field(None, description="SHA-256 of the weights file it was converted from")
    conversions: list[str] = Field(default_factory=list, description="what the import changed to represent it exactly")


class DictionarySummary(BaseModel):
    name: str = Field(description="its id: `<run>:<dictionary>` (results/<run>/dictionaries/<dictionary>/), or "
                                  "`<run>` for an older run's only dictionary (results/<run>/dictionary/)")
    run: str = Field(description="the training run (experiment folder) it belongs to")
    model_name: str
    hook_name: str = Field(description="the hook it encodes (a transcoder's in-hook)")
    hook_out: Optional[str] = Field(None, description="a transcoder's out-hook, which it reconstructs; null for an SAE")
    architecture: str
    kind: Literal["sparse_autoencoder", "transcoder_set", "cross_layer_transcoder"] = Field(
        "sparse_autoencoder", description="an SAE or transcoder, or a replacement model (many layers' MLPs)")
    layers: Optional[list[int]] = Field(None, description="a replacement model's covered layers (its hook_name and "
                                                          "hook_out are its first layer's)")
    d_in: int
    d_sae: int = Field(description="features (per layer, for a replacement model)")
    n_features: int = Field(description="features in its analyses and labels: d_sae, times the layers for a "
                                        "replacement model (feature i is feature i % d_sae of layer "
                                        "layers[i // d_sae])")
    metrics: Metrics
    analyses: list[str] = Field(description="names of the complete analyses, sorted")
    graphs: int = Field(0, description="attribution graphs saved beside it (`<dictionary>/graphs/`)")
    source: Optional[Provenance] = Field(None, description="where an imported dictionary came from; null for one "
                                                           "trained here")


class LayerMetrics(BaseModel):
    """A replacement model's final evaluation at one covered layer (on the clean run's activations)."""

    layer: int
    normalized_mse: Optional[float] = Field(description="squared error / squared norm of the MLP output")
    explained_variance: Optional[float]
    l0: Optional[float] = Field(description="this layer's active features per token")
    unfired_features: Optional[float] = Field(description="this layer's features that never fired in the evaluation")


class DictionaryDetail(DictionarySummary):
    config: dict[str, Any] = Field(description="the dictionary's config.json")
    analysis_summaries: list[AnalysisSummary]
    layer_metrics: Optional[list[LayerMetrics]] = Field(
        None, description="a replacement model's final evaluation per covered layer (its `metrics` are of the whole "
                          "replacement: every covered MLP replaced at once); null otherwise")


class ReplacementFeature(BaseModel):
    """Where a replacement model's feature sits and writes."""

    index: int = Field(description="its index in the analyses and labels")
    layer: int = Field(description="the block whose MLP input it reads")
    layer_index: int = Field(description="its index among that layer's d_sae features")
    target_layers: list[int] = Field(description="the layers whose MLP output it writes to (a cross-layer transcoder: "
                                                 "its own and every later covered one; a transcoder set: its own)")
    decoder_norms: list[float] = Field(description="L2 norm of its decoder vector into each target layer")


class DictionaryList(BaseModel):
    dictionaries: list[DictionarySummary]


class Health(BaseModel):
    status: Literal["ok"]
    results_dir: str
    n_dictionaries: int


@dataclass
class FeatureRow(FeatureStats):
    label: str = described("the feature's label ('' when it has none)")
    bookmarked: bool
    explanation: Optional[str] = described("its explanation in the analysis' default explanation set (null: none)")
    detection: Optional[float] = described("balanced accuracy of the explanation's detection score (null: none)")
    fuzzing: Optional[float] = described("balanced accuracy of the explanation's fuzzing score (null: none)")
    layer: Optional[int] = described("a replacement model's feature: the layer it belongs to (null otherwise)")


class FeaturePage(BaseModel):
    total: int = Field(description="features matching the filters")
    offset: int
    limit: int
    features: list[FeatureRow]
    explanations: Optional[ExplanationsSummary] = Field(description="the explanations the rows show (null: none)")


class ActivationsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="the text to run through the model (limit: GPT2DICT_MAX_TEXT_CHARS)")
    feature: Optional[int] = Field(None, ge=0, le=MAX_INT64,
                                   description="a feature whose activation on every token is returned")
    top_k: int = Field(5, ge=1, le=20, description="strongest active features listed per token")


class FeatureActs(BaseModel):
    index: int
    acts: list[float] = Field(description="one activation per token")


class TokenFeature(BaseModel):
    index: int
    act: float


class ActivationsResponse(BaseModel):
    token_ids: list[int]
    tokens: list[str]
    feature: Optional[FeatureActs]
    top_features: list[list[TokenFeature]] = Field(
        description="one list per token: its strongest active (act > 0) features, at most top_k, strongest first")
    truncated: bool = Field(description="the text had more tokens than GPT2DICT_MAX_TEXT_TOKENS and was cut")


class ErrorDetail(BaseModel):
    detail: str = Field(description="one sentence saying what is wrong")


# -- search ------------------------------------------------------------------------------------


@dataclass
class LabeledTokenMatch(TokenMatch):
    max_act: float = described("the feature's max activation over the whole analysis")
    density: float
    label: str = described("the feature's label ('' when it has none)")


@dataclass
class LabeledTokenSearch(TokenSearch):
    matches: list[LabeledTokenMatch] = described("features ranked by n_tokens, then score, then index")


class Neighbour(BaseModel):
    index: int
    cosine: float = Field(description="cosine similarity of the two decoder directions")
    label: str


class SimilarResponse(BaseModel):
    dictionary: str = Field(description="the dictionary searched (the feature's own, or another comparable one)")
    analyses: list[str] = Field(description="that dictionary's analyses, for links to its feature pages")
    neighbours: list[Neighbour] = Field(description="most similar first; the feature itself left out")
    comparable: list[str] = Field(description="dictionaries whose decoders can be compared with this one's: same model, "
                                              "same hook (a transcoder: same in-hook and out-hook)")


# -- annotations -------------------------------------------------------------------------------


class Annotation(BaseModel):
    index: int
    label: str
    notes: str
    bookmarked: bool
    version: int = Field(description="incremented by every save; 0: never saved")
    updated_at: Optional[str] = Field(description="ISO 8601 time of the last save (UTC)")


class AnnotationEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field("", max_length=MAX_LABEL_CHARS, description=f"one line, at most {MAX_LABEL_CHARS} characters")
    notes: str = Field("", max_length=MAX_NOTES_CHARS, description=f"at most {MAX_NOTES_CHARS} characters")
    bookmarked: bool = False
    version: int = Field(ge=0, le=MAX_INT64, description="the version this edit is based on (0 for a feature without "
                                                          "an annotation); a stale one is refused with 409")


class AnnotationConflict(BaseModel):
    detail: str
    current: Annotation = Field(description="the annotation saved meanwhile, which was kept")


class AnnotationList(BaseModel):
    annotations: list[Annotation]


class AnnotationExport(BaseModel):
    format: Literal["gpt2-dictionary-annotations"]
    format_version: int
    dictionary: dict[str, Any] = Field(description="id, name, exp_name, model_name, hook_name, hook_out, architecture, "
                                                   "d_in, d_sae of the dictionary annotated")
    exported_at: str
    annotations: list[Annotation]


# -- steering ----------------------------------------------------------------------------------


MAX_STEERING_STRENGTH = 10_000.0


class SteerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the text the model continues (limit: GPT2DICT_MAX_TEXT_CHARS)")
    strength: float = Field(ge=-MAX_STEERING_STRENGTH, le=MAX_STEERING_STRENGTH, allow_inf_nan=False,
                            description="multiple of the decoder direction added, in the feature's activation units")
    max_new_tokens: Optional[int] = Field(None, ge=1, le=MAX_INT64, description="tokens to generate, at most "
                                          "GPT2DICT_STEER_MAX_NEW_TOKENS (default: 32, or that limit when it is lower)")
    temperature: float = Field(0.0, ge=0, le=10, allow_inf_nan=False, description="0: greedy; else sampled")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the sampling (unused when greedy)")


class Continuation(BaseModel):
    token_ids: list[int]
    tokens: list[str]
    text: str
    stopped: bool = Field(description="it ended with an end-of-text token (else it reached max_new_tokens)")


class SteerResponse(BaseModel):
    prompt_tokens: list[str] = Field(description="the prompt as the model read it, BOS first")
    prompt_cut: bool = Field(description="the prompt had more than GPT2DICT_STEER_MAX_PROMPT_TOKENS tokens; its "
                                         "beginning was dropped")
    steered: Continuation
    unsteered: Continuation
    hook_name: str = Field(description="where the direction was added (a transcoder's out-hook)")
    direction_norm: float = Field(description="L2 norm of the vector added at every position")


# -- runs --------------------------------------------------------------------------------------


class Curves(BaseModel):
    tokens: list[float] = Field(description="training tokens of each point (at most about 1000, evenly thinned)")
    values: dict[str, list[Optional[float]]] = Field(description="one list per metric, aligned with tokens")
    points: int = Field(description="points logged (before thinning)")


class RunDictionary(BaseModel):
    name: str = Field(description="its name in the run (\"\" for lines of older runs, which name none)")
    id: Optional[str] = Field(description="its dictionary id once saved (null while it trains)")
    train: Curves = Field(description="loss, l0, explained_variance, dead_features per logged step")
    eval: Curves = Field(description="l0, explained_variance, ce_loss_recovered per periodic evaluation")
    final: Optional[dict[str, Optional[float]]] = Field(
        description="final evaluation: the saved dictionary's metrics, else the log's final_eval; null before the end")


class RunSummary(BaseModel):
    name: str
    dictionaries: list[str] = Field(description="ids of its saved dictionaries")
    has_metrics: bool = Field(description="it has a metrics.jsonl")


class RunList(BaseModel):
    runs: list[RunSummary]


class RunDetail(RunSummary):
    config: Optional[dict[str, Any]] = Field(description="the run's config.json (its TrainingConfig), if readable")
    series: list[RunDictionary] = Field(description="one per dictionary named in metrics.jsonl or saved")
    lines: int = Field(description="complete lines of metrics.jsonl read")
    skipped_lines: int = Field(description="lines that are not a metrics record (e.g. a damaged line)")
    finished: bool = Field(description="every dictionary of the log has its final evaluation")


# -- attribution graphs ------------------------------------------------------------------------


class GraphScores(BaseModel):
    replacement: float = Field(description="of the influence tokens and error nodes have on the logits, the tokens' share")
    completeness: float = Field(description="the influence-weighted fraction of the nodes' inputs that is not error")


class GraphSummary(BaseModel):
    slug: str = Field(description="its name: the file <dictionary>/graphs/<slug>.json")
    prompt: str
    n_nodes: int
    n_links: int
    scores: Optional[GraphScores] = None
    modified: float = Field(description="the file's modification time (seconds since the epoch)")
    error: Optional[str] = Field(None, description="why the file cannot be read (null when it can)")


class GraphList(BaseModel):
    graphs: list[GraphSummary] = Field(description="newest first")


class GraphNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    node_id: str = Field(description="unique: `{layer}_{feature}_{pos}`, `{layer}_-1_{pos}` (error), `E_{token}_{pos}`, "
                                     "`{n_layers + 1}_{token}_{pos}` (logit)")
    feature: Optional[int] = None
    layer: str = Field(description="the block; \"E\" for token embeddings")
    ctx_idx: int = Field(description="the token position")
    feature_type: Literal["cross layer transcoder", "mlp reconstruction error", "embedding", "logit"]
    jsNodeId: str = ""
    clerp: str = Field("", description="the label (a feature's annotation or explanation; a logit's token and probability)")
    influence: Optional[float] = Field(None, description="cumulative influence fraction: pruning at threshold t keeps "
                                                         "the nodes at or below t")
    activation: Optional[float] = None
    token_prob: float = 0.0
    is_target_logit: bool = False
    feature_index: Optional[int] = Field(None, description="a feature's index in the dictionary's analyses and "
                                                           "annotations")


class GraphLink(BaseModel):
    source: str
    target: str
    weight: float = Field(description="the source's direct effect on the target")


class GraphQParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    pinnedIds: list[str] = Field(default_factory=list)
    supernodes: list[list[str]] = Field(default_factory=list, description="each [name, node_id, ...]")
    linkType: str = "both"
    clickedId: str = ""
    sg_pos: str = ""


class GraphMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    slug: str
    scan: str = Field("", description="the model")
    prompt: str
    prompt_tokens: list[str]
    node_threshold: Optional[float] = None
    scores: Optional[GraphScores] = None


class GraphReplacement(BaseModel):
    kind: str
    layers: Optional[list[int]] = None
    d_sae: Optional[int] = None


class GraphFile(BaseModel):
    metadata: GraphMetadata
    qParams: GraphQParams
    nodes: list[GraphNode]
    links: list[GraphLink]
    replacement: GraphReplacement = Field(description="the replacement model the graph was saved beside")


class SubgraphEdit(BaseModel):
    pinnedIds: list[str] = Field(default_factory=list, max_length=2000)
    supernodes: list[list[str]] = Field(default_factory=list, max_length=200, description="each [name, node_id, ...]")
    clickedId: str = Field("", max_length=200)


class GraphRequest(BaseModel):
    prompt: str = Field(min_length=1, description="the text whose next token the graph explains")
    slug: Optional[str] = Field(None, max_length=128, description="the file name (default: from the prompt's words)")
    logit_tokens: Optional[list[str]] = Field(None, max_length=20, description="output tokens to explain (single tokens); "
                                                                               "default: the most probable")
    max_n_logits: int = Field(10, ge=1, le=50)
    desired_logit_prob: float = Field(0.95, gt=0, le=1, allow_inf_nan=False)
    max_feature_nodes: Optional[int] = Field(None, ge=1, description="default and upper bound: "
                                                                      "GPT2DICT_GRAPH_MAX_FEATURE_NODES")
    node_threshold: float = Field(0.8, ge=0, le=1, allow_inf_nan=False)
    edge_threshold: float = Field(0.98, ge=0, le=1, allow_inf_nan=False)


class GraphJobStatus(BaseModel):
    id: str
    dictionary: str
    slug: str = Field(description="the graph's name once saved")
    prompt: str
    status: Literal["loading", "running", "saving", "done", "failed"]
    done: int = Field(description="rows computed (each one target node's edges)")
    total: int = Field(description="rows in all (0 until known)")
    error: Optional[str] = None
    seconds: float


class InterventionSpec(BaseModel):
    node_id: str = Field(description="a feature node of the graph")
    scale: float = Field(0.0, ge=-100, le=100, allow_inf_nan=False, description="its new activation is scale x its "
                                                                                 "activation on the prompt (0: ablated)")


class InterventionRequest(BaseModel):
    interventions: list[InterventionSpec] = Field(min_length=1, max_length=64)
    top_k: int = Field(10, ge=1, le=50)
    propagate: bool = Field(True, description="later features respond to the change (false: direct effects only)")


class TokenProbability(BaseModel):
    token_id: int
    token: str
    probability: float
    logit: float


class AppliedIntervention(BaseModel):
    layer: int
    position: int
    feature: int
    activation: float = Field(description="on the prompt")
    new_activation: float


class InterventionResponse(BaseModel):
    original: list[TokenProbability] = Field(description="the most probable next tokens without intervention")
    intervened: list[TokenProbability] = Field(description="the most probable next tokens with the interventions")
    applied: list[AppliedIntervention]


# -- explanations ------------------------------------------------------------------------------

Scorer = Literal["detection", "fuzzing"]


class Score(BaseModel):
    scorer: Scorer
    status: str = Field(description="ok, no_explanation or too_few_contexts (metrics null)")
    n_items: int = Field(description="questions asked")
    n_failed: int = Field(description="answers that could not be read")
    accuracy: Optional[float]
    balanced_accuracy: Optional[float] = Field(description="0.5 is chance")
    precision: Optional[float]
    recall: Optional[float]
    f1: Optional[float]
    auroc: Optional[float] = Field(description="null when the backend gave no yes/no probabilities")


class FeatureExplanation(BaseModel):
    set_id: int
    default: bool = Field(description="it belongs to the set shown by default (table, search)")
    explainer_model: str
    prompt_version: int
    set_created_at: str
    status: Literal["ok", "unparsable"]
    explanation: Optional[str] = Field(description="one short line; null when the answer could not be parsed")
    raw_response: str
    created_at: str
    n_shown: int = Field(description="contexts the explainer saw")
    n_held_out: int = Field(description="contexts kept for the scorers")
    scorer_model: Optional[str]
    scores: list[Score] = Field(description="from the set's newest score set that is not a control")


class Explainer(BaseModel):
    backend: Literal["local", "openai"]
    model: str
    scores: bool = Field(description="a new explanation is scored at once (GPT2DICT_EXPLAIN_SCORE)")


class FeatureExplanations(BaseModel):
    index: int
    explanations: list[FeatureExplanation] = Field(description="one per explanation set that has one, the default "
                                                               "set's first, then newest first")
    explainer: Explainer = Field(description="what POST .../explain would run")


class JobStatus(BaseModel):
    id: str
    kind: Literal["explain", "graph"]
    dictionary: str
    analysis: Optional[str] = Field(None, description="explain: the analysis")
    feature: Optional[int] = Field(None, description="explain: the feature")
    slug: Optional[str] = Field(None, description="graph: the graph's name once saved")
    prompt: Optional[str] = Field(None, description="graph: the prompt")
    status: Literal["queued", "running", "done", "failed"]
    stage: str = Field(description="what it is doing now")
    step: int = Field(description="steps done")
    steps: int
    error: Optional[str] = Field(description="why it failed (one sentence)")
    result: dict[str, Any] = Field(description="explain: explanation_set, explained, already_done, scorers; graph: slug")
    seconds: float = Field(description="since it was submitted (until it ended)")


class ExplanationMatch(BaseModel):
    index: int
    explanation: str
    highlighted: str = Field(description="the explanation with the matched words between [ and ]")
    rank: float = Field(description="bm25 (lower is better)")
    max_act: float
    density: float
    label: str = Field(description="the feature's label ('' when it has none)")
    detection: Optional[float] = Field(description="balanced accuracy of its detection score")
    fuzzing: Optional[float] = Field(description="balanced accuracy of its fuzzing score")


class ExplanationSearch(BaseModel):
    set_id: Optional[int] = Field(description="the explanation set searched (null: the analysis has none)")
    matches: list[ExplanationMatch] = Field(description="best first")


# -- comparison --------------------------------------------------------------------------------


class CompareSpace(BaseModel):
    model_name: str
    hook_name: str = Field(description="the hook read (a replacement model's first layer's)")
    hook_out: Optional[str] = Field(description="the hook written by a transcoder (null for an SAE)")
    layers: Optional[list[int]] = Field(description="a replacement model's covered layers")


class RunSpace(CompareSpace):
    dictionaries: list[str]


class ComparedDictionary(BaseModel):
    id: str
    architecture: str
    kind: str
    d_sae: int
    l0: Optional[float] = Field(description="x of the plots: its final evaluation's L0, else its core eval's")
    errors: list[str] = Field(description="evaluation files that cannot be read")


class ConfigDifference(BaseModel):
    field: str
    reference: Any = Field(description="the value in the reference config")
    value: Any = Field(description="the value in this config")


class SourceConfig(BaseModel):
    source: str = Field(description="an eval type (`core`, `absorption_first_letter`, `sparse_probing`, "
                                    "`synthetic_recovery`) or `explanations`")
    dictionaries: list[str] = Field(description="the dictionaries whose results were computed with this config")
    reference: bool = Field(description="the config of most dictionaries: only its results are plotted")
    config: dict[str, Any] = Field(description="the eval_config (explanations: the explainer's and scorers' settings)")
    differences: list[ConfigDifference] = Field(description="fields that differ from the reference config")


class MetricRow(BaseModel):
    source: str = Field(description="`final` (config.json metrics), an eval type, or `explanations`")
    metric: str = Field(description="its key: `l0`, `<category>.<metric>` of an eval, `detection` / `fuzzing` / "
                                    "`interpretability` of explanations")
    values: list[Optional[float]] = Field(description="one per dictionary, in `dictionaries` order")
    excluded: list[bool] = Field(description="per dictionary: computed with another config than the reference")


class PlotPoint(BaseModel):
    dictionary: str
    x: float = Field(description="L0")
    y: float
    pareto: bool = Field(description="on the frontier: no other point has an L0 as low and a value as good")


class ComparePlot(BaseModel):
    key: str
    title: str
    y_label: str
    source: str
    metric: str
    higher_is_better: bool
    points: list[PlotPoint]
    excluded: list[str] = Field(description="dictionaries left out: their result has another config")
    missing: list[str] = Field(description="dictionaries without this metric (or without L0)")


class Comparison(BaseModel):
    run: Optional[str]
    space: CompareSpace = Field(description="the model and hook of the dictionaries compared")
    spaces: list[RunSpace] = Field(description="a run's groups of dictionaries by model and hook, most first "
                                               "(the `space` parameter picks one); the compared ones otherwise")
    dictionaries: list[ComparedDictionary]
    candidates: list[str] = Field(description="other dictionaries of the same model and hook in the results folder")
    configs: list[SourceConfig]
    metrics: list[MetricRow]
    plots: list[ComparePlot]
