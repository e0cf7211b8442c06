"""Shared fixtures: a tiny GPT-2 with the real tokenizer, a dictionary trained on it, and (in
test_analysis / server / ui tests) an analysis of that dictionary. Built once per session."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tiny_gpt2 import build_tiny_gpt2  # noqa: E402

pytest_plugins = ["tests.server_helpers"]  # the server tests' fixtures (results_copy, ...)

TINY_HOOK = "blocks.0.hook_resid_post"


def all_at_once(action, workers: int) -> list[str]:
    """Run `action(worker)` in `workers` threads released together; the failures, as reprs."""
    start, failures = threading.Barrier(workers), []

    def run(worker: int) -> None:
        start.wait()
        try:
            action(worker)
        except Exception as e:  # noqa: BLE001 - every failure is collected for the caller to report
            failures.append(repr(e))

    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def venv_python(env_var: str, default: str, command: str, holds: str) -> Path:
    """The python of a peer package's virtual environment (`$env_var`, else ROOT/`default`), made by
    `command`. Missing: the test fails under CI (GPT2DICT_REQUIRE_PEERS=1, where CI made it), else is
    skipped with the command that makes it."""
    venv = Path(os.environ.get(env_var, ROOT / default))
    python = venv / "bin" / "python"
    if python.exists():
        return python
    if os.environ.get("GPT2DICT_REQUIRE_PEERS") == "1":  # CI made it: missing means broken
        pytest.fail(f"The virtual environment of {holds} ({venv}) is missing; CI makes it with `{command}`.")
    pytest.skip(f"The virtual environment of {holds} ({venv}) is missing; make it with `{command}` (a minute or two).")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_gpt2_dir):
    from core import LanguageModelConfig, load_language_model

    return load_language_model(LanguageModelConfig(name=str(tiny_gpt2_dir)))


def tiny_training_config(model_dir: Path, results_dir: Path, *, exp_name: str = "tiny", architecture: str = "topk",
                         steps: int = 30, **trainer_overrides):
    """A training config that runs in seconds on the tiny GPT-2."""
    from core import ActivationStoreConfig, DatasetConfig, LanguageModelConfig, LoggingConfig, SAEConfig, \
        TrainerConfig, TrainingConfig

    batch = 128
    trainer = dict(total_training_tokens=batch * steps, lr=1e-3, lr_warmup_steps=5, eval_every_steps=10_000,
                   eval_batches=1, feature_density_window_tokens=batch * 10)
    trainer.update(trainer_overrides)
    return TrainingConfig(
        exp_name=exp_name, results_dir=str(results_dir), seed=0,
        model=LanguageModelConfig(name=str(model_dir)),
        dataset=DatasetConfig(context_size=32),
        activations=ActivationStoreConfig(hook_name=TINY_HOOK, model_batch_size=8, buffer_tokens=1024,
                                          train_batch_size=batch),
        sae=SAEConfig(architecture=architecture, expansion_factor=2, k=8, l1_coefficient=1.0,
                      dead_tokens_threshold=batch * 10, decoder_bias_init_samples=512),
        trainer=TrainerConfig(**trainer),
        logging=LoggingConfig(progress_bar=False, log_every_steps=5),
    )


@pytest.fixture(scope="session")
def tiny_results_dir(tmp_path_factory) -> Path:
    """A results folder shared by the analysis, server and UI tests."""
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def tiny_dictionary(tiny_gpt2_dir, tiny_model, tiny_results_dir) -> Path:
    """Folder of a topk dictionary (d_sae 128) trained on the tiny GPT-2, inside tiny_results_dir."""
    from core import train

    result = train(tiny_training_config(tiny_gpt2_dir, tiny_results_dir, exp_name="tiny-topk", steps=40),
                   model=tiny_model)
    return result.dictionary_path


def tiny_analysis_config(dictionary_path: Path, model_dir: Path, **overrides):
    """An analysis config that runs in seconds on the tiny GPT-2 (same data as tiny_training_config)."""
    from core import AnalysisConfig, DatasetConfig, LanguageModelConfig

    fields = dict(dictionary_path=str(dictionary_path), analysis_name="default", total_analyzing_tokens=4000,
                  top_k=5, n_intervals=3, samples_per_interval=2, context_left=6, context_right=3,
                  histogram_bins=24, logit_lens_k=5, model_batch_size=8,
                  model=LanguageModelConfig(name=str(model_dir)), dataset=DatasetConfig(context_size=32))
    fields.update(overrides)
    return AnalysisConfig(**fields)


@pytest.fixture(scope="session")
def tiny_analysis(tiny_dictionary, tiny_gpt2_dir, tiny_model) -> Path:
    """Folder of the analysis "default" of tiny_dictionary (4000 tokens, top_k 5, 3 intervals x 2
    samples): `<tiny_results_dir>/tiny-topk/analysis/default/` with config.json + features.sqlite."""
    from core import analyze

    return analyze(tiny_analysis_config(tiny_dictionary, tiny_gpt2_dir), model=tiny_model)
