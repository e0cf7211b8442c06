"""The contexts auto-interpretation shows: read from the feature store, cropped, split into what the
explainer sees and what is held out for the scorers, and marked for fuzzing.

A context is referred to by its place in the feature store: `[group, rank]` among a feature's own
samples ("top" or "interval_<i>"), `[feature, group, rank]` for another feature's (detection's
negatives). Every random choice is seeded by (seed, feature, purpose), so it does not depend on
which other features a run handles or in which order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence, TypeVar

from ..store import FeatureStore, Sample

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    feature: int
    """The feature whose stored sample this is."""
    group: str
    rank: int
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    """`feature`'s activation on each token (of the cropped window)."""
    max_pos: int
    """The activating token's position in the cropped window."""

    @property
    def ref(self) -> list:
        """[group, rank]: where it is among its feature's samples."""
        return [self.group, self.rank]

    @property
    def full_ref(self) -> list:
        """[feature, group, rank]."""
        return [self.feature, self.group, self.rank]


def seeded(seed: int, *parts) -> random.Random:
    """A random generator for one purpose (e.g. ("held-out", feature, group)), independent of any other."""
    return random.Random(":".join(map(str, (seed, *parts))))


def crop(feature: int, group: str, rank: int, sample: Sample, left: int, right: int) -> Context:
    """`sample` cut to `left` tokens before and `right` after its activating token."""
    start = max(0, sample.max_pos - left)
    end = min(len(sample.token_ids), sample.max_pos + right + 1)
    return Context(feature, group, rank, sample.token_ids[start:end], sample.tokens[start:end],
                   sample.acts[start:end], sample.max_pos - start)


def feature_groups(store: FeatureStore, feature: int, left: int, right: int) -> dict[str, list[Context]]:
    """A feature's stored contexts by group, cropped: "top" first (strongest first), then the intervals
    from the highest to the lowest, each in rank order. Empty groups are left out."""
    record = store.get_feature(feature)
    groups = {"top": [crop(feature, "top", r, s, left, right) for r, s in enumerate(record.top)]}
    for group in record.intervals:  # highest interval first
        groups[group.name] = [crop(feature, group.name, r, s, left, right) for r, s in enumerate(group.samples)]
    return {name: contexts for name, contexts in groups.items() if contexts}


def round_robin(lists: Sequence[Sequence[T]], n: int) -> list[T]:
    """Up to `n` items taken one from each list in turn (in list order), so every list is represented."""
    out: list[T] = []
    depth = 0
    while len(out) < n and any(depth < len(items) for items in lists):
        for items in lists:
            if depth < len(items) and len(out) < n:
                out.append(items[depth])
        depth += 1
    return out


def split_contexts(groups: dict[str, list[Context]], *, feature: int, held_out_fraction: float, n_top: int,
                   n_interval: int, seed: int) -> tuple[list[Context], list[Context]]:
    """(shown, held_out): per group, a seeded random `held_out_fraction` of the contexts (rounded) is
    held out; the explainer is shown the strongest `n_top` remaining top contexts and `n_interval`
    remaining interval contexts spread over the intervals (highest first). Held-out contexts are
    never shown."""
    remaining: dict[str, list[Context]] = {}
    held_out: list[Context] = []
    for name, contexts in groups.items():
        order = list(range(len(contexts)))
        seeded(seed, "held-out", feature, name).shuffle(order)
        k = int(held_out_fraction * len(contexts) + 0.5)
        held_out += [contexts[i] for i in sorted(order[:k])]
        remaining[name] = [contexts[i] for i in sorted(order[k:])]
    shown = remaining.pop("top", [])[:n_top]
    shown += round_robin(list(remaining.values()), n_interval)
    return shown, held_out


def spread(contexts: Sequence[Context], n: int) -> list[Context]:
    """Up to `n` of `contexts` spread over their groups (top, then intervals highest first)."""
    by_group: dict[str, list[Context]] = {}
    for c in contexts:
        by_group.setdefault(c.group, []).append(c)
    return round_robin(list(by_group.values()), n)


def wrong_marks(acts: Sequence[float], threshold: float, n_marks: int, rng: random.Random) -> list[int]:
    """`n_marks` positions (fewer when the context lacks them) chosen at random among the tokens whose
    activation is below `threshold` times the context's largest: the mis-marked version of a context
    for fuzzing (delphi's `_prepare_text` with n_incorrect > 0, `delphi/scorers/classifier/sample.py`)."""
    top = max(acts, default=0.0)
    candidates = [i for i, a in enumerate(acts) if a < threshold * top]
    return sorted(rng.sample(candidates, min(n_marks, len(candidates))))


def n_wrong_marks(contexts: Sequence[Context]) -> int:
    """How many tokens a mis-marked context gets: the mean number of active tokens of the activating
    contexts, rounded up (delphi's `FuzzingScorer.mean_n_activations_ceil`)."""
    if not contexts:
        return 1
    return max(1, math.ceil(sum(sum(1 for a in c.acts if a > 0) for c in contexts) / len(contexts)))


__all__ = ["Context", "crop", "feature_groups", "n_wrong_marks", "round_robin", "seeded", "split_contexts", "spread",
           "wrong_marks"]
