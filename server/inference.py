"""On-demand inference for custom text: loading (language model, dictionary) pairs and running them.

Loading a model takes seconds (the offline SmolLM2 conversion about 30 s the first time), so pairs
are loaded on first use and kept; `model_cache_size` bounds how many stay in memory and how many
may load at once. Nothing waits for a load it did not start: the request that finds a dictionary
cold loads it in its own thread, and other requests for that dictionary get `InferenceBusy` (503)
until it is loaded, while every other dictionary keeps answering. Two dictionaries of the same
model share one loaded model (one load per model, under that model's own lock). A failed load is
remembered for `failure_ttl_s` and answered from memory, so a broken dictionary does not reload
its model on every request.

Running a model is serialized per model because TransformerBridge adds and removes hooks on
shared modules while it runs. How many requests compute at once is bounded by the app
(`GPT2DICT_INFERENCE_CONCURRENCY`), which turns the others away instead of queueing them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from core.analysis import TextActivations, encode_text, encoded_hooks
from core.config import OFFLINE_MODEL_NAME, ConfigError, LanguageModelConfig
from core.lm import HookNameError, LanguageModel, ModelLoadError, check_model_matches, load_language_model
from core.sae import DictionaryLoadError, SparseAutoencoder, load_dictionary
from core.steering import SteeringResult, steer

from .results import DictionaryInfo, FileSignature

log = logging.getLogger(__name__)

LOADING_RETRY_AFTER_S = 5
"""Retry-After of the answer to a request for a dictionary that is still loading."""
_USER_ERRORS = (ModelLoadError, DictionaryLoadError, ConfigError, HookNameError)
"""Load failures whose message tells the user what to fix; others are logged with their traceback."""


class InferenceBusy(RuntimeError):
    """The request cannot be served now, but can be soon (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelLoadFailed(RuntimeError):
    """The dictionary or its model cannot be loaded (HTTP 500); the message says why and what to do."""


def model_config_of(config: dict, results_root: Path) -> LanguageModelConfig:
    """The language model a dictionary was trained with, from its config.json: the key "model" (a
    `LanguageModelConfig`: name, cache_dir, dtype) when the trainer wrote it, else
    `LanguageModelConfig(name=config["model_name"])`. Relative local paths (name, cache_dir) are
    resolved against the results folder, never against the server's working directory."""
    saved = config.get("model")
    if saved is None:
        cfg = LanguageModelConfig(name=config["model_name"])
    else:
        cfg = LanguageModelConfig.from_dict(saved)
        wrong = [f.name for f in dataclasses.fields(cfg) if not isinstance(getattr(cfg, f.name), str)
                 and not (getattr(cfg, f.name) is None and f.default is None)]  # optional fields may be null
        if wrong:
            raise ConfigError(f"The dictionary's config.json has a \"model\" whose {', '.join(wrong)} is not a "
                              "string; save the dictionary again.")
    cfg.validate()
    return dataclasses.replace(cfg, name=_local_model_name(cfg.name, results_root),
                               cache_dir=str(_under(results_root, cfg.cache_dir)))


def _under(root: Path, path: str) -> Path:
    local = Path(path).expanduser()
    return local if local.is_absolute() else root / local


def _local_model_name(name: str, results_root: Path) -> str:
    """An absolute folder, `results_root/name` when that exists, or the hub name unchanged."""
    if name == OFFLINE_MODEL_NAME or Path(name).expanduser().is_absolute():
        return name
    candidate = results_root / name
    if candidate.exists() or name.startswith("."):
        return str(candidate)
    if Path(name).exists():  # would be found relative to the working directory: refuse, say where to put it
        raise ModelLoadError(f"Model {name!r} is a relative path; the server resolves those against the results "
                             f"folder, and {candidate} does not exist. Move the model folder there, or save the "
                             "dictionary with an absolute model path.")
    return name


@dataclass(eq=False)
class LoadedModel:
    model: LanguageModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the model runs; shared by every dictionary of this model."""


@dataclass
class LoadedPair:
    loaded_model: LoadedModel
    sae: SparseAutoencoder

    @property
    def model(self) -> LanguageModel:
        return self.loaded_model.model

    @property
    def lock(self) -> threading.Lock:
        return self.loaded_model.lock


class EncodedText(NamedTuple):
    activations: TextActivations
    """The dictionary's features on the text's tokens (sparse rows, BOS not included)."""
    truncated: bool
    """The text had more tokens than the limit and was cut."""


class ModelCache:
    def __init__(self, *, size: int = 1, device: str = "cpu", results_root: Path = Path("results"),
                 failure_ttl_s: float = 60.0) -> None:
        self.size = max(1, size)
        self.device = device
        self.results_root = Path(results_root)
        self.failure_ttl_s = failure_ttl_s
        self._lock = threading.Lock()  # guards the fields below; never held while loading or running
        self._pairs: OrderedDict[tuple[str, FileSignature], LoadedPair] = OrderedDict()
        self._loading: set[tuple[str, FileSignature]] = set()
        self._failures: dict[tuple[str, FileSignature], tuple[float, str]] = {}  # key -> (until, message)
        # Models in use by a loaded or loading pair (weak: an evicted model is freed), and one load
        # lock per model so two dictionaries of one model load it once.
        self._models: weakref.WeakValueDictionary[tuple, LoadedModel] = weakref.WeakValueDictionary()
        self._model_locks: dict[tuple, threading.Lock] = {}

    def keys(self) -> list[str]:
        """Dictionary folders currently loaded, least recently used first."""
        with self._lock:
            return [key[0] for key in self._pairs]

    @staticmethod
    def _key(info: DictionaryInfo) -> tuple[str, FileSignature]:
        return str(info.folder.resolve()), info.signature  # a re-saved dictionary is loaded afresh

    def loaded(self, info: DictionaryInfo) -> LoadedPair | None:
        """The loaded pair of `info`, or None when it is cold; raises what `get` raises for a dictionary
        that is loading or failed. Never waits, so the event loop may call it."""
        with self._lock:
            return self._lookup(self._key(info), info)

    def get(self, info: DictionaryInfo) -> LoadedPair:
        """The loaded pair of `info`, loading it in this thread when it is cold.

        InferenceBusy when another request is loading it or `size` loads are under way;
        ModelLoadFailed when it failed to load less than `failure_ttl_s` ago, or fails now.
        """
        key = self._key(info)
        with self._lock:
            pair = self._lookup(key, info)
            if pair is not None:
                return pair
            if len(self._loading) >= self.size:
                raise InferenceBusy(f"{len(self._loading)} other dictionaries are being loaded "
                                    f"(GPT2DICT_MODEL_CACHE_SIZE is {self.size}); retry in a few seconds.",
                                    LOADING_RETRY_AFTER_S)
            self._loading.add(key)
        try:
            pair = self._load(info)
        except Exception as e:
            message = self._failure_message(info, e)
            with self._lock:
                self._loading.discard(key)
                self._failures[key] = (time.monotonic() + self.failure_ttl_s, message)
            raise ModelLoadFailed(message) from None
        with self._lock:
            self._loading.discard(key)
            self._failures.pop(key, None)
            for old in [k for k in self._pairs if k[0] == key[0]]:
                del self._pairs[old]
            self._pairs[key] = pair
            while len(self._pairs) > self.size:
                evicted, _ = self._pairs.popitem(last=False)
                log.info("Unloaded dictionary %s (model cache size %d).", evicted[0], self.size)
        return pair

    def _lookup(self, key: tuple[str, FileSignature], info: DictionaryInfo) -> LoadedPair | None:
        """Under self._lock: the loaded pair, None when cold, or the reason it cannot be had now."""
        pair = self._pairs.get(key)
        if pair is not None:
            self._pairs.move_to_end(key)
            return pair
        failure = self._failures.get(key)
        if failure is not None and time.monotonic() < failure[0]:
            raise ModelLoadFailed(failure[1])
        if key in self._loading:
            raise InferenceBusy(f"Dictionary {info.name!r} is being loaded for its first use; retry in a few "
                                "seconds.", LOADING_RETRY_AFTER_S)
        return None

    def _failure_message(self, info: DictionaryInfo, error: Exception) -> str:
        if isinstance(error, _USER_ERRORS):
            log.warning("Cannot load dictionary %r: %s", info.name, error)
            reason = str(error)
        else:
            log.error("Cannot load dictionary %r", info.name, exc_info=error)
            reason = f"loading failed ({type(error).__name__}); the server log has the details."
        return (f"Cannot run dictionary {info.name!r} on custom text: {reason} (This answer is kept for "
                f"{self.failure_ttl_s:g} s, GPT2DICT_MODEL_LOAD_FAILURE_TTL_S; saving the dictionary again retries "
                "at once.)")

    def _load(self, info: DictionaryInfo) -> LoadedPair:
        start = time.perf_counter()
        sae = load_dictionary(info.folder, device=self.device)
        cfg = model_config_of(info.config, self.results_root)
        model_key = (cfg.name, cfg.dtype, cfg.cache_dir)
        with self._lock:
            model_lock = self._model_locks.setdefault(model_key, threading.Lock())
        with model_lock:  # loads of other models go on meanwhile
            with self._lock:
                loaded = self._models.get(model_key)
            if loaded is None:
                loaded = LoadedModel(load_language_model(cfg, device=self.device))
                with self._lock:
                    self._models[model_key] = loaded
        # model_name as loaded (the path resolved against the results folder): the hooks and width are checked
        # (a replacement model's every covered layer's input).
        for hook in encoded_hooks(sae):
            check_model_matches(loaded.model, model_name=loaded.model.name, hook_name=hook, d_in=sae.d_in)
        if hasattr(sae, "hook_names"):  # attribution checks the name again: the model as loaded (its path resolved)
            sae.model_name = loaded.model.name
        log.info("Loaded dictionary %r and model %r on %s in %.1f s.", info.name, cfg.name, self.device,
                 time.perf_counter() - start)
        return LoadedPair(loaded_model=loaded, sae=sae)

    @staticmethod
    def run(pair: LoadedPair, text: str, *, max_tokens: int) -> EncodedText:
        """The dictionary's activations on every token of `text` (BOS not included), computed by
        `core.analysis.encode_text`, the analyzer's own function. The text is cut to `max_tokens`
        tokens, or to the model's context length when that is shorter."""
        n_ctx = getattr(pair.model.bridge.cfg, "n_ctx", None)
        limit = max_tokens if not n_ctx else min(max_tokens, int(n_ctx) - 1)  # BOS takes one position
        with pair.lock, torch.no_grad():
            n_text_tokens = int(pair.model.tokenize(text, prepend_bos=False).shape[1])
            activations = encode_text(pair.model, pair.sae, text, max_tokens=limit)
        return EncodedText(activations, truncated=n_text_tokens > limit)

    @staticmethod
    def steer(pair: LoadedPair, feature: int, prompt: str, *, strength: float, max_new_tokens: int,
              temperature: float, seed: int, max_prompt_tokens: int) -> SteeringResult:
        """Continuations of `prompt` with and without the feature's decoder direction added
        (`core.steering.steer`), under the model's lock like every computation on it."""
        with pair.lock:
            return steer(pair.model, pair.sae, feature, prompt, strength=strength, max_new_tokens=max_new_tokens,
                         temperature=temperature, seed=seed, max_prompt_tokens=max_prompt_tokens)
