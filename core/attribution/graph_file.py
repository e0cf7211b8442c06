"""Graph files: the JSON that Neuronpedia's graph viewer and circuit-tracer's frontend read, and the
graphs folder of a replacement model (`<dictionary>/graphs/<slug>.json`, `core.layout.graphs_folder`).

The schema is Neuronpedia's published graph schema (`apps/webapp/app/api/graph/graph-schema.json`:
`metadata`, `qParams`, `nodes`, `links`) as circuit-tracer 0.5's `frontend/graph_models.py` and
`utils/create_graph_files.py` fill it:

- `metadata`: `slug`, `scan` (the model), `transcoder_list`, `prompt_tokens`, `prompt`,
  `node_threshold`, `schema_version`, `info` (generator, time, the replacement model),
  `generation_settings`, `pruning_settings`; this library adds `prompt_token_ids` and `scores`
  (replacement, completeness), which other readers ignore.
- `qParams`: the saved subgraph: `pinnedIds`, `supernodes` (each `[name, node_id, ...]`), `linkType`,
  `clickedId`, `sg_pos`.
- `nodes`: `node_id`, `feature`, `layer` (a string), `ctx_idx`, `feature_type`, `jsNodeId`, `clerp`,
  `influence` (the node's cumulative influence fraction: a viewer's threshold slider keeps the nodes
  at or below it), `activation`, `token_prob`, `is_target_logit`, `run_idx`, `reverse_ctx_idx`.
  Features: `{layer}_{feature}_{pos}`, `feature` the Cantor pairing of (layer, feature), type
  "cross layer transcoder"; error nodes: `{layer}_-1_{pos}` (Neuronpedia's graph server's ids; feature
  -1), type "mlp reconstruction error"; tokens: `E_{token id}_{pos}`, type "embedding"; logits:
  `{n_layers + 1}_{token id}_{last pos}`, type "logit", clerp `Output "tok" (p=0.123)`.
- `links`: `source`, `target`, `weight` (the direct effect), the edges pruning kept.

Every node id is unique. circuit-tracer 0.5 names error nodes `0_{layer}_{pos}`, which is also the
id of feature `layer` of layer 0 at that position; `read_graph` renames error nodes to this
library's ids, and resolves a link to such a shared id by what each node can connect to (an error
node has no incoming edges; a source must sit at a lower layer and an earlier or equal position than
its target); a link that either could make goes to the error node, as circuit-tracer's own viewer
resolves it, and is counted in `metadata.info.ambiguous_links`.

Feature labels (`clerp`) come from the dictionary's annotations (`core.annotations`), else from the
explanations of its analyses (`core.autointerp`, `core.layout.explanations_path`; skipped where there
are none). A replacement model's feature is stored under `feature_store_index`, or under its own
index in a transcoder set member's folder.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from ..annotations import Annotations
from ..autointerp.explanations import Explanations
from ..errors import GraphFileError
from ..files import atomic_write
from ..layout import analyses_folder, graphs_folder, transcoder_set_member
from .graph import AttributionGraph

SCHEMA_VERSION = 1
GENERATOR = {"name": "gpt2-dictionary", "url": "https://github.com/gpt2-dictionary"}
FEATURE_TYPE = "cross layer transcoder"
ERROR_TYPE = "mlp reconstruction error"
TOKEN_TYPE = "embedding"
LOGIT_TYPE = "logit"
GRAPH_SUFFIX = ".json"
MAX_SLUG_CHARS = 64
MAX_SUPERNODES = 200
MAX_PINNED = 2000
EMPTY_QPARAMS = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}


def cantor_pair(x: int, y: int) -> int:
    """One integer for (layer, feature), as circuit-tracer and Neuronpedia number features."""
    return (x + y) * (x + y + 1) // 2 + y


def feature_store_index(layers: Iterable[int], d_sae: int, layer: int, feature: int) -> int:
    """The index a replacement model's feature has in its analyses and annotations: the flat index
    `position * d_sae + feature`, position the layer's place in `layers` (`core.sae.replacement`)."""
    return list(layers).index(layer) * d_sae + feature


def feature_node_id(layer: int, feature: int, position: int) -> str:
    return f"{layer}_{feature}_{position}"


