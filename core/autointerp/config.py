"""Settings of auto-interpretation: which language model answers (`BackendConfig`), how features are
explained (`ExplainConfig`) and how explanations are scored (`ScoreConfig`).

The fields that change what an explanation or a score *is* (models, prompt version, sample counts,
seed, ...) form the settings of an explanation set or score set in `explanations.sqlite`; a rerun
with the same settings resumes the set, different settings make a new one. Fields that only change
how fast or where the work runs (batch sizes, concurrency, timeouts, budgets, the device) do not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..config import OFFLINE_MODEL_NAME
from ..errors import ConfigError
from .prompts import MARK_THRESHOLD

BACKEND_KINDS = ("local", "openai")
PROBABILITY_SOURCES = ("logprobs", "systemone", "none")
SCORERS = ("detection", "fuzzing")


def _positive(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or (value < 0 if allow_zero else value <= 0):
        raise ConfigError(f"{owner}.{name} is {value!r}; it must be a number {'>= 0' if allow_zero else '> 0'}.")


@dataclass(frozen=True)
class BackendConfig:
    """The language model that writes explanations or answers the scorers' questions."""

    kind: Literal["local", "openai"] = "local"
    """`local`: a Hugging Face model run in this process (batched generation). `openai`: any
    OpenAI-compatible chat-completions server (vLLM, `transformers serve`, Ollama, hosted APIs)."""
    model: Optional[str] = None
    """local: a Hugging Face model folder or hub name; None: the offline SmolLM2-135M-Instruct.
    openai: the model name the server knows (required)."""
    base_url: Optional[str] = None
    """openai: the server's API root, e.g. `http://127.0.0.1:8000/v1` (vLLM, `transformers serve`),
    `http://127.0.0.1:11434/v1` (Ollama), `https://api.openai.com/v1`. None: $OPENAI_BASE_URL."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: the *name* of the environment variable that holds the API key (the key itself is never
    stored in a config, a results file or a log). Servers that need no key accept any."""
    probabilities: Literal["logprobs", "systemone", "none"] = "logprobs"
    """openai: where yes/no probabilities (AUROC) come from. `logprobs`: the chat completion's
    top_logprobs (OpenAI, vLLM, Ollama); servers that ignore them (`transformers serve`) leave AUROC
    unavailable. `systemone`: `transformers serve`'s /v1/systemone endpoint (a yes/no probability
    from the next-token logits). `none`: read only the answer text."""
    concurrency: int = 8
    """openai: requests in flight at once."""
    timeout_s: float = 120.0
    """openai: seconds one request may take."""
    max_retries: int = 4
    """openai: retries (with exponential backoff, honouring Retry-After) on connection errors, 408,
    409, 429 and 5xx answers."""
    batch_size: int = 8
    """local: prompts per forward / generate call."""
    prefix_cache: bool = True
    """local: run the prompts' shared part (system message, worked example) once and reuse its KV cache."""
    device: str = "auto"
    """local: `auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`, `mps`."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """local: weights' dtype (float32 on CPU)."""
    cache_dir: str = "~/.cache/gpt2_dictionary"
    """local: where the offline model is converted once."""

    def validate(self) -> "BackendConfig":
        if self.kind not in BACKEND_KINDS:
            raise ConfigError(f"backend.kind is {self.kind!r}; allowed values: {', '.join(map(repr, BACKEND_KINDS))}.")
        if self.probabilities not in PROBABILITY_SOURCES:
            raise ConfigError(f"backend.probabilities is {self.probabilities!r}; allowed values: "
                              f"{', '.join(map(repr, PROBABILITY_SOURCES))}.")
        if self.kind == "openai" and not self.model:
            raise ConfigError("backend.model is not set; an OpenAI-compatible server needs the model's name "
                              "(GET <base_url>/models lists them).")
        for name in ("concurrency", "timeout_s", "batch_size"):
            _positive("backend", name, getattr(self, name))
        _positive("backend", "max_retries", self.max_retries, allow_zero=True)
        return self

    @property
    def model_name(self) -> str:
        """The model's name as recorded with the results."""
        return self.model or OFFLINE_MODEL_NAME


