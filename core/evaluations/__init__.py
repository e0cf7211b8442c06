"""Evaluations that compare dictionaries the way the field does, with no outside data, written in
SAEBench's JSON shape (sae-bench 0.6.0) so that its tools read the results.

| module            | what it holds |
| ----------------- | ------------- |
| `core_metrics.py` | SAEBench's core eval: `core.evals`'s reconstruction, sparsity and downstream-loss metrics in its categories, per-latent statistics |
| `absorption.py`   | feature absorption on first-letter spelling (Chanin et al. 2024; SAEBench's `absorption_first_letter`) |
| `probing.py`      | sparse probing of labeled text (SAEBench's `sparse_probing`), the built-in task `builtin:python-docs-modules` |
| `synthetic.py`    | synthetic ground-truth features: an activation stream to train on, and how well a dictionary recovers them |
| `probes.py`       | the linear probes these evals train, as SAEBench trains them |
| `batches.py`      | token batches of prompts and texts, the model's activations on them |
| `saebench.py`     | the result files: SAEBench's output shape, names and folders |
| `runner.py`       | `run_evaluations`: every eval on every dictionary of a run, the model's work shared |

`python -m core.evaluations --help` is the command line.
"""

from .absorption import AbsorptionConfig, AbsorptionResult, absorption, first_letter_task
from .core_metrics import CoreEvalConfig, CoreEvalResult, core_evaluation
from .probing import BUILTIN_TASK, SparseProbingConfig, SparseProbingResult, sparse_probing
from .runner import EVALS, EvaluationConfig, EvaluationRun, run_evaluations
from .saebench import read_eval_outputs
from .synthetic import (SYNTHETIC_HOOK, RecoveryResult, SyntheticActivations, SyntheticConfig, SyntheticEvaluator,
                        SyntheticFeatures, recovery, synthetic_run, synthetic_trainer)

__all__ = ["AbsorptionConfig", "AbsorptionResult", "BUILTIN_TASK", "CoreEvalConfig", "CoreEvalResult", "EVALS",
           "EvaluationConfig", "EvaluationRun", "RecoveryResult", "SYNTHETIC_HOOK", "SparseProbingConfig",
           "SparseProbingResult", "SyntheticActivations", "SyntheticConfig", "SyntheticEvaluator", "SyntheticFeatures",
           "absorption", "core_evaluation", "first_letter_task", "read_eval_outputs", "recovery", "run_evaluations",
           "sparse_probing", "synthetic_run", "synthetic_trainer"]
