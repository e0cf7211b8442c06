"""Pydantic models of the JSON shapes in server/API.md (they document /docs and validate answers)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_INT64 = 2**63 - 1
"""Largest index or offset accepted (SQLite's integers are 64-bit); larger ones are a 422, not a crash."""


class Histogram(BaseModel):
    edges: list[float] = Field(description="n + 1 bin edges")
    counts: list[int] = Field(description="n counts")


class FeatureStats(BaseModel):
    index: int
    act_count: int = Field(description="analyzed tokens on which the feature was active (> 0)")
    density: float = Field(description="act_count / n_tokens")
    max_act: float
    mean_act: float = Field(description="mean activation over the tokens where the feature was active")


class Sample(BaseModel):
    token_ids: list[int]
    tokens: list[str] = Field(description="vocabulary strings, one per token (' the' keeps its space)")
    acts: list[float] = Field(description="the feature's activation on each token")
    max_pos: int = Field(description="position of the token the sample was chosen for")
    max_act: float


class Group(BaseModel):
    name: str = Field(description='"interval_<i>", interval_0 holds the lowest activations')
    lower: Optional[float]
    upper: Optional[float]
    samples: list[Sample]


class LogitToken(BaseModel):
    token_id: int
    token: str
    value: float


class LogitLens(BaseModel):
    positive: list[LogitToken] = Field(description="tokens the feature's decoder direction promotes most, strongest first")
    negative: list[LogitToken] = Field(description="tokens it suppresses most, strongest first")
    note: Optional[str] = Field(description="why the logit lens is missing, or how to read it")


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


class DictionarySummary(BaseModel):
    name: str = Field(description="its id: `<run>:<dictionary>` (results/<run>/dictionaries/<dictionary>/), or "
                                  "`<run>` for an older run's only dictionary (results/<run>/dictionary/)")
    run: str = Field(description="the training run (experiment folder) it belongs to")
    model_name: str
    hook_name: str = Field(description="the hook it encodes (a transcoder's in-hook)")
    hook_out: Optional[str] = Field(None, description="a transcoder's out-hook, which it reconstructs; null for an SAE")
    architecture: str
    d_in: int
    d_sae: int
    metrics: Metrics
    analyses: list[str] = Field(description="names of the complete analyses, sorted")


class DictionaryDetail(DictionarySummary):
    config: dict[str, Any] = Field(description="the dictionary's config.json")
    analysis_summaries: list[AnalysisSummary]


class DictionaryList(BaseModel):
    dictionaries: list[DictionarySummary]


class Health(BaseModel):
    status: Literal["ok"]
    results_dir: str
    n_dictionaries: int


class FeaturePage(BaseModel):
    total: int = Field(description="features matching the filters")
    offset: int
    limit: int
    features: list[FeatureStats]


class FeatureDetail(FeatureStats):
    d_sae: int
    histogram: Histogram = Field(description="histogram of the feature's nonzero activations")
    logit_lens: LogitLens
    top: list[Sample] = Field(description="top-activating contexts, highest first")
    intervals: list[Group] = Field(description="contexts sampled per activation interval, highest interval first")


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
