"""Write tests/data/foreign/: small dictionaries saved by the real SAELens and sparsify packages, and
what those packages compute on fixed inputs (the expected outputs tests/test_formats.py checks).

    python3 tests/data/make_foreign_fixtures.py              # make the virtual environments if missing, write
    python3 tests/data/make_foreign_fixtures.py --setup-only # only make the environments (what CI does)

The packages pin TransformerLens versions that conflict with this project's, so they live in their
own virtual environments, made here with pinned versions (torch 2.13.0, the CPU build, comes from
this machine's disk):

    .venv-peers     sae-lens 6.54.12 and eai-sparsify 1.3.3 (also what test_formats.py's export test
                    runs); it sees this project's installed packages and adds what they lack (~20 s);
                    and sae-bench 0.6.0 without its dependencies (~2 s): tests/test_evaluations.py
                    validates result files with its output classes, which need only pydantic (a full
                    install would pull NumPy 1, torchvision and sae-probes)
    .venv-saelens5  sae-lens 5.11.0, for configs in SAELens's layout of before 6.0 (isolated: it needs
                    NumPy 1 and TransformerLens 2)

(GPT2DICT_PEERS_VENV / GPT2DICT_SAELENS5_VENV put them elsewhere.) The script then runs itself in
each environment. Every dictionary is made by the package's own classes, its parameters set to
random values (so that biases, thresholds and skip paths all matter), and saved by the package's
own save function; the expected outputs come from loading the saved folder back with the package's
own loader (tests/peer_encode.py). The one exception is `saelens/legacy_keys`, whose cfg.json is
written here in the key layout of SAELens's oldest releases (hook_point, dtype "torch.float32", no
architecture), the one SAELens still converts; its expected outputs are SAELens 6's reading of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "foreign"
PEERS_VENV = Path(os.environ.get("GPT2DICT_PEERS_VENV", ROOT / ".venv-peers"))
SAELENS5_VENV = Path(os.environ.get("GPT2DICT_SAELENS5_VENV", ROOT / ".venv-saelens5"))
PEERS_PACKAGES = ["sae-lens==6.54.12", "eai-sparsify==1.3.3"]
PEERS_NO_DEPS_PACKAGES = {"sae_bench": "sae-bench==0.6.0"}
"""Installed into .venv-peers without their dependencies (module name: requirement), also into an
environment made before they were added."""
SAELENS5_PACKAGES = ["sae-lens==5.11.0", "pyarrow<18"]  # (pyarrow 18+ needs NumPy 2, which sae-lens 5 excludes)
TORCH = "torch==2.13.0"

SEED = 0
N_TOKENS = 32
D_IN, D_SAE, K = 16, 32, 4
META = dict(model_name="gpt2-small", context_size=128, prepend_bos=True, dataset_path="Skylion007/openwebtext")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def make_venv(venv: Path, packages: list[str], *, system_site_packages: bool) -> Path:
    """Create `venv` with `packages` and torch 2.13.0 (pinned, so that nothing pulls another build).

    `system_site_packages`: see this project's packages (torch, transformers, ...) where they
    satisfy the peers' requirements, and install only the rest (sae-lens's TransformerLens 3
    shadows this project's 4 inside the environment): about 20 s instead of minutes of downloads."""
    python = venv_python(venv)
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []),
                    str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not system_site_packages:
        subprocess.run(pip + [TORCH], check=True)
    subprocess.run(pip + [TORCH] + packages, check=True)
    return python


def install_without_dependencies(python: Path, packages: dict[str, str]) -> None:
    """pip install --no-deps each requirement whose module `python` cannot find yet."""
    missing = [requirement for module, requirement in packages.items()
               if subprocess.run([str(python), "-c", f"import importlib.util, sys; "
                                  f"sys.exit(importlib.util.find_spec({module!r}) is None)"]).returncode]
    if missing:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        *missing], check=True)


# ------------------------------------------------------------------ inside the environments


def randomize(module, seed: int) -> None:
    """Every parameter to random values of a sensible size (thresholds partly negative)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 0.6 - 0.1)
            elif name.startswith("b_") or name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def inputs(d_in: int, seed: int):
    import torch

    return torch.randn(N_TOKENS, d_in, generator=torch.Generator().manual_seed(1000 + seed))


def record(kind: str, folder: Path, x, heads: int | None = None) -> None:
    """Expected outputs: the folder loaded back by the package's own loader, run on x."""
    sys.path.insert(0, str(ROOT / "tests"))
    from peer_encode import saelens_outputs, sparsify_outputs
    from safetensors.torch import save_file

    outputs = saelens_outputs(folder, x, heads) if kind == "saelens" else sparsify_outputs(folder, x)
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(folder / "expected.safetensors"))


