"""An attribution graph: its nodes, the adjacency matrix of direct effects, influence, pruning, scores.

Definitions follow circuit-tracer 0.5 (`graph.py`: `compute_influence`, `prune_graph`,
`compute_graph_scores`) and the Circuit Tracing methods paper (Ameisen et al., 2025, § "Graph
pruning" and Appendix "Graph scores"):

- **Normalized adjacency** Â: |A| with each row (target) divided by its sum (at least 1e-10), so a
  row says what fraction of the target's absolute input each source gives.
- **Influence** of every node on the output: w Â + w Â² + ... (a finite sum: the graph has no
  cycles, so Â is nilpotent), w the logit nodes' probabilities (0 elsewhere).
- **Node pruning**: nodes sorted by influence; the fewest whose influence adds up to `node_threshold`
  (0.8) of the total are kept, and every token and logit. A node's *cumulative score* is that running
  fraction where it falls (the JSON's `influence`, which the viewers' threshold slider compares).
- **Edge pruning**: on the graph of kept nodes, edge score = Â[t, s] * (influence of t + w_t); the
  fewest edges whose scores add up to `edge_threshold` (0.98) are kept; then feature and error nodes
  without an outgoing kept edge, and features without an incoming one, are dropped, repeatedly.
- **Replacement score**: of the influence the tokens and error nodes have on the output (the graph's
  ultimate sources), the fraction the tokens have (1: everything flows from the prompt through
  features; errors count against).
- **Completeness score**: the average, over nodes weighed by (influence + w), of the fraction of each
  node's normalized input that does not come from error nodes.

Node order (as circuit-tracer's `Graph`): selected features, error nodes (layer-major, every layer
of the model, every position), tokens, logits. Rows are targets, columns sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

MAX_INFLUENCE_ITERATIONS = 1000
"""The graph's depth bounds the power series; this only guards against a matrix that is not one."""


class LogitTarget(NamedTuple):
    token_id: int
    token: str
    """Its display string."""
    probability: float
    """Softmax probability at the last position."""


class PruneResult(NamedTuple):
    node_mask: Tensor
    """bool [n_nodes]: kept nodes."""
    edge_mask: Tensor
    """bool [n_nodes, n_nodes]: kept edges (target, source)."""
    cumulative_scores: Tensor
    """[n_nodes] each node's cumulative influence fraction (see the module doc)."""


class GraphScores(NamedTuple):
    replacement: float
    completeness: float


def normalized_adjacency(adjacency: Tensor) -> Tensor:
    """|A| with each row summing to 1 (rows without input stay 0)."""
    absolute = adjacency.abs()
    return absolute / absolute.sum(dim=1, keepdim=True).clamp(min=1e-10)


def influence(normalized: Tensor, weights: Tensor) -> Tensor:
    """w Â + w Â² + ... for Â [n, n] (rows: targets) and w [n]: each node's total influence on the
    weighted nodes, through every path."""
    term = weights @ normalized
    total = term.clone()
    for _ in range(MAX_INFLUENCE_ITERATIONS):
        term = term @ normalized
        if not bool(term.any()):
            return total
        total += term
    raise RuntimeError("the influence series did not end: the adjacency matrix has a cycle.")


def _threshold(scores: Tensor, fraction: float) -> Tensor:
    """The smallest score among the fewest largest scores that add up to `fraction` of the total."""
    ordered = torch.sort(scores, descending=True).values
    cumulative = torch.cumsum(ordered, 0) / ordered.sum()
    index = min(int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype))), len(ordered) - 1)
    return ordered[index]


