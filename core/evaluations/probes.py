"""Linear probes, trained the way SAEBench trains them (without scikit-learn).

- `logistic_regression`: what SAEBench gets from scikit-learn's `LogisticRegression()` (L2 penalty,
  C = 1, intercept not penalized, optionally `class_weight="balanced"`): the minimum of
  C * sum_i s_i * log(1 + exp(-y_i (x_i w + b))) + |w|^2 / 2, found here by Newton's method with
  step halving, which reaches that (strictly convex) objective's minimum to float64 precision,
  many independent problems at once.
- `train_multi_probe`: SAEBench's absorption probes (sae_bench/evals/absorption/probing.py,
  `train_multi_probe`): one-vs-rest logistic probes trained together by Adam on a binary cross
  entropy whose positives are weighted by negatives / positives, the learning rate decaying
  exponentially from `lr` to `end_lr` over the epochs, an optional L1 penalty on the weights
  (`k_sparse_probing.py`, `train_sparse_multi_probe`).
- `train_probes_with_early_stopping`: SAEBench's probe on every dimension (sae_bench/evals/
  sparse_probing/probe_training.py, `train_probe_gpu`): AdamW on the binary cross entropy, the best
  test accuracy over the epochs, training stopped after `patience` epochs without improvement.
- `top_k_mean_difference`: SAEBench's choice of the k dimensions for a k-sparse probe
  (`get_top_k_mean_diff_mask`): the largest |mean over positives - mean over negatives|.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def _logistic_objective(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, w: torch.Tensor,
                        c: float) -> torch.Tensor:
    """[P] objective of logits z [P, n] for labels y (+-1) [P, n], sample weights [P, n], weights w [P, d]."""
    return c * (weights * F.softplus(-y * z)).sum(-1) + 0.5 * w.pow(2).sum(-1)


@torch.no_grad()
def logistic_regression(x: torch.Tensor, y: torch.Tensor, *, c: float = 1.0, balanced: bool = False,
                        max_iter: int = 100, tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [P, d], bias [P]) of P independent L2 logistic regressions, x [P, n, d], y [P, n] bool
    (scikit-learn's LogisticRegression(C=c, class_weight="balanced" if balanced else None))."""
    x64 = x.double()
    n_problems, n, d = x64.shape
    design = torch.cat([x64, torch.ones(n_problems, n, 1, dtype=torch.float64, device=x.device)], -1)  # [P, n, d+1]
    signs = y.double() * 2 - 1
    if balanced:  # n / (2 * count of the sample's class), as scikit-learn's compute_class_weight
        positives = y.double().sum(-1, keepdim=True)
        weights = torch.where(y, n / (2 * positives.clamp_min(1)), n / (2 * (n - positives).clamp_min(1)))
    else:
        weights = torch.ones_like(signs)
    theta = torch.zeros(n_problems, d + 1, dtype=torch.float64, device=x.device)
    penalty = torch.ones(d + 1, dtype=torch.float64, device=x.device)
    penalty[-1] = 1e-12  # the intercept is not penalized (a trace keeps one-class problems solvable)
    objective = _logistic_objective(torch.zeros_like(signs), signs, weights, theta[:, :-1], c)
    for _ in range(max_iter):
        z = (design @ theta[..., None]).squeeze(-1)  # [P, n]
        p = torch.sigmoid(-signs * z)  # derivative of softplus(-y z) with respect to -y z
        gradient = -c * (design * (weights * p * signs)[..., None]).sum(1) + theta * penalty  # [P, d+1]
        curvature = c * weights * p * (1 - p)  # [P, n]
        hessian = design.transpose(1, 2) @ (design * curvature[..., None]) + torch.diag(penalty)
        step = torch.linalg.solve(hessian, gradient[..., None]).squeeze(-1)
        if float(step.abs().max()) < tol * (1 + float(theta.abs().max())):
            break
        scale = torch.ones(n_problems, dtype=torch.float64, device=x.device)
        for _ in range(40):  # halve the step of each problem until its objective does not increase
            candidate = theta - scale[:, None] * step
            value = _logistic_objective((design @ candidate[..., None]).squeeze(-1), signs, weights,
                                        candidate[:, :-1], c)
            worse = value > objective + 1e-10 * (1 + objective.abs())  # (beyond rounding)
            if not worse.any():
                break
            scale = torch.where(worse, scale / 2, scale)
        theta, objective = candidate, value
    return theta[:, :-1].to(x.dtype), theta[:, -1].to(x.dtype)