def error_node_id(layer: int, position: int) -> str:
    return f"{layer}_-1_{position}"


def slugify(text: str) -> str:
    """A file name from a prompt: lower-case words joined by hyphens, at most MAX_SLUG_CHARS."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:MAX_SLUG_CHARS].strip("-")
    return slug or "graph"


def check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", slug) or ".." in slug:
        raise GraphFileError(f"The graph name {slug!r} is not usable as a file name; use letters, digits, '-', '_' "
                             "and '.' (at most 128 characters).")
    return slug


# ---------------------------------------------------------------------------------------------- writing


def feature_labels(dictionary: Optional[str | Path], graph: AttributionGraph) -> dict[tuple[int, int], str]:
    """{(layer, feature): label} of the graph's features: the label a person gave it in the dictionary's
    annotations, else its explanation in an analysis' explanations file (the first analysis, by name,
    that explains it); for a transcoder set, then the member's own folder (its annotations and analyses,
    under the feature's own index). Features with neither are left out."""
    if dictionary is None:
        return {}
    wanted = {(int(l), int(f)) for l, _, f in graph.features.tolist()}
    places = [(Path(dictionary), {key: feature_store_index(graph.replacement_layers, graph.d_sae, *key)
                                  for key in wanted})]
    if graph.replacement_kind == "transcoder_set":
        for layer in sorted({l for l, _ in wanted}):
            places.append((Path(dictionary) / transcoder_set_member(layer), {k: k[1] for k in wanted if k[0] == layer}))
    labels: dict[tuple[int, int], str] = {}
    for folder, index_of in places:
        if not folder.is_dir():
            continue
        keys_of: dict[int, list[tuple[int, int]]] = {}
        for key, index in index_of.items():
            keys_of.setdefault(index, []).append(key)
        found = {i: n.label for i, n in Annotations.of_dictionary(folder).many(keys_of).items() if n.label}
        analyses = sorted(p for p in analyses_folder(folder).glob("*") if p.is_dir()) \
            if analyses_folder(folder).is_dir() else []
        for analysis in analyses:
            missing = [i for i in keys_of if i not in found]
            if not missing:
                break
            with Explanations(analysis) as explanations:
                found.update({e.feature_index: e.explanation for e in explanations.explanations(
                    features=missing, status="ok", limit=len(missing))})
        for index, text in found.items():
            for key in keys_of[index]:
                labels.setdefault(key, text)
    return labels


