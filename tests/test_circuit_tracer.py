"""circuit-tracer's folders in and out (core/sae/circuit_tracer.py), checked against the real circuit-tracer 0.5.

- In: tests/data/foreign/circuit_tracer/ holds transcoder sets and CLTs written by circuit-tracer's own
  saving code with what circuit-tracer computes on fixed inputs (tests/data/make_circuit_tracer_fixtures.py);
  they load here as a `TranscoderSet` / `CrossLayerTranscoder` with the same features and
  reconstructions, or are refused with one sentence.
- Out: exports of a tiny GPT-2's transcoder set and CLTs are loaded by circuit-tracer in its own
  virtual environment (tests/circuit_tracer_encode.py), on given inputs and inside its replacement
  model running the same GPT-2 (TransformerLens backend), and compute what this library computes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from core.config import LanguageModelConfig, SAEConfig
from core.errors import DictionaryFormatError, DictionaryLoadError
from core.formats import export_circuit_tracer, export_saelens, import_dictionary
from core.formats.__main__ import main as formats_command
from core.lm import load_language_model
from core.sae import CrossLayerTranscoder, SparseAutoencoder, TranscoderSet, create_dictionary, load_dictionary
from tests.conftest import venv_python
from tests.tiny_gpt2 import build_weighted_tiny_gpt2

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "foreign" / "circuit_tracer"
TOLERANCE = 1e-5
"""Largest difference allowed between this library's and circuit-tracer's numbers, relative to the
numbers' scale where that is above 1 (float32 rounding of sums taken in other orders)."""


def circuit_tracer_python() -> Path:
    """The virtual environment with circuit-tracer 0.5, made by make_circuit_tracer_fixtures.py."""
    return venv_python("GPT2DICT_CIRCUIT_TRACER_VENV", ".venv-circuit-tracer",
                       "python3 tests/data/make_circuit_tracer_fixtures.py --setup-only", "circuit-tracer")


