"""Sparse probing (SAEBench's `sparse_probing` eval, sae-bench 0.6.0, sae_bench/evals/sparse_probing/;
Gurnee et al. 2023, Gao et al. 2024): can a few of the dictionary's latents tell the classes of a
labeled text dataset apart as well as the model's whole activation can?

For each dataset and each class, a balanced one-vs-rest task: the class's texts against as many
texts of the other classes, sampled evenly from each (probe_training.py, `prepare_probe_data`).
Every text is cut to `context_length` tokens (BOS included), run through the model, and its
activations at the dictionary's hook averaged over its text tokens (BOS / padding excluded;
activation_collection.py, `create_meaned_model_activations`); the dictionary's latents are the
average of each token's latents (`get_sae_meaned_activations`). Then, per class:

- `llm_test_accuracy`, `sae_test_accuracy`: a probe on every dimension (activations / latents),
  trained by AdamW (lr 1e-2, batch 250, up to 100 epochs, stopped after 10 without a better test
  accuracy) and scored by its best test accuracy (`train_probe_gpu`);
- `llm_top_{k}_test_accuracy`, `sae_top_{k}_test_accuracy` for k in `k_values`: a logistic
  regression (scikit-learn's default, C = 1) on the k dimensions whose means differ most between the
  class and the rest on the training texts (`get_top_k_mean_diff_mask`, `train_sklearn_probe`).

A dataset's accuracy is the mean over its classes; the overall metrics, the mean over datasets
(main.py, `run_eval_single_dataset`, `average_results_dictionaries`).

Datasets: `builtin:python-docs-modules` (this library's, offline: docstrings of five module families
of the Python standard library, labeled by family), or any labeled dataset `core.data.load_text_dataset`
reads (a local file or folder, or a hub dataset) with a text column and a label column. Per class,
`probe_train_set_size // 2` training and `probe_test_set_size // 2` test texts, as SAEBench takes
from its binary datasets; a dataset with fewer texts gives every class the same smaller number
(80% / 20% of its smallest class). The texts of each class are drawn with `random_seed`; the
negatives of each task are drawn once and shared by every probe (SAEBench draws them anew for each
probe), so the model's and each dictionary's accuracies are on the same examples.

Sharing: one model pass per dataset and hook feeds every dictionary of the hook; the model's own
probes are trained once.
"""

from __future__ import annotations

import ast
import logging
import math
import random
import sysconfig
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..config import DatasetConfig
from ..data import load_text_dataset
from ..errors import ConfigError, DatasetError, EvaluationError
from ..lm import LanguageModel
from .batches import hook_activations, in_batches, padded
from .probes import binary_accuracy, logistic_regression, top_k_mean_difference, train_probes_with_early_stopping

log = logging.getLogger(__name__)

BUILTIN_TASK = "builtin:python-docs-modules"
BUILTIN_FAMILIES = ("asyncio", "email", "logging", "tkinter", "xml")
"""Top-level standard-library packages whose docstrings make the built-in task's five classes."""
SAEBENCH_K_VALUES = (1, 2, 5, 10, 20, 50, 100)
"""The k that SAEBench's output has fields for (`SparseProbingSaeMetrics`)."""
MIN_TEXTS_PER_CLASS = 10
DENSE_PROBE_TRAINING = dict(batch_size=250, epochs=100, lr=1e-2, patience=10)
"""main.py, `run_eval_single_dataset`: `train_probe_on_activations(..., use_sklearn=False, batch_size=250,
epochs=100, lr=1e-2)` and `train_probe_gpu`'s `early_stopping_patience=10`."""


@dataclass
class SparseProbingConfig:
    """SAEBench's `SparseProbingEvalConfig` (sae_bench/evals/sparse_probing/eval_config.py): its fields
    and defaults (the datasets: the built-in one, since SAEBench's are on the hub), plus `text_column`,
    `label_column`, `dataset_split` and `classes` for other datasets, which are this library's."""

    random_seed: int = 42
    dataset_names: list[str] = field(default_factory=lambda: [BUILTIN_TASK])
    probe_train_set_size: int = 4000
    probe_test_set_size: int = 1000
    context_length: int = 128
    sae_batch_size: int = 125
    llm_batch_size: Optional[int] = 16
    llm_dtype: str = "float32"
    model_name: str = ""
    k_values: list[int] = field(default_factory=lambda: [1, 2, 5])
    lower_vram_usage: bool = False
    """True skips the probe on every latent (`sae_test_accuracy` is then -1), as SAEBench does."""
    text_column: str = "text"
    label_column: str = "label"
    dataset_split: str = "train"
    classes: Optional[list[str]] = None
    """Label values to probe (as strings); None: every label of the dataset."""

    def validate(self) -> "SparseProbingConfig":
        unknown = sorted(set(self.k_values) - set(SAEBENCH_K_VALUES))
        if unknown or not self.k_values:
            raise ConfigError(f"sparse probing k_values {self.k_values} must be among {list(SAEBENCH_K_VALUES)} (the "
                              f"k SAEBench's results have fields for).")
        if not self.dataset_names:
            raise ConfigError(f"sparse probing dataset_names is empty; use {BUILTIN_TASK!r} or a labeled dataset.")
        if self.context_length < 2 or (self.llm_batch_size or 16) < 1 or self.probe_train_set_size < 2 \
                or self.probe_test_set_size < 2:
            raise ConfigError("sparse probing context_length, llm_batch_size and the set sizes must be at least 2.")
        return self