def graph_json(graph: AttributionGraph, *, slug: str, node_threshold: float = 0.8, edge_threshold: float = 0.98,
               labels: Optional[dict[tuple[int, int], str]] = None) -> dict[str, Any]:
    """The graph, pruned at these thresholds, as the JSON described in the module doc."""
    pruned = graph.prune(node_threshold, edge_threshold)
    scores = graph.scores()
    labels = labels or {}
    cumulative = pruned.cumulative_scores.tolist()
    last = graph.n_pos - 1
    nodes: dict[int, dict[str, Any]] = {}
    for index in pruned.node_mask.nonzero().squeeze(1).tolist():
        kind = graph.node_kind(index)
        if kind == "feature":
            layer, position, feature = graph.features[index].tolist()
            node = _node(feature_node_id(layer, feature, position), cantor_pair(layer, feature), str(layer), position,
                         FEATURE_TYPE, f"{layer}_{feature}-0", labels.get((layer, feature), ""), cumulative[index],
                         float(graph.activations[index]))
        elif kind == "error":
            layer, position = divmod(index - graph.error_offset, graph.n_pos)
            node = _node(error_node_id(layer, position), -1, str(layer), position, ERROR_TYPE,
                         f"{layer}_-1-{position}", "", cumulative[index], None)
        elif kind == "token":
            position = index - graph.token_offset
            token = graph.tokens[position]
            node = _node(f"E_{token}_{position}", position, "E", position, TOKEN_TYPE, f"E_{token}-{position}", "",
                         cumulative[index], None)
        else:
            i = index - graph.logit_offset
            target = graph.logit_targets[i]
            node = _node(f"{graph.n_layers + 1}_{target.token_id}_{last}", target.token_id, str(graph.n_layers + 1),
                         last, LOGIT_TYPE, f"L_{target.token_id}-{last}",
                         f'Output "{target.token}" (p={target.probability:.3f})', None, None)
            node.update(token_prob=target.probability, is_target_logit=i == 0)
        nodes[index] = node

    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency[targets, sources].tolist()
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": w}
             for t, s, w in zip(targets.tolist(), sources.tolist(), weights) if s in nodes and t in nodes]
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    used = [n for n in nodes.values() if n["node_id"] in connected or n["feature_type"] in (TOKEN_TYPE, LOGIT_TYPE)]
    metadata = {
        "slug": slug, "scan": graph.model_name, "transcoder_list": [], "prompt_tokens": graph.token_strings,
        "prompt": graph.prompt, "prompt_token_ids": graph.tokens, "node_threshold": node_threshold,
        "schema_version": SCHEMA_VERSION,
        "info": {"generator": dict(GENERATOR), "create_time_ms": int(time.time() * 1000),
                 "replacement_model": {"kind": graph.replacement_kind, "layers": list(graph.replacement_layers),
                                       "d_sae": graph.d_sae, "folder": graph.dictionary},
                 "active_features": graph.n_active_features, "feature_nodes": graph.n_features,
                 "stats": {k: v for k, v in graph.stats.items() if isinstance(v, (int, float))}},
        "generation_settings": dict(graph.settings),
        "pruning_settings": {"node_threshold": node_threshold, "edge_threshold": edge_threshold},
        "scores": {"replacement": scores.replacement, "completeness": scores.completeness},
    }
    return {"metadata": metadata, "qParams": dict(EMPTY_QPARAMS), "nodes": used, "links": links}


def _node(node_id: str, feature: int, layer: str, position: int, feature_type: str, js_id: str, clerp: str,
          influence: Optional[float], activation: Optional[float]) -> dict[str, Any]:
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": position, "feature_type": feature_type,
            "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": js_id,
            "clerp": clerp, "influence": influence, "activation": activation}


def save_graph(graph: AttributionGraph, dictionary: Optional[str | Path] = None, *, slug: Optional[str] = None,
               node_threshold: float = 0.8, edge_threshold: float = 0.98, path: Optional[str | Path] = None) -> Path:
    """Write the graph's JSON to `<dictionary>/graphs/<slug>.json` (the replacement model's folder by
    default) or to `path`; `slug` defaults to the prompt's words. Labels come from the dictionary's
    annotations. Written atomically; an existing file of that name is replaced."""
    dictionary = dictionary if dictionary is not None else graph.dictionary
    slug = check_slug(slug or slugify(graph.prompt))
    if path is None:
        if dictionary is None:
            raise GraphFileError("The graph's replacement model was not loaded from a folder; pass the folder to save "
                                 "it beside (dictionary=...) or a file (path=...).")
        path = graphs_folder(dictionary) / f"{slug}{GRAPH_SUFFIX}"
    data = graph_json(graph, slug=slug, node_threshold=node_threshold, edge_threshold=edge_threshold,
                      labels=feature_labels(dictionary, graph))
    return atomic_write(path, json.dumps(data) + "\n")


# ---------------------------------------------------------------------------------------------- reading


def _layer_rank(node: dict) -> float:
    """A node's place along the model: embeddings first, logits last."""
    if node["feature_type"] == TOKEN_TYPE:
        return -1
    if node["feature_type"] == LOGIT_TYPE:
        return float("inf")
    return float(node["layer"])


