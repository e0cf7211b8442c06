"""Dictionaries of other libraries (core/formats.py): SAELens and sparsify folders written by the
real packages (tests/data/foreign/, made by tests/data/make_foreign_fixtures.py) load with the
outputs those packages computed; what cannot be represented is refused with one sentence; exported
folders are read by the real packages (in their own virtual environment); an imported dictionary
is evaluated, analyzed and browsed like a trained one; SAELens hub names resolve, and offline say
what they tried."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core import (AnalysisConfig, ConfigError, DatasetConfig, DictionaryFormatError, DictionaryLoadError,
                  LanguageModelConfig, SAEConfig, SparseAutoencoder, TokenBatches, analyze, evaluate,
                  evaluate_imported, export_saelens, export_sparsify, import_dictionary, load_dictionary,
                  load_language_model)
from core import formats
from core.sae import ResidualCentering, TokenStandardization, create_dictionary
from tests.conftest import ROOT, TINY_HOOK, tiny_analysis_config, venv_python

FOREIGN = ROOT / "tests" / "data" / "foreign"
FIXTURES = sorted(p.parent for p in FOREIGN.rglob("expected.safetensors"))
TOL = dict(rtol=1e-5, atol=1e-5)


def fixture_id(folder: Path) -> str:
    return str(folder.relative_to(FOREIGN))


def our_outputs(sae: SparseAutoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What peer_encode.py records, computed by this library: encode, decode without the skip path,
    the forward pass with it."""
    with torch.no_grad():
        feature_acts = sae.encode(x)
        decoded = sae.decode(feature_acts, x)
        if sae.W_skip is not None:  # less the skip path's part: decode(0, x) - decode(0, 0)
            none = torch.zeros_like(feature_acts)
            decoded = decoded - (sae.decode(none, x) - sae.decode(none, torch.zeros_like(x)))
        return {"feature_acts": feature_acts, "decoded": decoded, "output": sae(x)}


