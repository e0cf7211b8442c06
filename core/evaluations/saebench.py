"""Evaluation results as SAEBench writes them, so that its tools read ours.

The shape is sae-bench 0.6.0's `BaseEvalOutput` (sae_bench/evals/base_eval_output.py) with each
eval's own classes (sae_bench/evals/<eval>/eval_output.py and eval_config.py):

    eval_type_id                "core", "absorption_first_letter", "sparse_probing" (SAEBench's ids);
                                "synthetic_recovery" is this library's own (SAEBench has no such eval)
    eval_config                 the eval's settings: SAEBench's fields, plus this library's (each eval
                                module's config docstring says which are added)
    eval_id                     a UUID of this evaluation run (shared by the dictionaries it evaluated)
    datetime_epoch_millis       when the file was written
    eval_result_metrics         {category: {metric: number}}, flat inside each category
    eval_result_details         a list of flat records (per feature, per letter, per dataset)
    eval_result_unstructured    anything else (per-class accuracies, ...), or null
    sae_bench_commit_hash       what computed it: this library and the SAEBench definitions it follows
    sae_lens_id, sae_lens_release_id
                                the dictionary's name and its run's (a dictionary imported from a
                                SAELens release: that release and id)
    sae_lens_version            null (SAELens did not run)
    sae_cfg_dict                the dictionary's config.json without its metrics (architecture, d_sae,
                                hook_name, model_name, training_tokens, ... what SAEBench's plots read)

Files: `<dictionary>/evals/<eval_type_id>/<run>_<name>_eval_results.json` (`core.layout.eval_results_path`),
SAEBench's folder per eval type and file name per dictionary, written atomically. NaN and infinities
are written as -1, as SAEBench's core eval does (`replace_nans_with_negative_one`), so every file is
strict JSON.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from ..errors import EvaluationError
from ..files import atomic_write
from ..layout import DICTIONARY_CONFIG_FILENAME, EVAL_RESULTS_SUFFIX, eval_results_path, evals_folder, \
    run_of_dictionary

SAE_BENCH_VERSION = "0.6.0"
"""The SAEBench release whose definitions and output classes these evaluations follow."""
COMPUTED_BY = f"gpt2-dictionary (SAEBench {SAE_BENCH_VERSION} definitions)"
"""What `sae_bench_commit_hash` says: SAEBench did not run; this library computed its metrics."""

EVAL_TYPE_CORE = "core"
EVAL_TYPE_ABSORPTION = "absorption_first_letter"
EVAL_TYPE_SPARSE_PROBING = "sparse_probing"
EVAL_TYPE_SYNTHETIC = "synthetic_recovery"

OUTPUT_FIELDS = ("eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics",
                 "eval_result_details", "sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id",
                 "sae_lens_version", "sae_cfg_dict", "eval_result_unstructured")
"""The fields of SAEBench's `BaseEvalOutput`, every one present in every file."""


def without_nans(value: Any) -> Any:
    """`value` with every NaN / infinite float replaced by -1, inside dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return -1.0
    if isinstance(value, dict):
        return {k: without_nans(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nans(v) for v in value]
    return value


def new_eval_id() -> str:
    """A UUID naming one evaluation run (SAEBench's `get_eval_uuid`)."""
    return str(uuid.uuid4())


def sae_identity(dictionary_config: dict, dictionary: Optional[Path]) -> tuple[str, str]:
    """(sae_lens_release_id, sae_lens_id): a SAELens release's own names for a dictionary imported
    from one, else the run's name and the dictionary's."""
    source = dictionary_config.get("source") or {}
    if "release" in source and "sae_id" in source:
        return str(source["release"]), str(source["sae_id"])
    if dictionary is None:
        return str(dictionary_config.get("exp_name", "")), str(dictionary_config.get("name", ""))
    folder = Path(dictionary).expanduser().resolve()
    return run_of_dictionary(folder).name, folder.name


def eval_output(eval_type_id: str, *, eval_config: dict, metrics: dict[str, dict], details: list[dict],
                unstructured: Any, dictionary_config: dict, dictionary: Optional[Path], eval_id: str) -> dict:
    """One result in SAEBench's shape (module docstring)."""
    release, sae_id = sae_identity(dictionary_config, dictionary)
    output = {
        "eval_type_id": eval_type_id,
        "eval_config": eval_config,
        "eval_id": eval_id,
        "datetime_epoch_millis": int(time.time() * 1000),
        "eval_result_metrics": metrics,
        "eval_result_details": details,
        "sae_bench_commit_hash": COMPUTED_BY,
        "sae_lens_id": sae_id,
        "sae_lens_release_id": release,
        "sae_lens_version": None,
        "sae_cfg_dict": {k: v for k, v in dictionary_config.items() if k != "metrics"},
        "eval_result_unstructured": unstructured,
    }
    return without_nans(output)


def write_eval_output(dictionary: str | Path, output: dict) -> Path:
    """Write `output` to the dictionary's file for its eval type (atomically, replacing an older one)."""
    path = eval_results_path(dictionary, output["eval_type_id"])
    atomic_write(path, json.dumps(output, indent=2, allow_nan=False) + "\n")
    return path


def read_eval_outputs(dictionary: str | Path) -> dict[str, dict]:
    """{eval_type_id: result} of every evaluation written for a dictionary."""
    found = {}
    folder = evals_folder(dictionary)
    for path in sorted(folder.glob(f"*/*{EVAL_RESULTS_SUFFIX}")) if folder.is_dir() else ():
        try:
            output = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EvaluationError(f"{path} is not readable JSON ({e}); delete it and run the evaluation again.") from e
        found[output.get("eval_type_id", path.parent.name)] = output
    return found


def dictionary_config(dictionary: str | Path) -> dict:
    """A dictionary folder's config.json."""
    path = Path(dictionary).expanduser() / DICTIONARY_CONFIG_FILENAME
    return json.loads(path.read_text())


__all__ = ["COMPUTED_BY", "EVAL_TYPE_ABSORPTION", "EVAL_TYPE_CORE", "EVAL_TYPE_SPARSE_PROBING", "EVAL_TYPE_SYNTHETIC",
           "OUTPUT_FIELDS", "SAE_BENCH_VERSION", "dictionary_config", "eval_output", "new_eval_id",
           "read_eval_outputs", "sae_identity", "without_nans", "write_eval_output"]