def read_graph(data: dict[str, Any], *, source: str = "the graph") -> dict[str, Any]:
    """A graph's JSON (ours, circuit-tracer's or Neuronpedia's) checked, with unique node ids (module
    doc). GraphFileError, naming `source`, for what is not an attribution graph."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in
                                             (("metadata", dict), ("nodes", list), ("links", list))):
        raise GraphFileError(f"{source} is not an attribution graph: it needs the keys metadata, nodes and links "
                             "(Neuronpedia's graph schema).")
    metadata = data["metadata"]
    if not isinstance(metadata.get("prompt_tokens"), list):
        raise GraphFileError(f"{source} has no metadata.prompt_tokens; it is not an attribution graph file.")
    nodes = []
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or not all(k in node for k in ("node_id", "layer", "ctx_idx", "feature_type")):
            raise GraphFileError(f"{source}: node {i} lacks node_id, layer, ctx_idx or feature_type.")
        node = dict(node)
        node.setdefault("feature", None)
        node.setdefault("clerp", "")
        node.setdefault("jsNodeId", node["node_id"])
        node["layer"] = str(node["layer"])
        try:
            node["ctx_idx"] = int(node["ctx_idx"])
            if node["feature_type"] not in (TOKEN_TYPE, LOGIT_TYPE):
                float(node["layer"])
        except (TypeError, ValueError):
            raise GraphFileError(f"{source}: node {node['node_id']!r} has layer {node['layer']!r} / ctx_idx "
                                 f"{node['ctx_idx']!r}, which are not numbers.") from None
        nodes.append(node)

    # Error nodes get this library's ids; remember which old ids they had.
    old_ids = {id(n): n["node_id"] for n in nodes}
    for node in nodes:
        if node["feature_type"] == ERROR_TYPE:
            node["node_id"] = error_node_id(int(float(node["layer"])), node["ctx_idx"])
            node["jsNodeId"] = f"{node['layer']}_-1-{node['ctx_idx']}"
    counts = Counter(n["node_id"] for n in nodes)
    duplicated = [i for i, c in counts.items() if c > 1]
    if duplicated:
        raise GraphFileError(f"{source} lists node {duplicated[0]!r} more than once; every node id must be unique.")
    by_old: dict[str, list[dict]] = {}
    for node in nodes:
        by_old.setdefault(old_ids[id(node)], []).append(node)
    by_new = {n["node_id"]: n for n in nodes}

    def candidates(ref: Any) -> list[dict]:
        """The nodes a link's end may mean: one, none, or an error node and a feature sharing an old id."""
        if not isinstance(ref, str):
            return []
        return by_old.get(ref) or ([by_new[ref]] if ref in by_new else [])

    links, ambiguous = [], 0
    for link in data["links"]:
        if not isinstance(link, dict) or not isinstance(link.get("weight"), (int, float)):
            raise GraphFileError(f"{source}: a link lacks source, target or a numeric weight.")
        sources, targets = candidates(link.get("source")), candidates(link.get("target"))
        if not sources or not targets:
            continue  # a link to a node the file does not list, as circuit-tracer's frontend drops it
        target_node = next((n for n in targets if n["feature_type"] != ERROR_TYPE), targets[0])  # errors get no edges
        source_node = sources[0]
        if len(sources) > 1:
            possible = [n for n in sources if _layer_rank(n) < _layer_rank(target_node)
                        and n["ctx_idx"] <= target_node["ctx_idx"]]
            if len(possible) != 1:
                ambiguous += len(possible) > 1
                possible = [n for n in sources if n["feature_type"] == ERROR_TYPE]
            source_node = possible[0]
        links.append({"source": source_node["node_id"], "target": target_node["node_id"],
                      "weight": float(link["weight"])})

    metadata = dict(metadata)
    metadata.setdefault("prompt", "".join(str(t) for t in metadata["prompt_tokens"]))
    metadata.setdefault("slug", "graph")
    if ambiguous:
        metadata["info"] = {**(metadata.get("info") or {}), "ambiguous_links": ambiguous}
    q_params = {**EMPTY_QPARAMS, **(data.get("qParams") or {})}
    return {"metadata": metadata, "qParams": q_params, "nodes": nodes, "links": links}


