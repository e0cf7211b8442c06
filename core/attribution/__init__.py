"""Attribution graphs (circuit tracing): which features of a replacement model carry a prompt's
next-token prediction, and how they act on each other.

    from core import attribute, save_graph
    graph = attribute("The capital of France is", "results/demo/dictionaries/clt")
    save_graph(graph)        # -> results/demo/dictionaries/clt/graphs/the-capital-of-france-is.json

| module             | what it holds |
| ------------------ | ------------- |
| `local_model.py`   | the local replacement model of a prompt (frozen attention and norms, error nodes) and the batched transposed pass that gives direct effects |
| `graph.py`         | `AttributionGraph`: nodes, adjacency, influence, pruning, replacement and completeness scores |
| `attribute.py`     | `attribute`: logit targets, the order features are visited in, the cap on feature nodes, memory limits |
| `graph_file.py`    | the JSON Neuronpedia's and circuit-tracer's viewers read; a dictionary's graphs folder; labels |
| `interventions.py` | `intervene`: ablate or scale features in the replacement model, the new next-token distribution |

Conventions (from Anthropic's Circuit Tracing methods paper and circuit-tracer 0.5) are documented
in each module, where they are implemented.
"""

from .attribute import MAX_EDGE_BYTES, MAX_FEATURE_NODES, MAX_PROMPT_TOKENS, as_replacement_model, attribute
from .graph import AttributionGraph, GraphScores, LogitTarget, PruneResult
from .graph_file import (graph_json, graph_path, import_graph, list_graphs, load_graph_file, read_graph, save_graph,
                         save_subgraph)
from .interventions import FeatureIntervention, InterventionResult, TokenProbability, intervene
from .local_model import LocalReplacementModel

__all__ = ["AttributionGraph", "FeatureIntervention", "GraphScores", "InterventionResult", "LocalReplacementModel",
           "LogitTarget", "MAX_EDGE_BYTES", "MAX_FEATURE_NODES", "MAX_PROMPT_TOKENS", "PruneResult",
           "TokenProbability", "as_replacement_model", "attribute", "graph_json", "graph_path", "import_graph",
           "intervene", "list_graphs", "load_graph_file", "read_graph", "save_graph", "save_subgraph"]
