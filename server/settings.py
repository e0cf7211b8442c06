"""Server settings, read from `GPT2DICT_*` environment variables and a `.env` file.

Copy `server/.env.example` to `.env` in the folder the server is started from (the repository
root) to set them there; real environment variables win over the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.autointerp.config import BackendConfig
from core.errors import ConfigError


class Settings(BaseSettings):
    """Everything the server can be told; relative paths here are relative to the working directory (a
    relative model path inside a dictionary's config.json is relative to `results_dir` instead)."""

    model_config = SettingsConfigDict(env_prefix="GPT2DICT_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    results_dir: Path = Path("results")
    """Folder scanned for runs (`<run>/`), their dictionaries (`<run>/dictionaries/<name>/`, older runs'
    `<run>/dictionary/`) and analyses (`<dictionary>/analysis/<analysis>/features.sqlite`)."""
    cors_origins: str = "http://localhost:24576,http://127.0.0.1:24576"
    """Comma-separated origins allowed to call the API from a browser (the UI dev server); `*` allows any."""
    device: str = "cpu"
    """Device for on-demand inference (custom text): cpu, cuda, cuda:N, mps."""
    max_text_chars: int = Field(4000, gt=0)
    """Longer custom texts are refused with HTTP 413."""
    max_text_tokens: int = Field(512, gt=0)
    """Custom texts are cut to this many tokens (the BOS the model reads first not counted, and never more
    than the model's context length); the answer then says `truncated: true`."""
    model_cache_size: int = Field(1, ge=1)
    """How many (language model, dictionary) pairs stay loaded for custom text, least recently used evicted;
    also how many may be loading at once (more cold dictionaries get HTTP 503)."""
    max_body_bytes: int = Field(65536, gt=0)
    """Request bodies larger than this are refused with HTTP 413 before they are parsed (by Content-Length, or
    as a chunked body streams in). Custom text takes up to 4 bytes a character (6 for JSON-escaped control
    characters), so keep it well above 4 x max_text_chars."""
    inference_concurrency: int = Field(1, ge=1)
    """Custom-text requests computed at once; further ones are answered HTTP 503 with Retry-After at once
    instead of queueing, so browsing stays fast while the model runs."""
    inference_threads: int = Field(0, ge=0)
    """torch threads per custom-text computation; 0: one less than the CPU cores (at least 1), so browsing
    requests keep a core while the model runs."""
    model_load_failure_ttl_s: float = Field(60.0, ge=0, allow_inf_nan=False)
    """A dictionary whose model or weights failed to load answers that error for this many seconds before a new
    load is tried (saving the dictionary again retries at once)."""
    steer_max_new_tokens: int = Field(64, gt=0)
    """Steering generates at most this many tokens per request (a request asking for more is a 422)."""
    steer_max_prompt_tokens: int = Field(128, gt=0)
    """Steering prompts are cut to their last this many tokens (every new token reruns the whole sequence)."""
    graph_max_prompt_tokens: int = Field(64, gt=0)
    """Attribution graphs computed in the viewer take prompts of at most this many tokens (longer: HTTP 422)."""
    graph_max_feature_nodes: int = Field(4096, gt=0)
    """Feature nodes of a graph computed in the viewer: the default and the most a request may ask for."""
    graph_max_edge_bytes: int = Field(2 * 2**30, gt=0)
    """Memory a graph computed in the viewer may take for its edges; a prompt needing more is refused (HTTP 422)."""
    explain_backend: Literal["local", "openai"] = "local"
    """What explains a feature when the viewer asks ("explain this feature"): `local`, a Hugging Face chat model in
    the server's process (default the offline SmolLM2-135M-Instruct, on `device`), or `openai`, any
    OpenAI-compatible server (vLLM, Ollama, `transformers serve`, hosted APIs; core.autointerp.BackendConfig)."""
    explain_model: Optional[str] = None
    """local: a model folder or hub name (unset: the offline SmolLM2-135M-Instruct); openai: the model's name (required)."""
    explain_base_url: Optional[str] = None
    """openai: the server's API root, e.g. http://127.0.0.1:8000/v1 (unset: $OPENAI_BASE_URL)."""
    explain_api_key_env: str = "OPENAI_API_KEY"
    """openai: the name of the environment variable holding the API key (the key is never written anywhere)."""
    explain_probabilities: Literal["logprobs", "systemone", "none"] = "logprobs"
    """openai: where the scorers' yes/no probabilities (AUROC) come from; see core.autointerp.BackendConfig."""
    explain_score: bool = True
    """Score a feature's new explanation (fuzzing and detection on held-out contexts) right after explaining it."""
    allowed_hosts: str = ""
    """Comma-separated host names (without port) accepted in the Host header besides localhost and IP addresses,
    e.g. the name of this machine or of a reverse proxy; `*` accepts any. Guards against DNS rebinding."""
    ui_dist: Path = Path("ui/dist")
    """The built UI (`cd ui && bun run build`); served on every non-/api path when it exists."""

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not (value in ("cpu", "mps", "cuda") or value.startswith("cuda:")):
            raise ValueError(f"GPT2DICT_DEVICE is {value!r}; allowed values: 'cpu', 'cuda', 'cuda:N', 'mps'.")
        return value

    @field_validator("explain_model", "explain_base_url")
    @classmethod
    def _unset_when_empty(cls, value: Optional[str]) -> Optional[str]:
        return value or None  # `GPT2DICT_EXPLAIN_MODEL=` in a .env file means "not set"

    @property
    def explain_backend_config(self) -> BackendConfig:
        """The explainer's and scorers' language model (GPT2DICT_EXPLAIN_*)."""
        return BackendConfig(kind=self.explain_backend, model=self.explain_model, base_url=self.explain_base_url,
                             api_key_env=self.explain_api_key_env, probabilities=self.explain_probabilities,
                             device=self.device)

    @model_validator(mode="after")
    def _check_explainer(self) -> "Settings":
        try:
            self.explain_backend_config.validate()
        except ConfigError as e:
            raise ValueError(f"GPT2DICT_EXPLAIN_*: {e}") from None
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: str) -> str:
        from .guards import host_name

        bad = [h.strip() for h in value.split(",") if h.strip() and h.strip() != "*" and host_name(h) is None]
        if bad:
            raise ValueError(f"GPT2DICT_ALLOWED_HOSTS has {', '.join(map(repr, bad))}; give host names such as "
                             "'viewer.example.org' (no scheme, path or spaces), comma-separated, or '*'.")
        return value

    @property
    def allowed_host_list(self) -> list[str]:
        return [host.strip() for host in self.allowed_hosts.split(",") if host.strip()]