def assert_same_outputs(sae: SparseAutoencoder, expected: dict[str, torch.Tensor]) -> None:
    ours = our_outputs(sae, expected["x"])
    for key, value in ours.items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=lambda m: f"{key}: {m}")


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A fixture folder copied to tmp_path (its run config too, for sparsify hookpoints)."""
    source = FOREIGN / name
    if (source.parent / "config.json").is_file():  # a sparsify hookpoint inside its run
        run = tmp_path / source.parent.name
        shutil.copytree(source.parent, run)
        return run / source.name
    shutil.copytree(source, tmp_path / source.name)
    return tmp_path / source.name


# ------------------------------------------------------------------ import: the packages' own files


def test_the_fixtures_are_there_and_were_written_by_the_packages():
    assert len(FIXTURES) >= 19, FIXTURES
    versions = {kind: json.loads((FOREIGN / kind / "versions.json").read_text())
                for kind in ("saelens", "saelens_pre6", "sparsify")}
    assert versions["saelens"]["sae-lens"].startswith("6.")
    assert versions["saelens_pre6"]["sae-lens"].startswith("5.")
    assert "eai-sparsify" in versions["sparsify"]
    assert json.loads((FOREIGN / "saelens" / "batchtopk" / "cfg.json").read_text())["architecture"] == "jumprelu"


@pytest.mark.parametrize("folder", FIXTURES, ids=fixture_id)
def test_foreign_folders_load_with_the_outputs_their_package_computes(folder):
    expected = load_file(str(folder / "expected.safetensors"))
    sae = load_dictionary(folder)
    assert_same_outputs(sae, expected)
    # The analyzer's path (sparse rows; for topk a compiled kernel) agrees with encode.
    sparse = sae.encode_sparse(expected["x"])
    torch.testing.assert_close(sparse.to_dense(), expected["feature_acts"], **TOL)
    # Batch top-k and matryoshka SAEs of SAELens are jumprelu folders: every latent has one threshold.
    if folder.name in ("batchtopk", "matryoshka_batchtopk"):
        assert sae.architecture == "jumprelu" and torch.all(sae.threshold == 0.4)


@pytest.mark.parametrize("folder", FIXTURES, ids=fixture_id)
def test_an_imported_copy_is_the_same_dictionary(folder, tmp_path):
    copy = import_dictionary(folder, tmp_path / "results")
    assert copy.parent == tmp_path / "results" / "imported" / "dictionaries"
    assert not (folder / "config.json").exists()  # nothing is written to the source
    sae = load_dictionary(copy)
    assert_same_outputs(sae, load_file(str(folder / "expected.safetensors")))
    config = json.loads((copy / "config.json").read_text())
    assert config["source"]["path"] == str(folder.resolve())
    assert len(config["source"]["sha256"]) == 64 and isinstance(config["source"]["conversions"], list)
    # Importing the same weights again reuses the copy (and its analyses).
    assert import_dictionary(folder, tmp_path / "results") == copy


def test_names_and_provenance_of_a_saelens_folder(tmp_path):
    sae = load_dictionary(FOREIGN / "saelens" / "jumprelu_skip_transcoder")
    assert (sae.model_name, sae.hook_name, sae.hook_out) == ("gpt2", "blocks.0.ln2.hook_normalized",
                                                             "blocks.0.hook_mlp_out")
    assert sae.is_transcoder and sae.d_out == 12 and sae.W_skip.shape == (16, 12)
    source = sae.saved_config["source"]
    assert source["format"] == "saelens" and source["version"] == "6.54.12"
    assert source["model_name"] == "gpt2-small" and source["architecture"] == "jumprelu_skip_transcoder"
    assert any("absolute" in c for c in source["conversions"])
    # Thresholds are kept exactly as SAELens has them (negative ones as 0), never through a logarithm.
    saelens_threshold = load_file(str(FOREIGN / "saelens" / "jumprelu_skip_transcoder" / "sae_weights.safetensors"))
    assert torch.equal(sae.threshold, saelens_threshold["threshold"].clamp_min(0))
    copy = import_dictionary(FOREIGN / "saelens" / "jumprelu_skip_transcoder", tmp_path)
    weights = load_file(str(copy / "sae.safetensors"))
    assert "threshold" in weights and "log_threshold" not in weights
    assert torch.equal(load_dictionary(copy).threshold, sae.threshold)
    with pytest.raises(ValueError, match="inference only"):
        load_dictionary(copy).training_forward(torch.randn(4, 16), target=torch.randn(4, 12))

    pre6 = load_dictionary(FOREIGN / "saelens_pre6" / "topk").saved_config["source"]
    assert pre6["version"] == "pre-6 (5.11.0)"
    legacy = load_dictionary(FOREIGN / "saelens" / "legacy_keys")
    assert legacy.hook_name == "blocks.0.hook_resid_pre" and legacy.architecture == "relu"
    assert load_dictionary(FOREIGN / "saelens" / "batchtopk").saved_config["source"]["training_architecture"] == \
        "batchtopk"


def test_names_of_a_sparsify_run():
    sae = load_dictionary(FOREIGN / "sparsify" / "gpt2-run" / "h.0")
    assert (sae.architecture, sae.model_name, sae.hook_name, sae.cfg.k) == ("topk", "gpt2", TINY_HOOK, 4)
    transcoder = load_dictionary(FOREIGN / "sparsify" / "gpt2-run" / "h.0.mlp")
    assert (transcoder.hook_name, transcoder.hook_out) == ("blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out")
    assert transcoder.W_skip is not None
    assert formats.sparsify_hooks("layers.7", False) == ("blocks.7.hook_resid_post", None)
    assert formats.sparsify_hooks("layers.7.self_attn", True) == ("blocks.7.attn.hook_in", "blocks.7.hook_attn_out")
    assert formats.sparsify_hooks("embed_tokens", False) is None


def test_sparsify_hookpoints_are_the_hooks_sparsify_reads(tiny_gpt2_dir, tiny_model):
    """sparsify hooks the outputs (a transcoder: inputs) of the model's Hugging Face modules; the
    mapped TransformerLens hooks of the model this library runs hold the same activations."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    tokens = tiny_model.tokenize("The quick brown fox jumps over the lazy dog.")
    seen: dict[str, torch.Tensor] = {}
    modules = dict(hf.base_model.named_modules())
    hooks = []
    for hookpoint in ("h.1", "h.1.mlp", "h.1.attn"):
        def hook(module, inputs, outputs, name=hookpoint):
            seen[name] = (outputs[0] if isinstance(outputs, tuple) else outputs).detach()
            seen[name + ":in"] = inputs[0].detach()
        hooks.append(modules[hookpoint].register_forward_hook(hook))
    with torch.no_grad():
        hf(tokens)
    for h in hooks:
        h.remove()
    names = {}
    for hookpoint in ("h.1", "h.1.mlp", "h.1.attn"):
        names[hookpoint] = formats.sparsify_hooks(hookpoint, False)[0]
        names[hookpoint + ":in"] = formats.sparsify_hooks(hookpoint, True)[0]
    _, cache = tiny_model.bridge.run_with_cache(tokens, names_filter=list(set(names.values())),
                                                return_cache_object=False)
    for key, hook_name in names.items():
        torch.testing.assert_close(cache[hook_name], seen[key], rtol=1e-4, atol=1e-4, msg=lambda m: f"{key}: {m}")


# ------------------------------------------------------------------ refused: one sentence each


@pytest.mark.parametrize("name, words", [
    ("saelens/gated", ["architecture is 'gated'", "cannot represent"]),
    ("saelens/batchtopk_training", ["architecture is 'batchtopk'", "save_inference_model"]),
    ("saelens_pre6/expected_average_only_in", ["normalize_activations is 'expected_average_only_in'",
                                               "not in the folder"]),
    ("sparsify/groupmax-run/h.0", ["activation is 'groupmax'"]),
    ("sparsify/gpt2-run", ["sparsify run", "h.0, h.0.mlp"]),
])
def test_what_cannot_be_represented_is_refused(name, words):
    with pytest.raises(DictionaryLoadError) as info:
        load_dictionary(FOREIGN / name)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


# ------------------------------------------------------------------ centered writing weights (gpt2-small-res-jb)


