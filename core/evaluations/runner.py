"""Run evaluations on dictionaries of a results folder and write SAEBench-shaped result files.

`run_evaluations(["results/my-run"])` evaluates every dictionary of the run (or the dictionary
folders given) with each eval of `EvaluationConfig.evals`, loading the language model once, and
writes `<dictionary>/evals/<eval_type_id>/<run>_<name>_eval_results.json` (`core.evaluations.saebench`).
The model's work is shared wherever the eval allows it:

- core: one clean forward per batch for every dictionary of the same model and text (each still
  needs its own spliced-in forward: its reconstruction changes the rest of the model);
- absorption: the prompts' activations and the letter probe once per hook; each dictionary only
  encodes them and trains its small probes;
- sparse probing: one model pass per dataset and hook, each dictionary encoding the same tokens; the
  model's own probes are trained once.

An eval that cannot run on a hook (absorption on a model whose first-letter probe is too weak,
a dataset with too few texts) is reported in `EvaluationRun.skipped` with its reason, and the
other evals go on. A transcoder gets the core eval and sparse probing (absorption compares its
decoder with a probe of its input space, which it does not write to, so it is skipped); replacement
models (transcoder sets, cross-layer transcoders) are skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..config import BUILTIN_CORPUS, ConfigError, DatasetConfig, LanguageModelConfig, resolve_device
from ..data import held_out_sequences
from ..errors import DictionaryLoadError, EvaluationError
from ..layout import DICTIONARY_CONFIG_FILENAME, finished_dictionaries
from ..lm import LanguageModel, load_language_model
from ..sae import SparseAutoencoder, load_dictionary
from .absorption import AbsorptionConfig, absorption, first_letter_task
from .core_metrics import CoreEvalConfig, core_evaluation
from .probing import SparseProbingConfig, sparse_probing
from .saebench import (EVAL_TYPE_ABSORPTION, EVAL_TYPE_CORE, EVAL_TYPE_SPARSE_PROBING, dictionary_config,
                       eval_output, new_eval_id, write_eval_output)

log = logging.getLogger(__name__)

EVALS = {"core": EVAL_TYPE_CORE, "absorption": EVAL_TYPE_ABSORPTION, "sparse_probing": EVAL_TYPE_SPARSE_PROBING}
"""The evals `run_evaluations` runs, by name, and the SAEBench eval type each writes."""


@dataclass
class EvaluationConfig:
    """Which evals to run and their settings (each eval's config holds SAEBench's fields)."""

    evals: tuple[str, ...] = tuple(EVALS)
    """Among core, absorption, sparse_probing."""
    core: CoreEvalConfig = field(default_factory=CoreEvalConfig)
    absorption: AbsorptionConfig = field(default_factory=AbsorptionConfig)
    sparse_probing: SparseProbingConfig = field(default_factory=SparseProbingConfig)
    device: str = "auto"
    model_name: Optional[str] = None
    """The language model (hub name, local folder, or the offline model's name); None: the one each
    dictionary names in its config.json."""

    def validate(self) -> "EvaluationConfig":
        unknown = sorted(set(self.evals) - set(EVALS))
        if unknown or not self.evals:
            raise ConfigError(f"evals {list(self.evals)}: choose among {', '.join(EVALS)}.")
        self.core.validate()
        self.absorption.validate()
        self.sparse_probing.validate()
        return self


@dataclass
class EvaluationRun:
    """What `run_evaluations` did."""

    written: dict[Path, dict[str, Path]] = field(default_factory=dict)
    """Per dictionary folder: {eval_type_id: the result file written}."""
    skipped: list[str] = field(default_factory=list)
    """One sentence per eval that could not run on some dictionaries, saying why."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each eval (model passes, probes, and writing its files)."""


def dictionary_folders(targets: Sequence[str | Path]) -> list[Path]:
    """The dictionary folders of `targets`: each a dictionary folder, or a run folder (all its
    finished dictionaries)."""
    if not targets:
        raise DictionaryLoadError("No dictionary to evaluate; give results/<run> or results/<run>/dictionaries/<name>.")
    folders: list[Path] = []
    for target in targets:
        path = Path(target).expanduser()
        found = finished_dictionaries(path) if path.is_dir() else []
        if not found and (path / DICTIONARY_CONFIG_FILENAME).is_file():
            found = [path]
        if not found:
            raise DictionaryLoadError(f"{path} is neither a dictionary folder (config.json + sae.safetensors) nor a "
                                      f"run folder with finished dictionaries; give results/<run> or "
                                      f"results/<run>/dictionaries/<name>.")
        folders.extend(found)
    return list(dict.fromkeys(f.resolve() for f in folders))


def _model_config(config: dict, cfg: EvaluationConfig) -> LanguageModelConfig:
    if cfg.model_name is not None:
        return LanguageModelConfig(name=cfg.model_name)
    if isinstance(config.get("model"), dict):
        return LanguageModelConfig.from_dict(config["model"])
    return LanguageModelConfig(name=config["model_name"])


def _core_batches(model: LanguageModel, dataset: DatasetConfig, cfg: CoreEvalConfig) -> list[torch.Tensor]:
    """The evaluation sequences: the first documents of the dataset (those training holds out)."""
    held_out = held_out_sequences(dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                                  separator_token_id=model.separator_token_id, cache_dir=model.config.cache_dir,
                                  n_sequences=cfg.n_eval_reconstruction_batches * cfg.batch_size_prompts)
    return list(torch.tensor(held_out.sequences, dtype=torch.long).split(cfg.batch_size_prompts))


class _Evaluation:
    """One model and the dictionaries evaluated with it."""

    def __init__(self, model: LanguageModel, folders: list[Path], cfg: EvaluationConfig, run: EvaluationRun):
        self.model, self.cfg, self.run = model, cfg, run
        loaded = [(f, load_dictionary(f, device=model.device)) for f in folders]
        others = [f.name for f, d in loaded if not isinstance(d, SparseAutoencoder)]
        if others:
            run.skipped.append(f"{', '.join(others)}: replacement models (transcoder sets, cross-layer transcoders) "
                               f"replace every covered MLP at once; these evals take one SAE or transcoder at a time.")
        self.folders = [f for f, d in loaded if isinstance(d, SparseAutoencoder)]
        self.saes = [d for _, d in loaded if isinstance(d, SparseAutoencoder)]
        self.configs = [dictionary_config(f) for f in self.folders]
        for folder, sae in zip(folders, self.saes):
            if model.hook_width(sae.hook_name) != sae.d_in:
                raise ConfigError(f"{folder} reads {sae.d_in} values per token at {sae.hook_name}, but {model.name!r} "
                                  f"has {model.hook_width(sae.hook_name)} there; evaluate it with the model it was "
                                  f"trained on.")
        self.eval_id = new_eval_id()

    def write(self, index: int, eval_type: str, eval_config: dict, metrics: dict, details: list,
              unstructured) -> None:
        used = {**eval_config, "model_name": self.model.name, "llm_dtype": self.model.config.dtype}
        output = eval_output(eval_type, eval_config=used, metrics=metrics, details=details, unstructured=unstructured,
                             dictionary_config=self.configs[index], dictionary=self.folders[index],
                             eval_id=self.eval_id)
        self.run.written.setdefault(self.folders[index], {})[eval_type] = write_eval_output(self.folders[index], output)

    def by_hook(self, include_transcoders: bool = True) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, sae in enumerate(self.saes):
            if include_transcoders or sae.hook_out is None:
                groups.setdefault(sae.hook_name, []).append(i)
        return groups

    def core(self) -> None:
        cfg = self.cfg.core
        groups: dict[tuple[str, int], list[int]] = {}
        for i, config in enumerate(self.configs):
            path = cfg.dataset or config.get("dataset") or BUILTIN_CORPUS
            groups.setdefault((path, int(config.get("context_size") or cfg.context_size)), []).append(i)
        for (path, context_size), indices in groups.items():
            batches = _core_batches(self.model, DatasetConfig(path=path, context_size=context_size), cfg)
            results = core_evaluation(self.model, [self.saes[i] for i in indices], batches)
            used = {**dataclasses.asdict(cfg), "dataset": path, "context_size": context_size,
                    "n_eval_sparsity_variance_batches": cfg.n_eval_reconstruction_batches}
            for i, result in zip(indices, results):
                self.write(i, EVAL_TYPE_CORE, used, result.metrics, result.feature_details, None)

    def absorption(self) -> None:
        cfg = self.cfg.absorption
        transcoders = [f.name for f, sae in zip(self.folders, self.saes) if sae.hook_out is not None]
        if transcoders:
            self.run.skipped.append(f"absorption: not measured for the transcoders {', '.join(transcoders)} (their "
                                    f"decoders write to another space than the probe's).")
        for hook, indices in self.by_hook(include_transcoders=False).items():
            try:
                task = first_letter_task(self.model, hook, cfg)
            except EvaluationError as e:
                self.run.skipped.append(f"absorption on {hook}: {e}")
                continue
            for i in indices:
                result = absorption(self.saes[i], task, cfg)
                unstructured = {"probe_f1": result.probe_f1, "k_sparse_f1": result.k_sparse_f1,
                                "letters": {r.first_letter: {"split_features": r.split_features,
                                                             "absorption_fractions": r.absorption_fractions,
                                                             "fully_absorbed": r.fully_absorbed}
                                            for r in result.letters}}
                self.write(i, EVAL_TYPE_ABSORPTION, dataclasses.asdict(cfg), {"mean": result.metrics()},
                           [r.detail() for r in result.letters], unstructured)

    def sparse_probing(self) -> None:
        cfg = self.cfg.sparse_probing
        for hook, indices in self.by_hook().items():
            try:
                results = sparse_probing(self.model, [self.saes[i] for i in indices], cfg,
                                         cache_dir=self.model.config.cache_dir)
            except EvaluationError as e:
                self.run.skipped.append(f"sparse_probing on {hook}: {e}")
                continue
            for i, result in zip(indices, results):
                self.write(i, EVAL_TYPE_SPARSE_PROBING, dataclasses.asdict(cfg), result.metrics(), result.details(),
                           result.unstructured())


def run_evaluations(targets: Sequence[str | Path], cfg: Optional[EvaluationConfig] = None, *,
                    model: Optional[LanguageModel] = None) -> EvaluationRun:
    """Evaluate every dictionary of `targets` (run folders or dictionary folders) with `cfg.evals`,
    writing their SAEBench-shaped result files (module docstring). `model`: use this loaded model
    instead of loading the dictionaries' own."""
    cfg = (cfg or EvaluationConfig()).validate()
    folders = dictionary_folders(targets)
    by_model: dict[str, tuple[LanguageModelConfig, list[Path]]] = {}
    for folder in folders:
        model_cfg = _model_config(dictionary_config(folder), cfg)
        by_model.setdefault(model_cfg.to_json(), (model_cfg, []))[1].append(folder)
    run = EvaluationRun()
    device = resolve_device(cfg.device)
    for model_cfg, group in by_model.values():
        lm = model if model is not None else load_language_model(model_cfg, device)
        evaluation = _Evaluation(lm, group, cfg, run)
        for name in cfg.evals:
            started = time.perf_counter()
            log.info("Evaluating %d dictionar%s: %s.", len(group), "y" if len(group) == 1 else "ies", name)
            getattr(evaluation, name)()
            run.seconds[name] = run.seconds.get(name, 0.0) + time.perf_counter() - started
    return run


__all__ = ["EVALS", "EvaluationConfig", "EvaluationRun", "dictionary_folders", "run_evaluations"]
