"""Explain the features of an analysis with a language model, then score the explanations.

Copy this file to `exp/`, edit the preset you start from, and run it:

    python run_explain_example.py                                  # 100 features of the demo analysis, offline SmolLM2
    python run_explain_example.py --features all                   # every alive feature
    python run_explain_example.py --features 3,17,42 --control     # those features, plus the shuffled control
    python run_explain_example.py vllm                             # a local vLLM server (see the preset below)
    python run_explain_example.py openai --backend.model gpt-4o-mini
    python run_explain_example.py --help                           # every field, with its documentation

Explanations and scores go to `<analysis>/explanations.sqlite`, beside the feature store. A run that
is stopped (Ctrl-C, a crash, the token budget) loses at most the step in flight: run the same
command again to continue. Other settings (model, prompt, sample counts, seed) make a new
explanation set beside the old one. The offline SmolLM2-135M is small: its explanations are weak
(docs/autointerp.md has the measured figures); point the tool at an 8B-70B instruction model for
explanations worth reading.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import tyro

from core import (BackendConfig, ExplainConfig, Explanations, FeatureStore, ScoreConfig, explain_features,
                  score_explanations)
from core.autointerp import open_backend
from core.cli import run_entry_point
from core.errors import ConfigError


@dataclass
class ExplainRun:
    analysis: str = "results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post/analysis/default"
    """The analysis folder (`<dictionary>/analysis/<name>`) whose features are explained."""
    features: str = "100"
    """`all` (every alive feature), a number N (N alive features chosen at random, seeded), or a
    comma-separated list of feature indices (`3,17,42`)."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """The explainer and scorer."""
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    skip_scoring: bool = False
    control: bool = False
    """Also score the shuffled control (each feature with another's explanation; it should be near chance)."""


OFFLINE_PRESET = ExplainRun()
# A local vLLM server: `vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000` (an 8B model is the
# cheap choice; delphi and Neuronpedia explain with 70B-class or GPT-4o-class models).
VLLM_PRESET = ExplainRun(backend=BackendConfig(kind="openai", base_url="http://127.0.0.1:8000/v1",
                                               model="meta-llama/Llama-3.1-8B-Instruct", concurrency=32))
# A hosted API; the key is read from $OPENAI_API_KEY (never written anywhere). Cap what a run may spend.
OPENAI_PRESET = ExplainRun(backend=BackendConfig(kind="openai", base_url="https://api.openai.com/v1", model="gpt-4o-mini",
                                                 concurrency=16),
                           explain=ExplainConfig(max_total_tokens=2_000_000), score=ScoreConfig(max_total_tokens=4_000_000))
PRESETS = {"smollm2": OFFLINE_PRESET, "vllm": VLLM_PRESET, "openai": OPENAI_PRESET}


def parse_features(text: str):
    """None (all), an int, or a list of ints, from the --features text."""
    text = text.strip()
    if text == "all":
        return None
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise ConfigError(f"--features is {text!r}; give 'all', a number such as 100, or indices such as 3,17,42.") from None


def main(run: ExplainRun) -> None:
    features = parse_features(run.features)
    FeatureStore(run.analysis).close()  # a wrong path fails here, before the model loads
    with open_backend(run.backend) as llm:
        explained = explain_features(run.analysis, features, config=run.explain, backend=llm)
        print(f"Explained {explained.n_explained} features ({explained.n_unparsable} answers unparsable, "
              f"{explained.n_already_done} done before) with {llm.model_name}: "
              f"{explained.prompt_tokens + explained.completion_tokens:,} tokens. Set {explained.set_id} in {explained.path}")
        scores = []
        if not run.skip_scoring and not explained.stopped_by_budget:
            scores.append(score_explanations(run.analysis, features, explanation_set=explained.set_id, config=run.score,
                                             backend=llm))
            if run.control:
                scores.append(score_explanations(run.analysis, features, explanation_set=explained.set_id,
                                                 config=replace(run.score, control="shuffled"), backend=llm))
    for result, name in zip(scores, ("explanations", "shuffled control")):
        for s in result.summary:
            auroc = "n/a" if s.mean_auroc is None else f"{s.mean_auroc:.3f}"
            print(f"  {name:<17} {s.scorer:<9} {s.n_features} features: balanced accuracy {s.mean_balanced_accuracy:.3f}, "
                  f"F1 {s.mean_f1:.3f}, AUROC {auroc}")
    with Explanations(run.analysis) as reader:
        for row in reader.explanations(explained.set_id, status="ok", limit=5):
            print(f"  feature {row.feature_index}: {row.explanation}")
    print("Search them:  from core import Explanations; Explanations(analysis).search('import')")


if __name__ == "__main__":
    preset = PRESETS[sys.argv.pop(1)] if len(sys.argv) > 1 and sys.argv[1] in PRESETS else OFFLINE_PRESET
    run_entry_point(main, tyro.cli(ExplainRun, default=preset,
                                   description=f"Explain and score features. Presets (optional first argument): "
                                               f"{', '.join(PRESETS)}."))