def test_a_dictionary_of_a_centered_model_runs_exactly_on_raw_activations():
    """SAELens gave the `centered` fixture the residual stream less its mean over d_model (its model had
    centered writing weights). Here it reads raw activations (any mean) with the same features, and its
    reconstruction is that of the centered activations plus their mean: the same error as in SAELens."""
    folder = FOREIGN / "saelens" / "centered"
    expected = load_file(str(folder / "expected.safetensors"))
    centered = expected["x"]
    assert centered.mean(-1).abs().max() < 1e-6
    sae = load_dictionary(folder)
    assert isinstance(sae.normalization, ResidualCentering) and "center_writing_weights" in sae.saved_config["source"]["conversions"][0]
    offsets = 5.0 * torch.randn(centered.shape[0], 1, generator=torch.Generator().manual_seed(3))
    raw = centered + offsets
    with torch.no_grad():
        acts = sae.encode(raw)
        torch.testing.assert_close(acts, expected["feature_acts"], **TOL)
        torch.testing.assert_close(sae.encode_sparse(raw).to_dense(), expected["feature_acts"], **TOL)
        torch.testing.assert_close(sae.decode(acts), expected["decoded"], **TOL)  # the centered reconstruction
        torch.testing.assert_close(sae(raw) - raw, expected["output"] - centered, **TOL)  # the same error
    # The imported copy keeps it; a training step refuses it; sparsify cannot hold it.
    with tempfile.TemporaryDirectory() as tmp:
        copy = load_dictionary(import_dictionary(folder, tmp))
        assert isinstance(copy.normalization, ResidualCentering) and json.loads((Path(tmp) / "imported" / "dictionaries" / "centered" /
                                                        "config.json").read_text())["residual_centering"] is True
        torch.testing.assert_close(copy(raw), sae(raw), rtol=0, atol=0)
        with pytest.raises(DictionaryFormatError, match="residual_centering"):
            export_sparsify(copy, Path(tmp) / "sparsify")
    with pytest.raises(ValueError, match="inference only"):
        sae.training_forward(raw)


def test_a_layer_norm_dictionary_standardizes_each_token_and_restores_it(tiny_gpt2_dir, tiny_model):
    """SAELens's normalize_activations "layer_norm" (OpenAI's GPT-2 SAEs): the fixture SAELens wrote and
    ran on activations with a mean loads with its outputs (test above); here what the flag means."""
    sae = load_dictionary(FOREIGN / "saelens" / "layer_norm")
    assert isinstance(sae.normalization, TokenStandardization)
    x = load_file(str(FOREIGN / "saelens" / "layer_norm" / "expected.safetensors"))["x"]
    assert x.mean() > 2  # a mean to remove and restore
    with torch.no_grad():
        # Standardizing makes the features blind to each token's scale and mean, and the output follows them.
        torch.testing.assert_close(sae.encode(2.5 * x - 7.0), sae.encode(x), **TOL)
        torch.testing.assert_close(sae(2.5 * x - 7.0), 2.5 * sae(x) - 7.0, rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="decode needs the activations"):
            sae.decode(sae.encode(x))
    with pytest.raises(DictionaryFormatError, match="input_layer_norm"):
        export_sparsify(sae, Path(tempfile.mkdtemp()) / "h.0")
    with pytest.raises(ValueError, match="inference only"):
        sae.training_forward(x)
    # On a model: an OpenAI-style (layer_norm) dictionary at the tiny GPT-2's width evaluates like any other.
    e2e = load_dictionary(FOREIGN / "saelens" / "topk_e2e", model_name=str(tiny_gpt2_dir))
    e2e.normalization = TokenStandardization()
    tokens = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(1))
    result = evaluate(tiny_model, e2e, iter([tokens]))
    assert result.l0 == pytest.approx(8.0) and math.isfinite(result.ce_loss_recovered)


@pytest.mark.parametrize("flag", ["residual_centering", "input_layer_norm"])
def test_an_imported_normalization_flag_in_a_config_is_checked(flag, tmp_path, tiny_dictionary):
    copy = import_dictionary(FOREIGN / "saelens" / ("centered" if flag == "residual_centering" else "layer_norm"),
                             tmp_path)
    assert load_dictionary(copy).normalization.kind == flag
    edit_json(copy / "config.json", **{flag: "yes"})
    with pytest.raises(DictionaryLoadError, match=f"has {flag} 'yes'; it is true only for an SAE imported from"):
        load_dictionary(copy)
    transcoder = tmp_path / "transcoder"
    shutil.copytree(import_dictionary(FOREIGN / "saelens" / "transcoder", tmp_path), transcoder)
    edit_json(transcoder / "config.json", **{flag: True})
    with pytest.raises(DictionaryLoadError, match=f"has {flag} True"):
        load_dictionary(transcoder)
    assert load_dictionary(tiny_dictionary).normalization.kind == "scaling"  # absent: trained here


def test_centering_is_folded_only_where_it_is_exact(tmp_path):
    # A transcoder predicting a centered output cannot add back a mean it does not see: refused.
    transcoder = copy_fixture("saelens/transcoder", tmp_path)
    edit_json(transcoder / "cfg.json", metadata__model_from_pretrained_kwargs={"center_writing_weights": True})
    with pytest.raises(DictionaryLoadError, match=r"center_writing_weights=True.*blocks\.0\.hook_mlp_out") as info:
        load_dictionary(transcoder)
    assert "\n" not in str(info.value)
    # A hook that no write to the residual stream reaches is the same in both models: loaded as it is.
    standard = copy_fixture("saelens/standard", tmp_path)
    edit_json(standard / "cfg.json", metadata__hook_name="blocks.0.ln1.hook_normalized",
              metadata__model_from_pretrained_kwargs={"center_writing_weights": True})
    sae = load_dictionary(standard)
    assert not isinstance(sae.normalization, ResidualCentering) and sae.saved_config["source"]["conversions"] == []
    torch.testing.assert_close(sae.W_enc, load_dictionary(FOREIGN / "saelens" / "standard").W_enc, rtol=0, atol=0)


