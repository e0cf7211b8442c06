"""Auto-interpretation: explain every feature of an analysis with a language model, score the
explanations on held-out contexts (detection, fuzzing), and search them.

| module            | what it holds |
| ----------------- | ------------- |
| `config.py`       | `BackendConfig`, `ExplainConfig`, `ScoreConfig` |
| `prompts.py`      | the prompts (`PROMPT_VERSION`), how contexts are shown, the parsers of the answers |
| `samples.py`      | contexts read from the feature store: cropping, the held-out split, fuzzing's marks |
| `backends.py`     | `LocalBackend` (a Hugging Face model, batched) and `OpenAIBackend` (any OpenAI-compatible server) |
| `metrics.py`      | `classification_metrics`, `auroc`: the one place the scores are computed |
| `explanations.py` | the `explanations.sqlite` file: `ExplanationsWriter`, and `Explanations`, its one reader |
| `work.py`         | what both entry points share: the choice of features, steps, token budget, progress |
| `explainer.py`    | `explain_features` |
| `scoring.py`      | `score_explanations` (detection, fuzzing, the shuffled control) |
"""

from .backends import Backend, Completion, Judgement, LocalBackend, OpenAIBackend, open_backend
from .config import BackendConfig, ExplainConfig, ScoreConfig
from .explainer import ExplainResult, explain_features
from .explanations import (Explanation, ExplanationSet, Explanations, FeatureScore, ScoreItem, ScoreSet, ScorerSummary,
                           SearchMatch)
from .metrics import ClassificationMetrics, auroc, classification_metrics
from .prompts import PROMPT_VERSION
from .scoring import ScoreResult, score_explanations

__all__ = ["Backend", "BackendConfig", "ClassificationMetrics", "Completion", "ExplainConfig", "ExplainResult", "Explanation",
           "ExplanationSet", "Explanations", "FeatureScore", "Judgement", "LocalBackend", "OpenAIBackend", "PROMPT_VERSION",
           "ScoreConfig", "ScoreItem", "ScoreResult", "ScoreSet", "ScorerSummary", "SearchMatch", "auroc",
           "classification_metrics", "explain_features", "open_backend", "score_explanations"]
