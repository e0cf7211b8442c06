"""Feature absorption on first-letter spelling (Chanin et al. 2024, "A is for Absorption";
SAEBench's `absorption_first_letter` eval, sae-bench 0.6.0, sae_bench/evals/absorption/).

A feature is absorbed when a latent that should fire on a concept ("starts with S") stays silent on
some inputs because another, more specific latent ("the token ' short'") fires instead and carries
the concept's direction. The eval finds the concept with a linear probe, finds the dictionary's
latents for it with k-sparse probes, and scores, on the inputs the probe recognizes, how much of
the probe's projection the main latents miss and other latents carry. It needs nothing but the
model's own vocabulary.

1. Words: the vocabulary's tokens that are ASCII letters after at most one leading space
   (vocab.py, `get_alpha_tokens`); shuffled with `random_seed`, at most `max_words` kept (SAEBench
   keeps them all), 80% train, 20% test (probing.py, `create_dataset_probe_training`).
2. Prompts: ten in-context examples of `prompt_template` answered with the capitalized first
   letter, then the word's own template, a newline before each (prompting.py, `create_icl_prompt`
   with `prepend_separator_to_first_example`); the activation is read at `prompt_token_pos` (-6, the
   word, for "{word} has the first letter:"). Train prompts draw examples from train words, test
   prompts from test words; the absorption prompts of step 5, from every word.
3. The letter probe, on the dictionary's hook: 26 one-vs-rest logistic probes trained together
   (probing.py, `train_multi_probe` called by `train_linear_probe_for_task`: Adam, lr 1e-2 decaying
   to 1e-5, weight decay 1e-4, batch 64, 50 epochs, positives weighted negatives / positives); its
   F1 on the test words (threshold logit 0) is `probe_f1`. A letter counts when its F1 exceeds
   `min_GT_probe_f1` (0.6), and the eval runs only if `min_feats_for_eval` (20) letters count.
4. The dictionary's main latents per letter (k_sparse_probing.py): an L1-penalized multi-probe on the
   latents of the train words (`train_sparse_multi_probe`: L1 0.01, L2 1e-6, lr 1e-2 -> 1e-5, batch
   4096, 50 epochs); for k = 1..`max_k_value` (10), the k latents of largest probe weight, a
   logistic regression on them (scikit-learn's `LogisticRegression(max_iter=500,
   class_weight="balanced")`), its test F1; the main ("split") latents are those of the last k
   whose F1 beat the previous best by more than `f1_jump_threshold` (0.03)
   (`add_feature_splits_to_metrics_df`).
5. Absorption (feature_absorption_calculator.py, `calculate_absorption`), on fresh prompts of the
   test words the probe gets right ("probe true positives"), with the probe direction p (unit),
   each latent's cosine c_j of its decoder row with p, its activation a_j, its projection a_j c_j,
   and the activation's projection P = x . p:
   - absorption fraction: 0 if the main latents' projection M >= P, or if the (at most 3) largest
     positive projections A of other latents with c_j >= 0.1 make less than 0.4 of P; else 1 if
     M <= 0; else min(A, P - M) / (min(A, P - M) + M), clipped to [0, 1];
   - full absorption: no main latent fires (a < 1e-8), the latent of largest projection has
     c >= 0.025, P >= 0, and that latent's projection is at least 0.4 of P.
   Per letter, over its probe true positives: `mean_absorption_fraction` (sum of fractions / count),
   `full_absorption_rate`, `num_split_features` (main latents); overall, the mean and standard
   deviation over the counted letters (main.py, `run_eval`, `_aggregate_results_df`).

Sharing: steps 1-3 and the prompts of step 5 depend on the model and hook only
(`first_letter_task`, computed once per hook); steps 4-5 (`absorption`) encode those activations
with each dictionary.
"""

from __future__ import annotations

