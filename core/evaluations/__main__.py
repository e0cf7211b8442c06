"""The command line of `core.evaluations`:

    python -m core.evaluations dictionaries results/<run> [more runs or dictionary folders] [--evals core absorption]
    python -m core.evaluations synthetic --exp-name synthetic-topk --sae.k 5 --features.n-features 256

`dictionaries` evaluates trained dictionaries and writes their SAEBench-shaped results beside them;
`synthetic` trains dictionaries on synthetic activations of known features and scores their recovery.
Every setting of `EvaluationConfig` (and each eval's config) / `SyntheticConfig` and `TrainingConfig`
is an option; `--help` lists them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Annotated

import tyro

from ..cli import run_entry_point
from ..config import ActivationStoreConfig, LoggingConfig, SAEConfig, TrainerConfig, TrainingConfig
from ..errors import EvaluationError
from .runner import EvaluationConfig, run_evaluations
from .synthetic import SYNTHETIC_HOOK, SyntheticConfig, synthetic_run


@dataclass
class Dictionaries:
    """Evaluate trained dictionaries: run folders (every dictionary) or dictionary folders."""

    targets: tyro.conf.Positional[tuple[str, ...]]
    config: Annotated[EvaluationConfig, tyro.conf.arg(name="")] = field(default_factory=EvaluationConfig)


SYNTHETIC_TRAINING = TrainingConfig(
    exp_name="synthetic-topk", seed=0,
    activations=ActivationStoreConfig(hook_name=SYNTHETIC_HOOK, buffer_tokens=65_536, train_batch_size=4096),
    sae=SAEConfig(architecture="topk", d_sae=512, k=5, decoder_bias_init_samples=4096),
    trainer=TrainerConfig(total_training_tokens=4096 * 1500, lr=3e-3, lr_warmup_steps=50, lr_schedule="cosine"),
    logging=LoggingConfig(progress_bar=False))
"""A top-k SAE of 512 latents on the default `SyntheticConfig` (256 features in 64 dimensions)."""


@dataclass
class Synthetic:
    """Train dictionaries on synthetic activations of known features and score their recovery."""

    features: SyntheticConfig = field(default_factory=SyntheticConfig)
    training: Annotated[TrainingConfig, tyro.conf.arg(name="")] = field(default_factory=lambda: replace(
        SYNTHETIC_TRAINING))
    eval_tokens: int = 16_384


def main(command: Dictionaries | Synthetic) -> None:
    if isinstance(command, Dictionaries):
        run = run_evaluations(command.targets, command.config)
        for folder, files in run.written.items():
            print(f"{folder}")
            for eval_type, path in files.items():
                print(f"  {eval_type}: {path}")
        for eval_name, seconds in run.seconds.items():
            print(f"{eval_name}: {seconds:.1f} s")
        if run.skipped:
            raise EvaluationError(" ".join(run.skipped))
        return
    for name, result in synthetic_run(command.features, command.training, eval_tokens=command.eval_tokens).items():
        r = result.recovery
        print(f"{result.folder}\n  mean max cosine {r.mean_max_cosine:.3f}, recovered (> {r.threshold}) "
              f"{r.fraction_recovered:.3f}, MCC {r.mcc:.3f}, matched precision {r.matched_precision:.3f} / recall "
              f"{r.matched_recall:.3f}, L0 {r.evaluation.l0:.2f} (true {r.true_l0:.2f}), explained variance "
              f"{r.evaluation.explained_variance:.3f}\n  {result.result_file}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_entry_point(main, tyro.extras.subcommand_cli_from_dict({"dictionaries": Dictionaries, "synthetic": Synthetic},
                                                              prog="python -m core.evaluations"))
