"""Server settings, read from `GPT2DICT_*` environment variables and a `.env` file.

Copy `server/.env.example` to `.env` in the folder the server is started from (the repository
root) to set them there; real environment variables win over the file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server can be told; relative paths are relative to the working directory."""

    model_config = SettingsConfigDict(env_prefix="GPT2DICT_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    results_dir: Path = Path("results")
    """Folder scanned for `<name>/dictionary/` and `<name>/analysis/<analysis>/features.sqlite`."""
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
    """How many (language model, dictionary) pairs stay loaded for custom text, least recently used evicted."""
    ui_dist: Path = Path("ui/dist")
    """The built UI (`cd ui && bun run build`); served on every non-/api path when it exists."""

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not (value in ("cpu", "mps", "cuda") or value.startswith("cuda:")):
            raise ValueError(f"GPT2DICT_DEVICE is {value!r}; allowed values: 'cpu', 'cuda', 'cuda:N', 'mps'.")
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]