def load_graph_file(path: str | Path) -> dict[str, Any]:
    """The graph in a JSON file (`read_graph` of it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GraphFileError(f"There is no graph file {path}.") from None
    except (OSError, ValueError) as e:
        raise GraphFileError(f"{path} is not a readable JSON file ({e}).") from e
    return read_graph(data, source=str(path))


def graph_path(dictionary: str | Path, slug: str) -> Path:
    return graphs_folder(dictionary) / f"{check_slug(slug)}{GRAPH_SUFFIX}"


def list_graphs(dictionary: str | Path) -> list[dict[str, Any]]:
    """The graphs saved beside a dictionary, newest first: slug, prompt, node and link counts, scores,
    modification time; an unreadable file is listed with its error."""
    folder = graphs_folder(dictionary)
    found = []
    for path in sorted(folder.glob(f"*{GRAPH_SUFFIX}")) if folder.is_dir() else []:
        entry: dict[str, Any] = {"slug": path.name[:-len(GRAPH_SUFFIX)], "modified": path.stat().st_mtime}
        try:
            data = load_graph_file(path)
            entry.update(prompt=data["metadata"].get("prompt", ""), n_nodes=len(data["nodes"]),
                         n_links=len(data["links"]), scores=data["metadata"].get("scores"), error=None)
        except GraphFileError as e:
            entry.update(prompt="", n_nodes=0, n_links=0, scores=None, error=str(e))
        found.append(entry)
    return sorted(found, key=lambda e: -e["modified"])


def check_q_params(q_params: dict[str, Any], node_ids: set[str]) -> dict[str, Any]:
    """A subgraph (pinned ids, supernodes) checked against the graph's nodes."""
    if not isinstance(q_params, dict):
        raise GraphFileError("The subgraph must be an object with pinnedIds and supernodes.")
    pinned = q_params.get("pinnedIds", [])
    supernodes = q_params.get("supernodes", [])
    if not isinstance(pinned, list) or len(pinned) > MAX_PINNED or not all(isinstance(p, str) for p in pinned):
        raise GraphFileError(f"pinnedIds must be a list of at most {MAX_PINNED} node ids.")
    unknown = [p for p in pinned if p not in node_ids]
    if unknown:
        raise GraphFileError(f"pinnedIds names {unknown[0]!r}, which is not a node of this graph.")
    if not isinstance(supernodes, list) or len(supernodes) > MAX_SUPERNODES:
        raise GraphFileError(f"supernodes must be a list of at most {MAX_SUPERNODES} groups.")
    for group in supernodes:
        if (not isinstance(group, list) or len(group) < 2 or not all(isinstance(x, str) for x in group)
                or not group[0].strip() or len(group[0]) > 120):
            raise GraphFileError("Each supernode is [name, node_id, ...] with a name of 1 to 120 characters and at "
                                 "least one node.")
        missing = [x for x in group[1:] if x not in node_ids]
        if missing:
            raise GraphFileError(f"Supernode {group[0]!r} names {missing[0]!r}, which is not a node of this graph.")
    return {**EMPTY_QPARAMS, **{k: v for k, v in q_params.items() if k in EMPTY_QPARAMS},
            "pinnedIds": pinned, "supernodes": supernodes}


def save_subgraph(dictionary: str | Path, slug: str, q_params: dict[str, Any]) -> dict[str, Any]:
    """Store a subgraph (pinned nodes, supernodes) in the graph file's qParams; returns the graph."""
    path = graph_path(dictionary, slug)
    data = load_graph_file(path)
    data["qParams"] = check_q_params(q_params, {n["node_id"] for n in data["nodes"]})
    atomic_write(path, json.dumps(data) + "\n")
    return data


def import_graph(source: str | Path, dictionary: str | Path, *, slug: Optional[str] = None) -> Path:
    """Copy a graph file made elsewhere (circuit-tracer, Neuronpedia) into a dictionary's graphs
    folder, with unique node ids (`read_graph`)."""
    data = load_graph_file(source)
    slug = check_slug(slug or data["metadata"].get("slug") or slugify(data["metadata"].get("prompt", "")))
    data["metadata"]["slug"] = slug
    return atomic_write(graph_path(dictionary, slug), json.dumps(data) + "\n")


__all__ = ["EMPTY_QPARAMS", "ERROR_TYPE", "FEATURE_TYPE", "LOGIT_TYPE", "TOKEN_TYPE", "cantor_pair", "check_q_params",
           "check_slug", "error_node_id", "feature_labels", "feature_node_id", "feature_store_index", "graph_json",
           "graph_path", "import_graph", "list_graphs", "load_graph_file", "read_graph", "save_graph",
           "save_subgraph", "slugify"]