def stacked(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What this library computes on x [L, n, d] in circuit-tracer's layout: features and reconstruction."""
    xs = x.transpose(0, 1)
    with torch.no_grad():
        features = model.encode(xs)
        return {"features": features.transpose(0, 1), "reconstruction": model.decode(features, xs).transpose(0, 1)}


def max_differences(ours: dict, theirs: dict) -> dict[str, float]:
    """The largest difference of each tensor, divided by its scale where that is above 1."""
    return {key: ((ours[key] - theirs[key]).abs().max() / theirs[key].abs().max().clamp_min(1)).item() for key in ours}


# ------------------------------------------------------------------ in: folders circuit-tracer wrote


@pytest.mark.parametrize("name, kind, activation", [
    ("transcoder_set", TranscoderSet, None), ("skip_transcoder_set", TranscoderSet, None),
    ("clt_relu", CrossLayerTranscoder, "relu"), ("clt_jumprelu", CrossLayerTranscoder, "jump_relu")])
def test_circuit_tracer_folders_load_exactly(name, kind, activation):
    model = load_dictionary(FIXTURES / name)
    assert isinstance(model, kind) and model.layers == (0, 1, 2) and model.model_name == "gpt2"
    assert model.hook_names == tuple(f"blocks.{l}.mlp.hook_in" for l in range(3))  # the MLP's input, as theirs
    assert model.hooks_out == tuple(f"blocks.{l}.hook_mlp_out" for l in range(3))
    source = model.saved_config["source"]
    assert source["format"] == "circuit-tracer" and source["feature_input_hook"] == "mlp.hook_in"
    if kind is TranscoderSet:
        assert [m.architecture for m in model] == ["jumprelu", "relu", "jumprelu"]  # as the fixture mixes them
        assert all((m.W_skip is not None) == name.startswith("skip") for m in model)
        assert load_dictionary(FIXTURES / name).member(1).d_sae == 32
    else:
        assert model.architecture == "jumprelu" and source["activation"] == activation
        assert bool((model.theta() == 0).all()) == (activation == "relu")
    x = load_file(str(FIXTURES / name / "inputs.safetensors"))["x"]
    expected = load_file(str(FIXTURES / name / "circuit_tracer_outputs.safetensors"))
    differences = max_differences(stacked(model, x), expected)
    assert differences["features"] == 0.0, differences  # the same products and the same activation rule
    assert differences["reconstruction"] <= TOLERANCE, differences
    assert expected["features"].count_nonzero() > 0.2 * expected["features"].numel()


@pytest.mark.parametrize("name, message", [
    ("clt_negative_thresholds", r"threshold_0 holds negative thresholds, with which circuit-tracer's JumpReLU lets "
                                r"negative pre-activations through")])
def test_what_cannot_be_represented_is_refused_in_one_sentence(name, message):
    with pytest.raises(DictionaryLoadError, match=message) as info:
        load_dictionary(FIXTURES / name)
    assert "\n" not in str(info.value)


def test_a_folder_reading_ln2_hook_normalized_reads_the_same_hook_here():
    """circuit-tracer's TransformerLens `ln2.hook_normalized` is the norm's vector before its weight and
    bias, as this library's hook of that name (TransformerBridge folds no norm weights)."""
    model = load_dictionary(FIXTURES / "transcoder_set_ln2_normalized")
    assert model.hook_names == tuple(f"blocks.{l}.ln2.hook_normalized" for l in model.layers)
    assert model.saved_config["source"]["feature_input_hook"] == "ln2.hook_normalized"
    x = load_file(str(FIXTURES / "transcoder_set_ln2_normalized" / "inputs.safetensors"))["x"]
    expected = load_file(str(FIXTURES / "transcoder_set_ln2_normalized" / "circuit_tracer_outputs.safetensors"))
    differences = max_differences(stacked(model, x), expected)
    assert differences["features"] == 0.0 and differences["reconstruction"] <= TOLERANCE, differences


def test_damaged_circuit_tracer_folders_are_refused(tmp_path):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(FIXTURES / name, tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"))

    folder = copy("clt_jumprelu")
    (folder / "W_enc_1.safetensors").unlink()
    with pytest.raises(DictionaryLoadError, match=r"lacks W_enc_1.safetensors; circuit-tracer needs one file per layer"):
        load_dictionary(folder)
    folder = copy("clt_jumprelu")
    (folder / "W_dec_2.safetensors").unlink()
    with pytest.raises(DictionaryLoadError, match=r"has config.yaml but no W_dec_2.safetensors"):
        load_dictionary(folder)
    folder = copy("transcoder_set")
    tensors = load_file(str(folder / "layer_1.safetensors"))
    tensors["W_dec"][3, 4] = float("nan")
    save_file(tensors, str(folder / "layer_1.safetensors"))
    with pytest.raises(DictionaryLoadError, match=r"1 non-finite value\(s\) \(NaN or inf\) in W_dec"):
        load_dictionary(folder)
    folder = copy("transcoder_set")
    tensors = load_file(str(folder / "layer_0.safetensors"))
    tensors["W_enc"] = tensors["W_enc"][:, :8].contiguous()
    save_file(tensors, str(folder / "layer_0.safetensors"))
    with pytest.raises(DictionaryLoadError, match=r"W_enc is \[32, 8\], expected \[32, 16\]"):
        load_dictionary(folder)
    folder = copy("transcoder_set")
    (folder / "config.yaml").write_text("model_kind: crosscoder\nfeature_input_hook: mlp.hook_in\n")
    with pytest.raises(DictionaryLoadError, match=r"model_kind is 'crosscoder' in config.yaml, not one of"):
        load_dictionary(folder)
    folder = copy("transcoder_set")
    (folder / "config.yaml").write_text("model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\n"
                                        "feature_output_hook: hook_mlp_out\n")
    with pytest.raises(DictionaryLoadError, match=r"names no model; say which model it belongs to"):
        load_dictionary(folder)
    assert load_dictionary(folder, model_name="gpt2").model_name == "gpt2"


def test_import_dictionary_copies_a_circuit_tracer_folder(tmp_path):
    dest = import_dictionary(FIXTURES / "clt_jumprelu", tmp_path)
    assert dest == tmp_path / "imported" / "dictionaries" / "clt_jumprelu"
    copy, original = load_dictionary(dest), load_dictionary(FIXTURES / "clt_jumprelu")
    assert isinstance(copy, CrossLayerTranscoder) and copy.saved_config["source"]["format"] == "circuit-tracer"
    x = load_file(str(FIXTURES / "clt_jumprelu" / "inputs.safetensors"))["x"]
    ours, theirs = stacked(copy, x), stacked(original, x)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert import_dictionary(FIXTURES / "clt_jumprelu", tmp_path) == dest  # the same weights: the same copy
    set_copy = load_dictionary(import_dictionary(FIXTURES / "skip_transcoder_set", tmp_path))
    assert isinstance(set_copy, TranscoderSet) and set_copy.layers == (0, 1, 2)


# ------------------------------------------------------------------ out: read by circuit-tracer


def randomized(model, seed: int):
    """Every parameter random at sizes that keep features and outputs of order 1, with normalization
    constants that the export folds in."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "threshold" in name:
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 0.4 + 0.05))
            elif name.startswith("b_"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.startswith(("W_enc", "W_skip")):  # [..., d_in, width]: pre-activations of order 1
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-2] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def transcoder(layer: int, architecture: str, d_model: int, seed: int) -> SparseAutoencoder:
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=96, k=8, skip_connection=True)
    sae = randomized(create_dictionary(cfg, d_model, hook_name=f"blocks.{layer}.ln2.hook_normalized",
                                       hook_out=f"blocks.{layer}.hook_mlp_out", d_out=d_model, model_name="gpt2"), seed)
    if sae.has_inference_threshold:
        sae.threshold.fill_(0.3)
    sae.normalization.set_scales(1.3, 0.7)
    return sae


def clt(architecture: str, d_model: int, seed: int, model_name: str) -> CrossLayerTranscoder:
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=96, k=8)
    model = randomized(CrossLayerTranscoder(cfg, d_model, layers=(0, 1), model_name=model_name), seed)
    if model.has_inference_threshold:
        model.threshold.fill_(0.3)
    model.set_normalization_scales([1.3, 0.8], [0.7, 1.1])
    return model


@pytest.fixture(scope="module")
def weighted_gpt2_dir(tmp_path_factory) -> Path:
    return build_weighted_tiny_gpt2(tmp_path_factory.mktemp("weighted-gpt2") / "model", n_layer=2)


def test_exports_are_loaded_by_circuit_tracer_and_compute_the_same(weighted_gpt2_dir, tmp_path):
    """On a GPT-2 whose norms have random weights and biases (so that `ln2.hook_normalized` and the MLP's
    input differ): models reading `ln2.hook_normalized` exported as they are (circuit-tracer's hook of
    that name) and with the norms folded in (its `mlp.hook_in`, for backends without the other)."""
    python = circuit_tracer_python()
    language_model = load_language_model(LanguageModelConfig(name=str(weighted_gpt2_dir)))
    d_model, model_name = language_model.d_model, str(weighted_gpt2_dir)
    transcoder_set = TranscoderSet([transcoder(0, "jumprelu", d_model, 1), transcoder(1, "batchtopk", d_model, 2)])
    for member in transcoder_set:
        member.model_name = model_name
    transcoder_set.model_name = model_name
    clt_jumprelu = clt("jumprelu", d_model, 3, model_name)
    models = {"transcoder_set": (transcoder_set, False), "clt_jumprelu": (clt_jumprelu, False),
              "clt_batchtopk": (clt("batchtopk", d_model, 4, model_name), False),
              "transcoder_set_folded": (transcoder_set, True), "clt_jumprelu_folded": (clt_jumprelu, True)}
    tokens = language_model.tokenize("The cat sat on the mat because it was warm there.").flatten()[:12]
    save_file({"tokens": tokens}, str(tmp_path / "tokens.safetensors"))
    hooks = [f"blocks.{l}.{h}" for h in ("ln2.hook_normalized", "mlp.hook_in", "hook_mlp_out") for l in (0, 1)]
    with torch.no_grad():
        _, cache = language_model.bridge.run_with_cache(tokens[None], names_filter=lambda n: n in hooks)
    normalized, mlp_in, mlp_out = (torch.stack([cache[h][0] for h in hooks[i:i + 2]]) for i in (0, 2, 4))
    assert (normalized - mlp_in).abs().max() > 0.1  # the norms' weights and biases are not the identity
    affine = language_model.mlp_input_affine()

    def applied(x: torch.Tensor) -> torch.Tensor:  # [L, n, d] normalized -> the MLP's input
        return torch.stack([x[l] * affine[l][0] + affine[l][1] for l in range(len(x))])

    jobs = []
    for name, (model, fold) in models.items():
        folder = export_circuit_tracer(model, tmp_path / name, language_model if fold else None)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["feature_input_hook"] == ("mlp.hook_in" if fold else "ln2.hook_normalized")
        x = 2.0 * torch.randn(2, 16, d_model, generator=torch.Generator().manual_seed(len(jobs)))
        their_x = applied(x) if fold else x
        # The export reads back here as the same replacement model (this library's own reader).
        assert max(max_differences(stacked(load_dictionary(folder), their_x), stacked(model, x)).values()) < 1e-5
        save_file({"x": their_x.clone(), "normalized": x}, str(tmp_path / f"{name}.in.safetensors"))
        jobs.append({"job": "folder", "folder": str(folder), "inputs": str(tmp_path / f"{name}.in.safetensors"),
                     "out": str(tmp_path / f"{name}.folder.safetensors")})
        jobs.append({"job": "model", "folder": str(folder), "model": model_name,
                     "tokens": str(tmp_path / "tokens.safetensors"), "out": str(tmp_path / f"{name}.model.safetensors")})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    run = subprocess.run([str(python), str(ROOT / "tests" / "circuit_tracer_encode.py"), str(tmp_path / "jobs.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    for name, (model, fold) in models.items():
        theirs = load_file(str(tmp_path / f"{name}.folder.safetensors"))
        ours = stacked(model, load_file(str(tmp_path / f"{name}.in.safetensors"))["normalized"])
        assert ours["features"].count_nonzero() > 0.05 * ours["features"].numel()
        differences = max_differences(ours, theirs)
        assert max(differences.values()) <= TOLERANCE, (name, differences)
        print(name, "on given inputs: max differences (scaled)", {k: f"{v:.1e}" for k, v in differences.items()})

        # Inside circuit-tracer's replacement model of the same GPT-2: the same hooks, the same activations
        # (position 0 zeroed, as circuit-tracer does), the same reconstruction its attribution starts from,
        # computed here by the model as trained, from ln2.hook_normalized.
        theirs = load_file(str(tmp_path / f"{name}.model.safetensors"))
        assert max_differences({"logits": theirs["logits"]}, {"logits": theirs["hf_logits"]})["logits"] < TOLERANCE
        features = stacked(model, normalized)["features"]
        features[:, 0] = 0
        with torch.no_grad():
            reconstruction = model.decode(features.transpose(0, 1), normalized.transpose(0, 1)).transpose(0, 1)
        assert features.count_nonzero() > 0.05 * features.numel()
        ours = {"mlp_in": mlp_in if fold else normalized, "mlp_out": mlp_out, "activations": features,
                "reconstruction": reconstruction}
        differences = max_differences(ours, theirs)
        assert max(differences.values()) <= TOLERANCE, (name, differences)
        print(name, "in its replacement model: max differences (scaled)", {k: f"{v:.1e}" for k, v in differences.items()})


def test_what_circuit_tracer_cannot_hold_is_refused(tmp_path):
    with pytest.raises(DictionaryFormatError, match=r"topk, and circuit-tracer has no top-k activation"):
        export_circuit_tracer(clt("topk", 16, 0, "gpt2"), tmp_path / "topk")
    uncalibrated = clt("batchtopk", 16, 0, "gpt2")
    uncalibrated.threshold.fill_(-1.0)
    with pytest.raises(DictionaryFormatError, match=r"no calibrated inference threshold yet \(it is -1.0\)"):
        export_circuit_tracer(uncalibrated, tmp_path / "uncalibrated")
    torch.manual_seed(0)
    skip = CrossLayerTranscoder(SAEConfig(architecture="jumprelu", d_sae=32, skip_connection=True), 16, layers=(0, 1),
                                model_name="gpt2")
    with pytest.raises(DictionaryFormatError, match=r"skip paths, which circuit-tracer's CLT files cannot hold"):
        export_circuit_tracer(skip, tmp_path / "skip")
    later = CrossLayerTranscoder(SAEConfig(architecture="jumprelu", d_sae=32), 16, layers=(1, 2), model_name="gpt2")
    with pytest.raises(DictionaryFormatError, match=r"covers layers \[1, 2\], but circuit-tracer replaces every MLP"):
        export_circuit_tracer(later, tmp_path / "later")
    resid = CrossLayerTranscoder(SAEConfig(architecture="jumprelu", d_sae=32), 16, layers=(0, 1), model_name="gpt2",
                                 input_hook="blocks.{layer}.hook_resid_pre")
    with pytest.raises(DictionaryFormatError, match=r"input hook blocks.0.hook_resid_pre of layer 0 has no "
                                                    r"circuit-tracer name"):
        export_circuit_tracer(resid, tmp_path / "resid")
    mixed = TranscoderSet([transcoder(0, "relu", 16, 0), transcoder(1, "relu", 16, 1)])
    with torch.no_grad():
        mixed.member(1).W_skip = None
    with pytest.raises(DictionaryFormatError, match=r"only some members of this set have skip paths"):
        export_circuit_tracer(mixed, tmp_path / "mixed")
    with pytest.raises(DictionaryFormatError, match=r"SAELens holds one SAE or transcoder per folder, and this is a "
                                                    r"cross_layer_transcoder"):
        export_saelens(clt("jumprelu", 16, 0, "gpt2"), tmp_path / "saelens")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(DictionaryFormatError, match=r"exists and is not a circuit-tracer folder"):
        export_circuit_tracer(clt("jumprelu", 16, 0, "gpt2"), occupied)
    assert (occupied / "notes.txt").read_text() == "mine"


def test_export_replaces_an_earlier_export_whole(tmp_path, capsys):
    three = CrossLayerTranscoder(SAEConfig(architecture="jumprelu", d_sae=32), 16, layers=(0, 1, 2), model_name="gpt2")
    export_circuit_tracer(three, tmp_path / "ct")
    two = clt("jumprelu", 16, 0, "gpt2")
    # From the command line, from a saved CLT's folder.
    formats_command(["export", str(two.save(tmp_path / "saved")), str(tmp_path / "ct"), "--to", "circuit-tracer"])
    assert "(circuit-tracer)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "ct").iterdir()) == [
        "W_dec_0.safetensors", "W_dec_1.safetensors", "W_enc_0.safetensors", "W_enc_1.safetensors", "config.yaml"]
    assert load_dictionary(tmp_path / "ct").layers == (0, 1)