def test_a_centered_model_and_the_raw_one_give_the_same_features_and_losses(tmp_path, tiny_gpt2_dir, tiny_model):
    """TransformerLens's own center_writing_weights on the tiny GPT-2 against the raw model: a SAELens
    dictionary trained on the processed model, run on it as SAELens runs it (its folder read without the
    centering), and the same folder run here on the raw model give the same features, the same
    reconstruction error and the same CE loss with the reconstruction spliced in."""
    processed = load_language_model(LanguageModelConfig(name=str(tiny_gpt2_dir)))
    processed.bridge.process_weights(fold_ln=False, center_writing_weights=True, center_unembed=False,
                                     fold_value_biases=False)
    folder = copy_fixture("saelens/topk_e2e", tmp_path)
    plain = load_dictionary(folder, model_name=str(tiny_gpt2_dir))  # the dictionary as SAELens computes it
    edit_json(folder / "cfg.json", metadata__model_from_pretrained_kwargs={"center_writing_weights": True})
    ours = load_dictionary(folder, model_name=str(tiny_gpt2_dir))
    assert isinstance(ours.normalization, ResidualCentering) and not isinstance(plain.normalization, ResidualCentering)

    tokens = torch.randint(0, 500, (4, 32), generator=torch.Generator().manual_seed(0))
    raw_acts = tiny_model.bridge.run_with_cache(tokens, names_filter=[TINY_HOOK])[1][TINY_HOOK]
    centered_acts = processed.bridge.run_with_cache(tokens, names_filter=[TINY_HOOK])[1][TINY_HOOK]
    torch.testing.assert_close(centered_acts, raw_acts - raw_acts.mean(-1, keepdim=True), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(raw_acts), plain.encode(centered_acts), **TOL)
        torch.testing.assert_close(ours(raw_acts) - raw_acts, plain(centered_acts) - centered_acts, **TOL)
        assert not torch.allclose(plain.encode(raw_acts), plain.encode(centered_acts), **TOL)  # centering matters

    def batches():
        return (tokens[i:i + 2] for i in (0, 2))
    here, there = evaluate(tiny_model, ours, batches()), evaluate(processed, plain, batches())
    assert here.ce_loss_clean == pytest.approx(there.ce_loss_clean, abs=1e-5)
    assert here.ce_loss_reconstructed == pytest.approx(there.ce_loss_reconstructed, abs=1e-5)
    assert here.mse == pytest.approx(there.mse, rel=1e-4) and here.l0 == there.l0


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    path.write_text(json.dumps(data))


def edit_tensors(path: Path, change) -> None:
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def nan_in_b_enc(tensors):
    tensors["b_enc"][3] = float("nan")


@pytest.mark.parametrize("name, damage, words", [
    ("saelens/topk", lambda f: (f / "sae_weights.safetensors").unlink(), ["has cfg.json but no sae_weights"]),
    ("saelens/topk", lambda f: (f / "sae_weights.safetensors").write_bytes(b"\x00" * 40), ["not a readable"]),
    ("saelens/topk", lambda f: (f / "cfg.json").write_text("{nope"), ["not valid JSON"]),
    ("saelens/topk", lambda f: edit_json(f / "cfg.json", d_sae=64), ["W_enc is [16, 32], expected [16, 64]"]),
    ("saelens/topk", lambda f: edit_json(f / "cfg.json", d_in=12), ["W_enc is [16, 32], expected [12, 32]"]),
    ("saelens/topk", lambda f: edit_tensors(f / "sae_weights.safetensors",
                                            lambda t: t.update(W_dec=t["W_dec"].T.contiguous())),
     ["W_dec is [16, 32], expected [32, 16]"]),
    ("saelens/standard", lambda f: edit_tensors(f / "sae_weights.safetensors", nan_in_b_enc),
     ["non-finite", "b_enc"]),
    ("saelens/jumprelu", lambda f: edit_tensors(f / "sae_weights.safetensors", lambda t: t.pop("threshold")),
     ["lacks threshold"]),
    ("saelens/standard", lambda f: edit_tensors(f / "sae_weights.safetensors",
                                                lambda t: t.update(extra=torch.zeros(3))),
     ["holds extra"]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", architecture="sparse_magic"),
     ["architecture is 'sparse_magic'"]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", d_in=-3), ["d_in=-3"]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", metadata__hook_head_index=2), ["hook_head_index is 2"]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", reshape_activations="hook_z"),
     ["reshape_activations is 'hook_z'"]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", dtype="int8"), ["dtype is 'int8'"]),
    ("saelens/topk", lambda f: edit_json(f / "cfg.json", k=33), ["k is 33", "d_sae=32"]),
    ("saelens/transcoder", lambda f: edit_json(f / "cfg.json", apply_b_dec_to_input=True),
     ["apply_b_dec_to_input is true"]),
    ("saelens/transcoder", lambda f: edit_json(f / "cfg.json", metadata__hook_name_out=None),
     ["names no hook_name_out", "hook_out="]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", metadata__model_from_pretrained_kwargs={
        "fold_value_biases": True}), ["fold_value_biases=True"]),
    ("saelens/standard", lambda f: edit_json(f / "cfg.json", normalize_activations="constant_norm_rescale"),
     ["normalize_activations is 'constant_norm_rescale'", "cannot fold"]),
    ("saelens/transcoder", lambda f: edit_json(f / "cfg.json", normalize_activations="layer_norm"),
     ["normalize_activations is 'layer_norm'", "for transcoders"]),
    ("saelens_pre6/standard_topk_activation", lambda f: edit_json(f / "cfg.json", activation_fn_kwargs={}),
     ["activation_fn_str is 'topk' without activation_fn_kwargs.k"]),
    ("saelens_pre6/standard", lambda f: edit_json(f / "cfg.json", activation_fn_str="tanh-relu"),
     ["activation_fn_str is 'tanh-relu'"]),
    ("saelens_pre6/standard", lambda f: edit_tensors(f / "sae_weights.safetensors",
                                                     lambda t: t.update(scaling_factor=torch.full((32,), 2.0))),
     ["scaling_factor other than 1"]),
    ("sparsify/gpt2-run/h.0", lambda f: (f.parent / "config.json").unlink(), ["names no model", "model_name="]),
    ("sparsify/gpt2-run/h.0", lambda f: edit_json(f / "cfg.json", transcode=False, skip_connection=True),
     ["skip_connection is true on an autoencoder"]),
    ("sparsify/gpt2-run/h.0", lambda f: edit_tensors(f / "sae.safetensors",
                                                     lambda t: t.update({"encoder.bias": torch.zeros(64)})),
     ["encoder.bias is [64], expected [32]"]),
    ("sparsify/gpt2-run/h.0", lambda f: f.rename(f.parent / "embed_tokens"), ["'embed_tokens'", "hook_name="]),
])
def test_bad_input_gets_one_clear_error(name, damage, words, tmp_path):
    folder = copy_fixture(name, tmp_path)
    renamed = damage(folder)
    folder = renamed if isinstance(renamed, Path) else folder
    with pytest.raises(DictionaryLoadError) as info:
        load_dictionary(folder)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message