import logging
import random
import statistics
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError, EvaluationError
from ..lm import LanguageModel
from .batches import hook_activations, in_batches, padded
from .probes import f1_score, logistic_regression, train_multi_probe

log = logging.getLogger(__name__)

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TRAIN_FRACTION = 0.8
"""Words for training the probes; the rest test them (`create_dataset_probe_training`)."""
MAX_ICL_EXAMPLES = 10
"""In-context examples per prompt (`run_feature_absortion_experiment`, `create_and_train_probe`)."""
PROBE_TRAINING = dict(batch_size=64, num_epochs=50, lr=1e-2, end_lr=1e-5, weight_decay=1e-4)
"""The letter probe's training (common.py `train_and_save_probes`, probing.py `train_linear_probe_for_task`)."""
K_SPARSE_PROBE_LR = dict(lr=1e-2, end_lr=1e-5, weight_decay=1e-6)
"""The L1 multi-probe's other settings (k_sparse_probing.py, `train_sparse_multi_probe`)."""
FULL_ABSORPTION_PROBE_COS_THRESHOLD = 0.025
ABSORPTION_FRACTION_PROBE_COS_THRESHOLD = 0.1
ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD = 0.4
ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS = 3
TOP_PROJECTION_LATENTS = 10
"""Latents of largest projection looked at for full absorption (`FeatureAbsorptionCalculator.topk_feats`)."""
FIRING_EPS = 1e-8
"""A main latent below this activation does not fire (feature_absorption_calculator.py, `EPS`)."""


@dataclass
class AbsorptionConfig:
    """SAEBench's `AbsorptionEvalConfig` (sae_bench/evals/absorption/eval_config.py): its fields and
    defaults (`llm_batch_size` and `precalc_k_sparse_probe_sae_acts` are speed settings;
    `k_sparse_probe_batch_size` follows `max_words`), plus `max_words`, which is this library's."""

    model_name: str = ""
    random_seed: int = 42
    f1_jump_threshold: float = 0.03
    max_k_value: int = 10
    prompt_template: str = "{word} has the first letter:"
    prompt_token_pos: int = -6
    llm_batch_size: int = 32
    llm_dtype: str = "float32"
    k_sparse_probe_l1_decay: float = 0.01
    k_sparse_probe_batch_size: int = 512
    """SAEBench: 4096, ten optimizer steps per epoch on its ~38,000 training words; 512 gives the 3,200
    training words of `max_words` = 4000 a similar number of steps (a few per epoch would leave the
    L1 probe barely moved from its random start)."""
    k_sparse_probe_num_epochs: int = 50
    min_GT_probe_f1: float = 0.6
    min_feats_for_eval: int = 20
    eval_k_sparse_probe_batch_size: int = 24
    precalc_k_sparse_probe_sae_acts: bool = True
    """(The latents of the train words are always computed once.)"""
    max_words: Optional[int] = 4000
    """Words drawn from the vocabulary (None: all of them, as SAEBench); 4,000 keep the eval of the
    offline SmolLM2 within minutes on a CPU (it has 47,000)."""

    def validate(self) -> "AbsorptionConfig":
        if "{word}" not in self.prompt_template:
            raise ConfigError(f"absorption prompt_template {self.prompt_template!r} has no {{word}} placeholder.")
        if self.prompt_token_pos >= 0:
            raise ConfigError(f"absorption prompt_token_pos is {self.prompt_token_pos}; it counts from the prompt's "
                              f"end and must be negative (-6 for the default template).")
        if self.max_words is not None and self.max_words < 10:
            raise ConfigError(f"absorption max_words is {self.max_words}; use at least 10 (or None for all).")
        if self.max_k_value < 1 or self.min_feats_for_eval < 1 or self.llm_batch_size < 1:
            raise ConfigError("absorption max_k_value, min_feats_for_eval and llm_batch_size must be positive.")
        return self