def train_multi_probe(x: torch.Tensor, y: torch.Tensor, *, batch_size: int, num_epochs: int, lr: float,
                      end_lr: float = 1e-5, weight_decay: float = 1e-6, l1_decay: float = 0.0,
                      generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [C, d], bias [C]) of C one-vs-rest probes on x [n, d], y [n, C] in {0, 1}."""
    n, d = x.shape
    y = y.to(x.dtype)
    positives = y.sum(0)
    # (a class without positives would get an infinite weight; it cannot be learned either way)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.where(positives > 0, (n - positives) / positives, 1.0))
    probe = torch.nn.Linear(d, y.shape[1]).to(x.device, x.dtype)
    with torch.no_grad():  # nn.Linear's initialization, drawn from `generator` (the result depends on nothing else)
        for parameter in probe.parameters():
            parameter.uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d), generator=generator)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=math.exp(math.log(end_lr / lr) / num_epochs))
    with torch.enable_grad():
        for _ in range(num_epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                optimizer.zero_grad()
                loss = loss_fn(probe(x[rows]), y[rows])
                if l1_decay:
                    loss = loss + l1_decay * probe.weight.abs().sum(-1).mean()
                loss.backward()
                optimizer.step()
            scheduler.step()
    return probe.weight.detach(), probe.bias.detach()


def binary_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[P] fraction of (logit > 0) == label over the last axis; logits, labels [P, n]."""
    return ((logits > 0) == labels.bool()).double().mean(-1)


def train_probes_with_early_stopping(features: torch.Tensor, train_rows: torch.Tensor, train_labels: torch.Tensor,
                                     test_rows: torch.Tensor, test_labels: torch.Tensor, *, batch_size: int = 250,
                                     epochs: int = 100, lr: float = 1e-2, patience: int = 10,
                                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[P] best test accuracy of P binary probes on every dimension of `features` [N, d], problem p
    training on rows train_rows[p] [n] with labels train_labels[p] [n] and testing on test_rows[p].

    The P probes are one batched AdamW problem: the loss is the sum of each probe's mean binary
    cross entropy, so each probe's gradients, moments and updates are exactly those of its own run;
    a probe's best accuracy is frozen once it runs out of patience, as its own run would stop."""
    n_problems, n = train_rows.shape
    d = features.shape[1]
    weight = torch.zeros(n_problems, d, dtype=features.dtype, device=features.device)
    bias = torch.zeros(n_problems, dtype=features.dtype, device=features.device)
    torch.nn.init.uniform_(weight, -1 / math.sqrt(d), 1 / math.sqrt(d), generator=generator)  # nn.Linear's init
    torch.nn.init.uniform_(bias, -1 / math.sqrt(d), 1 / math.sqrt(d), generator=generator)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr)
    best = torch.zeros(n_problems, dtype=torch.float64)
    waited = torch.zeros(n_problems, dtype=torch.long)
    active = torch.ones(n_problems, dtype=torch.bool)
    test_features = features[test_rows]  # [P, m, d]
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                rows = train_rows[:, order[start:start + batch_size]]  # [P, b]
                logits = torch.einsum("pbd,pd->pb", features[rows], weight) + bias[:, None]
                loss = F.binary_cross_entropy_with_logits(logits, train_labels[:, order[start:start + batch_size]]
                                                          .to(logits.dtype), reduction="none").mean(-1).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                accuracy = binary_accuracy(torch.einsum("pmd,pd->pm", test_features, weight) + bias[:, None],
                                           test_labels).cpu()
            improved = active & (accuracy > best)
            best = torch.where(improved, accuracy, best)
            waited = torch.where(improved, 0, waited + active.long())
            active &= waited < patience
            if not active.any():
                break
    return best


def top_k_mean_difference(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """[P, k] the k dimensions of largest |mean over positives - mean over negatives|; x [P, n, d],
    labels [P, n] bool."""
    positive = labels[..., None].to(x.dtype)
    mean_positive = (x * positive).sum(1) / positive.sum(1).clamp_min(1)
    mean_negative = (x * (1 - positive)).sum(1) / (1 - positive).sum(1).clamp_min(1)
    return (mean_positive - mean_negative).abs().argsort(dim=-1, descending=True, stable=True)[:, :k]


def f1_score(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[P] F1 of boolean predictions against boolean labels over the last axis (0 where undefined,
    as scikit-learn's `f1_score` reports it)."""
    predicted, labels = predicted.bool(), labels.bool()
    true_positives = (predicted & labels).double().sum(-1)
    denominator = predicted.double().sum(-1) + labels.double().sum(-1)
    return torch.where(denominator > 0, 2 * true_positives / denominator.clamp_min(1), 0.0)


__all__ = ["binary_accuracy", "f1_score", "logistic_regression", "top_k_mean_difference", "train_multi_probe",
           "train_probes_with_early_stopping"]