def write_saelens6(out: Path) -> None:
    import sae_lens as sl
    import torch
    from sae_lens.saes.sae import SAEMetadata

    def meta(hook: str, **extra):
        return SAEMetadata(hook_name=hook, **{**META, **extra})

    hook = "blocks.0.hook_resid_post"
    made = {
        "standard": sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(hook))),
        "standard_no_b_dec": sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False,
                                                                 metadata=meta(hook))),
        "topk": sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, metadata=meta(hook))),
        "topk_rescaled": sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True,
                                                     metadata=meta(hook))),
        "jumprelu": sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(hook))),
        "hook_z": sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, reshape_activations="hook_z",
                                                      metadata=meta("blocks.0.attn.hook_z"))),
        "transcoder": sl.Transcoder(sl.TranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=12, apply_b_dec_to_input=False,
            metadata=meta("blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"))),
        "skip_transcoder": sl.SkipTranscoder(sl.SkipTranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=12, apply_b_dec_to_input=False,
            metadata=meta("blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"))),
        "jumprelu_skip_transcoder": sl.JumpReLUSkipTranscoder(sl.JumpReLUSkipTranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=12, apply_b_dec_to_input=False,
            metadata=meta("blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"))),
        # at the tiny GPT-2's width, for the end-to-end test (evaluate, analyze, browse)
        "topk_e2e": sl.TopKSAE(sl.TopKSAEConfig(d_in=64, d_sae=128, k=8, metadata=meta(hook, model_name="gpt2"))),
        # refused: an architecture this library does not have
        "gated": sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(hook))),
        # each token standardized (as OpenAI's GPT-2 SAEs in SAELens format)
        "layer_norm": sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="layer_norm",
                                                          metadata=meta(hook))),
        # trained on a model with centered writing weights (like gpt2-small-res-jb): SAELens is handed the
        # residual stream less its mean over d_model, so its expected outputs are on centered inputs
        "centered": sl.StandardSAE(sl.StandardSAEConfig(
            d_in=D_IN, d_sae=D_SAE, metadata=meta(hook, model_from_pretrained_kwargs={"center_writing_weights": True}))),
    }
    refused = {"gated"}
    for i, (name, sae) in enumerate(made.items()):
        randomize(sae, i)
        folder = out / name
        sae.save_model(folder)
        if name not in refused:
            x = inputs(sae.cfg.d_in, i)
            if name == "centered":
                x = x - x.mean(-1, keepdim=True)
            elif name == "layer_norm":  # a mean to remove and restore, as residual streams have
                x = 3.0 + x
            record("saelens", folder, x, heads=4 if name == "hook_z" else None)
    # Trained with batch top-k, saved for inference (as SAELens saves them: jumprelu with one threshold).
    for i, (name, cls, cfg_cls, extra) in enumerate([
            ("batchtopk", sl.BatchTopKTrainingSAE, sl.BatchTopKTrainingSAEConfig, {}),
            ("matryoshka_batchtopk", sl.MatryoshkaBatchTopKTrainingSAE, sl.MatryoshkaBatchTopKTrainingSAEConfig,
             {"matryoshka_widths": [8, D_SAE]})]):
        sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, k=K, metadata=meta(hook), **extra))
        randomize(sae, 100 + i)
        sae.topk_threshold = torch.tensor(0.4, dtype=torch.double)
        sae.save_inference_model(out / name)
        record("saelens", out / name, inputs(D_IN, 100 + i))
        if name == "batchtopk":  # the training checkpoint itself (architecture "batchtopk"): refused
            sae.save_model(out / "batchtopk_training")
    # The key layout of SAELens's oldest releases (gpt2-small-res-jb's cfg.json), with real weights.
    folder = out / "legacy_keys"
    sae = sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(hook)))
    randomize(sae, 200)
    sae.save_model(folder)
    (folder / "cfg.json").write_text(json.dumps({
        "model_name": "gpt2-small", "hook_point": "blocks.0.hook_resid_pre", "hook_point_layer": 0,
        "hook_point_head_index": None, "dataset_path": "Skylion007/openwebtext", "is_dataset_tokenized": False,
        "context_size": 128, "d_in": D_IN, "d_sae": D_SAE, "expansion_factor": D_SAE // D_IN, "dtype": "torch.float32",
        "device": "cpu", "b_dec_init_method": "geometric_median", "l1_coefficient": 8e-05, "lr": 0.0004,
        "train_batch_size": 4096, "seed": 42}))
    record("saelens", folder, inputs(D_IN, 200))


