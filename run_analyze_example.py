"""Analyze a trained dictionary: what does each feature respond to?

Copy this file to `exp/`, edit the preset you start from, and run it:

    python run_analyze_example.py                               # the dictionary of run_train_example.py's default
    python run_analyze_example.py --total-analyzing-tokens 50000  # any field can be overridden
    python run_analyze_example.py gpt2                          # the GPT-2 preset's dictionary (needs the hub)
    python run_analyze_example.py --help                        # every field, with its documentation

The analysis streams `total_analyzing_tokens` tokens of the dataset through the model and the
dictionary and keeps, per feature: how often and how strongly it fires, a histogram of its
activations, its top-activating contexts, contexts sampled across its activation range, and the
tokens its decoder direction promotes (logit lens). Everything goes into one SQLite feature store:

    <dictionary_path>/../analysis/<analysis_name>/config.json + features.sqlite

An existing analysis of the same name is kept unless you pass `--overwrite` (or choose another
`--analysis-name`); an interrupted run never damages it.

Dictionaries from elsewhere: `--dictionary-path` may also be a SAELens or sparsify folder, or a SAELens
hub name such as `saelens:gpt2-small-res_sce-ajt/blocks.6.hook_resid_pre`. It is first converted to
this library's format under `results/imported/dictionaries/<name>/` (never written to where it came
from, e.g. a Hugging Face cache), and the analysis goes there, beside the copy; the viewer lists it as
`imported:<name>`. Its model is the one the dictionary names (SAELens's `gpt2-small` is `gpt2`)
unless you pass `--model.name` (a hub name or a local model folder), which the copy then records.
A copy without metrics is first evaluated on `--evaluation-tokens` tokens of the analysis text
(default 8,192; 0 skips it): L0, explained variance, CE loss recovered, recorded in its config.json.

Next: browse the features with `python -m server` (http://127.0.0.1:24577), or open
notebooks/observe_feature_activation.ipynb.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import tyro

from core import AnalysisConfig, DatasetConfig, FeatureStore, LanguageModelConfig, analyze, import_dictionary
from core.config import ConfigError, resolve_device
from core.cli import run_entry_point
from core.distributed import is_main_process
from core.formats import evaluate_imported, is_foreign
from core.layout import DICTIONARY_CONFIG_FILENAME, results_root_of
from core.lm import load_language_model

# The dictionary `python run_train_example.py` trains by default (SmolLM2-135M, block 3, built-in
# corpus). 200k tokens take about 1.5 minutes on a 2-core CPU.
OFFLINE_PRESET = AnalysisConfig(
    dictionary_path="results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post",
    analysis_name="default",
    total_analyzing_tokens=200_000,
    top_k=20, n_intervals=5, samples_per_interval=5, context_left=24, context_right=8,
    model=LanguageModelConfig(name="SmolLM2-135M-Instruct"),
    dataset=DatasetConfig(path="builtin:python-docs", context_size=128),
    model_batch_size=16,
)

# The dictionary of run_train_example.py's GPT-2 preset; 10M tokens of OpenWebText (needs the hub).
GPT2_PRESET = AnalysisConfig(
    dictionary_path="results/gpt2-resid6-topk/dictionaries/blocks.6.hook_resid_post",
    analysis_name="default",
    total_analyzing_tokens=10_000_000,
    top_k=20, n_intervals=10, samples_per_interval=5, context_left=24, context_right=8,
    model=LanguageModelConfig(name="gpt2"),
    dataset=DatasetConfig(path="Skylion007/openwebtext", context_size=128, streaming=True),
    model_batch_size=64,
)

PRESETS = {"smollm2": OFFLINE_PRESET, "gpt2": GPT2_PRESET}


# Where dictionaries of other libraries are imported to (results/imported/dictionaries/<name>/).
IMPORT_RESULTS_DIR = "results"
# Tokens an imported dictionary without metrics is evaluated on before its analysis (CE loss recovered
# needs three forwards of the whole model: about 40 s for GPT-2 small on a 2-core CPU).
EVALUATION_TOKENS = 8192


def main(cfg: AnalysisConfig, *, model_given: bool = True, evaluation_tokens: int = EVALUATION_TOKENS) -> None:
    """`model_given`: --model.name was passed (else a foreign dictionary's own model is used).
    `evaluation_tokens`: an imported dictionary without metrics is first evaluated on that many tokens."""
    model = None
    if is_foreign(cfg.dictionary_path):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(f"{cfg.dictionary_path} is a dictionary of another library: import it once first "
                              f"(python -m core.formats import {cfg.dictionary_path}), then run torchrun with "
                              f"--dictionary-path results/imported/dictionaries/<name>.")
        imported = import_dictionary(cfg.dictionary_path, IMPORT_RESULTS_DIR,
                                     model_name=cfg.model.name if model_given else None)
        config = json.loads((imported / DICTIONARY_CONFIG_FILENAME).read_text())
        print(f"Imported {cfg.dictionary_path} to {imported}; its analysis is written there.")
        cfg = replace(cfg, dictionary_path=str(imported), model=replace(cfg.model, name=config["model_name"]))
        if evaluation_tokens > 0 and not config.get("metrics"):
            model = load_language_model(cfg.model, resolve_device(cfg.device))
            result = evaluate_imported(imported, model, cfg.dataset, n_tokens=evaluation_tokens,
                                       batch_size=cfg.model_batch_size)
            print(f"Evaluated on {result.n_tokens:,} tokens of {cfg.dataset.path}: L0 {result.l0:.1f}, explained "
                  f"variance {result.explained_variance:.4f}, CE loss recovered {result.ce_loss_recovered:.4f}.")
    elif not Path(cfg.dictionary_path).expanduser().exists():
        raise SystemExit(f"No dictionary at {cfg.dictionary_path}; train one first (python run_train_example.py) "
                         "or pass --dictionary-path.")
    folder = analyze(cfg, model=model)
    if not is_main_process():  # under torchrun, rank 0 prints the summary
        return
    with FeatureStore(folder) as store:
        summary = store.summary()
    print(f"\nFeature store written to {store.path}")
    print(f"  {summary.n_features:,} features over {summary.n_tokens:,} tokens: "
          f"{summary.n_alive:,} alive, {summary.n_dead:,} dead")
    results_dir = results_root_of(cfg.dictionary_path)
    scan = "" if results_dir == Path("results").resolve() else f"GPT2DICT_RESULTS_DIR={shlex.quote(str(results_dir))} "
    print(f"Browse it:   {scan}python -m server   then open http://127.0.0.1:24577")
    print(f"Or in a notebook:  FEATURE_STORE={folder} jupyter lab notebooks/observe_feature_activation.ipynb")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # An optional first argument names the preset; every field can then be overridden.
    preset = PRESETS[sys.argv.pop(1)] if len(sys.argv) > 1 and sys.argv[1] in PRESETS else OFFLINE_PRESET
    model_given = any(arg == "--model.name" or arg.startswith("--model.name=") for arg in sys.argv)
    # One option beside the analysis config's fields: how many tokens an imported dictionary is evaluated on.
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--evaluation-tokens", type=int, default=EVALUATION_TOKENS)
    known, rest = extra.parse_known_args(sys.argv[1:])
    description = (f"Analyze a dictionary. Presets (optional first argument): {', '.join(PRESETS)}. A SAELens or "
                   f"sparsify folder, or saelens:<release>/<sae_id>, is imported first and, lacking metrics, evaluated "
                   f"on --evaluation-tokens N tokens (default {EVALUATION_TOKENS:,}; 0 skips it).")
    run_entry_point(main, tyro.cli(AnalysisConfig, default=preset, description=description, args=rest),
                    model_given=model_given, evaluation_tokens=known.evaluation_tokens)
