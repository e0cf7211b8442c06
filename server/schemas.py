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


class AnalysisSummary(BaseModel):
    name: str
    n_tokens: int
    n_features: int
    n_alive: int
    n_dead: int
    density_histogram: Histogram = Field(description="histogram of log10(density) over alive features")


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
    metrics: Metrics
    analyses: list[str] = Field(description="names of the complete analyses, sorted")
    graphs: int = Field(0, description="attribution graphs saved beside it (`<dictionary>/graphs/`)")
    source: Optional[Provenance] = Field(None, description="where an imported dictionary came from; null for one "
                                                           "trained here")


class DictionaryDetail(DictionarySummary):
    config: dict[str, Any] = Field(description="the dictionary's config.json")
    analysis_summaries: list[AnalysisSummary]


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


class FeaturePage(BaseModel):
    total: int = Field(description="features matching the filters")
    offset: int
    limit: int
    features: list[FeatureRow]


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