@dataclass
class AttributionGraph:
    """The attribution graph of one prompt through one replacement model (see the module doc).

    Build with `core.attribute`; save with `save_graph` / `graph_json`. `adjacency[t, s]` is the
    direct effect of node s on node t."""

    prompt: str
    tokens: list[int]
    """The prompt's token ids, BOS first."""
    token_strings: list[str]
    model_name: str
    n_layers: int
    """The model's layers (error nodes exist for each)."""
    replacement_layers: tuple[int, ...]
    """The layers the replacement model covers."""
    replacement_kind: str
    d_sae: int
    features: Tensor
    """int64 [n_features, 3] the selected feature nodes: (layer, position, feature)."""
    activations: Tensor
    """[n_features] their activations."""
    logit_targets: list[LogitTarget]
    adjacency: Tensor
    """[n_nodes, n_nodes] direct effects (target, source)."""
    n_active_features: int
    """Features active on the prompt (before the cap on feature nodes)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """How it was computed (max_n_logits, desired_logit_prob, batch_size, max_feature_nodes)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """What computing it took (seconds, backward passes, peak memory)."""
    dictionary: Optional[str] = None
    """The replacement model's folder, when it was loaded from one."""

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_logits(self) -> int:
        return len(self.logit_targets)

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency.shape[0])

    @property
    def error_offset(self) -> int:
        return self.n_features

    @property
    def token_offset(self) -> int:
        return self.n_features + self.n_layers * self.n_pos

    @property
    def logit_offset(self) -> int:
        return self.token_offset + self.n_pos

    def logit_weights(self) -> Tensor:
        weights = torch.zeros(self.n_nodes, dtype=self.adjacency.dtype)
        weights[self.logit_offset:] = torch.tensor([t.probability for t in self.logit_targets], dtype=weights.dtype)
        return weights

    def node_influence(self) -> Tensor:
        """[n_nodes] every node's influence on the logits (see the module doc)."""
        return influence(normalized_adjacency(self.adjacency), self.logit_weights())

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
        """The nodes and edges kept at these cumulative-influence thresholds (see the module doc)."""
        for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is {value}; it must be between 0 and 1.")
        n_fixed = self.n_pos + self.n_logits  # tokens and logits are always kept
        weights = self.logit_weights()
        node_influence = self.node_influence()
        node_mask = node_influence >= _threshold(node_influence, node_threshold)
        node_mask[-n_fixed:] = True

        pruned = self.adjacency.clone()
        pruned[~node_mask] = 0
        pruned[:, ~node_mask] = 0
        normalized = normalized_adjacency(pruned)
        edge_scores = normalized * (influence(normalized, weights) + weights)[:, None]
        edge_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)

        def drop_unconnected() -> None:
            node_mask[:-n_fixed] &= edge_mask[:, :-n_fixed].any(0)  # features and errors: an outgoing edge
            node_mask[:self.n_features] &= edge_mask[:self.n_features].any(1)  # features: an incoming edge

        before = node_mask.clone()
        drop_unconnected()
        while not bool(torch.equal(node_mask, before)):  # each round may leave other nodes unconnected
            before = node_mask.clone()
            edge_mask[~node_mask] = False
            edge_mask[:, ~node_mask] = False
            drop_unconnected()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False

        order = torch.argsort(node_influence, descending=True)
        cumulative = torch.cumsum(node_influence[order], 0) / node_influence.sum()
        scores = torch.empty_like(node_influence)
        scores[order] = cumulative
        return PruneResult(node_mask, edge_mask, scores)

    def scores(self) -> GraphScores:
        """The replacement and completeness scores (see the module doc)."""
        weights = self.logit_weights()
        normalized = normalized_adjacency(self.adjacency)
        node_influence = influence(normalized, weights)
        errors = slice(self.error_offset, self.token_offset)
        token_influence = node_influence[self.token_offset:self.logit_offset].sum()
        error_influence = node_influence[errors].sum()
        replacement = token_influence / (token_influence + error_influence)
        non_error = 1 - normalized[:, errors].sum(dim=1)
        output_influence = node_influence + weights
        completeness = (non_error * output_influence).sum() / output_influence.sum()
        return GraphScores(float(replacement), float(completeness))

    # ------------------------------------------------------------------ nodes

    def node_kind(self, index: int) -> str:
        """"feature", "error", "token" or "logit"."""
        if index < self.error_offset:
            return "feature"
        if index < self.token_offset:
            return "error"
        return "token" if index < self.logit_offset else "logit"

    def error_node(self, layer: int, position: int) -> int:
        return self.error_offset + layer * self.n_pos + position

    def feature_node(self, layer: int, position: int, feature: int) -> Optional[int]:
        """The node index of a selected feature, or None."""
        match = ((self.features[:, 0] == layer) & (self.features[:, 1] == position)
                 & (self.features[:, 2] == feature)).nonzero()
        return int(match[0, 0]) if len(match) else None


__all__ = ["AttributionGraph", "GraphScores", "LogitTarget", "PruneResult", "influence", "normalized_adjacency"]
