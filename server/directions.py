"""Search by direction: a feature's nearest features by decoder cosine similarity.

Decoder rows live in the space the dictionary writes to (raw activations of its hook, or of a
transcoder's out-hook), so two dictionaries are comparable when they are on the same model, read
the same hook and write the same one. The unit-normalized decoder of a dictionary ([d_sae, d_out],
float32 on CPU) is computed once from its weights (`load_dictionary`, so every format the library
reads works) and cached (server/weights.py: a re-saved dictionary is read afresh; at most
`max_bytes` of decoders, least recently used dropped first).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from core.sae import load_dictionary

from .results import DictionaryInfo
from .weights import WeightsCache

DEFAULT_CACHE_BYTES = 1 << 30


class Neighbour(NamedTuple):
    index: int
    cosine: float


def decoder_space(info: DictionaryInfo) -> tuple:
    """What makes decoder directions comparable: model, hook read, hook written."""
    c = info.config
    if info.layers:  # a replacement model: every layer's hooks
        return c["model_name"], tuple(c.get("hook_names") or ()), tuple(c.get("hooks_out") or ())
    return c["model_name"], c["hook_name"], c.get("hook_out")


def comparable(a: DictionaryInfo, b: DictionaryInfo) -> bool:
    return decoder_space(a) == decoder_space(b)


def _normalized_decoder(info: DictionaryInfo) -> torch.Tensor:
    w_dec = load_dictionary(info.folder, device="cpu").W_dec.detach().float()
    return (w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)).contiguous()


class DecoderCache:
    """Unit-normalized decoders, computed once per dictionary (server/weights.py)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._cache = WeightsCache(_normalized_decoder, lambda d: d.numel() * d.element_size(), max_bytes)

    def normalized(self, info: DictionaryInfo) -> torch.Tensor:
        """[d_sae, d_out] float32 unit rows (a zero row stays zero)."""
        return self._cache.get(info)

    def nearest(self, source: DictionaryInfo, index: int, target: DictionaryInfo, k: int) -> list[Neighbour]:
        """The k features of `target` whose decoder rows are closest in cosine to feature `index` of
        `source` (the feature itself left out when both are one dictionary), most similar first."""
        query = self.normalized(source)[index]
        decoder = self.normalized(target)
        if decoder.shape[1] != query.shape[0]:
            raise ValueError(f"The decoders have widths {query.shape[0]} and {decoder.shape[1]}; they do not write "
                             "to the same space.")
        cosines = decoder @ query
        same = source.folder.resolve() == target.folder.resolve()
        if same:
            cosines[index] = -float("inf")
        top = cosines.topk(min(k, decoder.shape[0] - int(same)))
        return [Neighbour(i, v) for i, v in zip(top.indices.tolist(), top.values.tolist())]
