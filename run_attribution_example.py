"""The attribution graph of a prompt: which features of a replacement model carry its next token.

Copy this file to `exp/`, edit the settings, and run it:

    python run_attribution_example.py                                   # the default prompt and dictionary below
    python run_attribution_example.py --prompt "import numpy as" --logit-tokens " np"
    python run_attribution_example.py --dictionary results/<run>/dictionaries/<replacement model>
    python run_attribution_example.py --help                            # every setting

The dictionary is a replacement model: a transcoder set or a cross-layer transcoder (a single
transcoder counts as a set of one layer), trained here or imported from circuit-tracer
(`python -m core.formats import <folder>`). The graph is computed through its local replacement model
(docs/attribution.md), pruned, and saved beside it:

    <dictionary>/graphs/<slug>.json        (Neuronpedia's graph schema: opens in Neuronpedia and circuit-tracer's viewer too)

then listed on the dictionary's page of the viewer (`python -m server`), where it opens as a graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import tyro

from core import FeatureIntervention, LanguageModelConfig, attribute, intervene, load_language_model, save_graph
from core.attribution import MAX_FEATURE_NODES, MAX_PROMPT_TOKENS, as_replacement_model
from core.cli import run_entry_point


@dataclass
class AttributionExample:
    dictionary: str = "results/smollm2-transcoders-demo/dictionaries/transcoders"
    """The replacement model's folder (`python run_train_example.py transcoders` trains this one: MLPs 0-5 of
    the offline model; `clt` a cross-layer transcoder)."""
    prompt: str = "The function reads the file and returns its"
    """The text whose next token the graph explains (a BOS token is put first)."""
    logit_tokens: Optional[tuple[str, ...]] = None
    """Output tokens to explain (single tokens, e.g. " contents"); default: the most probable ones."""
    max_n_logits: int = 10
    desired_logit_prob: float = 0.95
    """The most probable next tokens are explained until their probabilities add up to this."""
    max_feature_nodes: int = MAX_FEATURE_NODES
    """At most this many feature nodes (the most influential on the logits)."""
    batch_size: int = 256
    """Targets per transposed pass (more: fewer passes, more memory)."""
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    node_threshold: float = 0.8
    """Pruning: keep the nodes that carry this fraction of the influence on the logits."""
    edge_threshold: float = 0.98
    slug: Optional[str] = None
    """The graph's file name (default: from the prompt's words)."""
    ablate_top: int = 3
    """Then ablate the graph's this many most influential features and show the new next tokens (0: skip)."""
    device: str = "cpu"


def main(cfg: AttributionExample) -> None:
    replacement = as_replacement_model(cfg.dictionary)
    model = load_language_model(LanguageModelConfig(name=replacement.model_name), device=cfg.device)
    graph = attribute(cfg.prompt, replacement, model, logit_tokens=cfg.logit_tokens, max_n_logits=cfg.max_n_logits,
                      desired_logit_prob=cfg.desired_logit_prob, max_feature_nodes=cfg.max_feature_nodes,
                      batch_size=cfg.batch_size, max_prompt_tokens=cfg.max_prompt_tokens,
                      progress=lambda done, total: print(f"\r  rows {done}/{total}", end="", flush=True))
    scores = graph.scores()
    print(f"\n{graph.n_pos - 1} tokens, {graph.n_active_features:,} active features, {graph.n_features:,} feature nodes, "
          f"{graph.stats['backward_passes']} passes in {graph.stats['seconds']:.1f} s")
    print(f"replacement score {scores.replacement:.3f}, completeness score {scores.completeness:.3f}")
    print("explained next tokens: " + ", ".join(f"{t.token!r} ({t.probability:.3f})" for t in graph.logit_targets))
    path = save_graph(graph, cfg.dictionary, slug=cfg.slug, node_threshold=cfg.node_threshold, edge_threshold=cfg.edge_threshold)
    print(f"graph written to {path}")

    if cfg.ablate_top:
        influence = graph.node_influence()[:graph.n_features]
        top = influence.argsort(descending=True)[:cfg.ablate_top].tolist()
        interventions = [FeatureIntervention(*graph.features[i].tolist(), scale=0.0) for i in top]
        result = intervene(cfg.prompt, replacement, model, interventions)
        print("ablating " + ", ".join(f"L{i.layer} #{i.feature} @{i.position}" for i in interventions) + ":")
        for before, after in zip(result.original[:5], result.intervened[:5]):
            print(f"  {before.token!r:>16} {before.probability:.3f}    ->    {after.token!r:>16} {after.probability:.3f}")
    print("Browse it: python -m server   (the graph is listed on the dictionary's page)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run_entry_point(main, tyro.cli(AttributionExample))
