"""Write tests/data/foreign/circuit_tracer/: transcoder sets and cross-layer transcoders saved by the real
circuit-tracer 0.5, and what circuit-tracer computes with them on fixed inputs.

    python3 tests/data/make_circuit_tracer_fixtures.py              # make the environment if missing, write
    python3 tests/data/make_circuit_tracer_fixtures.py --setup-only # only make the environment (what CI does)
    python3 tests/data/make_circuit_tracer_fixtures.py --graph-only # only write graph_shared_ids.json

circuit-tracer pins transformers <= 4.57.3 (this project runs 5.x) and needs TransformerLens's
`HookedTransformer` (gone in TransformerLens 4), so it lives in its own virtual environment,
`.venv-circuit-tracer` (GPT2DICT_CIRCUIT_TRACER_VENV puts it elsewhere): it sees this project's
packages (torch 2.13.0, the CPU build, pinned so that pip never pulls another) and installs what they
lack (about a minute). tests/test_circuit_tracer.py runs `tests/circuit_tracer_encode.py` in it.

Every fixture is built from circuit-tracer's own classes (`SingleLayerTranscoder` + `TranscoderSet`,
`CrossLayerTranscoder`), its parameters set to random values, and saved by circuit-tracer's own
`to_safetensors` plus the `config.yaml` that its `save_transcoders_to_cache` writes (`yaml.dump` of
model_kind, hooks, scan): the folder layout its loaders read from an absolute path. The expected
outputs come from loading each folder back with circuit-tracer (tests/circuit_tracer_encode.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_foreign_fixtures import make_venv  # noqa: E402

OUT = ROOT / "tests" / "data" / "foreign" / "circuit_tracer"
CIRCUIT_TRACER_VENV = Path(os.environ.get("GPT2DICT_CIRCUIT_TRACER_VENV", ROOT / ".venv-circuit-tracer"))
CIRCUIT_TRACER_PACKAGES = ["circuit-tracer==0.5.0", "nnsight<0.8", "transformers==4.57.3", "transformer-lens==3.2.1",
                           "cloudpickle>=3"]  # (nnsight 0.7 needs cloudpickle 3; this project has 2)

N_LAYERS, D_MODEL, D_TRANSCODER, N_TOKENS = 3, 16, 32, 8


def circuit_tracer_python() -> Path:
    return make_venv(CIRCUIT_TRACER_VENV, CIRCUIT_TRACER_PACKAGES, system_site_packages=True)


# ------------------------------------------------------------------ inside the environment


def randomize(module, seed: int, *, negative_thresholds: bool = False) -> None:
    """Every parameter random, at sizes that keep features and outputs of order 1; thresholds in
    [0.05, 0.5) (or partly negative)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "threshold" in name:
                low = -0.3 if negative_thresholds else 0.05
                p.copy_(torch.rand(p.shape, generator=g) * (0.5 - low) + low)
            elif name.startswith("b_") or ".b_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / D_MODEL ** 0.5)


def write_config(folder: Path, kind: str, hook_in: str = "mlp.hook_in", hook_out: str = "hook_mlp_out") -> None:
    """config.yaml as circuit-tracer's save_transcoders_to_cache writes it."""
    import yaml

    config = {"model_kind": kind, "feature_input_hook": hook_in, "feature_output_hook": hook_out,
              "model_name": "gpt2", "scan": f"fixtures//{folder.name}", "revision": None}
    with open(folder / "config.yaml", "w") as f:
        yaml.dump(config, f)


def transcoder_set(folder: Path, seed: int, *, jumprelu: bool, skip: bool, **config) -> None:
    import torch
    import torch.nn.functional as F
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet

    members = {}
    for layer in range(N_LAYERS):
        activation = JumpReLU(torch.zeros(D_TRANSCODER), 0.1) if jumprelu and layer % 2 == 0 else F.relu
        member = SingleLayerTranscoder(D_MODEL, D_TRANSCODER, activation, layer, skip_connection=skip,
                                       device=torch.device("cpu"), dtype=torch.float32)
        randomize(member, seed + layer)
        members[layer] = member
    TranscoderSet(members, feature_input_hook=config.get("hook_in", "mlp.hook_in"),
                  feature_output_hook="hook_mlp_out").to_safetensors(str(folder))
    write_config(folder, "transcoder_set", **config)


def cross_layer_transcoder(folder: Path, seed: int, *, activation: str, negative_thresholds: bool = False) -> None:
    import torch
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

    clt = CrossLayerTranscoder(N_LAYERS, D_TRANSCODER, D_MODEL, activation_function=activation, lazy_decoder=False,
                               device=torch.device("cpu"), dtype=torch.float32)
    randomize(clt, seed, negative_thresholds=negative_thresholds)
    clt.to_safetensors(str(folder))
    write_config(folder, "cross_layer_transcoder")


