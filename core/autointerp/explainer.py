"""Explain features: for each feature, its strongest contexts and contexts from across its activation
range (minus the held-out ones) go into one prompt, and the answer is parsed to one short line.

    from core import explain_features, BackendConfig
    result = explain_features("results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post/analysis/default",
                              features=100)                               # 100 alive features, seeded
    result = explain_features(analysis, backend=BackendConfig(kind="openai", base_url="http://127.0.0.1:8000/v1",
                                                              model="meta-llama/Llama-3.1-8B-Instruct"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..store import FeatureStore
from .backends import Backend
from .config import BackendConfig, ExplainConfig
from .explanations import Explanation, ExplanationsWriter, now
from .prompts import MARK_THRESHOLD, PROMPT_VERSION, explainer_prompt, parse_explanation
from .samples import feature_groups, split_contexts
from .work import Budget, FeatureChoice, analysis_paths, backend_of, choose_features, progress_bar, steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainResult:
    path: Path
    """The explanations file."""
    set_id: int
    """The explanation set (settings) the explanations belong to."""
    n_features: int
    """Features asked for that have contexts to show."""
    n_explained: int
    """Explained by this call with a parsed explanation."""
    n_unparsable: int
    """Explained by this call but the answer could not be parsed (kept raw)."""
    n_already_done: int
    """Skipped: already in the set from an earlier run."""
    prompt_tokens: int
    completion_tokens: int
    stopped_by_budget: bool
    """The token budget ran out before every feature was done (run again to continue)."""


def explain_features(analysis: str | Path, features: FeatureChoice = None, *, config: ExplainConfig = ExplainConfig(),
                     backend: Union[Backend, BackendConfig, None] = None, progress: bool = True) -> ExplainResult:
    """Explain `features` of an analysis (folder or features.sqlite): None: every alive feature; an int:
    that many alive features chosen at random (seeded by `config.seed`); a list: those. Results go to
    `<analysis>/explanations.sqlite`; features already explained with the same settings are skipped,
    so an interrupted call resumes where it stopped. `backend`: a config (opened and closed here) or an
    open `Backend`; default: the local offline SmolLM2-135M-Instruct."""
    config.validate()
    folder, store_file = analysis_paths(analysis)
    with FeatureStore(store_file) as store, backend_of(backend) as llm, ExplanationsWriter(folder) as writer:
        alive = [s.index for s in store.list_features(sort="index", descending=False, limit=store.d_sae)[1]
                 if s.act_count > 0]
        chosen = choose_features(alive, features, d_sae=store.d_sae, seed=config.seed, what="alive features")
        explainer = {k: v for k, v in llm.settings.items() if k != "probabilities"}  # (a scoring matter)
        set_id = writer.explanation_set({**config.settings(), "explainer": explainer}, explainer_model=llm.model_name,
                                        prompt_version=PROMPT_VERSION)
        done = writer.done_features(set_id)
        todo = [f for f in chosen if f not in done]
        budget = Budget(config.max_total_tokens)
        n_ok = n_bad = 0
        bar = progress_bar(len(todo), "explain", progress)
        try:
            for step in steps(chosen, config.features_per_step):
                step = [f for f in step if f not in done]
                if not step:
                    continue
                if budget.exhausted:
                    break
                rows = _explain_step(store, llm, step, config, set_id)
                writer.write_explanations(rows)
                for row in rows:
                    budget.add(row.prompt_tokens, row.completion_tokens)
                n_ok += sum(r.status == "ok" for r in rows)
                n_bad += sum(r.status == "unparsable" for r in rows)
                bar.update(len(step))
                bar.set_postfix(tokens=f"{budget.used:,}", unparsable=n_bad, refresh=False)
        finally:
            bar.close()
    stopped = n_ok + n_bad < len(todo)
    if stopped:
        log.warning("The token budget (%s) ran out after %d of %d features; run again to continue.",
                    f"{config.max_total_tokens:,}", n_ok + n_bad, len(todo))
    return ExplainResult(path=writer.path, set_id=set_id, n_features=len(chosen), n_explained=n_ok, n_unparsable=n_bad,
                         n_already_done=len(chosen) - len(todo), prompt_tokens=budget.prompt_tokens,
                         completion_tokens=budget.completion_tokens, stopped_by_budget=stopped)


def _explain_step(store: FeatureStore, llm: Backend, features: list[int], config: ExplainConfig,
                  set_id: int) -> list[Explanation]:
    prompts, splits = [], []
    max_acts = {f: s.max_act for f, s in store.feature_stats(features).items()}
    for f in features:
        groups = feature_groups(store, f, config.context_left, config.context_right)
        shown, held_out = split_contexts(groups, feature=f, held_out_fraction=config.held_out_fraction,
                                         n_top=config.n_top_shown, n_interval=config.n_interval_shown, seed=config.seed)
        prompts.append(explainer_prompt([(c.tokens, c.acts) for c in shown], max_acts[f], MARK_THRESHOLD))
        splits.append((shown, held_out))
    completions = llm.generate(prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                               seed=config.seed)
    rows = []
    for f, prompt, (shown, held_out), completion in zip(features, prompts, splits, completions):
        text = parse_explanation(completion.text)
        rows.append(Explanation(
            set_id=set_id, feature_index=f, status="ok" if text else "unparsable", explanation=text,
            raw_response=completion.raw, prompt=prompt.messages, shown=[c.ref for c in shown],
            held_out=[c.ref for c in held_out], prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, created_at=now()))
    return rows


__all__ = ["ExplainResult", "explain_features"]
