"""On-demand inference for custom text: a small LRU cache of loaded (language model, dictionary) pairs.

Loading a model takes seconds (the offline SmolLM2 conversion about 30 s the first time), so pairs
are loaded on first use and kept; `model_cache_size` bounds how many stay in memory. Two
dictionaries of the same model share one loaded model. Loading is serialized by one lock (two
requests for a cold dictionary load it once); running a model is serialized per model because
TransformerBridge adds and removes hooks on shared modules while it runs.

The work runs in the caller's thread: the server's endpoints are plain `def`s, which FastAPI runs
in its threadpool, so the event loop keeps answering other requests meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from core.analysis import TextActivations, encode_text
from core.config import LanguageModelConfig
from core.lm import LanguageModel, load_language_model
from core.sae import SparseAutoencoder, load_dictionary

from .results import DictionaryInfo, FileSignature

log = logging.getLogger(__name__)


@dataclass
class LoadedPair:
    model: LanguageModel
    sae: SparseAutoencoder
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the model runs; shared by every pair that shares the model."""


class EncodedText(NamedTuple):
    activations: TextActivations
    """The dictionary's features on the text's tokens (sparse rows, BOS not included)."""
    truncated: bool
    """The text had more tokens than the limit and was cut."""


class ModelCache:
    def __init__(self, *, size: int = 1, device: str = "cpu") -> None:
        self.size = max(1, size)
        self.device = device
        self._pairs: OrderedDict[tuple[str, FileSignature], LoadedPair] = OrderedDict()
        self._load_lock = threading.Lock()

    def keys(self) -> list[str]:
        """Dictionary folders currently loaded, least recently used first."""
        return [key[0] for key in self._pairs]

    def get(self, info: DictionaryInfo) -> LoadedPair:
        key = (str(info.folder.resolve()), info.signature)  # a re-saved dictionary is loaded afresh
        with self._load_lock:
            pair = self._pairs.get(key)
            if pair is not None:
                self._pairs.move_to_end(key)
                return pair
            for old in [k for k in self._pairs if k[0] == key[0]]:
                del self._pairs[old]
            pair = self._load(info)
            self._pairs[key] = pair
            while len(self._pairs) > self.size:
                evicted, _ = self._pairs.popitem(last=False)
                log.info("Unloaded dictionary %s (model cache size %d).", evicted[0], self.size)
            return pair

    def _load(self, info: DictionaryInfo) -> LoadedPair:
        start = time.perf_counter()
        sae = load_dictionary(info.folder, device=self.device)
        model_name = str(info.config.get("model_name") or sae.model_name)
        shared = next((p for p in self._pairs.values() if p.model.name == model_name), None)
        if shared is not None:
            pair = LoadedPair(model=shared.model, sae=sae, lock=shared.lock)
        else:
            model = load_language_model(LanguageModelConfig(name=model_name), device=self.device)
            pair = LoadedPair(model=model, sae=sae)
        log.info("Loaded dictionary %r and model %r on %s in %.1f s.", info.name, model_name, self.device,
                 time.perf_counter() - start)
        return pair

    def encode(self, info: DictionaryInfo, text: str, *, max_tokens: int) -> EncodedText:
        """The dictionary's activations on every token of `text` (BOS not included), computed by
        `core.analysis.encode_text`, the analyzer's own function. The text is cut to `max_tokens`
        tokens, or to the model's context length when that is shorter."""
        pair = self.get(info)
        n_ctx = getattr(pair.model.bridge.cfg, "n_ctx", None)
        limit = max_tokens if not n_ctx else min(max_tokens, int(n_ctx) - 1)  # BOS takes one position
        with pair.lock, torch.no_grad():
            n_text_tokens = int(pair.model.tokenize(text, prepend_bos=False).shape[1])
            activations = encode_text(pair.model, pair.sae, text, max_tokens=limit)
        return EncodedText(activations, truncated=n_text_tokens > limit)
