"""Score explanations on the contexts held out from the explainer, as delphi does (eai-delphi 0.1.3):

- **detection** (`delphi/scorers/classifier/detection.py: DetectionScorer._prepare`): the scorer sees
  held-out activating contexts and non-activating ones, unmarked, and says which fit the explanation.
  Non-activating contexts are random contexts of other features (`delphi/latents/constructors.py:
  random_non_activating_windows`) and hard negatives: the top contexts of the features whose decoder
  directions are closest to this one's, closest first (`neighbour_non_activation_windows`, with
  delphi's decoder-similarity neighbours, `delphi/latents/neighbours.py`). A candidate counts as
  non-activating only if the feature does not fire anywhere in it: the language model and the
  dictionary are run on the context as shown (BOS first) to check.
- **fuzzing** (`delphi/scorers/classifier/fuzz.py: FuzzingScorer._prepare`, fuzz_type "active"): each
  held-out activating context is shown twice, once with its active tokens marked (those at or above
  `fuzz_threshold` of its largest activation) and once with as many tokens as an activating context
  has on average marked at random among its inactive ones; the scorer says whether the marking fits.

Unlike delphi's prompts, which show several contexts and ask for a list of 0/1, each context is one
yes/no question (delphi's n_examples_shown = 1), so a small model can answer and the backend can give
P(yes) for AUROC. Metrics per feature and scorer come from `core.autointerp.metrics`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..config import LanguageModelConfig, resolve_device
from ..errors import ConfigError, StoreError
from ..layout import analyzed_dictionary
from ..lm import LanguageModel, check_model_matches, load_language_model
from ..sae import SparseAutoencoder, load_dictionary
from ..store import FeatureStore
from ..activations import ActivationSource
from .backends import Backend
from .config import BackendConfig, ScoreConfig
from .explanations import Explanation, Explanations, ExplanationsWriter, FeatureScore, ScoreItem, ScorerSummary, now
from .metrics import classification_metrics
from .prompts import PROMPT_VERSION, Prompt, detection_prompt, fuzzing_prompt, marked_positions
from .samples import Context, crop, feature_groups, n_wrong_marks, seeded, spread, wrong_marks
from .work import Budget, FeatureChoice, analysis_paths, backend_of, choose_features, progress_bar, steps

log = logging.getLogger(__name__)

CANDIDATES_PER_NEGATIVE = 4
"""Candidate contexts examined per negative wanted (the rest are kept in case the feature fires)."""
NEIGHBOUR_CONTEXTS = 10
"""Top contexts taken from each neighbour (delphi's n_examples_per_neighbour)."""
VERIFY_BATCH = 32
"""Contexts per forward when checking that a feature does not fire on its negatives."""


@dataclass(frozen=True)
class ScoreResult:
    path: Path
    score_set_id: int
    explanation_set_id: int
    n_features: int
    """Features of the explanation set asked for."""
    n_scored: int
    """(feature, scorer) rows written by this call."""
    n_already_done: int
    """(feature, scorer) rows skipped: already in the score set."""
    prompt_tokens: int
    completion_tokens: int
    stopped_by_budget: bool
    summary: list[ScorerSummary]
    """Per scorer, over the whole score set (earlier runs included)."""


@dataclass(frozen=True)
class _Item:
    feature: int
    scorer: str
    context: Context
    activating: bool
    prompt: Prompt
    marking: Optional[str] = None
    marked: Optional[list[int]] = None


def score_explanations(analysis: str | Path, features: FeatureChoice = None, *, explanation_set: Optional[int] = None,
                       config: ScoreConfig = ScoreConfig(), backend: Union[Backend, BackendConfig, None] = None,
                       model: Optional[LanguageModel] = None, progress: bool = True) -> ScoreResult:
    """Score the explanations of `explanation_set` (default: the newest set with explanations) of an
    analysis with `config.scorers`; `features` as in `explain_features`, among the set's features.
    `config.control="shuffled"` scores every feature with another one's explanation instead.
    `model`: the analysed language model, to check that negatives do not activate the feature
    (default: loaded from the analysis' config when detection needs it). Results go to a score set of
    `<analysis>/explanations.sqlite`; (feature, scorer) pairs already scored are skipped."""
    config.validate()
    folder, store_file = analysis_paths(analysis)
    with Explanations(folder) as reader:
        set_id = reader.default_set() if explanation_set is None else explanation_set
        sets = {s.id: s for s in reader.sets()}
        if set_id is None or set_id not in sets:
            raise StoreError(f"No explanations{'' if set_id is None else f' in set {set_id}'} at {reader.path}; run "
                             "explain_features (run_explain_example.py) first.")
        explanation_settings = sets[set_id].settings
        all_rows = {r.feature_index: r for r in reader.explanations(set_id, limit=1 << 62)}
    with FeatureStore(store_file) as store, backend_of(backend) as llm, ExplanationsWriter(folder) as writer:
        chosen = choose_features(list(all_rows), features, d_sae=store.d_sae, seed=config.seed, what="explained features")
        explained = sorted(f for f, r in all_rows.items() if r.status == "ok")
        scored_with = _explanation_sources(explained, config)
        score_set_id = writer.score_set({**config.settings(), "scorer": llm.settings}, explanation_set_id=set_id, scorer_model=llm.model_name,
                                        prompt_version=PROMPT_VERSION, control=config.control)
        done = writer.done_scores(score_set_id)
        todo = [(f, s) for f in chosen for s in config.scorers if (f, s) not in done]
        negatives = None
        if any(s == "detection" for _, s in todo):
            negatives = _Negatives(store, folder, model, config, explanation_settings)
        budget = Budget(config.max_total_tokens)
        n_written = 0
        bar = progress_bar(len({f for f, _ in todo}), f"score{' (control)' if config.control != 'none' else ''}",
                           progress)
        try:
            for step in steps(chosen, config.features_per_step):
                pairs = [(f, s) for f in step for s in config.scorers if (f, s) not in done]
                if not pairs:
                    continue
                if budget.exhausted:
                    break
                rows = _score_step(store, llm, pairs, all_rows, scored_with, negatives, config, explanation_settings,
                                   score_set_id)
                writer.write_scores(rows)
                for row in rows:
                    budget.add(row.prompt_tokens, row.completion_tokens)
                n_written += len(rows)
                bar.update(len({f for f, _ in pairs}))
                bar.set_postfix(tokens=f"{budget.used:,}", refresh=False)
        finally:
            bar.close()
    stopped = n_written < len(todo)
    if stopped:
        log.warning("The token budget (%s) ran out after %d of %d scores; run again to continue.",
                    f"{config.max_total_tokens:,}", n_written, len(todo))
    with Explanations(folder) as reader:
        summary = reader.summary(score_set_id)
    return ScoreResult(path=writer.path, score_set_id=score_set_id, explanation_set_id=set_id, n_features=len(chosen),
                       n_scored=n_written, n_already_done=len(chosen) * len(config.scorers) - len(todo),
                       prompt_tokens=budget.prompt_tokens, completion_tokens=budget.completion_tokens,
                       stopped_by_budget=stopped, summary=summary)


def _explanation_sources(explained: list[int], config: ScoreConfig) -> dict[int, int]:
    """{feature: whose explanation it is scored with}: itself, or for the shuffled control a seeded
    random cyclic permutation of all the set's explained features (Sattolo's algorithm: no feature
    keeps its own), fixed whatever subset one call scores."""
    if config.control == "none":
        return {f: f for f in explained}
    if len(explained) < 2:
        raise ConfigError("The shuffled control needs at least two explained features; explain more features first.")
    order = list(explained)
    rng = seeded(config.seed, "control")
    for i in range(len(order) - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return dict(zip(explained, order))


def _score_step(store: FeatureStore, llm: Backend, pairs: list[tuple[int, str]], rows: dict[int, Explanation],
                scored_with: dict[int, int], negatives: Optional["_Negatives"], config: ScoreConfig,
                explanation_settings: dict, score_set_id: int) -> list[FeatureScore]:
    left, right = explanation_settings["context_left"], explanation_settings["context_right"]
    features = sorted({f for f, _ in pairs})
    if negatives is not None:
        negatives.prepare([f for f, s in pairs if s == "detection" and f in scored_with])
    items: dict[tuple[int, str], list[_Item]] = {}
    for f in features:
        if f not in scored_with:
            continue
        explanation = rows[scored_with[f]].explanation
        groups = feature_groups(store, f, left, right)
        by_ref = {tuple(c.ref): c for contexts in groups.values() for c in contexts}
        held_out = [by_ref[tuple(ref)] for ref in rows[f].held_out if tuple(ref) in by_ref]
        activating = spread(held_out, config.n_activating)
        for scorer in config.scorers:
            if (f, scorer) not in pairs:
                continue
            if scorer == "detection":
                found = [_Item(f, scorer, c, True, detection_prompt(explanation, c.tokens)) for c in activating]
                found += [_Item(f, scorer, c, False, detection_prompt(explanation, c.tokens))
                          for c in negatives.of(f)]
            else:
                found = _fuzzing_items(f, explanation, activating, config)
            items[(f, scorer)] = found
    flat = [item for key in sorted(items) for item in items[key]]
    judgements = llm.judge([item.prompt for item in flat]) if flat else []
    answers = dict(zip(map(id, flat), judgements))
    out = []
    for f, scorer in pairs:
        source = scored_with.get(f)
        found = items.get((f, scorer), [])
        answered = [answers[id(i)] for i in found]
        enough = any(i.activating for i in found) and any(not i.activating for i in found)
        status = "no_explanation" if source is None else "ok" if enough else "too_few_contexts"
        metrics = classification_metrics([i.activating for i in found], [a.answer for a in answered],
                                         [a.p_yes for a in answered])
        ok = status == "ok"
        out.append(FeatureScore(
            score_set_id=score_set_id, feature_index=f, scorer=scorer, status=status, explanation_feature=source,
            explanation=None if source is None else rows[source].explanation, n_items=len(found),
            n_failed=metrics.n_failed, n_positive=metrics.n_positive, n_negative=metrics.n_negative,
            accuracy=metrics.accuracy if ok else None, balanced_accuracy=metrics.balanced_accuracy if ok else None,
            precision=metrics.precision if ok else None, recall=metrics.recall if ok else None,
            f1=metrics.f1 if ok else None, auroc=metrics.auroc if ok else None,
            items=[ScoreItem(context=i.context.full_ref, activating=i.activating, prediction=a.answer, p_yes=a.p_yes,
                             response=a.raw, marking=i.marking, marked=i.marked) for i, a in zip(found, answered)],
            prompt_tokens=sum(a.prompt_tokens for a in answered),
            completion_tokens=sum(a.completion_tokens for a in answered), created_at=now()))
    return out


def _fuzzing_items(feature: int, explanation: str, activating: list[Context], config: ScoreConfig) -> list[_Item]:
    n_marks = n_wrong_marks(activating)
    out = []
    for c in activating:
        right = marked_positions(c.acts, config.fuzz_threshold)
        wrong = wrong_marks(c.acts, config.fuzz_threshold, n_marks, seeded(config.seed, "fuzz", feature, *c.ref))
        if not right or not wrong:
            continue  # nothing to mark, or every token active: this context cannot be mis-marked
        out.append(_Item(feature, "fuzzing", c, True, fuzzing_prompt(explanation, c.tokens, right), "correct", right))
        out.append(_Item(feature, "fuzzing", c, False, fuzzing_prompt(explanation, c.tokens, wrong), "wrong", wrong))
    return out


# ----------------------------------------------------------------------------------------------
# Non-activating contexts for detection


class _Negatives:
    """Random and hard-negative contexts per feature, checked with the language model and the
    dictionary so that the feature does not fire on any of them."""

    def __init__(self, store: FeatureStore, analysis: Path, model: Optional[LanguageModel], config: ScoreConfig,
                 explanation_settings: dict) -> None:
        self.store, self.config = store, config
        self.left, self.right = explanation_settings["context_left"], explanation_settings["context_right"]
        self.alive = [s.index for s in store.list_features(sort="index", descending=False, limit=store.d_sae)[1]
                      if s.act_count > 0]
        dictionary = analyzed_dictionary(analysis)
        self.sae: SparseAutoencoder = load_dictionary(dictionary)
        self.model = model if model is not None else _analysis_model(store, dictionary)
        check_model_matches(self.model, model_name=self.sae.model_name, hook_name=self.sae.hook_name, d_in=self.sae.d_in)
        self.sae.to(self.model.device)
        decoder = self.sae.W_dec.detach().float()
        self.unit_decoder = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)  # [d_sae, d_out]
        self.alive_mask = torch.zeros(store.d_sae, dtype=torch.bool)
        self.alive_mask[self.alive] = True
        self._chosen: dict[int, list[Context]] = {}

    def neighbours(self, feature: int) -> list[int]:
        """The alive features whose decoder directions are closest to `feature`'s (cosine), closest first."""
        similarity = (self.unit_decoder @ self.unit_decoder[feature]).cpu()
        similarity[~self.alive_mask] = -float("inf")
        similarity[feature] = -float("inf")
        k = min(self.config.n_neighbours, int(self.alive_mask.sum()) - int(self.alive_mask[feature]))
        return similarity.topk(k).indices.tolist() if k > 0 else []

    def _candidates(self, feature: int) -> tuple[list[Context], list[Context]]:
        """(random, hard) candidate contexts in preference order."""
        others = [g for g in self.alive if g != feature]
        rng = seeded(self.config.seed, "random-negatives", feature)
        random_candidates = []
        for g in rng.sample(others, min(len(others), CANDIDATES_PER_NEGATIVE * self.config.n_random_negatives)):
            groups = feature_groups(self.store, g, self.left, self.right)
            contexts = [c for cs in groups.values() for c in cs]
            random_candidates.append(contexts[rng.randrange(len(contexts))])
        hard_candidates = []
        wanted = CANDIDATES_PER_NEGATIVE * self.config.n_hard_negatives
        for g in self.neighbours(feature) if self.config.n_hard_negatives else []:
            if len(hard_candidates) >= wanted:
                break
            top = self.store.get_samples(g, "top").samples[:NEIGHBOUR_CONTEXTS]
            hard_candidates += [crop(g, "top", r, s, self.left, self.right) for r, s in enumerate(top)]
        return random_candidates, hard_candidates[:wanted]

    def prepare(self, features: list[int]) -> None:
        """Choose the negatives of `features`, checking all their candidates in one pass of the model."""
        features = [f for f in features if f not in self._chosen]
        if not features:
            return
        candidates = {f: self._candidates(f) for f in features}
        unique: dict[tuple, Context] = {}
        for random_ones, hard_ones in candidates.values():
            for c in random_ones + hard_ones:
                unique.setdefault(tuple(c.full_ref), c)
        firing = dict(zip(unique, firing_features(self.model, self.sae, list(unique.values()))))
        for f, (random_ones, hard_ones) in candidates.items():
            quiet = lambda cs: [c for c in cs if f not in firing[tuple(c.full_ref)]]  # noqa: E731
            hard = quiet(hard_ones)[:self.config.n_hard_negatives]
            seen = {tuple(c.full_ref) for c in hard}
            rand = [c for c in quiet(random_ones) if tuple(c.full_ref) not in seen][:self.config.n_random_negatives]
            self._chosen[f] = rand + hard

    def of(self, feature: int) -> list[Context]:
        return self._chosen.get(feature, [])


def _analysis_model(store: FeatureStore, dictionary: Path) -> LanguageModel:
    """The language model the analysis ran (from its stored config), on the best device here."""
    model_config = (store.meta.get("analysis_config") or {}).get("model")
    if not isinstance(model_config, dict):
        raise ConfigError(f"The analysis {store.path} does not record its language model; pass model= (the "
                          f"model the dictionary {dictionary} was trained on) to score_explanations.")
    return load_language_model(LanguageModelConfig.from_dict(model_config), resolve_device("auto"))


@torch.no_grad()
def firing_features(model: LanguageModel, sae: SparseAutoencoder, contexts: list[Context]) -> list[set[int]]:
    """For each context, the features that fire (activation > 0) on any of its tokens, run alone
    through the model (BOS first) and the dictionary, as the analyzer runs text."""
    source = ActivationSource(model, sae.hook_name, iter(()))
    bos = model.bos_token_id
    out: list[set[int]] = []
    for start in range(0, len(contexts), VERIFY_BATCH):
        batch = [([] if c.token_ids[:1] == [bos] else [bos]) + c.token_ids for c in contexts[start:start + VERIFY_BATCH]]
        width = max(map(len, batch))
        tokens = torch.full((len(batch), width), bos, dtype=torch.long)
        real = torch.zeros_like(tokens, dtype=torch.bool)
        for row, ids in enumerate(batch):  # right padding: causal attention keeps real tokens unchanged
            tokens[row, :len(ids)] = torch.tensor(ids)
            real[row, :len(ids)] = True
        tokens = tokens.to(model.device)
        rows = (model.token_mask(tokens) & real.to(model.device))
        acts = sae.encode_sparse(source.activations_of(tokens)[sae.hook_name].to(sae.device), rows=rows.to(sae.device))
        row_ptr, features, values = acts.row_ptr.tolist(), acts.features, acts.values
        for row in range(len(batch)):
            lo, hi = row_ptr[row * width], row_ptr[(row + 1) * width]
            out.append(set(features[lo:hi][values[lo:hi] > 0].tolist()))
    return out


__all__ = ["ScoreResult", "firing_features", "score_explanations"]