def alphabetic_words(tokenizer) -> list[str]:
    """The vocabulary's tokens, as text, that are ASCII letters after at most one leading space
    (SAEBench's `get_alpha_tokens`), in token-id order, each text once."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    words = dict.fromkeys(tokenizer.convert_tokens_to_string([token]) for token, _ in vocab)
    return [w for w in words if (w[1:] if w.startswith(" ") else w).isascii()
            and (w[1:] if w.startswith(" ") else w).isalpha()]


def first_letter(word: str) -> str:
    """The word's first letter, lower case ("  Cat" -> "c")."""
    return next(c for c in word.strip() if c.isalpha()).lower()


def spelling_prompt(word: str, examples: list[str], template: str, rng: random.Random) -> str:
    """SAEBench's in-context prompt: `MAX_ICL_EXAMPLES` examples (never the word itself) answered
    with " X", then the word's own line, a newline before every line."""
    # One more than needed, the word dropped if drawn: a uniform choice among the other examples, as
    # SAEBench's redrawing until the word is absent is.
    chosen = [ex for ex in rng.sample(examples, min(MAX_ICL_EXAMPLES + 1, len(examples))) if ex != word]
    chosen = chosen[:MAX_ICL_EXAMPLES]
    lines = [template.format(word=ex) + " " + first_letter(ex).upper() for ex in chosen]
    return "\n" + "\n".join(lines + [template.format(word=word)])