def test_a_folder_without_any_config_and_names_for_native_folders(tmp_path, tiny_dictionary):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DictionaryLoadError, match="neither|no config.json.*cfg.json"):
        load_dictionary(tmp_path / "empty")
    with pytest.raises(DictionaryLoadError, match="for folders of other libraries"):
        load_dictionary(tiny_dictionary, model_name="gpt2")


def test_model_names_map_to_what_transformer_lens_loads(tmp_path):
    assert formats.model_name_for("gpt2-small") == "gpt2"
    assert formats.model_name_for("gpt2") == "gpt2"
    assert formats.model_name_for("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"
    assert formats.model_name_for(str(tmp_path)) == str(tmp_path)
    assert formats.model_name_for("my-private-model") is None

    folder = copy_fixture("saelens/standard", tmp_path)
    edit_json(folder / "cfg.json", metadata__model_name="my-private-model")
    with pytest.raises(DictionaryLoadError) as info:
        load_dictionary(folder)
    message = str(info.value)
    assert "'my-private-model'" in message and "local model folder" in message and "model_name=" in message
    sae = load_dictionary(folder, model_name=str(tmp_path))
    assert sae.model_name == str(tmp_path)
    assert sae.saved_config["source"]["model_name"] == "my-private-model"
    assert sae.saved_config["source"]["renamed"]["model_name"] == str(tmp_path)


def test_an_import_under_a_taken_name_is_refused(tmp_path):
    import_dictionary(FOREIGN / "saelens" / "topk", tmp_path, name="mine")
    with pytest.raises(FileExistsError, match="another imported dictionary"):
        import_dictionary(FOREIGN / "saelens" / "standard", tmp_path, name="mine")
    with pytest.raises(DictionaryLoadError, match="already a dictionary of this library"):
        import_dictionary(tmp_path / "imported" / "dictionaries" / "mine", tmp_path)


# ------------------------------------------------------------------ SAELens hub names


def test_hub_names_resolve_to_the_registry_repository_and_folder():
    where = formats.saelens_hub_location("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert (where.repo_id, where.folder) == ("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre")
    assert where.overrides == {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
    assert formats.saelens_hub_location("gpt2-small-resid-post-v5-32k", "blocks.3.hook_resid_post").folder == \
        "v5_32k_layer_3.pt"
    assert formats.saelens_hub_location("gpt2-small-res_sce-ajt", "blocks.6.hook_resid_pre").repo_id == \
        "neuronpedia/gpt2-small__res_sce-ajt"
    with pytest.raises(DictionaryLoadError, match="Unknown SAELens release 'gpt3-res'"):
        formats.saelens_hub_location("gpt3-res", "x")
    with pytest.raises(DictionaryLoadError, match="has no id 'blocks.99.hook_resid_pre'"):
        formats.saelens_hub_location("gpt2-small-res-jb", "blocks.99.hook_resid_pre")


REGISTRY_SCRIPT = """
import json, sys
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
registry = get_pretrained_saes_directory()
out = {}
for release in json.loads(sys.argv[1]):
    entry = registry.get(release)
    out[release] = None if entry is None else {"repo_id": entry.repo_id, "model": entry.model,
                                               "folders": dict(entry.saes_map),
                                               "overrides": entry.config_overrides or {}}
print(json.dumps(out))
"""


def test_the_hub_table_agrees_with_sae_lens_own_registry():
    """Every release of `SAELENS_RELEASES` as the real sae-lens's registry (pretrained_saes.yaml) names
    it: repository, model, every id's folder, and what it adds to the release's configs."""
    releases = formats.SAELENS_RELEASES
    done = subprocess.run([str(peers_python()), "-c", REGISTRY_SCRIPT, json.dumps(sorted(releases))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    registry = json.loads(done.stdout.strip().splitlines()[-1])
    for name, ours in releases.items():
        theirs = registry[name]
        assert theirs is not None, f"sae-lens's registry has no release {name!r}"
        assert (ours.repo_id, ours.model) == (theirs["repo_id"], theirs["model"]), name
        assert ours.folders == theirs["folders"], name  # every id, and no other
        assert ours.overrides == theirs["overrides"], name


HUB_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from core import DictionaryLoadError, load_dictionary
from core.sae import ResidualCentering
try:
    sae = load_dictionary({name!r})
    print("LOADED", sae.architecture, sae.model_name, sae.hook_name, sae.saved_config["source"]["repo_id"],
          *(["centered"] if isinstance(sae.normalization, ResidualCentering) else []))
except DictionaryLoadError as e:
    print("ERROR", e)
"""


def run_with_hub_cache(name: str, cache: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent), "HF_HUB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", HUB_SCRIPT.format(root=str(ROOT), name=name)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_offline_hub_name_says_what_it_tried(tmp_path):
    line = run_with_hub_cache("saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre", tmp_path / "hub")
    assert line.startswith("ERROR "), line
    for words in ("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre/cfg.json", "HF_HUB_OFFLINE",
                  "huggingface-cli download", "pass DIR/blocks.8.hook_resid_pre"):
        assert words in line, line


def fill_hub_cache(cache: Path, repo_id: str, folder: str, fixture: Path) -> Path:
    """The Hugging Face cache as huggingface_hub leaves it after downloading `folder` of `repo_id`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    target = repo / "snapshots" / revision / folder
    target.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(fixture / name, target / name)
    return target


def test_hub_names_load_from_the_hugging_face_cache(tmp_path):
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "neuronpedia/gpt2-small__res_sce-ajt", "6-res_sce-ajt", FOREIGN / "saelens" / "standard")
    line = run_with_hub_cache("saelens:gpt2-small-res_sce-ajt/blocks.6.hook_resid_pre", cache)
    assert line == "LOADED relu gpt2 blocks.0.hook_resid_post neuronpedia/gpt2-small__res_sce-ajt", line
    # What SAELens's registry adds to a release (here: a model with centered writing weights) applies to
    # the hub name and to the same folder found in the cache.
    folder = fill_hub_cache(cache, "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre",
                            FOREIGN / "saelens" / "legacy_keys")
    line = run_with_hub_cache("saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre", cache)
    assert line == "LOADED relu gpt2 blocks.0.hook_resid_pre jbloom/GPT2-Small-SAEs-Reformatted centered", line
    found = load_dictionary(folder)
    assert isinstance(found.normalization, ResidualCentering) and found.saved_config["source"]["release"] == "gpt2-small-res-jb"
    # Without the registry's word, the same folder elsewhere is read as its cfg.json says: not centered.
    assert not isinstance(load_dictionary(copy_fixture("saelens/legacy_keys", tmp_path / "elsewhere")).normalization,
                          ResidualCentering)


# ------------------------------------------------------------------ export, read by the real packages


def peers_python() -> Path:
    """The peers' virtual environment (sae-lens 6, eai-sparsify), made by make_foreign_fixtures.py."""
    return venv_python("GPT2DICT_PEERS_VENV", ".venv-peers", "python3 tests/data/make_foreign_fixtures.py --setup-only",
                       "sae-lens and sparsify")


def trained_like(architecture: str, *, d_out: int | None = None, skip: bool = False, seed: int = 0,
                 hook: str = TINY_HOOK) -> SparseAutoencoder:
    """A dictionary with every parameter random and a normalization constant that save folds in."""
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=32, k=4, skip_connection=skip)
    sae = create_dictionary(cfg, 16, hook_name=hook, model_name="gpt2", d_out=d_out,
                            hook_out="blocks.0.hook_mlp_out" if d_out else None)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
        if architecture == "jumprelu":
            sae.log_threshold.copy_(torch.log(torch.rand(32) * 0.5 + 0.05))
        if sae.has_inference_threshold:
            sae.threshold.fill_(0.3)
    sae.normalization.set_scales(1.7, 0.6 if d_out else None)
    return sae


EXPORTS = [  # (name, architecture, d_out, skip, to)
    ("relu", "relu", None, False, "saelens"),
    ("topk", "topk", None, False, "saelens"),
    ("batchtopk", "batchtopk", None, False, "saelens"),
    ("matryoshka", "matryoshka_batchtopk", None, False, "saelens"),
    ("jumprelu", "jumprelu", None, False, "saelens"),
    ("hook_z", "relu", None, False, "saelens"),
    ("relu_skip_transcoder", "relu", 12, True, "saelens"),
    ("jumprelu_transcoder", "jumprelu", 12, False, "saelens"),
    ("batchtopk_skip_transcoder", "batchtopk", 12, True, "saelens"),
    ("topk_sparsify", "topk", None, False, "sparsify"),
    ("topk_skip_transcoder_sparsify", "topk", 16, True, "sparsify"),
]


def test_exported_folders_are_read_by_the_real_packages(tmp_path):
    python = peers_python()
    jobs, ours = [], {}
    for i, (name, architecture, d_out, skip, to) in enumerate(EXPORTS):
        sae = trained_like(architecture, d_out=d_out, skip=skip, seed=i,
                           hook="blocks.0.attn.hook_z" if name == "hook_z" else TINY_HOOK)
        folder = (export_saelens if to == "saelens" else export_sparsify)(sae, tmp_path / name)
        x = 2.0 * torch.randn(24, 16)
        save_file({"x": x}, str(tmp_path / f"{name}.in.safetensors"))
        jobs.append({"package": to, "folder": str(folder), "inputs": str(tmp_path / f"{name}.in.safetensors"),
                     "out": str(tmp_path / f"{name}.out.safetensors"), "heads": 4 if name == "hook_z" else None})
        ours[name] = (sae, x)
        # This library reads its own exports back too (a sparsify folder does not hold the model and hooks).
        names = dict(model_name="gpt2", hook_name=sae.hook_name, hook_out=sae.hook_out) if to == "sparsify" else {}
        assert_same_outputs(load_dictionary(folder, **names), {"x": x, **our_outputs(sae, x)})
    # A dictionary of a model with centered writing weights goes back to SAELens as one, which SAELens then
    # hands the centered residual stream.
    centered = load_dictionary(FOREIGN / "saelens" / "centered")
    folder = export_saelens(centered, tmp_path / "centered")
    kwargs = json.loads((folder / "cfg.json").read_text())["metadata"]["model_from_pretrained_kwargs"]
    assert kwargs == {"center_writing_weights": True}
    x = 2.0 * torch.randn(24, 16)
    x = x - x.mean(-1, keepdim=True)
    save_file({"x": x}, str(tmp_path / "centered.in.safetensors"))
    jobs.append({"package": "saelens", "folder": str(folder), "inputs": str(tmp_path / "centered.in.safetensors"),
                 "out": str(tmp_path / "centered.out.safetensors"), "heads": None})
    ours["centered"] = (centered, x)
    assert_same_outputs(load_dictionary(folder), {"x": x, **our_outputs(centered, x)})
    # A layer_norm dictionary (standardizing each token) goes back as one too.
    layer_norm = load_dictionary(FOREIGN / "saelens" / "layer_norm")
    folder = export_saelens(layer_norm, tmp_path / "layer_norm")
    assert json.loads((folder / "cfg.json").read_text())["normalize_activations"] == "layer_norm"
    x = 3.0 + 2.0 * torch.randn(24, 16)
    save_file({"x": x}, str(tmp_path / "layer_norm.in.safetensors"))
    jobs.append({"package": "saelens", "folder": str(folder), "inputs": str(tmp_path / "layer_norm.in.safetensors"),
                 "out": str(tmp_path / "layer_norm.out.safetensors"), "heads": None})
    ours["layer_norm"] = (layer_norm, x)
    assert_same_outputs(load_dictionary(folder), {"x": x, **our_outputs(layer_norm, x)})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([str(python), str(ROOT / "tests" / "peer_encode.py"), "--jobs", str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name, (sae, x) in ours.items():
        theirs = load_file(str(tmp_path / f"{name}.out.safetensors"))
        assert_same_outputs(sae, theirs)
        assert (theirs["feature_acts"] != 0).any(), name


def test_what_a_format_cannot_hold_is_refused_on_export(tmp_path):
    with pytest.raises(DictionaryFormatError, match="SAELens has no top-k transcoder"):
        export_saelens(trained_like("topk", d_out=12), tmp_path / "a")
    with pytest.raises(DictionaryFormatError, match="sparsify has top-k sparse coders only"):
        export_sparsify(trained_like("jumprelu"), tmp_path / "b")
    with pytest.raises(DictionaryFormatError, match="as wide as their inputs"):
        export_sparsify(trained_like("topk", d_out=12), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_command_line_imports_and_exports(tmp_path, tiny_dictionary):
    run = lambda *args: subprocess.run([sys.executable, "-m", "core.formats", *args], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    proc = run("import", str(FOREIGN / "sparsify" / "gpt2-run" / "h.0"), "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "imported" / "dictionaries" / "gpt2-run--h.0" / "sae.safetensors").is_file()
    proc = run("export", str(tiny_dictionary), str(tmp_path / "out"), "--to", "sparsify")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "cfg.json").read_text())["num_latents"] == 128
    proc = run("import", str(FOREIGN / "saelens" / "gated"), "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Cannot load")
    proc = run("locate", "gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert proc.stdout.strip() == \
        "https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted/tree/main/blocks.8.hook_resid_pre"


# ------------------------------------------------------------------ end to end: evaluate, analyze, browse


def test_an_imported_dictionary_is_evaluated_analyzed_and_browsed(tmp_path, tiny_gpt2_dir, tiny_model):
    from server.app import create_app
    from server.results import ResultsFolder
    from tests.server_helpers import local_client, make_settings

    source = source_path = FOREIGN / "saelens" / "topk_e2e"
    # Analyses are written beside the dictionary, so a foreign folder is analyzed through its imported copy.
    with pytest.raises(ConfigError, match="import it first"):
        analyze(tiny_analysis_config(source, tiny_gpt2_dir), model=tiny_model)

    copy = import_dictionary(source, tmp_path, model_name=str(tiny_gpt2_dir))
    sae = load_dictionary(copy)
    assert sae.model_name == str(tiny_gpt2_dir) and sae.hook_name == TINY_HOOK
    batches = TokenBatches(DatasetConfig(context_size=32), tiny_model.tokenizer, bos_token_id=tiny_model.bos_token_id,
                           separator_token_id=tiny_model.separator_token_id, batch_size=4)
    result = evaluate(tiny_model, sae, (b for _, b in zip(range(2), batches)))
    assert result.l0 == pytest.approx(8.0)
    assert math.isfinite(result.ce_loss_recovered) and math.isfinite(result.explained_variance)

    folder = analyze(tiny_analysis_config(copy, tiny_gpt2_dir), model=tiny_model)
    assert folder == copy / "analysis" / "default" and (folder / "features.sqlite").is_file()
    results = ResultsFolder(tmp_path)
    name = f"imported:{copy.name}"
    assert name in results.dictionary_names()
    info = results.dictionary(name)
    assert info.source["format"] == "saelens" and info.source["model_name"] == "gpt2"
    assert results.analysis_names(name) == ["default"]
    results.close()
    # The viewer's API serves it like a trained dictionary, custom text included (its model from its config).
    with local_client(create_app(make_settings(tmp_path))) as client:
        detail = client.get(f"/api/dictionaries/{name}").json()
        assert detail["analyses"] == ["default"] and detail["name"] == name
        assert detail["config"]["source"]["format"] == "saelens" and detail["architecture"] == "topk"
        page = client.get(f"/api/dictionaries/{name}/analyses/default/features")
        assert page.status_code == 200 and page.json()["total"] == 128
        text = client.post(f"/api/dictionaries/{name}/activations", json={"text": "Hello world, a test."})
        assert text.status_code == 200, text.text
        # Its provenance, as the list and the detail give it to the viewer; none for one trained here.
        listed = {d["name"]: d for d in client.get("/api/dictionaries").json()["dictionaries"]}
        source = listed[name]["source"]
        assert source["format"] == "saelens" and source["version"].startswith("6.")
        assert source["model_name"] == "gpt2" and source["hook_name"] == TINY_HOOK
        assert source["path"] == str(source_path.resolve()) and len(source["sha256"]) == 64
        assert detail["source"] == source
    # A hand-edited "source" that describes no provenance is left out, not a failed listing.
    config = json.loads((copy / "config.json").read_text())
    config["source"] = {"path": 3}
    (copy / "config.json").write_text(json.dumps(config))
    with local_client(create_app(make_settings(tmp_path))) as client:
        listing = client.get("/api/dictionaries")
        assert listing.status_code == 200 and listing.json()["dictionaries"][0]["source"] is None
        assert client.get(f"/api/dictionaries/{name}").json()["source"] is None


def test_only_imported_copies_are_evaluated_into_their_config(tmp_path, tiny_dictionary, tiny_model):
    # A trained dictionary's metrics are its trainer's held-out evaluation: never replaced.
    before = (tiny_dictionary / "config.json").read_bytes()
    with pytest.raises(DictionaryLoadError, match="not an imported dictionary"):
        evaluate_imported(tiny_dictionary, tiny_model, DatasetConfig(context_size=32))
    assert (tiny_dictionary / "config.json").read_bytes() == before
    copy = import_dictionary(FOREIGN / "saelens" / "topk_e2e", tmp_path, model_name="gpt2")
    with pytest.raises(ConfigError, match="must be positive"):
        evaluate_imported(copy, tiny_model, DatasetConfig(context_size=32), n_tokens=0)
    result = evaluate_imported(copy, tiny_model, DatasetConfig(context_size=32), n_tokens=200, batch_size=2)
    assert result.n_tokens <= 4 * 2 * 32 and load_dictionary(copy).saved_config["metrics"]["l0"] == pytest.approx(8.0)


def test_run_analyze_example_takes_a_foreign_folder(tmp_path, tiny_gpt2_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "run_analyze_example.py"), "--dictionary-path",
                           str(FOREIGN / "saelens" / "topk_e2e"), "--model.name", str(tiny_gpt2_dir),
                           "--total-analyzing-tokens", "1500", "--dataset.context-size", "32"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    copy = tmp_path / "results" / "imported" / "dictionaries" / "topk_e2e"
    assert (copy / "analysis" / "default" / "features.sqlite").is_file()
    assert f"Imported {FOREIGN / 'saelens' / 'topk_e2e'} to results/imported/dictionaries/topk_e2e" in proc.stdout
    # Imported without metrics, it was evaluated first; the viewer shows these like a trained dictionary's.
    config = json.loads((copy / "config.json").read_text())
    metrics = config["metrics"]
    assert metrics["l0"] == pytest.approx(8.0) and 0 < metrics["n_tokens"] <= 8192
    assert math.isfinite(metrics["ce_loss_recovered"]) and math.isfinite(metrics["explained_variance"])
    assert config["evaluation"]["held_out"] is False and f"CE loss recovered {metrics['ce_loss_recovered']:.4f}" in proc.stdout
    # Run again: the copy, its metrics and its analysis are reused, not recomputed (the analysis is refused).
    again = subprocess.run([sys.executable, str(ROOT / "run_analyze_example.py"), "--dictionary-path",
                            str(FOREIGN / "saelens" / "topk_e2e"), "--model.name", str(tiny_gpt2_dir),
                            "--total-analyzing-tokens", "1500", "--dataset.context-size", "32"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "Evaluated" not in again.stdout and "--overwrite" in again.stderr
    assert json.loads((copy / "config.json").read_text())["metrics"] == metrics
    # A model name the dictionary cannot be mapped to: one sentence saying how to give a folder.
    folder = copy_fixture("saelens/standard", tmp_path / "src")
    edit_json(folder / "cfg.json", metadata__model_name="my-private-model")
    proc = subprocess.run([sys.executable, str(ROOT / "run_analyze_example.py"), "--dictionary-path", str(folder)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model_name=" in proc.stderr and "local model folder" in proc.stderr
