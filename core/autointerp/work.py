"""What explaining and scoring share: which features, the backend, and the loop of steps with its
progress bar and token budget."""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

from ..errors import ConfigError
from ..store import resolve_store_path
from .backends import Backend, open_backend
from .config import BackendConfig
from .samples import seeded

FeatureChoice = Union[None, int, Iterable[int]]
"""None: every candidate feature; N: N of them chosen at random (seeded); a list: those features."""


def analysis_paths(analysis: str | Path) -> tuple[Path, Path]:
    """(analysis folder, its features.sqlite) of an analysis folder or store file."""
    store = resolve_store_path(analysis)
    return store.parent, store


def choose_features(candidates: Sequence[int], features: FeatureChoice, *, d_sae: int, seed: int,
                    what: str) -> list[int]:
    """The features to work on, in index order: all `candidates`, `features` of them chosen at random
    (an int), or the listed ones (each must be a feature of the dictionary; those outside
    `candidates` are left out, e.g. dead features)."""
    if features is None:
        return sorted(candidates)
    if isinstance(features, int) and not isinstance(features, bool):
        if features <= 0:
            raise ConfigError(f"features is {features}; ask for at least 1 feature, or None for all {what}.")
        chosen = list(sorted(candidates))
        seeded(seed, "features").shuffle(chosen)
        return sorted(chosen[:features])
    wanted = sorted({operator.index(f) for f in features})
    bad = [f for f in wanted if not 0 <= f < d_sae]
    if bad:
        raise ConfigError(f"features {bad[:5]} do not exist; this dictionary has features 0..{d_sae - 1}.")
    allowed = set(candidates)
    return [f for f in wanted if f in allowed]


@contextlib.contextmanager
def backend_of(backend: Union[Backend, BackendConfig, None]) -> Iterator[Backend]:
    """A Backend instance as given (left open), or one opened from a config (default: the local
    offline model) and closed afterwards."""
    if isinstance(backend, Backend):
        yield backend
        return
    opened = open_backend(backend or BackendConfig())
    try:
        yield opened
    finally:
        opened.close()


def steps(items: Sequence[int], size: int) -> list[list[int]]:
    """`items` cut into consecutive steps of `size`: the same steps whatever is already done, so a
    resumed run batches exactly as an uninterrupted one."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


@dataclass
class Budget:
    """Tokens used so far against an optional limit."""

    limit: Optional[int]
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def used(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens


def progress_bar(total: int, desc: str, enabled: bool):
    """Features done of `total`: features/s and ETA from tqdm, tokens used in the postfix."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="feature", disable=not enabled, dynamic_ncols=True)


__all__ = ["Budget", "FeatureChoice", "analysis_paths", "backend_of", "choose_features", "progress_bar", "steps"]
