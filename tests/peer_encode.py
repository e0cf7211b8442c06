"""Run a dictionary folder through the real SAELens or sparsify package: what the peers compute.

Runs inside the peers' virtual environment (not this project's), which has `sae-lens` and
`eai-sparsify` (see tests/data/make_foreign_fixtures.py). Used twice:

- by make_foreign_fixtures.py, to record the expected outputs of the fixtures it writes;
- by tests/test_formats.py, to read the folders that `export_saelens` / `export_sparsify` write:

    <venv>/bin/python tests/peer_encode.py saelens|sparsify FOLDER INPUTS.safetensors OUT.safetensors
    <venv>/bin/python tests/peer_encode.py --jobs JOBS.json      (many folders in one process)

INPUTS holds `x` [n, d_in]. OUT gets `x`, `feature_acts` [n, d_sae] (encode), `decoded` [n, d_out]
(decode of those, without a transcoder's skip path) and `output` [n, d_out] (the forward pass, the
skip path included). A SAELens folder with reshape_activations "hook_z" is given x as
[n, n_heads, d_head] (`--heads`), as SAELens expects, and its outputs are flattened back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def saelens_outputs(folder: Path, x: torch.Tensor, heads: int | None = None) -> dict[str, torch.Tensor]:
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder)) if hasattr(SAE, "load_from_disk") else SAE.load_from_pretrained(str(folder))
    sae.eval()
    inputs = x if heads is None else x.reshape(x.shape[0], heads, -1)
    with torch.no_grad():
        feature_acts = sae.encode(inputs)
        decoded = sae.decode(feature_acts)
        output = sae(inputs)
    flat = lambda t: t.reshape(x.shape[0], -1).float()  # noqa: E731
    return {"x": x, "feature_acts": flat(feature_acts), "decoded": flat(decoded), "output": flat(output)}


def sparsify_outputs(folder: Path, x: torch.Tensor) -> dict[str, torch.Tensor]:
    from sparsify import SparseCoder

    coder = SparseCoder.load_from_disk(folder)
    coder.eval()
    with torch.no_grad():
        top_acts, top_indices, _ = coder.encode(x)
        feature_acts = torch.zeros(x.shape[0], coder.num_latents).scatter(1, top_indices, top_acts)
        decoded = coder.decode(top_acts, top_indices)
        output = coder(x).sae_out
    return {"x": x, "feature_acts": feature_acts.float(), "decoded": decoded.float(), "output": output.float()}


def run_job(package: str, folder: Path, inputs: Path, out: Path, heads: int | None = None) -> None:
    x = load_file(str(inputs))["x"]
    outputs = saelens_outputs(folder, x, heads) if package == "saelens" else sparsify_outputs(folder, x)
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", choices=("saelens", "sparsify"))
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("inputs", nargs="?", type=Path)
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--heads", type=int, default=None, help="SAELens hook_z folders: the number of heads")
    parser.add_argument("--jobs", type=Path, help="a JSON list of {package, folder, inputs, out, heads}: many folders, "
                                                  "one start of the packages")
    args = parser.parse_args()
    if args.jobs:
        for job in json.loads(args.jobs.read_text()):
            run_job(job["package"], Path(job["folder"]), Path(job["inputs"]), Path(job["out"]), job.get("heads"))
    else:
        run_job(args.package, args.folder, args.inputs, args.out, args.heads)


if __name__ == "__main__":
    sys.exit(main())
