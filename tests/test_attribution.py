"""Attribution graphs (core/attribution): edges are direct effects in the frozen local replacement model
(checked against a separate reference that perturbs one source at a time through the real
TransformerBridge), the same graphs and scores as the real circuit-tracer 0.5, pruning, the feature cap,
logit selection, the graph files (schema, round trips, circuit-tracer's shared ids), interventions, and
one clear error for each kind of bad input.

The tiny GPT-2 here has random LayerNorm weights and biases and attention biases (a freshly initialized
one has weights 1 and biases 0, which would hide a wrong transpose of the norms); the Llama path runs on
the offline SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from safetensors.torch import load_file, save_file

from core import Annotations, LanguageModelConfig, SAEConfig, export_circuit_tracer, load_language_model
from core.attribution import (FeatureIntervention, attribute, graph_json, import_graph, intervene, list_graphs,
                              load_graph_file, read_graph, save_graph, save_subgraph)
from core.attribution.graph_file import feature_store_index, graph_path
from core.errors import AttributionError, ConfigError, GraphFileError
from core.sae import CrossLayerTranscoder, SparseAutoencoder, TranscoderSet, create_dictionary
from tests.test_circuit_tracer import circuit_tracer_python, randomized
from tests.tiny_gpt2 import build_weighted_tiny_gpt2

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "tests" / "data" / "attribution_graph_schema.json").read_text())
pytestmark = pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale")  # (the reference freezes norms)
SHARED_IDS = ROOT / "tests" / "data" / "foreign" / "circuit_tracer_graph_shared_ids.json"
PROMPT = "The cat sat on the mat because it was warm there"
EDGE_TOLERANCE = 1e-4
"""Largest difference between an edge and the reference's change of its target, relative to the
target's largest edge (float32 sums in other orders)."""
CIRCUIT_TRACER_TOLERANCE = 1e-5
"""Largest difference between this library's and circuit-tracer's edges (and scores), relative to the
largest edge."""


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A 3-layer tiny GPT-2 whose norms and attention have random weights and biases."""
    return build_weighted_tiny_gpt2(tmp_path_factory.mktemp("weighted-gpt2") / "model", n_layer=3)


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return load_language_model(LanguageModelConfig(name=str(gpt2_dir)))


def transcoder_set(model, layers, *, hook: str = "mlp.hook_in", skip: bool = True, seed: int = 0,
                   architecture: str = "jumprelu") -> TranscoderSet:
    members = []
    for layer in layers:
        sae = create_dictionary(SAEConfig(architecture=architecture, d_sae=96, k=8, skip_connection=skip), model.d_model,
                                hook_name=f"blocks.{layer}.{hook}", hook_out=f"blocks.{layer}.hook_mlp_out",
                                d_out=model.d_model, model_name=model.name)
        members.append(randomized(sae, seed + layer))
        if sae.has_inference_threshold:
            sae.threshold.fill_(0.3)
    return TranscoderSet(members)


def clt(model, layers, *, hook: str = "mlp.hook_in", seed: int = 10) -> CrossLayerTranscoder:
    return randomized(CrossLayerTranscoder(SAEConfig(architecture="jumprelu", d_sae=96), model.d_model, layers=layers,
                                           model_name=model.name, input_hook=f"blocks.{{layer}}.{hook}"), seed)


REPLACEMENTS = {
    "set": lambda m: transcoder_set(m, (0, 1, 2)),
    "clt": lambda m: clt(m, (0, 1, 2)),
    # one layer uncovered (all error), features reading the normalized vector before the norm's weight and bias
    "set, layer 2 uncovered, ln2.hook_normalized, batchtopk": lambda m: transcoder_set(
        m, (0, 1), hook="ln2.hook_normalized", architecture="batchtopk", skip=False),
    "clt, layer 0 uncovered, hook_resid_mid": lambda m: clt(m, (1, 2), hook="hook_resid_mid"),
}


# ------------------------------------------------------------------ the reference: one source at a time


class FrozenReference:
    """The local replacement model of a prompt run through the real TransformerBridge with hooks:
    attention patterns and normalization denominators replaced by their values on the prompt, each MLP
    output replaced by its value on the prompt plus what the perturbed sources change (and the skip
    path's response to its changed input). Written from the definitions, sharing nothing with
    core.attribution but the replacement model's own inference API."""

    def __init__(self, model, replacement, tokens: list[int]):
        self.model, self.replacement = model, replacement
        self.tokens = torch.tensor(tokens)
        n = model.n_layers
        names = ["ln_final.hook_scale", *replacement.hook_names]
        for l in range(n):
            names += [f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.ln1.hook_scale", f"blocks.{l}.ln2.hook_scale",
                      f"blocks.{l}.hook_mlp_out"]
        with torch.no_grad():
            logits, self.cache = model.bridge.run_with_cache(self.tokens[None], names_filter=names,
                                                             return_cache_object=False)
        self.logits = logits[0, -1]
        self.inputs = {l: self.cache[h][0] for l, h in zip(replacement.layers, replacement.hook_names)}
        x = torch.stack([self.inputs[l] for l in replacement.layers], dim=1)  # [P, L, d_in]
        with torch.no_grad():
            features = replacement.encode(x)
            features[0] = 0  # position 0 (BOS) has no nodes
            self.features = features
            reconstruction = replacement.decode(features, x)
        self.errors = torch.stack([self.cache[f"blocks.{l}.hook_mlp_out"][0] for l in range(n)])
        for i, l in enumerate(replacement.layers):
            self.errors[l] -= reconstruction[:, i]
        self.errors[:, 0] = 0

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.zeros(x.shape[0], len(self.replacement.layers), x.shape[-1])
        i = self.replacement.layers.index(layer)
        stacked[:, i] = x
        out = self.replacement.skip(stacked)
        return 0 if out is None else out[:, i]

    def run(self, mlp_delta: torch.Tensor, embed_delta: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """(inputs of the covered layers, logits minus their mean at the last position) with `mlp_delta`
        [n_layers, P, d] added to the MLP outputs and `embed_delta` [P, d] to the token embeddings."""
        caught, hooks = {}, []
        for l in range(self.model.n_layers):
            for name in (f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.ln1.hook_scale", f"blocks.{l}.ln2.hook_scale"):
                hooks.append((name, lambda a, hook, v=self.cache[name]: v))

            def mlp_out(a, hook, l=l):
                out = self.cache[f"blocks.{l}.hook_mlp_out"][0] + mlp_delta[l]
                if l in self.inputs:
                    out = out + self.skip(l, caught[l]) - self.skip(l, self.inputs[l])
                return out[None]
            hooks.append((f"blocks.{l}.hook_mlp_out", mlp_out))
        for l, h in zip(self.replacement.layers, self.replacement.hook_names):
            hooks.append((h, lambda a, hook, l=l: caught.__setitem__(l, a[0].clone())))
        hooks.append(("ln_final.hook_scale", lambda a, hook: self.cache["ln_final.hook_scale"]))
        hooks.append(("hook_embed", lambda a, hook: a + embed_delta[None]))
        with torch.no_grad():
            logits = self.model.bridge.run_with_hooks(self.tokens[None], fwd_hooks=hooks)[0, -1]
        return caught, logits - logits.mean()

    def targets(self, graph, inputs: dict, logits: torch.Tensor) -> torch.Tensor:
        """The graph's targets on these inputs: feature pre-activations, then the logit targets."""
        values = []
        for layer, position, feature in graph.features.tolist():
            encoder = self.replacement.encoder_vectors(layer, torch.tensor([feature]))[0]
            values.append(inputs[layer][position] @ encoder + self.replacement.encoder_bias(layer)[feature])
        return torch.cat([torch.stack(values), logits[[t.token_id for t in graph.logit_targets]]])

    def removal(self, graph, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mlp_delta, embed_delta) that remove source `node` of the graph."""
        mlp_delta = torch.zeros_like(self.errors)
        embed_delta = torch.zeros(len(self.tokens), self.errors.shape[-1])
        kind = graph.node_kind(node)
        if kind == "feature":
            layer, position, feature = graph.features[node].tolist()
            i = self.replacement.layers.index(layer)
            decoder = self.replacement.decoder_vectors(layer, torch.tensor([feature]))[0]
            for t, target in enumerate(self.replacement.target_layers(layer)):
                mlp_delta[target, position] -= self.features[position, i, feature] * decoder[t]
        elif kind == "error":
            layer, position = divmod(node - graph.error_offset, graph.n_pos)
            mlp_delta[layer, position] -= self.errors[layer, position]
        else:
            position = node - graph.token_offset
            embed_delta[position] -= self.model.bridge.W_E[self.tokens[position]]
        return mlp_delta, embed_delta


def target_rows(graph) -> list[int]:
    return list(range(graph.n_features)) + list(range(graph.logit_offset, graph.n_nodes))


def check_direct_effects(model, replacement, graph, n_sources: int = 8, n_errors: int = 3) -> None:
    reference = FrozenReference(model, replacement, graph.tokens)
    rows = target_rows(graph)
    base = reference.targets(graph, *reference.run(torch.zeros_like(reference.errors),
                                                   torch.zeros(graph.n_pos, model.d_model)))
    g = torch.Generator().manual_seed(0)
    errors = [graph.error_node(l, p) for l in range(graph.n_layers) for p in range(1, graph.n_pos)]
    sources = (torch.randperm(graph.n_features, generator=g)[:n_sources].tolist()
               + [errors[i] for i in torch.randperm(len(errors), generator=g)[:n_errors].tolist()]
               + [graph.token_offset, graph.token_offset + graph.n_pos - 1])
    assert any(graph.adjacency[rows][:, s].abs().max() > 0 for s in sources[:n_sources])
    for s in sources:
        changed = reference.targets(graph, *reference.run(*reference.removal(graph, s)))
        expected = -graph.adjacency[rows, s]  # removing the source removes its direct effect
        scale = graph.adjacency[rows].abs().max(dim=1).values.clamp_min(1.0)
        assert (((changed - base) - expected).abs() / scale).max() < EDGE_TOLERANCE, (graph.node_kind(s), s)

    # Removing every source leaves the biases; incoming edges + biases = each target's pre-activation.
    mlp_delta, embed_delta = torch.zeros_like(reference.errors), torch.zeros(graph.n_pos, model.d_model)
    for s in list(range(graph.n_features)) + list(range(graph.error_offset, graph.logit_offset)):
        m, e = reference.removal(graph, s)
        mlp_delta += m
        embed_delta += e
    biases = reference.targets(graph, *reference.run(mlp_delta, embed_delta))
    total = graph.adjacency[rows].sum(dim=1) + biases
    assert ((total - base).abs() / base.abs().max()).max() < EDGE_TOLERANCE


@pytest.mark.parametrize("name", list(REPLACEMENTS))
def test_edges_are_direct_effects_in_the_frozen_local_replacement_model(gpt2, name):
    replacement = REPLACEMENTS[name](gpt2)
    graph = attribute(PROMPT, replacement, gpt2, max_feature_nodes=None, batch_size=64)
    assert graph.n_features == graph.n_active_features > 100 and graph.n_layers == 3
    assert graph.adjacency.shape == (graph.n_features + 4 * graph.n_pos + graph.n_logits,) * 2
    check_direct_effects(gpt2, replacement, graph)


def test_llama_path_on_the_offline_model():
    """SmolLM2 (RMSNorm, grouped-query attention, rotary positions): two covered layers of 30."""
    model = load_language_model(LanguageModelConfig(name="SmolLM2-135M-Instruct"))
    replacement = transcoder_set(model, (3, 4), seed=5)
    graph = attribute("The capital of France is", replacement, model, max_feature_nodes=None)
    assert graph.n_layers == 30 and graph.n_features > 20
    check_direct_effects(model, replacement, graph, n_sources=3, n_errors=1)


# ------------------------------------------------------------------ circuit-tracer 0.5


def test_the_same_graph_as_circuit_tracer(gpt2_dir, gpt2, tmp_path):
    python = circuit_tracer_python()
    tokens = gpt2.tokenize(PROMPT)[0]
    save_file({"tokens": tokens}, str(tmp_path / "tokens.safetensors"))
    models = {"set": REPLACEMENTS["set"](gpt2), "clt": REPLACEMENTS["clt"](gpt2),
              # the normalized vector before the norms' weights and biases: circuit-tracer's hook of that
              # name, and its mlp.hook_in with the norms folded into the encoders
              "set, ln2.hook_normalized": transcoder_set(gpt2, (0, 1, 2), hook="ln2.hook_normalized",
                                                         architecture="batchtopk", seed=3),
              "set, ln2.hook_normalized, folded": transcoder_set(gpt2, (0, 1, 2), hook="ln2.hook_normalized",
                                                                 architecture="batchtopk", seed=3)}
    runs = [("set", None), ("set", 150), ("clt", None), ("clt", 150), ("set, ln2.hook_normalized", None),
            ("set, ln2.hook_normalized, folded", None)]
    jobs = []
    for name, cap in runs:
        replacement = models[name]
        folder = tmp_path / name.replace(", ", "-").replace(".", "_")
        if not folder.exists():
            export_circuit_tracer(replacement, folder, gpt2 if name.endswith("folded") else None)
        settings = dict(max_n_logits=10, desired_logit_prob=0.95, batch_size=64, max_feature_nodes=cap,
                        update_interval=2)
        jobs.append({"job": "attribute", "folder": str(folder), "model": str(gpt2_dir),
                     "tokens": str(tmp_path / "tokens.safetensors"), "out": str(tmp_path / f"{folder.name}-{cap}.safetensors"),
                     "json": str(tmp_path / f"{folder.name}-{cap}.json"), "settings": settings, "name": name})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    run = subprocess.run([str(python), str(ROOT / "tests" / "circuit_tracer_encode.py"), str(tmp_path / "jobs.json")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    for job in jobs:
        settings = {k: v for k, v in job["settings"].items()}
        graph = attribute(tokens.tolist(), models[job["name"]], gpt2, **settings)
        theirs = load_file(job["out"])
        their_features = theirs["active_features"][theirs["selected_features"]]
        assert torch.equal(graph.features, their_features), job  # the same nodes, in the same order
        assert [t.token_id for t in graph.logit_targets] == theirs["logit_ids"].tolist()
        scale = theirs["adjacency"].abs().max()
        difference = ((graph.adjacency - theirs["adjacency"]).abs().max() / scale).item()
        assert difference < CIRCUIT_TRACER_TOLERANCE, (job["name"], job["settings"]["max_feature_nodes"], difference)
        ours = graph.scores()
        assert abs(ours.replacement - theirs["scores"][0]) < CIRCUIT_TRACER_TOLERANCE
        assert abs(ours.completeness - theirs["scores"][1]) < CIRCUIT_TRACER_TOLERANCE
        pruned = graph.prune(0.8, 0.98)
        assert torch.equal(pruned.node_mask, theirs["node_mask"]) and torch.equal(pruned.edge_mask, theirs["edge_mask"])
        print(f"{job['name']}, max_feature_nodes={job['settings']['max_feature_nodes']}: {graph.n_features} feature "
              f"nodes, largest edge difference {difference:.1e} of the largest edge, scores "
              f"{ours.replacement:.6f} / {ours.completeness:.6f} vs {theirs['scores'][0]:.6f} / {theirs['scores'][1]:.6f}")

        if "ln2" in job["name"]:
            continue  # (layer 0's feature 0 is active here, and circuit-tracer's JSON gives it its error node's id: test_circuit_tracer_shared_ids_are_not_merged)
        # circuit-tracer's JSON of the same graph opens here with the nodes and links of ours.
        mine = graph_json(graph, slug="x")
        their_json = read_graph(json.loads(Path(job["json"]).read_text()))
        assert {n["node_id"] for n in their_json["nodes"]} == {n["node_id"] for n in mine["nodes"]}
        theirs_links = {(l["source"], l["target"]): l["weight"] for l in their_json["links"]}
        mine_links = {(l["source"], l["target"]): l["weight"] for l in mine["links"]}
        assert theirs_links.keys() == mine_links.keys()
        assert max(abs(theirs_links[k] - mine_links[k]) for k in mine_links) < CIRCUIT_TRACER_TOLERANCE * scale


# ------------------------------------------------------------------ settings: cap, logits, pruning


@pytest.fixture(scope="module")
def set_graph(gpt2):
    replacement = REPLACEMENTS["set"](gpt2)
    return replacement, attribute(PROMPT, replacement, gpt2, max_feature_nodes=None, batch_size=64)


def test_the_feature_cap_keeps_rows_and_drops_only_nodes(gpt2, set_graph):
    replacement, full = set_graph
    capped = attribute(PROMPT, replacement, gpt2, max_feature_nodes=40, batch_size=16, update_interval=1)
    assert capped.n_features == 40 and capped.n_active_features == full.n_active_features
    assert capped.stats["backward_passes"] == 1 + 40 // 16 + 1
    index = [full.feature_node(*f) for f in capped.features.tolist()]
    keep = index + list(range(full.error_offset, full.n_nodes))  # the capped graph's nodes, in the full graph
    rows = index + list(range(full.logit_offset, full.n_nodes))
    capped_rows = list(range(40)) + list(range(capped.logit_offset, capped.n_nodes))
    assert torch.allclose(capped.adjacency[capped_rows], full.adjacency[rows][:, keep], atol=1e-5)
    # The first features visited are those with the largest direct effect on the logits.
    direct = full.adjacency[full.logit_offset:, :full.n_features].abs()
    weights = torch.tensor([t.probability for t in full.logit_targets])
    ranked = ((direct / full.adjacency[full.logit_offset:].abs().sum(1, keepdim=True)) * weights[:, None]).sum(0)
    assert set(torch.topk(ranked, 16).indices.tolist()) <= set(index)


def test_logit_targets(gpt2, set_graph):
    replacement, full = set_graph
    probabilities = [t.probability for t in full.logit_targets]
    assert len(full.logit_targets) == 10 and probabilities == sorted(probabilities, reverse=True)
    one = attribute(PROMPT, replacement, gpt2, desired_logit_prob=1e-6, max_feature_nodes=10)
    assert [t.token_id for t in one.logit_targets] == [full.logit_targets[0].token_id]
    three = attribute(PROMPT, replacement, gpt2, max_n_logits=3, max_feature_nodes=10)
    assert [t.token_id for t in three.logit_targets] == [t.token_id for t in full.logit_targets[:3]]
    named = attribute(PROMPT, replacement, gpt2, logit_tokens=[" the", 13], max_feature_nodes=10)
    assert [t.token_id for t in named.logit_targets] == [262, 13] and named.logit_targets[0].token == " the"
    # A logit row is the direct effect on the logit minus the mean logit: the same row whichever tokens are named.
    both = attribute(PROMPT, replacement, gpt2, logit_tokens=[13], max_feature_nodes=10)
    assert torch.allclose(both.adjacency[-1, both.error_offset:both.logit_offset],
                          named.adjacency[-1, named.error_offset:named.logit_offset], atol=1e-5)
    with pytest.raises(AttributionError, match="is 3 tokens of this model"):
        attribute(PROMPT, replacement, gpt2, logit_tokens=[" antidisestablishment"])


def test_pruning_thresholds(set_graph):
    _, graph = set_graph
    influence = graph.node_influence()
    loose, tight = graph.prune(0.95, 0.99), graph.prune(0.5, 0.9)
    fixed = slice(graph.token_offset, graph.n_nodes)
    assert loose.node_mask[fixed].all() and tight.node_mask[fixed].all()  # tokens and logits stay
    assert (tight.node_mask <= loose.node_mask).all() and tight.node_mask.sum() < loose.node_mask.sum()
    assert tight.edge_mask.sum() < loose.edge_mask.sum()
    for pruned in (loose, tight):
        kept = pruned.node_mask[:graph.n_features]
        assert pruned.edge_mask[:graph.n_features].any(1)[kept].all()  # every kept feature has a kept input
        assert pruned.edge_mask[:, :graph.n_features].any(0)[kept].all()  # and a kept output
        assert not pruned.edge_mask[~pruned.node_mask].any() and not pruned.edge_mask[:, ~pruned.node_mask].any()
    # Cumulative scores rank nodes by influence; pruning keeps the most influential up to the threshold.
    order = torch.argsort(influence, descending=True)
    assert (loose.cumulative_scores[order].diff() >= 0).all()
    for pruned, threshold in ((loose, 0.95), (tight, 0.5)):
        reached = pruned.cumulative_scores[pruned.cumulative_scores >= threshold].min()
        assert (pruned.cumulative_scores[:graph.token_offset][pruned.node_mask[:graph.token_offset]] <= reached).all()
    scores = graph.scores()
    assert 0 < scores.replacement < 1 and 0 < scores.completeness < 1
    with pytest.raises(ValueError, match="node_threshold is 1.5"):
        graph.prune(1.5)


# ------------------------------------------------------------------ files


def test_graph_files_follow_the_schema_and_round_trip(gpt2, set_graph, tmp_path):
    _, graph = set_graph
    data = graph_json(graph, slug="cat")
    jsonschema.validate(data, SCHEMA)
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids))
    assert {l["source"] for l in data["links"]} | {l["target"] for l in data["links"]} <= set(ids)
    kinds = {n["feature_type"] for n in data["nodes"]}
    assert kinds == {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}
    assert data["metadata"]["prompt_tokens"] == graph.token_strings and data["metadata"]["scores"]["replacement"] > 0
    logit = next(n for n in data["nodes"] if n["is_target_logit"])
    assert logit["layer"] == "4" and logit["clerp"].startswith(f'Output "{graph.logit_targets[0].token}" (p=')
    # Kept features and errors reach at most the node threshold, but the one that crosses it.
    assert sum(n["influence"] > 0.8 for n in data["nodes"] if n["feature_type"] in ("cross layer transcoder",
                                                                                  "mlp reconstruction error")) <= 1
    assert read_graph(json.loads(json.dumps(data))) == data  # Neuronpedia-format round trip

    dictionary = tmp_path / "dictionaries" / "set"
    path = save_graph(graph, dictionary, slug="cat")
    assert path == graph_path(dictionary, "cat") == dictionary / "graphs" / "cat.json"
    loaded = load_graph_file(path)
    assert loaded["nodes"] == data["nodes"] and loaded["links"] == data["links"]
    assert [g["slug"] for g in list_graphs(dictionary)] == ["cat"]

    feature = next(n for n in loaded["nodes"] if n["feature_type"] == "cross layer transcoder")
    pinned = [feature["node_id"], loaded["nodes"][0]["node_id"]]
    save_subgraph(dictionary, "cat", {"pinnedIds": pinned, "supernodes": [["start", *pinned]]})
    assert load_graph_file(path)["qParams"]["supernodes"] == [["start", *pinned]]
    with pytest.raises(GraphFileError, match="not a node of this graph"):
        save_subgraph(dictionary, "cat", {"pinnedIds": ["9_9_9"], "supernodes": []})
    with pytest.raises(GraphFileError, match="not usable as a file name"):
        save_graph(graph, dictionary, slug="../escape")


def test_labels_and_explanations_become_clerps(set_graph, tmp_path):
    """A person's label wins; a feature without one shows its explanation from an analysis' explanations file."""
    from core.autointerp.explanations import Explanation, ExplanationsWriter

    _, graph = set_graph
    dictionary = tmp_path / "set"
    nodes = [n for n in graph_json(graph, slug="x")["nodes"] if n["feature_type"] == "cross layer transcoder"]
    (l1, f1), (l2, f2) = [(int(n["layer"]), int(n["node_id"].split("_")[1])) for n in nodes[:2]]
    index = lambda layer, feature: feature_store_index(graph.replacement_layers, graph.d_sae, layer, feature)  # noqa: E731
    Annotations.of_dictionary(dictionary).save(index(l1, f1), label="cats and mats", notes="", bookmarked=False, version=0)
    analysis = dictionary / "analysis" / "default"
    analysis.mkdir(parents=True)
    with ExplanationsWriter(analysis) as writer:
        set_id = writer.explanation_set({"seed": 0}, explainer_model="hand", prompt_version=1)
        writer.write_explanations([Explanation(set_id, i, "ok", text, "", [], [], [], 0, 0, "2026-01-01")
                                   for i, text in ((index(l1, f1), "explained"), (index(l2, f2), "the word 'on'"))])
    data = load_graph_file(save_graph(graph, dictionary, slug="labelled"))
    clerps = {n["node_id"]: n["clerp"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"}
    assert clerps[nodes[0]["node_id"]] == "cats and mats" and clerps[nodes[1]["node_id"]] == "the word 'on'"
    labelled = {(l1, f1), (l2, f2)}
    assert all(c == "" for i, c in clerps.items() if (int(i.split("_")[0]), int(i.split("_")[1])) not in labelled)


def test_circuit_tracer_shared_ids_are_not_merged(tmp_path):
    """circuit-tracer 0.5 gives the error node of layer 2 at position 3 and feature 2 of layer 0 there the
    same id; they stay two nodes, and each link goes to the one it can belong to."""
    raw = json.loads(SHARED_IDS.read_text())
    assert [n["node_id"] for n in raw["nodes"]].count("0_2_3") == 2
    path = import_graph(SHARED_IDS, tmp_path / "dictionary")
    data = load_graph_file(path)
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)) and "0_2_3" in ids and "2_-1_3" in ids
    links = {(l["source"], l["target"]): l["weight"] for l in data["links"]}
    assert links[("E_3797_2", "0_2_3")] == 1.25  # into the shared id: the feature (errors have no inputs)
    assert links[("0_2_3", "1_5_3")] == 0.5  # from it to layer 1: only the layer-0 feature can
    assert links[("2_-1_3", "3_7_3")] == -0.75 and links[("2_-1_3", "5_319_3")] == 1.0  # either could: the error
    assert data["metadata"]["info"]["ambiguous_links"] == 2 and len(links) == 6
    jsonschema.validate(data, SCHEMA)
    with pytest.raises(GraphFileError, match="not an attribution graph"):
        read_graph({"nodes": []})


# ------------------------------------------------------------------ interventions


@pytest.mark.parametrize("name", ["set", "clt"])
def test_interventions_change_logits_as_the_graph_predicts(gpt2, name):
    replacement = REPLACEMENTS[name](gpt2)
    graph = attribute(PROMPT, replacement, gpt2, max_feature_nodes=None, batch_size=64)
    ids = [t.token_id for t in graph.logit_targets]
    nothing = intervene(PROMPT, replacement, gpt2, [])
    assert (nothing.intervened_logits - nothing.original_logits).abs().max() < 1e-3
    assert [t.token_id for t in nothing.intervened[:3]] == ids[:3]

    def change(result):
        delta = result.intervened_logits - result.original_logits
        return (delta - delta.mean())[ids]

    last = [i for i, (l, _, _) in enumerate(graph.features.tolist()) if l == 2]
    for node in [0, graph.n_features // 2, last[0]]:
        layer, position, feature = graph.features[node].tolist()
        edges = graph.adjacency[graph.logit_offset:, node]
        direct = intervene(PROMPT, replacement, gpt2, [FeatureIntervention(layer, position, feature, scale=0.0)],
                           propagate=False)
        assert (change(direct) + edges).abs().max() < 1e-3 * max(1.0, edges.abs().max())  # ablation removes the edges
        assert direct.applied == [(layer, position, feature, pytest.approx(float(graph.activations[node])), 0.0)]
        doubled = intervene(PROMPT, replacement, gpt2, [FeatureIntervention(layer, position, feature, scale=2.0)],
                            propagate=False)
        assert (change(doubled) - edges).abs().max() < 1e-3 * max(1.0, edges.abs().max())
    # A feature of the last layer has no later features to act through: propagating changes nothing.
    layer, position, feature = graph.features[last[0]].tolist()
    propagated = intervene(PROMPT, replacement, gpt2, [FeatureIntervention(layer, position, feature, scale=0.0)])
    assert (change(propagated) + graph.adjacency[graph.logit_offset:, last[0]]).abs().max() < 1e-3
    with pytest.raises(AttributionError, match="positions run 1.."):
        intervene(PROMPT, replacement, gpt2, [FeatureIntervention(layer, 0, feature)])


# ------------------------------------------------------------------ bad input


def test_bad_input_gives_one_clear_error(gpt2, tiny_model, set_graph, tmp_path):
    replacement, _ = set_graph
    with pytest.raises(AttributionError, match="The prompt is empty"):
        attribute("   ", replacement, gpt2)
    with pytest.raises(AttributionError, match=r"The prompt has 11 tokens; attribution graphs take at most 5"):
        attribute(PROMPT, replacement, gpt2, max_prompt_tokens=5)
    with pytest.raises(ConfigError, match="trained on model"):  # a replacement model of another model
        attribute(PROMPT, replacement, tiny_model)
    beyond = transcoder_set(gpt2, (0, 5))  # layer 5 of a 3-layer model
    with pytest.raises(ConfigError, match=r"covers layers \[0, 5\] but .* has 3; it belongs to another model"):
        attribute(PROMPT, beyond, gpt2)
    sae = create_dictionary(SAEConfig(architecture="topk", d_sae=32, k=4), gpt2.d_model,
                            hook_name="blocks.1.hook_resid_post", model_name=gpt2.name)
    with pytest.raises(AttributionError, match="not a replacement model"):
        attribute(PROMPT, sae, gpt2)
    with pytest.raises(AttributionError, match="not a replacement model"):
        attribute(PROMPT, sae.save(tmp_path / "sae"), gpt2)
    with pytest.raises(AttributionError, match=r"would take .* GiB .* Lower max_feature_nodes or shorten the prompt"):
        attribute(PROMPT, replacement, gpt2, max_edge_bytes=10_000)
    with pytest.raises(ConfigError, match="batch_size is 0"):
        attribute(PROMPT, replacement, gpt2, batch_size=0)


def test_the_benchmark_runs_in_smoke_mode():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "attribution.py"), "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "attribution" in out.stdout and "backward passes" in out.stdout


def test_the_example_script_writes_a_graph(gpt2, tmp_path):
    folder = REPLACEMENTS["set"](gpt2).save(tmp_path / "results" / "run" / "dictionaries" / "set")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "run_attribution_example.py"), "--dictionary", str(folder),
                          "--prompt", PROMPT, "--max-feature-nodes", "200", "--slug", "cat"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert f"graph written to {folder / 'graphs' / 'cat.json'}" in out.stdout and "ablating L" in out.stdout
    assert load_graph_file(folder / "graphs" / "cat.json")["metadata"]["prompt"] == PROMPT
    bad = subprocess.run([sys.executable, str(ROOT / "run_attribution_example.py"), "--dictionary", str(folder),
                          "--prompt", " "], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: The prompt is empty")