@dataclass
class FirstLetterTask:
    """What absorption needs from the model at one hook, shared by every dictionary there: the words'
    activations at the word's position, the letter probe, and the absorption prompts' activations."""

    hook_name: str
    train_words: list[str]
    train_letters: torch.Tensor
    """[n_train] letter index 0..25."""
    train_acts: torch.Tensor
    """[n_train, d]"""
    test_words: list[str]
    test_letters: torch.Tensor
    test_acts: torch.Tensor
    probe_weight: torch.Tensor
    """[26, d] the letter probe."""
    probe_bias: torch.Tensor
    """[26]"""
    probe_f1: torch.Tensor
    """[26] the probe's F1 on the test words."""
    absorption_words: dict[str, list[str]] = field(default_factory=dict)
    """Per letter: the test words the probe gets right (its true positives)."""
    absorption_acts: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per letter: their activations on fresh prompts [n_letter, d]."""

    def counted_letters(self, cfg: AbsorptionConfig) -> list[str]:
        """Letters whose probe F1 exceeds `min_GT_probe_f1`."""
        return [letter for i, letter in enumerate(LETTERS) if float(self.probe_f1[i]) > cfg.min_GT_probe_f1]


@torch.no_grad()
def prompt_activations(model: LanguageModel, hook: str, prompts: list[str], cfg: AbsorptionConfig,
                       expected_words: list[str]) -> torch.Tensor:
    """[n, d] the activations of `hook` at `prompt_token_pos` of each prompt (counted from its own end)."""
    token_lists = [model.tokenize(p)[0].tolist() for p in prompts]
    rows, misplaced = [], 0
    for batch_ids, batch_words in zip(in_batches(token_lists, cfg.llm_batch_size),
                                      in_batches(expected_words, cfg.llm_batch_size)):
        tokens, lengths = padded(batch_ids, model.bos_token_id)
        positions = lengths + cfg.prompt_token_pos
        acts = hook_activations(model, [hook], tokens)[hook]  # [b, s, d]
        rows.append(acts[torch.arange(len(tokens)), positions.to(acts.device)].cpu())
        at_position = model.tokenizer.batch_decode(tokens[torch.arange(len(tokens)), positions][:, None].tolist())
        misplaced += sum(a.strip() != w.strip() for a, w in zip(at_position, batch_words))
    if misplaced > len(prompts) // 10:
        raise EvaluationError(f"prompt_token_pos {cfg.prompt_token_pos} points at the word in only "
                              f"{len(prompts) - misplaced} of {len(prompts)} prompts with this tokenizer; set it to "
                              f"the word's position from the end of prompt_template {cfg.prompt_template!r}.")
    return torch.cat(rows)


def _letter_probe_labels(letters: torch.Tensor) -> torch.Tensor:
    return F.one_hot(letters, len(LETTERS)).float()


@torch.no_grad()
def first_letter_task(model: LanguageModel, hook: str, cfg: AbsorptionConfig) -> FirstLetterTask:
    """Steps 1-3 and the prompts of step 5 (module docstring) on `hook`. Raises EvaluationError when
    fewer than `min_feats_for_eval` letters have a probe F1 above `min_GT_probe_f1`."""
    cfg.validate()
    rng = random.Random(cfg.random_seed)
    vocabulary = alphabetic_words(model.tokenizer)
    words = rng.sample(vocabulary, len(vocabulary))[:cfg.max_words]
    split = int(len(words) * TRAIN_FRACTION)
    train_words, test_words = words[:split], words[split:]
    log.info("Absorption on %s: %d train and %d test words (of %d alphabetic tokens).", hook, len(train_words),
             len(test_words), len(vocabulary))
    train_prompts = [spelling_prompt(w, train_words, cfg.prompt_template, rng) for w in train_words]
    test_prompts = [spelling_prompt(w, test_words, cfg.prompt_template, rng) for w in test_words]
    train_acts = prompt_activations(model, hook, train_prompts, cfg, train_words)
    test_acts = prompt_activations(model, hook, test_prompts, cfg, test_words)
    train_letters = torch.tensor([LETTERS.index(first_letter(w)) for w in train_words])
    test_letters = torch.tensor([LETTERS.index(first_letter(w)) for w in test_words])
    generator = torch.Generator().manual_seed(cfg.random_seed)
    weight, bias = train_multi_probe(train_acts, _letter_probe_labels(train_letters), generator=generator,
                                     **PROBE_TRAINING)
    logits = test_acts @ weight.T + bias  # [n_test, 26]
    is_letter = test_letters[:, None] == torch.arange(len(LETTERS))  # [n_test, 26]
    probe_f1 = f1_score((logits > 0).T, is_letter.T)
    task = FirstLetterTask(hook, train_words, train_letters, train_acts, test_words, test_letters, test_acts,
                           weight, bias, probe_f1)
    counted = task.counted_letters(cfg)
    if len(counted) < cfg.min_feats_for_eval:
        raise EvaluationError(
            f"The first-letter probe on {hook} of {model.name} has F1 > {cfg.min_GT_probe_f1} for {len(counted)} "
            f"letters, fewer than min_feats_for_eval = {cfg.min_feats_for_eval}: the model does not represent first "
            f"letters there well enough to measure absorption (SAEBench recommends models of 2B+ parameters); try "
            f"another hook or lower min_GT_probe_f1 / min_feats_for_eval.")
    all_words = train_words + test_words
    for i, letter in enumerate(LETTERS):
        found = [w for w, hit in zip(test_words, (is_letter[:, i] & (logits[:, i] > 0)).tolist()) if hit]
        task.absorption_words[letter] = found
        prompts = [spelling_prompt(w, all_words, cfg.prompt_template, rng) for w in found]
        task.absorption_acts[letter] = (prompt_activations(model, hook, prompts, cfg, found) if found
                                        else train_acts[:0])
    log.info("Letter probe on %s: %d letters with F1 > %.2f (mean F1 %.3f).", hook, len(counted),
             cfg.min_GT_probe_f1, float(probe_f1.mean()))
    return task


@dataclass
class LetterAbsorption:
    """SAEBench's `AbsorptionResultDetail` for one letter, with the words behind it."""

    first_letter: str
    mean_absorption_fraction: float
    full_absorption_rate: float
    num_full_absorption: int
    num_probe_true_positives: int
    num_split_features: int
    split_features: list[int]
    """The main latents (the k-sparse probe's)."""
    absorption_fractions: dict[str, float]
    """Per probe true positive word: its absorption fraction."""
    fully_absorbed: dict[str, int]
    """Per fully absorbed word: the latent that absorbed it (largest projection on the probe)."""

    def detail(self) -> dict:
        """The record SAEBench's `AbsorptionResultDetail` holds."""
        return {"first_letter": self.first_letter, "mean_absorption_fraction": self.mean_absorption_fraction,
                "full_absorption_rate": self.full_absorption_rate, "num_full_absorption": self.num_full_absorption,
                "num_probe_true_positives": self.num_probe_true_positives,
                "num_split_features": self.num_split_features}


