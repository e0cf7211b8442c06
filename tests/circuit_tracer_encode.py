"""Run circuit-tracer folders through the real circuit-tracer 0.5: what circuit-tracer computes.

Runs inside `.venv-circuit-tracer` (not this project's environment; see
tests/data/make_circuit_tracer_fixtures.py). Used by make_circuit_tracer_fixtures.py to record the
expected outputs of the fixtures it writes, and by tests/test_circuit_tracer.py on the folders that
`export_circuit_tracer` writes:

    <venv>/bin/python tests/circuit_tracer_encode.py JOBS.json

JOBS.json is a list of jobs, each loading `folder` the way `ReplacementModel.from_pretrained(model,
"/abs/folder")` does (`load_transcoder_from_hub` of the absolute path):

- {"job": "folder", "folder", "inputs", "out"}: INPUTS holds `x` [L, n, d_model], each covered
  layer's input; OUT gets `features` [L, n, d_transcoder] (encode_layer of every layer) and
  `reconstruction` [L, n, d_model] (decode of those, with the skip paths).
- {"job": "model", "folder", "model", "tokens", "out"}: `model` is a local GPT-2 folder (Hugging
  Face format), run by circuit-tracer's TransformerLens backend (built from its config and state
  dict by hand: that backend loads only official model names); TOKENS holds `tokens` [n_pos]. OUT
  gets `mlp_in`, `mlp_out` [L, n_pos, d_model] (the hooks circuit-tracer reads and replaces),
  `activations` [L, n_pos, d_transcoder] (`get_activations`, position 0 zeroed as circuit-tracer
  does), `reconstruction` [L, n_pos, d_model] (`compute_attribution_components` of mlp_in, what its
  attribution starts from) and `logits` [n_pos, d_vocab].
- {"job": "attribute", "folder", "model", "tokens", "out", "settings", "json"?, "backend"?}: circuit-tracer's
  `attribute` of TOKENS through the model (a local GPT-2 folder as above, or with "backend": "nnsight"
  a local Llama-style folder that its nnsight backend loads) with `settings` (max_n_logits,
  desired_logit_prob, batch_size, max_feature_nodes, and update_interval); OUT gets its `Graph`
  (`adjacency`, `active_features`, `selected_features`, `activation_values`, `logit_ids`,
  `logit_probabilities`), `prune_graph`'s `node_mask`, `edge_mask` and `cumulative_scores` at 0.8 / 0.98,
  `scores` (replacement, completeness: `compute_graph_scores`), `seconds` (the `attribute` call) and
  `peak_bytes` (the process's resident memory during it above what it held before: benchmarks/memory.py);
  "threads" sets torch's CPU threads. With "json", circuit-tracer's frontend files code writes the
  pruned graph there (slug "circuit-tracer").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.memory import PeakMemory  # noqa: E402  (standard library only)


def load(folder: str):
    from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

    transcoders, _ = load_transcoder_from_hub(str(Path(folder).resolve()), device=torch.device("cpu"),
                                              dtype=torch.float32, lazy_encoder=False, lazy_decoder=False)
    return transcoders


def folder_job(folder: str, inputs: str) -> dict[str, torch.Tensor]:
    transcoders = load(folder)
    x = load_file(inputs)["x"]
    with torch.no_grad():
        features = torch.stack([transcoders.encode_layer(x[i], i) for i in range(x.shape[0])])
        reconstruction = transcoders.decode(features, x)
    return {"features": features, "reconstruction": reconstruction}


def gpt2_replacement_model(model_folder: str, transcoders):
    from circuit_tracer import ReplacementModel
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(model_folder)
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner or 4 * c.n_embd,
        n_layers=c.n_layer, n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size,
        act_fn=c.activation_function, use_attn_scale=True, normalization_type="LN",
        original_architecture="GPT2LMHeadModel", model_name=Path(model_folder).name, device="cpu", dtype=torch.float32)
    model = ReplacementModel.from_config(cfg, transcoders, backend="transformerlens")
    # The replacement model wraps each MLP and the unembedding (ReplacementMLP, ReplacementUnembed).
    state = {}
    for key, value in convert_gpt2_weights(hf, cfg).items():
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2] == "mlp":
            key = ".".join(parts[:3] + ["old_mlp"] + parts[3:])
        elif parts[0] == "unembed":
            key = ".".join(["unembed", "old_unembed"] + parts[1:])
        state[key] = value
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected keys {result.unexpected_keys}")
    return model, hf


def model_job(folder: str, model_folder: str, tokens: str) -> dict[str, torch.Tensor]:
    transcoders = load(folder)
    model, hf = gpt2_replacement_model(model_folder, transcoders)
    ids = load_file(tokens)["tokens"]
    names = [f"blocks.{i}.{model.feature_input_hook}" for i in range(model.cfg.n_layers)]
    outs = [f"blocks.{i}.{model.original_feature_output_hook}" for i in range(model.cfg.n_layers)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids[None], names_filter=lambda n: n in names or n in outs)
        _, activations = model.get_activations(ids[None])
        mlp_in = torch.stack([cache[n][0] for n in names])
        components = model.transcoders.compute_attribution_components(mlp_in)
        hf_logits = hf(ids[None]).logits[0]
    return {"mlp_in": mlp_in, "mlp_out": torch.stack([cache[n][0] for n in outs]), "activations": activations,
            "reconstruction": components["reconstruction"], "logits": logits[0], "hf_logits": hf_logits}


def attribute_job(job: dict) -> dict[str, torch.Tensor]:
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph

    transcoders = load(job["folder"])
    if job.get("backend") == "nnsight":
        model = ReplacementModel.from_pretrained_and_transcoders(job["model"], transcoders, backend="nnsight",
                                                                 device=torch.device("cpu"), dtype=torch.float32)
    else:
        from transformers import AutoTokenizer

        model, _ = gpt2_replacement_model(job["model"], transcoders)
        model.set_tokenizer(AutoTokenizer.from_pretrained(job["model"]))  # (built from a config, it has none)
    ids = load_file(job["tokens"])["tokens"]
    settings = job["settings"]
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    with PeakMemory() as peak:
        started = time.perf_counter()
        graph = attribute(ids, model, max_n_logits=settings["max_n_logits"],
                          desired_logit_prob=settings["desired_logit_prob"], batch_size=settings["batch_size"],
                          max_feature_nodes=settings["max_feature_nodes"], update_interval=settings["update_interval"])
        seconds = time.perf_counter() - started
    pruned = prune_graph(graph, 0.8, 0.98)
    scores = compute_graph_scores(graph)
    if job.get("json"):
        write_graph_json(graph, pruned, job["model"], Path(job["json"]))
    return {"adjacency": graph.adjacency_matrix, "active_features": graph.active_features,
            "selected_features": graph.selected_features, "activation_values": graph.activation_values,
            "logit_ids": graph.logit_token_ids, "logit_probabilities": graph.logit_probabilities,
            "node_mask": pruned.node_mask, "edge_mask": pruned.edge_mask, "cumulative_scores": pruned.cumulative_scores,
            "scores": torch.tensor(scores), "seconds": torch.tensor(seconds), "peak_bytes": torch.tensor(float(peak.bytes))}


def write_graph_json(graph, pruned, model_folder: str, path: Path) -> None:
    """The JSON circuit-tracer's `create_graph_files` writes, with the tokenizer of the local model folder
    (create_graph_files itself looks the tokenizer up by the model's hub name)."""
    from circuit_tracer.utils.create_graph_files import build_model, create_nodes, create_used_nodes_and_edges
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    nodes = create_nodes(graph, pruned.node_mask, tokenizer, pruned.cumulative_scores)
    used_nodes, used_edges = create_used_nodes_and_edges(graph, nodes, pruned.edge_mask)
    model = build_model(graph, used_nodes, used_edges, "circuit-tracer", "tiny-gpt2", 0.8, tokenizer)
    path.write_text(model.model_dump_json(indent=2))


def main() -> None:
    for job in json.loads(Path(sys.argv[1]).read_text()):
        if job["job"] == "folder":
            out = folder_job(job["folder"], job["inputs"])
        elif job["job"] == "attribute":
            out = attribute_job(job)
        else:
            out = model_job(job["folder"], job["model"], job["tokens"])
        save_file({k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous() for k, v in out.items()},
                  job["out"])


if __name__ == "__main__":
    main()
