"""Speed and memory of attribution graphs against circuit-tracer 0.5 on the same replacement model and
prompt, measured in one run on one machine.

    python benchmarks/attribution.py [--tokens 32] [--max-feature-nodes 8192] [--batch-size 256] [--threads N]
                                     [--replacement FOLDER] [--skip-circuit-tracer] [--skip-smollm2]
    python benchmarks/attribution.py --smoke     # seconds: the tiny GPT-2 only, to show every part runs

Cases (each a prompt of `--tokens` text tokens of the built-in corpus's kind of English, BOS first):
- tiny GPT-2 (tests/tiny_gpt2.py, 4 layers, d_model 64): a jumprelu transcoder set with skip paths
  and a jumprelu cross-layer transcoder over every layer, 256 features per layer, random weights
  (about a third of the features fire: many features per position, as on a real prompt);
- SmolLM2-135M-Instruct (the offline model): `--replacement FOLDER` (e.g. the demo replacement model),
  else a jumprelu transcoder set over all 30 layers with 4,608 features each and random weights,
  thresholds set so that about 32 features per token per layer fire on this prompt (the compute is a
  trained model's).

For each case, `core.attribute` in this process and circuit-tracer's `attribute` in
.venv-circuit-tracer (`tests/circuit_tracer_encode.py`; the nnsight backend for SmolLM2, which loads a
copy of the converted model folder made readable by transformers 4.57) on the model exported with
`export_circuit_tracer` (a replacement model of fewer than all layers is padded with layers whose
features never fire: all error, as here), the same token ids, the same settings and torch thread
count; each side runs once untimed (warm-up, 16 feature nodes) and then timed. Printed: wall time of
the call, backward passes, active features, feature nodes, peak memory (resident memory above what
the process held before the call, sampled: benchmarks/memory.py), the ratios circuit-tracer / ours,
and whether the two graphs agree (same feature nodes, largest edge difference relative to the
largest edge). Then, ours only: memory against prompt length at a fixed cap on feature nodes, and
what a prompt past the limits gets (one sentence, no crash).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from benchmarks.memory import PeakMemory  # noqa: E402
from core import (CrossLayerTranscoder, LanguageModelConfig, SAEConfig, SparseAutoencoder, TranscoderSet,  # noqa: E402
                  create_dictionary,
                  export_circuit_tracer, load_dictionary, load_language_model)
from core.attribution import attribute  # noqa: E402
from core.config import OFFLINE_MODEL_NAME  # noqa: E402
from core.errors import AttributionError  # noqa: E402
from core.lm import resolve_model_source  # noqa: E402
from tests.test_circuit_tracer import randomized  # noqa: E402  (random weights of order-1 pre-activations)
from tests.tiny_gpt2 import build_tiny_gpt2  # noqa: E402

TEXT = ("The Python standard library provides modules for reading and writing files, parsing JSON documents, "
        "compressing data and talking to web servers, which is why almost every script that people write imports "
        "at least one of them before it does anything else with the data it was given by the user.")
VENV_PYTHON = Path(os.environ.get("GPT2DICT_CIRCUIT_TRACER_VENV", ROOT / ".venv-circuit-tracer")) / "bin" / "python"
WARMUP_FEATURE_NODES = 16


def member(model, layer: int, d_sae: int, *, skip: bool) -> SparseAutoencoder:
    return create_dictionary(SAEConfig(architecture="jumprelu", d_sae=d_sae, skip_connection=skip), model.d_model,
                             hook_name=f"blocks.{layer}.mlp.hook_in", hook_out=f"blocks.{layer}.hook_mlp_out",
                             d_out=model.d_model, model_name=model.name)


def tiny_replacements(model) -> dict[str, object]:
    layers = range(model.n_layers)
    return {"transcoder set": TranscoderSet([randomized(member(model, l, 256, skip=True), l) for l in layers]),
            "cross-layer transcoder": randomized(CrossLayerTranscoder(SAEConfig(architecture="jumprelu", d_sae=256),
                                                                      model.d_model, layers=layers,
                                                                      model_name=model.name,
                                                                      input_hook="blocks.{layer}.mlp.hook_in"), 99)}


@torch.no_grad()
def smollm2_transcoders(model, tokens: torch.Tensor, d_sae: int = 4608, active: int = 32) -> TranscoderSet:
    """A transcoder set over every layer with random weights whose thresholds let about `active`
    features per token per layer fire on `tokens`."""
    hooks = [f"blocks.{l}.mlp.hook_in" for l in range(model.n_layers)]
    _, cache = model.bridge.run_with_cache(tokens[None], names_filter=hooks, return_cache_object=False)
    members, g = [], torch.Generator().manual_seed(0)
    for layer, hook in enumerate(hooks):
        sae = member(model, layer, d_sae, skip=False)
        x = cache[hook][0, 1:]
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=g) / x.norm(dim=-1).mean())
        sae.W_dec.copy_(0.05 * torch.randn(sae.W_dec.shape, generator=g))
        sae.b_enc.zero_()
        threshold = torch.quantile((x @ sae.W_enc).flatten(), 1 - active / d_sae).clamp_min(1e-3)
        sae.log_threshold.copy_(threshold.log().expand_as(sae.log_threshold))
        members.append(sae)
    return TranscoderSet(members)


def padded(replacement, n_layers: int):
    """The replacement model over every layer of the model, for circuit-tracer (which replaces every
    MLP): a transcoder set's missing layers get members whose features never fire (jumprelu with a
    threshold above any pre-activation, zero weights), so their layers are all error as here."""
    if tuple(replacement.layers) == tuple(range(n_layers)):
        return replacement
    if not isinstance(replacement, TranscoderSet):
        raise SystemExit("circuit-tracer needs every layer covered; padding is implemented for transcoder sets only "
                         "(pass --skip-circuit-tracer).")
    any_member = replacement.member(replacement.layers[0])
    members = {l: replacement.member(l) for l in replacement.layers}
    for layer in set(range(n_layers)) - set(members):
        sae = create_dictionary(SAEConfig(architecture="jumprelu", d_sae=replacement.d_sae), replacement.d_in,
                                hook_name=any_member.hook_name.replace(f"blocks.{replacement.layers[0]}.",
                                                                       f"blocks.{layer}."),
                                hook_out=f"blocks.{layer}.hook_mlp_out", d_out=replacement.d_out,
                                model_name=replacement.model_name)
        with torch.no_grad():
            for p in sae.parameters():
                p.zero_()
            sae.log_threshold.fill_(math.log(1e6))
        members[layer] = sae
    return TranscoderSet(members)


def llama_folder_for_transformers_457(source: Path, target: Path) -> Path:
    """A copy of a converted Llama folder that transformers 4.57 (circuit-tracer's) reads: the
    tokenizer class it knows, rope_theta at the top level; the weights linked, not copied."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            (target / path.name).symlink_to(path.resolve())
        elif path.name == "config.json":
            config = json.loads(path.read_text())
            config["rope_theta"] = (config.get("rope_parameters") or {}).get("rope_theta", 100000.0)
            (target / path.name).write_text(json.dumps(config))
        elif path.name == "tokenizer_config.json":
            config = json.loads(path.read_text())
            config["tokenizer_class"] = "GPT2TokenizerFast"
            (target / path.name).write_text(json.dumps(config))
        elif path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


def ours(model, replacement, tokens: list[int], settings: dict) -> dict:
    attribute(tokens, replacement, model, **{**settings, "max_feature_nodes": WARMUP_FEATURE_NODES})
    with PeakMemory() as peak:
        started = time.perf_counter()
        graph = attribute(tokens, replacement, model, **settings)
        seconds = time.perf_counter() - started
    return {"graph": graph, "seconds": seconds, "peak_bytes": peak.bytes, "passes": graph.stats["backward_passes"],
            "active": graph.n_active_features, "nodes": graph.n_features}


def circuit_tracer(replacement, model, model_folder: Path, tokens: list[int], settings: dict, work: Path, *,
                   nnsight: bool, threads: int) -> dict:
    # Its nnsight backend reads the MLP's input (mlp.hook_in) only: a replacement model reading the
    # normalized vector before the norm's weight gets the weights folded into its encoders.
    folder = export_circuit_tracer(padded(replacement, model.n_layers), work / "exported", model if nnsight else None)
    save_file({"tokens": torch.tensor(tokens)}, str(work / "tokens.safetensors"))
    job = {"job": "attribute", "folder": str(folder), "model": str(model_folder), "threads": threads,
           "tokens": str(work / "tokens.safetensors"), "settings": settings, **({"backend": "nnsight"} if nnsight else {})}
    jobs = [{**job, "settings": {**settings, "max_feature_nodes": WARMUP_FEATURE_NODES},
             "out": str(work / "warmup.safetensors")}, {**job, "out": str(work / "timed.safetensors")}]
    (work / "jobs.json").write_text(json.dumps(jobs))
    run = subprocess.run([str(VENV_PYTHON), str(ROOT / "tests" / "circuit_tracer_encode.py"), str(work / "jobs.json")],
                         capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if run.returncode:
        raise SystemExit(f"circuit-tracer failed:\n{run.stderr[-4000:]}")
    out = load_file(str(work / "timed.safetensors"))
    n_logits, nodes = len(out["logit_ids"]), len(out["selected_features"])
    batch = settings["batch_size"]
    return {"out": out, "seconds": float(out["seconds"]), "peak_bytes": float(out["peak_bytes"]),
            "passes": math.ceil(n_logits / batch) + math.ceil(nodes / batch), "active": len(out["active_features"]),
            "nodes": nodes}


def row(name: str, r: dict) -> str:
    return (f"  {name:<15} {r['seconds']:8.2f} s  {r['passes']:5d} backward passes  {r['active']:7d} active features  "
            f"{r['nodes']:6d} feature nodes  peak {r['peak_bytes'] / 2**20:8.1f} MiB")


def compare(name: str, model, replacement, tokens: list[int], settings: dict, args, *, model_folder: Path,
            nnsight: bool) -> None:
    print(f"\n{name}: {len(tokens) - 1} tokens, layers {list(replacement.layers)}, {replacement.d_sae} features per "
          f"layer, max_feature_nodes {settings['max_feature_nodes']}, batch {settings['batch_size']}, "
          f"{torch.get_num_threads()} threads")
    mine = ours(model, replacement, tokens, settings)
    print(row("attribution", mine))
    if args.skip_circuit_tracer or not VENV_PYTHON.exists():
        print("  circuit-tracer   not run" + ("" if args.skip_circuit_tracer else
                                               f" ({VENV_PYTHON} is missing: python3 tests/data/make_circuit_tracer_fixtures.py --setup-only)"))
        return
    with tempfile.TemporaryDirectory(prefix="attribution-bench-") as tmp:
        theirs = circuit_tracer(replacement, model, model_folder, tokens, settings, Path(tmp), nnsight=nnsight,
                                threads=torch.get_num_threads())
    print(row("circuit-tracer", theirs))
    print(f"  ratio circuit-tracer / ours: time {theirs['seconds'] / mine['seconds']:.2f}x, peak memory "
          f"{theirs['peak_bytes'] / max(mine['peak_bytes'], 1):.2f}x")
    graph, out = mine["graph"], theirs["out"]
    same = torch.equal(graph.features, out["active_features"][out["selected_features"]])
    if same and graph.adjacency.shape == out["adjacency"].shape:
        difference = float((graph.adjacency - out["adjacency"]).abs().max() / out["adjacency"].abs().max())
        print(f"  agreement: the same {graph.n_features} feature nodes, largest edge difference {difference:.1e} of the "
              f"largest edge; scores {graph.scores().replacement:.4f} / {graph.scores().completeness:.4f} vs "
              f"{float(out['scores'][0]):.4f} / {float(out['scores'][1]):.4f}")
    else:
        theirs_set = {tuple(f) for f in out["active_features"][out["selected_features"]].tolist()}
        overlap = len({tuple(f) for f in graph.features.tolist()} & theirs_set) / max(len(theirs_set), 1)
        print(f"  agreement: feature nodes differ ({overlap:.1%} in common)")


def prompt_tokens(model, n: int) -> list[int]:
    ids = model.tokenize(TEXT)[0].tolist()
    if len(ids) - 1 < n:
        raise SystemExit(f"the benchmark's text has {len(ids) - 1} tokens; ask for at most that many (--tokens).")
    return ids[:n + 1]


def memory_scaling(model, replacement, lengths: list[int], cap: int, batch: int) -> None:
    print(f"\nmemory against prompt length (ours, tiny GPT-2 transcoder set, max_feature_nodes {cap}):")
    text = TEXT * 8
    ids = model.tokenize(text)[0].tolist()
    for n in lengths:
        with PeakMemory() as peak:
            graph = attribute(ids[:n + 1], replacement, model, max_feature_nodes=cap, batch_size=batch)
        print(f"  {n:4d} tokens  {graph.n_active_features:6d} active features  {graph.stats['backward_passes']:4d} "
              f"passes  {graph.stats['seconds']:6.2f} s  peak {peak.bytes / 2**20:7.1f} MiB  (edges estimated "
              f"{graph.stats['edge_bytes'] / 2**20:.1f} MiB)")
    for label, kwargs in (("a prompt past max_prompt_tokens", dict(max_prompt_tokens=64)),
                          ("edges past max_edge_bytes", dict(max_feature_nodes=None, max_edge_bytes=2**20))):
        try:
            attribute(ids[:200], replacement, model, **kwargs)
            print(f"  {label}: computed (no limit reached)")
        except AttributionError as e:
            print(f"  {label}: refused: {e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--max-feature-nodes", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--replacement", type=Path, help="a replacement model of the offline SmolLM2 (else random)")
    parser.add_argument("--skip-circuit-tracer", action="store_true")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="the tiny GPT-2's transcoder set only, 12 tokens")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dict(max_n_logits=10, desired_logit_prob=0.95, batch_size=args.batch_size,
                    max_feature_nodes=args.max_feature_nodes, update_interval=4)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"attribution benchmark on {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))

    with tempfile.TemporaryDirectory(prefix="attribution-tiny-") as tmp:
        tiny_dir = build_tiny_gpt2(Path(tmp) / "model", n_layer=4)
        tiny = load_language_model(LanguageModelConfig(name=str(tiny_dir)))
        replacements = tiny_replacements(tiny)
        if args.smoke:
            compare("tiny GPT-2, transcoder set", tiny, replacements["transcoder set"], prompt_tokens(tiny, 12),
                    {**settings, "max_feature_nodes": 64, "batch_size": 32}, args, model_folder=tiny_dir,
                    nnsight=False)
            return
        for name, replacement in replacements.items():
            compare(f"tiny GPT-2, {name}", tiny, replacement, prompt_tokens(tiny, args.tokens), settings, args,
                    model_folder=tiny_dir, nnsight=False)
        memory_scaling(tiny, replacements["transcoder set"], [16, 32, 64, 128], cap=512, batch=args.batch_size)

    if args.skip_smollm2:
        return
    model = load_language_model(LanguageModelConfig(name=OFFLINE_MODEL_NAME), device=device)
    tokens = prompt_tokens(model, args.tokens)
    replacement = (load_dictionary(args.replacement) if args.replacement else
                   smollm2_transcoders(model, torch.tensor(tokens, device=model.device)))
    with tempfile.TemporaryDirectory(prefix="attribution-smollm2-") as tmp:
        folder = llama_folder_for_transformers_457(Path(resolve_model_source(model.config)), Path(tmp) / "model")
        compare("SmolLM2-135M, " + ("replacement model " + str(args.replacement) if args.replacement else
                                    "transcoder set (random weights)"),
                model, replacement.to(model.device), tokens, settings, args, model_folder=folder, nnsight=True)


if __name__ == "__main__":
    main()