@dataclass
class AbsorptionResult:
    """One dictionary's absorption: per counted letter, and the overall means."""

    letters: list[LetterAbsorption]
    probe_f1: dict[str, float]
    """The letter probe's test F1 per letter (all 26)."""
    k_sparse_f1: dict[str, list[float]]
    """Per letter: the test F1 of the k-sparse probe for k = 1..max_k_value."""

    def metrics(self) -> dict[str, float]:
        """SAEBench's `AbsorptionMeanMetrics`."""
        def mean_and_std(values: list[float]) -> tuple[float, float]:
            if not values:
                return float("nan"), float("nan")
            return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")

        fraction = mean_and_std([r.mean_absorption_fraction for r in self.letters])
        full = mean_and_std([r.full_absorption_rate for r in self.letters])
        split = mean_and_std([float(r.num_split_features) for r in self.letters])
        return {"mean_absorption_fraction_score": fraction[0], "mean_full_absorption_score": full[0],
                "mean_num_split_features": split[0], "std_dev_absorption_fraction_score": fraction[1],
                "std_dev_full_absorption_score": full[1], "std_dev_num_split_features": split[1]}


def _split_features(f1_by_k: list[float], features_by_k: list[list[int]], jump: float) -> list[int]:
    """The main latents: those of the last k whose F1 beat the best before it by more than `jump`."""
    best, chosen = -100.0, []
    for f1, features in zip(f1_by_k, features_by_k):
        if f1 <= best + jump:
            break
        best, chosen = f1, features
    return chosen