@dataclass(frozen=True)
class ExplainConfig:
    """How each feature is explained."""

    n_top_shown: int = 10
    """Top-activating contexts shown to the explainer (the strongest of those not held out)."""
    n_interval_shown: int = 10
    """Contexts from across the activation range shown to the explainer (spread over the intervals)."""
    held_out_fraction: float = 0.5
    """Share of each sample group (top and every interval) kept away from the explainer for the
    scorers, chosen at random (seeded) per feature and group."""
    context_left: int = 16
    context_right: int = 4
    """Tokens shown left / right of each context's activating token (at most what the analysis kept)."""
    max_new_tokens: int = 40
    temperature: float = 0.0
    """0: greedy decoding (reproducible)."""
    seed: int = 0
    """Seeds the held-out split, the choice of features when a number is asked for, and sampling."""
    features_per_step: int = 8
    """Features explained per step; each step's results are committed together (a killed run loses at
    most the step in flight)."""
    max_total_tokens: Optional[int] = None
    """Token budget (prompt + completion tokens) of one call: it stops after the step that reaches it."""

    def validate(self) -> "ExplainConfig":
        for name in ("n_top_shown", "n_interval_shown", "context_left", "context_right"):
            _positive("explain", name, getattr(self, name), allow_zero=True)
        if self.n_top_shown + self.n_interval_shown == 0:
            raise ConfigError("explain.n_top_shown and explain.n_interval_shown are both 0; show the explainer "
                              "at least one context.")
        if not 0 < self.held_out_fraction < 1:
            raise ConfigError(f"explain.held_out_fraction is {self.held_out_fraction!r}; it must lie strictly "
                              "between 0 and 1.")
        _positive("explain", "max_new_tokens", self.max_new_tokens)
        _positive("explain", "temperature", self.temperature, allow_zero=True)
        _positive("explain", "features_per_step", self.features_per_step)
        if self.max_total_tokens is not None:
            _positive("explain", "max_total_tokens", self.max_total_tokens)
        return self

    def settings(self) -> dict[str, Any]:
        """The fields that define an explanation set (not the step size nor the budget)."""
        out = dataclasses.asdict(self)
        for name in ("features_per_step", "max_total_tokens"):
            out.pop(name)
        return out


@dataclass(frozen=True)
class ScoreConfig:
    """How explanations are scored on the held-out contexts."""

    scorers: tuple[Literal["detection", "fuzzing"], ...] = SCORERS
    n_activating: int = 6
    """Held-out activating contexts per feature (each scorer uses the same ones, spread over the
    activation range)."""
    n_random_negatives: int = 3
    """Detection: contexts of random other features on which this feature does not fire."""
    n_hard_negatives: int = 3
    """Detection: contexts of the features whose decoder directions are closest to this one's
    (cosine similarity), on which this feature does not fire."""
    n_neighbours: int = 10
    """Detection: nearest features (by decoder direction) whose top contexts are hard-negative candidates."""
    fuzz_threshold: float = MARK_THRESHOLD
    """Fuzzing: tokens whose activation is at least this fraction of the context's maximum are the
    correctly marked ones (delphi's threshold)."""
    control: Literal["none", "shuffled"] = "none"
    """`shuffled`: score each feature with another feature's explanation (a seeded derangement), the
    control that must land near chance."""
    seed: int = 0
    features_per_step: int = 8
    max_total_tokens: Optional[int] = None
    """Token budget of one call (prompt + completion tokens); it stops after the step that reaches it."""

    def validate(self) -> "ScoreConfig":
        if not self.scorers or any(s not in SCORERS for s in self.scorers):
            raise ConfigError(f"score.scorers is {self.scorers!r}; choose among {', '.join(map(repr, SCORERS))}.")
        _positive("score", "n_activating", self.n_activating)
        for name in ("n_random_negatives", "n_hard_negatives", "n_neighbours"):
            _positive("score", name, getattr(self, name), allow_zero=True)
        if "detection" in self.scorers and self.n_random_negatives + self.n_hard_negatives == 0:
            raise ConfigError("score.n_random_negatives and score.n_hard_negatives are both 0; detection needs "
                              "non-activating contexts.")
        if not 0 < self.fuzz_threshold <= 1:
            raise ConfigError(f"score.fuzz_threshold is {self.fuzz_threshold!r}; it must lie in (0, 1].")
        if self.control not in ("none", "shuffled"):
            raise ConfigError(f"score.control is {self.control!r}; allowed values: 'none', 'shuffled'.")
        _positive("score", "features_per_step", self.features_per_step)
        if self.max_total_tokens is not None:
            _positive("score", "max_total_tokens", self.max_total_tokens)
        return self

    def settings(self) -> dict[str, Any]:
        """The fields that define a score set. Not the scorers: each scorer's rows stand on their own, so
        adding fuzzing later completes the same set."""
        out = dataclasses.asdict(self)
        for name in ("scorers", "features_per_step", "max_total_tokens"):
            out.pop(name)
        return out


__all__ = ["BackendConfig", "ExplainConfig", "ScoreConfig", "BACKEND_KINDS", "PROBABILITY_SOURCES", "SCORERS"]