# --------------------------------------------------------------------------- labeled texts

def builtin_labeled_texts() -> dict[str, list[str]]:
    """{family: docstrings}: the module, class and function docstrings (80+ characters) of
    `BUILTIN_FAMILIES` in the running Python's standard library, in sorted file order, parsed with
    `ast` (nothing imported); a text that occurs twice is kept once, in its first family."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: dict[str, list[str]] = {family: [] for family in BUILTIN_FAMILIES}
    seen: set[str] = set()
    for family in BUILTIN_FAMILIES:
        for path in sorted((stdlib / family).rglob("*.py")):
            if "test" in path.relative_to(stdlib).parts[1:-1] or path.name.startswith("test"):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 80 and doc not in seen:
                        seen.add(doc)
                        texts[family].append(doc)
    return texts


def dataset_labeled_texts(name: str, cfg: SparseProbingConfig, cache_dir: str | Path,
                          max_rows: int = 1_000_000) -> dict[str, list[str]]:
    """{label (as a string): texts} of a dataset `load_text_dataset` reads (path rules and errors
    included), up to `max_rows` rows, stopping once every wanted class has enough texts."""
    ds = load_text_dataset(DatasetConfig(path=name, split=cfg.dataset_split, text_column=cfg.text_column),
                           cache_dir)
    need = cfg.probe_train_set_size // 2 + cfg.probe_test_set_size // 2
    wanted = None if cfg.classes is None else set(map(str, cfg.classes))
    texts: dict[str, list[str]] = defaultdict(list)
    for i, row in enumerate(ds):
        if cfg.label_column not in row:
            raise DatasetError(f"Dataset {name!r} has no column {cfg.label_column!r}; its columns are {sorted(row)}; "
                               f"set label_column.")
        label, text = row[cfg.label_column], row[cfg.text_column]
        if label is None or not isinstance(text, str) or not text.strip():
            continue
        label = str(label)
        if wanted is None or label in wanted:
            texts[label].append(text)
        if i + 1 >= max_rows or (wanted is not None and all(len(texts[c]) >= need for c in wanted)):
            break
    if wanted is not None and wanted - set(texts):
        raise DatasetError(f"Dataset {name!r} has no texts labeled {sorted(wanted - set(texts))} in column "
                           f"{cfg.label_column!r}; its labels include {sorted(texts)[:20]}.")
    return dict(sorted(texts.items()))


def train_test_texts(texts: dict[str, list[str]], cfg: SparseProbingConfig, name: str
                     ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per class, the same number of training and of test texts, drawn with `random_seed` (module
    docstring)."""
    if len(texts) < 2:
        raise EvaluationError(f"Dataset {name!r} has {len(texts)} class(es) with texts; sparse probing needs at least "
                              f"two labels.")
    smallest = min(len(t) for t in texts.values())
    n_train = min(cfg.probe_train_set_size // 2, int(smallest * 0.8))
    n_test = min(cfg.probe_test_set_size // 2, smallest - n_train)
    if n_train < MIN_TEXTS_PER_CLASS or n_test < MIN_TEXTS_PER_CLASS // 2:
        raise EvaluationError(f"Dataset {name!r}: its smallest class has {smallest} texts, too few to train and test a "
                              f"probe (at least {MIN_TEXTS_PER_CLASS + MIN_TEXTS_PER_CLASS // 2} per class); use "
                              f"more text or choose classes.")
    rng = random.Random(cfg.random_seed)
    train, test = {}, {}
    for label, items in texts.items():
        chosen = rng.sample(items, n_train + n_test)
        train[label], test[label] = chosen[:n_train], chosen[n_train:]
    return train, test


# --------------------------------------------------------------------------- activations

@torch.no_grad()
def mean_pooled(model: LanguageModel, hook: str, saes: Sequence, texts: list[str], cfg: SparseProbingConfig
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(model activations [n, d], each dictionary's latents [n, d_sae]) of `texts`, averaged over
    each text's tokens (its first context_length - 1 after BOS), from one model pass for all."""
    token_lists = [[model.bos_token_id] + ids[:cfg.context_length - 1]
                   for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    pooled_acts, pooled_latents = [], [[] for _ in saes]
    for batch in in_batches(token_lists, cfg.llm_batch_size or 16):
        tokens, _ = padded(batch, model.bos_token_id)
        acts = hook_activations(model, [hook], tokens)[hook]  # [b, s, d]
        mask = model.token_mask(tokens.to(acts.device))  # text tokens only (BOS / padding are special)
        counts = mask.sum(1, keepdim=True).clamp_min(1).float().cpu()  # [b, 1]
        rows = mask.nonzero()[:, 0].cpu()  # the text of each token
        x = acts[mask]  # [n_tok, d]
        pooled_acts.append(torch.zeros(len(batch), x.shape[1]).index_add_(0, rows, x.cpu()) / counts)
        for sae, out in zip(saes, pooled_latents):
            latents = torch.cat([sae.encode(chunk.to(sae.device, sae.dtype)).float().cpu()
                                 for chunk in x.split(cfg.sae_batch_size * 16)])
            out.append(torch.zeros(len(batch), latents.shape[1]).index_add_(0, rows, latents) / counts)
    return torch.cat(pooled_acts), [torch.cat(out) for out in pooled_latents]


# --------------------------------------------------------------------------- probes

@dataclass
class ProbingTasks:
    """The one-vs-rest tasks of one dataset: per class, rows into the train / test matrices and
    their labels (the same for the model's probes and every dictionary's)."""

    classes: list[str]
    train_rows: torch.Tensor
    """[classes, n_train] rows of the training texts of each task."""
    train_labels: torch.Tensor
    """[classes, n_train] bool: the row's text is of the task's class."""
    test_rows: torch.Tensor
    test_labels: torch.Tensor


def one_vs_rest(class_of_row: torch.Tensor, n_classes: int, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [C, 2m], labels [C, 2m]) for C balanced tasks: the m rows of the class, then as many of
    the others, ceil(m / (C - 1)) sampled from each other class and m of those kept
    (SAEBench's `prepare_probe_data`), shuffled."""
    all_rows, all_labels = [], []
    for c in range(n_classes):
        positives = (class_of_row == c).nonzero()[:, 0]
        m = len(positives)
        per_class = math.ceil(m / (n_classes - 1))
        negatives = torch.cat([(class_of_row == o).nonzero()[:, 0][torch.randperm(int((class_of_row == o).sum()),
                                                                                    generator=generator)[:per_class]]
                               for o in range(n_classes) if o != c])
        negatives = negatives[torch.randperm(len(negatives), generator=generator)[:m]]
        rows = torch.cat([positives, negatives])
        labels = torch.cat([torch.ones(m, dtype=torch.bool), torch.zeros(len(negatives), dtype=torch.bool)])
        order = torch.randperm(len(rows), generator=generator)
        all_rows.append(rows[order])
        all_labels.append(labels[order])
    return torch.stack(all_rows), torch.stack(all_labels)


def probe_accuracies(train: torch.Tensor, test: torch.Tensor, tasks: ProbingTasks, cfg: SparseProbingConfig,
                     prefix: str) -> dict[str, dict[str, float]]:
    """{metric: {class: test accuracy}} of the dense probe and the top-k probes on features `train`
    [n_train, d] / `test` [n_test, d] ("llm" or "sae" `prefix`)."""
    generator = torch.Generator().manual_seed(cfg.random_seed)
    out: dict[str, dict[str, float]] = {}
    if prefix == "sae" and cfg.lower_vram_usage:
        out[f"{prefix}_test_accuracy"] = {"-1": -1.0}
    else:
        # Train and test rows index one matrix: the test texts follow the training texts.
        features = torch.cat([train, test])
        best = train_probes_with_early_stopping(features, tasks.train_rows, tasks.train_labels,
                                                tasks.test_rows + len(train), tasks.test_labels, generator=generator,
                                                **DENSE_PROBE_TRAINING)
        out[f"{prefix}_test_accuracy"] = dict(zip(tasks.classes, best.tolist()))
    for k in cfg.k_values:
        accuracies = []
        for c in range(len(tasks.classes)):
            x_train, x_test = train[tasks.train_rows[c]], test[tasks.test_rows[c]]  # [n, d]
            chosen = top_k_mean_difference(x_train[None], tasks.train_labels[c][None], min(k, train.shape[1]))[0]
            weight, bias = logistic_regression(x_train[None][..., chosen], tasks.train_labels[c][None])
            logits = x_test[:, chosen] @ weight[0] + bias[0]
            accuracies.append(float(binary_accuracy(logits[None], tasks.test_labels[c][None])[0]))
        out[f"{prefix}_top_{k}_test_accuracy"] = dict(zip(tasks.classes, accuracies))
    return out


@dataclass
class SparseProbingResult:
    """One dictionary's sparse probing: {dataset: {metric: {class: test accuracy}}}, the model's
    probes ("llm_...") included."""

    per_class: dict[str, dict[str, dict[str, float]]]

    def dataset_means(self) -> dict[str, dict[str, float]]:
        """{dataset: {metric: mean over its classes}}."""
        return {name: {metric: sum(by_class.values()) / len(by_class) for metric, by_class in metrics.items()}
                for name, metrics in self.per_class.items()}

    def metrics(self) -> dict[str, dict[str, float]]:
        """SAEBench's `SparseProbingMetricCategories`: each metric's mean over the datasets."""
        means = self.dataset_means()
        names = list(next(iter(means.values())))
        overall = {metric: sum(m[metric] for m in means.values()) / len(means) for metric in names}
        return {"llm": {k: v for k, v in overall.items() if k.startswith("llm_")},
                "sae": {k: v for k, v in overall.items() if k.startswith("sae_")}}

    def details(self) -> list[dict]:
        """SAEBench's `SparseProbingResultDetail` records, one per dataset ("<name>_results")."""
        return [{"dataset_name": f"{name}_results", **metrics} for name, metrics in self.dataset_means().items()]

    def unstructured(self) -> dict:
        """Per-class accuracies, keyed as SAEBench's `eval_result_unstructured`."""
        return {f"{name}_results": metrics for name, metrics in self.per_class.items()}


def labeled_texts(name: str, cfg: SparseProbingConfig, cache_dir: str | Path) -> dict[str, list[str]]:
    """{class: texts} of a dataset name (the built-in task or a dataset `load_text_dataset` reads)."""
    if name == BUILTIN_TASK:
        return builtin_labeled_texts()
    if name.startswith("builtin:"):
        raise ConfigError(f"sparse probing dataset {name!r} is unknown; the built-in labeled task is {BUILTIN_TASK!r}.")
    return dataset_labeled_texts(name, cfg, cache_dir)


@torch.no_grad()
def sparse_probing(model: LanguageModel, saes: Sequence, cfg: SparseProbingConfig,
                   cache_dir: str | Path = "~/.cache/gpt2_dictionary") -> list[SparseProbingResult]:
    """Sparse probing of every dictionary of `saes` (all on one hook) on every dataset of `cfg`."""
    cfg.validate()
    hooks = {sae.hook_name for sae in saes}
    if len(hooks) != 1:
        raise ValueError(f"sparse_probing evaluates dictionaries of one hook at a time, not {sorted(hooks)}.")
    hook = hooks.pop()
    per_class: list[dict] = [{} for _ in saes]
    for name in cfg.dataset_names:
        train_texts, test_texts = train_test_texts(labeled_texts(name, cfg, cache_dir), cfg, name)
        classes = list(train_texts)
        log.info("Sparse probing on %s: %s, %d classes x (%d train + %d test) texts.", hook, name, len(classes),
                 len(train_texts[classes[0]]), len(test_texts[classes[0]]))
        train_class = torch.tensor([c for c, label in enumerate(classes) for _ in train_texts[label]])
        test_class = torch.tensor([c for c, label in enumerate(classes) for _ in test_texts[label]])
        train_acts, train_latents = mean_pooled(model, hook, saes, [t for label in classes for t in train_texts[label]],
                                                cfg)
        test_acts, test_latents = mean_pooled(model, hook, saes, [t for label in classes for t in test_texts[label]],
                                              cfg)
        generator = torch.Generator().manual_seed(cfg.random_seed)
        tasks = ProbingTasks(classes, *one_vs_rest(train_class, len(classes), generator),
                             *one_vs_rest(test_class, len(classes), generator))
        model_accuracies = probe_accuracies(train_acts, test_acts, tasks, cfg, "llm")
        for out, train_l, test_l in zip(per_class, train_latents, test_latents):
            out[name] = {**model_accuracies, **probe_accuracies(train_l, test_l, tasks, cfg, "sae")}
    return [SparseProbingResult(p) for p in per_class]


__all__ = ["BUILTIN_FAMILIES", "BUILTIN_TASK", "ProbingTasks", "SAEBENCH_K_VALUES", "SparseProbingConfig",
           "SparseProbingResult", "builtin_labeled_texts", "dataset_labeled_texts", "labeled_texts", "mean_pooled",
           "one_vs_rest", "probe_accuracies", "sparse_probing", "train_test_texts"]