GRAPH_FIXTURE = OUT.parent / "circuit_tracer_graph_shared_ids.json"


def graph_with_shared_ids(path: Path) -> None:
    """A graph file written by circuit-tracer's frontend models (`frontend/graph_models.py`) in which the
    error node of layer 2 at position 3 and feature 2 of layer 0 at position 3 share the id `0_2_3`
    (circuit-tracer 0.5 names error nodes `0_{layer}_{pos}`), with links whose source is that id: one
    only the feature can make (its target is at layer 1), two that either could (targets above layer 2)."""
    from circuit_tracer.frontend.graph_models import Metadata, Model, Node, QParams

    tokens = ["<|endoftext|>", "The", " cat", " sat"]
    nodes = [Node.token_node(pos, vocab, influence=0.1) for pos, vocab in enumerate([50256, 464, 3797, 3332])]
    nodes += [Node.feature_node(0, 3, 2, influence=0.3, activation=1.5), Node.error_node(2, 3, influence=0.4),
              Node.feature_node(1, 3, 5, influence=0.5, activation=2.0), Node.feature_node(3, 3, 7, influence=0.6,
                                                                                           activation=0.7),
              Node.logit_node(pos=3, vocab_idx=319, token=" on", num_layers=4, target_logit=True, token_prob=0.4)]
    links = [("E_3797_2", "0_2_3", 1.25), ("0_2_3", "1_5_3", 0.5), ("0_2_3", "3_7_3", -0.75), ("1_5_3", "3_7_3", 0.3),
             ("3_7_3", "5_319_3", 2.0), ("0_2_3", "5_319_3", 1.0)]
    metadata = Metadata(slug="shared-ids", scan="gpt2", transcoder_list=[], prompt_tokens=tokens,
                        prompt="".join(tokens), node_threshold=0.8)
    model = Model(metadata=metadata, qParams=QParams(pinnedIds=[], supernodes=[], linkType="both", clickedId="",
                                                     sg_pos=""),
                  nodes=nodes, links=[{"source": s, "target": t, "weight": w} for s, t, w in links])
    path.write_text(model.model_dump_json(indent=2) + "\n")


def inside() -> None:
    import shutil

    import torch
    from safetensors.torch import save_file

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    made = {
        "transcoder_set": lambda f: transcoder_set(f, 0, jumprelu=True, skip=False),
        "skip_transcoder_set": lambda f: transcoder_set(f, 10, jumprelu=True, skip=True),
        "clt_relu": lambda f: cross_layer_transcoder(f, 20, activation="relu"),
        "clt_jumprelu": lambda f: cross_layer_transcoder(f, 30, activation="jump_relu"),
        # refused: negative thresholds; read as this library's hook of the same name: ln2.hook_normalized
        "clt_negative_thresholds": lambda f: cross_layer_transcoder(f, 40, activation="jump_relu",
                                                                    negative_thresholds=True),
        "transcoder_set_ln2_normalized": lambda f: transcoder_set(f, 50, jumprelu=False, skip=False,
                                                                  hook_in="ln2.hook_normalized"),
    }
    jobs = []
    for i, (name, make) in enumerate(made.items()):
        folder = OUT / name
        folder.mkdir()
        make(folder)
        x = torch.randn(N_LAYERS, N_TOKENS, D_MODEL, generator=torch.Generator().manual_seed(1000 + i))
        save_file({"x": x}, str(folder / "inputs.safetensors"))
        jobs.append({"job": "folder", "folder": str(folder), "inputs": str(folder / "inputs.safetensors"),
                     "out": str(folder / "circuit_tracer_outputs.safetensors")})
    sys.path.insert(0, str(ROOT / "tests"))
    from circuit_tracer_encode import folder_job

    for job in jobs:
        save_file({k: v.contiguous() for k, v in folder_job(job["folder"], job["inputs"]).items()}, job["out"])
    from importlib.metadata import version

    versions = {name: version(name) for name in ("circuit-tracer", "torch", "transformers", "transformer-lens")}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    graph_with_shared_ids(GRAPH_FIXTURE)


def main() -> None:
    if sys.argv[1:] == ["--inside"]:
        return inside()
    if sys.argv[1:] == ["--inside-graph"]:
        return graph_with_shared_ids(GRAPH_FIXTURE)
    python = circuit_tracer_python()
    if "--setup-only" in sys.argv:
        return
    if "--graph-only" in sys.argv:
        subprocess.run([str(python), __file__, "--inside-graph"], check=True, cwd=ROOT)
        return print(f"Wrote {GRAPH_FIXTURE}")
    subprocess.run([str(python), __file__, "--inside"], check=True, cwd=ROOT)
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
