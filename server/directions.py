"""Search by direction: a feature's nearest features by decoder cosine similarity.

Decoder rows live in the space the dictionary writes to (raw activations of its hook, or of a
transcoder's out-hook), so two dictionaries are comparable when they are on the same model, read
the same hook and write the same one. The unit-normalized decoder of a dictionary ([d_sae, d_out],
float32 on CPU) is computed once from its weights (`load_dictionary`, so every format the library
reads works) and cached, keyed by the dictionary folder and its config's file signature, so a
re-saved dictionary is read afresh; the cache holds at most `max_bytes` of decoders, least
recently used dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

import torch

from core.sae import load_dictionary

from .results import DictionaryInfo

DEFAULT_CACHE_BYTES = 1 << 30


class Neighbour(NamedTuple):
    index: int
    cosine: float


def decoder_space(info: DictionaryInfo) -> tuple:
    """What makes decoder directions comparable: model, hook read, hook written."""
    c = info.config
    if "hook_name" not in c:  # a replacement model: every layer's hooks
        return c["model_name"], tuple(c.get("hook_names") or ()), tuple(c.get("hooks_out") or ())
    return c["model_name"], c["hook_name"], c.get("hook_out")


def comparable(a: DictionaryInfo, b: DictionaryInfo) -> bool:
    return decoder_space(a) == decoder_space(b)


class DecoderCache:
    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._decoders: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}

    def normalized(self, info: DictionaryInfo) -> torch.Tensor:
        """[d_sae, d_out] float32 unit rows (a zero row stays zero)."""
        key = (str(info.folder.resolve()), info.signature)
        with self._lock:
            if key in self._decoders:
                self._decoders.move_to_end(key)
                return self._decoders[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one load per dictionary; others wait for it rather than loading again
            with self._lock:
                if key in self._decoders:
                    return self._decoders[key]
            w_dec = load_dictionary(info.folder, device="cpu").W_dec.detach().float()
            decoder = (w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)).contiguous()
            with self._lock:
                self._loading.pop(key, None)
                self._decoders[key] = decoder
                total = sum(d.numel() * d.element_size() for d in self._decoders.values())
                while total > self.max_bytes and len(self._decoders) > 1:
                    _, dropped = self._decoders.popitem(last=False)
                    total -= dropped.numel() * dropped.element_size()
        return decoder

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