@torch.no_grad()
def word_absorption(x: torch.Tensor, latents: torch.Tensor, probe_direction: torch.Tensor,
                    decoder_cos: torch.Tensor, main: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(absorption fraction [n], full absorption [n] bool, latent of largest projection [n]) of
    activations x [n, d] with latent activations [n, d_sae] (step 5 of the module docstring)."""
    direction = F.normalize(probe_direction.float(), dim=0)
    projection_of_x = x.float() @ direction  # P [n]
    projections = latents.float() * decoder_cos  # a_j c_j [n, d_sae]
    main_ids = torch.tensor(main, dtype=torch.long)
    main_projection = projections[:, main_ids].sum(-1)  # M [n]
    candidate = torch.ones(latents.shape[1], dtype=torch.bool)
    candidate[main_ids] = False
    candidate &= decoder_cos >= ABSORPTION_FRACTION_PROBE_COS_THRESHOLD
    absorbing = torch.where(candidate & (projections > 0), projections, 0.0)
    k = min(ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS, latents.shape[1])
    absorbed = absorbing.topk(k, dim=-1).values.sum(-1)  # A [n]
    share = absorbed / projection_of_x
    no_absorption = (main_projection >= projection_of_x) | ~(share >= ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD)
    partial = torch.minimum(absorbed, projection_of_x - main_projection)
    fraction = (partial / (partial + main_projection)).clamp(0, 1)
    fraction = torch.where(main_projection <= 0, 1.0, fraction)
    fraction = torch.where(no_absorption, 0.0, fraction)

    top = projections.topk(min(TOP_PROJECTION_LATENTS, latents.shape[1]), dim=-1).indices[:, 0]  # [n]
    top_projection = projections.gather(1, top[:, None]).squeeze(1)
    full = ((latents[:, main_ids] < FIRING_EPS).all(-1) & (decoder_cos[top] >= FULL_ABSORPTION_PROBE_COS_THRESHOLD)
            & (projection_of_x >= 0)
            & (top_projection / projection_of_x >= ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD))
    return fraction, full, top


def _encode(sae, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """[n, d_sae] dense latents of x [n, d] on the CPU."""
    if not len(x):
        return torch.zeros(0, sae.d_sae)
    return torch.cat([sae.encode(chunk.to(sae.device, sae.dtype)).float().cpu() for chunk in x.split(batch_size)])


@torch.no_grad()
def absorption(sae, task: FirstLetterTask, cfg: AbsorptionConfig) -> AbsorptionResult:
    """Steps 4-5 of the module docstring for one dictionary on `task`'s hook."""
    cfg.validate()
    train_latents, test_latents = _encode(sae, task.train_acts), _encode(sae, task.test_acts)
    generator = torch.Generator().manual_seed(cfg.random_seed)
    l1_weight, _ = train_multi_probe(train_latents, _letter_probe_labels(task.train_letters),
                                     batch_size=cfg.k_sparse_probe_batch_size,
                                     num_epochs=cfg.k_sparse_probe_num_epochs, l1_decay=cfg.k_sparse_probe_l1_decay,
                                     generator=generator, **K_SPARSE_PROBE_LR)  # [26, d_sae]
    letters = torch.arange(len(LETTERS))
    train_is = task.train_letters[None, :] == letters[:, None]  # [26, n_train]
    test_is = task.test_letters[None, :] == letters[:, None]  # [26, n_test]
    f1_by_k, features_by_k = [], []
    for k in range(1, min(cfg.max_k_value, sae.d_sae) + 1):
        chosen = l1_weight.topk(k, dim=-1).indices  # [26, k]
        weight, bias = logistic_regression(train_latents[:, chosen].permute(1, 0, 2), train_is, balanced=True)
        scores = torch.einsum("pnk,pk->pn", test_latents[:, chosen].permute(1, 0, 2), weight) + bias[:, None]
        f1_by_k.append(f1_score(scores > 0, test_is).tolist())
        features_by_k.append(chosen.tolist())
    decoder_cos_all = F.normalize(task.probe_weight.float(), dim=-1) @ F.normalize(sae.W_dec.float().cpu(), dim=-1).T
    results = []
    for i, letter in enumerate(LETTERS):
        words = task.absorption_words.get(letter, [])
        if float(task.probe_f1[i]) <= cfg.min_GT_probe_f1 or not words or not bool(train_is[i].any()):
            continue
        main = _split_features([f1[i] for f1 in f1_by_k], [features[i] for features in features_by_k],
                               cfg.f1_jump_threshold)
        acts = task.absorption_acts[letter]
        fraction, full, top = word_absorption(acts, _encode(sae, acts), task.probe_weight[i], decoder_cos_all[i], main)
        n = len(words)
        results.append(LetterAbsorption(
            first_letter=letter, mean_absorption_fraction=float(fraction.sum()) / n,
            full_absorption_rate=float(full.sum()) / n, num_full_absorption=int(full.sum()),
            num_probe_true_positives=n, num_split_features=len(main), split_features=main,
            absorption_fractions=dict(zip(words, fraction.tolist())),
            fully_absorbed={w: int(t) for w, f, t in zip(words, full.tolist(), top.tolist()) if f}))
    return AbsorptionResult(results, {letter: float(task.probe_f1[i]) for i, letter in enumerate(LETTERS)},
                            {letter: [f1[i] for f1 in f1_by_k] for i, letter in enumerate(LETTERS)})


__all__ = ["AbsorptionConfig", "AbsorptionResult", "FirstLetterTask", "LETTERS", "LetterAbsorption", "absorption",
           "alphabetic_words", "first_letter", "first_letter_task", "spelling_prompt", "word_absorption"]
