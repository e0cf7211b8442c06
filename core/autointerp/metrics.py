"""Classification metrics of a scorer's answers: the one place they are computed.

The definitions are delphi's (eai-delphi 0.1.3, `delphi/log/result_analysis.py`): `compute_confusion`
drops the items whose answer could not be read, counts true/false positives/negatives at the 0.5
threshold; `compute_classification_metrics` gives balanced accuracy = (TPR + TNR) / 2 (a missing class
contributes 0), precision = TP / (TP + FP) (0 without predicted positives), recall = TP / positives,
F1 (0 when precision + recall is 0); `compute_auc` is ROC AUC over the items with a probability.
Accuracy here is the plain (TP + TN) / answered, which delphi leaves commented out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class ClassificationMetrics:
    n_items: int
    """Items asked about (answered or not)."""
    n_failed: int
    """Items whose answer could not be read (left out of every metric)."""
    n_positive: int
    """Answered items that are truly activating / correctly marked."""
    n_negative: int
    accuracy: Optional[float]
    """(TP + TN) / answered; None when nothing was answered."""
    balanced_accuracy: Optional[float]
    """(TPR + TNR) / 2: 0.5 is chance whatever the class balance."""
    precision: Optional[float]
    recall: Optional[float]
    f1: Optional[float]
    auroc: Optional[float]
    """Area under the ROC curve of the yes-probabilities; None when the backend gave no probabilities
    or one class is missing."""


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> Optional[float]:
    """ROC AUC of `scores` for the binary `labels` (the Mann-Whitney U statistic, ties counted half);
    None when a class is missing."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):  # average ranks over runs of tied scores
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def classification_metrics(labels: Sequence[bool], predictions: Sequence[Optional[bool]],
                           probabilities: Sequence[Optional[float]] | None = None) -> ClassificationMetrics:
    """Metrics of yes/no `predictions` (None: unreadable answer) against the true `labels`; AUROC from
    `probabilities` (P(yes) per item, None where unavailable) when every answered item has one."""
    if len(labels) != len(predictions) or (probabilities is not None and len(probabilities) != len(labels)):
        raise ValueError(f"labels ({len(labels)}), predictions ({len(predictions)}) and probabilities "
                         f"({None if probabilities is None else len(probabilities)}) must have one entry per item.")
    answered = [(bool(y), bool(p)) for y, p in zip(labels, predictions) if p is not None]
    tp = sum(1 for y, p in answered if y and p)
    tn = sum(1 for y, p in answered if not y and not p)
    fp = sum(1 for y, p in answered if not y and p)
    n_pos = sum(1 for y, _ in answered if y)
    n_neg = len(answered) - n_pos
    auc = None
    if probabilities is not None:
        scored = [(bool(y), float(q)) for y, q in zip(labels, probabilities) if q is not None]
        if scored:
            auc = auroc([y for y, _ in scored], [q for _, q in scored])
    if not answered:
        return ClassificationMetrics(len(labels), len(labels), 0, 0, None, None, None, None, None, auc)
    tpr = tp / n_pos if n_pos else 0.0
    tnr = tn / n_neg if n_neg else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tpr
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassificationMetrics(
        n_items=len(labels), n_failed=len(labels) - len(answered), n_positive=n_pos, n_negative=n_neg,
        accuracy=(tp + tn) / len(answered), balanced_accuracy=(tpr + tnr) / 2, precision=precision, recall=recall,
        f1=f1, auroc=auc)


__all__ = ["ClassificationMetrics", "auroc", "classification_metrics"]
