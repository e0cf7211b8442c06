"""Errors a user can cause, in one leaf module that imports nothing of the project.

Every entry point (the example scripts, `python -m` commands, the server) catches `USER_ERRORS`
and shows the message alone: each says, in one sentence, what is wrong and what to do. Anything
else is a bug and keeps its traceback. Modules raise these types; they are re-exported where they
were first defined (`core.config.ConfigError`, `core.lm.ModelLoadError`, ...) so old imports work.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A config field has a value the library cannot use; the message names field and fix."""


class DatasetError(ValueError):
    """The dataset cannot be used as configured; the message says what to change."""


class ModelLoadError(RuntimeError):
    """The language model could not be loaded; the message says why and what to do."""


class HookNameError(ValueError):
    """A hook name that the model does not have (or whose activations are not one vector per token)."""


class CacheError(ValueError):
    """An activation cache is missing, incomplete, damaged, or does not match the run."""


class DictionaryLoadError(ValueError):
    """A dictionary folder cannot be loaded; the message says which path is wrong and what to do."""


class DictionaryFormatError(ValueError):
    """A dictionary cannot be written in the requested foreign format (the message says which to use)."""


class AttributionError(ValueError):
    """An attribution graph cannot be computed for this prompt or dictionary (empty or too long a prompt, a
    dictionary that is not a replacement model, a model architecture attribution does not support)."""


class GraphFileError(ValueError):
    """A graph file is missing, not JSON, or not an attribution graph (Neuronpedia's graph schema)."""


class StoreError(RuntimeError):
    """A feature store (or another results SQLite file) is missing, not one, incomplete, corrupt or too new."""


class FeatureUnavailable(LookupError):
    """What was asked is not in this store (an older schema lacks it); the message says to rerun the analysis."""


class AnnotationError(RuntimeError):
    """An annotations file cannot be read or written."""


class BackendError(RuntimeError):
    """A language-model backend of auto-interpretation cannot answer (server down or refusing after the
    retries, wrong URL, model or key, a local model that cannot load); the message says what to check."""


class EvaluationError(ValueError):
    """An evaluation cannot run as asked (too little data, a model that lacks what it measures); the
    message says what to change."""


class DistributedError(RuntimeError):
    """The ranks of a torchrun job cannot work together (a rank died or hung, configs differ)."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a checkpoint; start the same run again to resume."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(f"{signal_name} received: stopped at step {step} and saved {checkpoint}; run the same "
                         f"command again to resume from there.")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


USER_ERRORS: tuple[type[BaseException], ...] = (
    AttributionError, BackendError, CacheError, ConfigError, DatasetError, DictionaryFormatError, DictionaryLoadError,
    EvaluationError, GraphFileError, HookNameError, ModelLoadError, StoreError, FileExistsError)
"""Errors whose message says what is wrong and what to do; an entry point prints it and exits 2."""

__all__ = ["AnnotationError", "AttributionError", "BackendError", "CacheError", "ConfigError", "DatasetError",
           "DictionaryFormatError", "DictionaryLoadError", "DistributedError", "EvaluationError", "FeatureUnavailable",
           "GraphFileError", "HookNameError", "ModelLoadError", "StoreError", "TrainingInterrupted", "USER_ERRORS"]