def write_saelens5(out: Path) -> None:
    import sae_lens
    from sae_lens import SAE, SAEConfig

    common = dict(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=True, finetuning_scaling_factor=False,
                  context_size=128, model_name="gpt2-small", hook_name="blocks.0.hook_resid_post", hook_layer=0,
                  hook_head_index=None, prepend_bos=True, dataset_path="Skylion007/openwebtext",
                  dataset_trust_remote_code=True, normalize_activations="none", dtype="float32", device="cpu",
                  sae_lens_training_version=sae_lens.__version__)
    made = {
        "standard": SAEConfig(architecture="standard", activation_fn_str="relu", **common),
        "topk": SAEConfig(architecture="topk", activation_fn_str="topk", activation_fn_kwargs={"k": K}, **common),
        "standard_topk_activation": SAEConfig(architecture="standard", activation_fn_str="topk",
                                              activation_fn_kwargs={"k": K}, **common),
        "jumprelu": SAEConfig(architecture="jumprelu", activation_fn_str="relu", **common),
        "expected_average_only_in": SAEConfig(architecture="standard", activation_fn_str="relu",
                                              **{**common, "normalize_activations": "expected_average_only_in"}),
    }
    for i, (name, cfg) in enumerate(made.items()):
        sae = SAE(cfg)
        randomize(sae, 300 + i)
        sae.save_model(out / name)
        if name != "expected_average_only_in":  # refused: its constant is not in the folder
            record("saelens", out / name, inputs(D_IN, 300 + i))


def write_sparsify(out: Path) -> None:
    import sparsify
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.__main__ import RunConfig

    run = out / "gpt2-run"
    coders = {
        "h.0": SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K)),
        "h.0.mlp": SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K, transcode=True, skip_connection=True)),
    }
    for i, (hookpoint, coder) in enumerate(coders.items()):  # as sparsify's Trainer.save: coders, then config
        randomize(coder, 400 + i)
        coder.save_to_disk(run / hookpoint)
        record("sparsify", run / hookpoint, inputs(D_IN, 400 + i))
    RunConfig(sae=SparseCoderConfig(num_latents=D_SAE, k=K), model="gpt2", hookpoints=list(coders),
              run_name=run.name).save_json(run / "config.json")
    # refused: groupmax activations
    groupmax = out / "groupmax-run"
    coder = SparseCoder(D_IN, SparseCoderConfig(activation="groupmax", num_latents=D_SAE, k=K))
    randomize(coder, 500)
    coder.save_to_disk(groupmax / "h.0")
    RunConfig(sae=SparseCoderConfig(activation="groupmax", num_latents=D_SAE, k=K), model="gpt2", hookpoints=["h.0"],
              run_name=groupmax.name).save_json(groupmax / "config.json")
    print("sparsify", getattr(sparsify, "__version__", "?"))


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("sae-lens", "eai-sparsify", "torch", "transformer-lens")
            if _installed(name)}


def _installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def inside(step: str) -> None:
    """Run one writing step in the current (peer) environment."""
    import torch

    torch.manual_seed(SEED)
    target = {"saelens6": OUT / "saelens", "saelens5": OUT / "saelens_pre6", "sparsify": OUT / "sparsify"}[step]
    {"saelens6": write_saelens6, "saelens5": write_saelens5, "sparsify": write_sparsify}[step](target)
    (target / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        return inside(sys.argv[2])
    peers = make_venv(PEERS_VENV, PEERS_PACKAGES, system_site_packages=True)
    install_without_dependencies(peers, PEERS_NO_DEPS_PACKAGES)
    if "--setup-only" in sys.argv:
        return
    saelens5 = make_venv(SAELENS5_VENV, SAELENS5_PACKAGES, system_site_packages=False)  # (NumPy 1, TransformerLens 2)
    shutil.rmtree(OUT, ignore_errors=True)
    for python, step in ((peers, "saelens6"), (saelens5, "saelens5"), (peers, "sparsify")):
        subprocess.run([str(python), __file__, "--inside", step], check=True, cwd=ROOT)
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
