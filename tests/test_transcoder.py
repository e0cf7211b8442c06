"""Transcoders (core/sae/base.py): a dictionary reading one hook and predicting another, with an
optional linear skip path; construction, training, normalization folding, the on-disk format and
its errors. Also: old (format 1) dictionary folders still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import core.sae as sae_module
from core.config import ARCHITECTURES, ConfigError, SAEConfig
from core.sae import DictionaryLoadError, SparseAutoencoder, create_dictionary, load_dictionary

D_IN, D_OUT, D_SAE, K = 12, 20, 64, 4
HOOK_IN, HOOK_OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"
FORMAT_V1 = Path(__file__).parent / "data" / "format_v1"
ARCH_KWARGS = {"relu": dict(l1_coefficient=1e-3), "jumprelu": dict(l0_coefficient=1e-3, jumprelu_bandwidth=0.05,
                                                                     jumprelu_init_threshold=0.05)}


def make_transcoder(architecture: str = "topk", *, skip: bool = True, d_out: int = D_OUT, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=D_SAE, k=K, skip_connection=skip,
                    **{**ARCH_KWARGS.get(architecture, {}), **overrides})
    return create_dictionary(cfg, D_IN, hook_name=HOOK_IN, hook_out=HOOK_OUT, d_out=d_out, model_name="tiny-gpt2")


def perturb(sae, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        if sae.has_inference_threshold:
            sae.threshold.fill_(0.3)


class MLPData:
    """x [n, D_IN] and the output of a small fixed ReLU MLP on it plus a linear part [n, D_OUT]."""

    def __init__(self, seed: int = 1):
        self.g = torch.Generator().manual_seed(seed)
        self.W_in = torch.randn(D_IN, 16, generator=self.g) / D_IN ** 0.5
        self.W_out = torch.randn(16, D_OUT, generator=self.g)
        self.linear = 0.5 * torch.randn(D_IN, D_OUT, generator=self.g) / D_IN ** 0.5

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, D_IN, generator=self.g)
        return x, (x @ self.W_in - 0.5).relu() @ self.W_out + x @ self.linear


# ------------------------------------------------------------------ construction


def test_transcoder_shapes_init_and_encoder_input():
    tc = make_transcoder("relu")
    assert tc.is_transcoder and (tc.hook_name, tc.hook_out) == (HOOK_IN, HOOK_OUT)
    assert (tc.d_in, tc.d_out, tc.d_sae) == (D_IN, D_OUT, D_SAE)
    assert tc.W_enc.shape == (D_IN, D_SAE) and tc.W_dec.shape == (D_SAE, D_OUT)
    assert tc.b_dec.shape == (D_OUT,) and tc.W_skip.shape == (D_IN, D_OUT)
    assert torch.equal(tc.W_skip, torch.zeros(D_IN, D_OUT))
    # d_in != d_out: the encoder starts random with unit columns, not as the decoder's transpose.
    assert torch.allclose(tc.W_enc.norm(dim=0), torch.ones(D_SAE), atol=1e-6)
    assert torch.allclose(tc.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-6)
    # d_in == d_out: the transpose, as an SAE's.
    same = make_transcoder("relu", d_out=D_IN)
    assert torch.equal(same.W_enc, same.W_dec.T)
    # The encoder does not subtract b_dec (it lives in the output space).
    with torch.no_grad():
        tc.b_dec.fill_(5.0)
        tc.b_enc.normal_()
    x = torch.randn(8, D_IN)
    assert torch.equal(tc.encode(x), (x @ tc.W_enc + tc.b_enc).relu())
    # No skip path unless asked for; an SAE has neither hook_out nor a separate output scale.
    assert make_transcoder("relu", skip=False).W_skip is None
    sae = create_dictionary(SAEConfig(architecture="relu", d_sae=D_SAE), D_IN, hook_name=HOOK_IN, model_name="m")
    assert not sae.is_transcoder and sae.d_out == D_IN and sae.hook_out is None and sae.W_skip is None
    assert sae.normalization.tied and not tc.normalization.tied
    assert "normalization.output_scale" not in sae.state_dict()
    assert "normalization.output_scale" in tc.state_dict()


def test_bad_transcoder_arguments_give_one_clear_error():
    cfg = SAEConfig(architecture="topk", d_sae=D_SAE, k=K)
    with pytest.raises(ValueError, match=r"d_out is 20 but an SAE reconstructs its input \(d_in=12\)"):
        create_dictionary(cfg, D_IN, hook_name=HOOK_IN, model_name="m", d_out=D_OUT)
    for bad in (0, -3, 2.5, "20"):
        with pytest.raises(ValueError, match="d_out must be a positive integer"):
            create_dictionary(cfg, D_IN, hook_name=HOOK_IN, model_name="m", hook_out=HOOK_OUT, d_out=bad)
    with pytest.raises(ValueError, match="other than hook_name"):
        create_dictionary(cfg, D_IN, hook_name=HOOK_IN, model_name="m", hook_out=HOOK_IN)
    with pytest.raises(ConfigError, match="skip_connection is for transcoders"):
        create_dictionary(SAEConfig(d_sae=D_SAE, skip_connection=True), D_IN, hook_name=HOOK_IN, model_name="m")

    tc = make_transcoder()
    x, y = MLPData().batch(8)
    with pytest.raises(ValueError, match=r"target activations of blocks.1.hook_mlp_out of shape \[batch, d_out\]"):
        tc.training_forward(x)
    with pytest.raises(ValueError, match=r"\[8, 20\]; got \(8, 12\)"):
        tc.training_forward(x, target=x)
    sae = create_dictionary(cfg, D_IN, hook_name=HOOK_IN, model_name="m")
    with pytest.raises(ValueError, match="pass target only to transcoders"):
        sae.training_forward(x, target=x)
    with pytest.raises(ValueError, match="decode needs the in-hook activations"):
        tc.decode(tc.encode(x))
    with pytest.raises(ValueError, match=r"sample of target activations of shape \[n, 20\]"):
        tc.initialize_decoder_bias(x)
    with pytest.raises(ValueError, match="an SAE has one normalization constant"):
        sae.normalization.set_scales(1.0, 2.0)
    sae.normalization.set_scales(1.0, 1.0)  # the same value: allowed, so one code path serves both


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_transcoder_loss_and_short_training_on_a_toy_mlp(architecture):
    tc = make_transcoder(architecture, decoder_bias_init="mean")
    data = MLPData()
    x, y = data.batch(64)
    with torch.no_grad():
        tc.W_skip.normal_()  # (it starts at zero)
        f = tc._top_k_per_batch(tc._pre_acts(x)) if tc.has_inference_threshold else tc.encode(x)  # training's rule
    out = tc.training_forward(x, target=y, dead_mask=torch.arange(D_SAE) % 4 == 0)
    assert out.x_hat.shape == (64, D_OUT)
    assert torch.allclose(out.x_hat, f @ tc.W_dec + tc.b_dec + x @ tc.W_skip, atol=1e-5)  # skip included
    if architecture != "matryoshka_batchtopk":
        assert torch.allclose(out.mse_loss, (out.x_hat - y).pow(2).sum(-1).mean())
    assert torch.allclose(out.loss, out.mse_loss + out.sparsity_loss + out.aux_loss)
    out.loss.backward()
    assert tc.W_skip.grad.abs().sum() > 0  # the skip path trains

    tc = make_transcoder(architecture, decoder_bias_init="mean")
    tc.initialize_decoder_bias(data.batch(512)[1])
    eval_x, eval_y = data.batch(1024)

    def error() -> float:
        with torch.no_grad():
            return (tc(eval_x) - eval_y).pow(2).sum(-1).mean().item()

    before = error()
    optimizer = torch.optim.Adam(tc.parameters(), lr=1e-2)
    for _ in range(200):
        x, y = data.batch(256)
        out = tc.training_forward(x, target=y)
        optimizer.zero_grad()
        out.loss.backward()
        tc.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        tc.set_decoder_norm_to_unit_norm()
    if tc.has_inference_threshold:
        tc.calibrate_threshold([data.batch(256)[0] for _ in range(4)])
    tc.eval()
    variance = (eval_y - eval_y.mean(0)).pow(2).sum(-1).mean().item()
    assert error() < 0.25 * before and error() < 0.3 * variance


# ------------------------------------------------------------------ folding, save and load


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_transcoder_save_load_round_trip_folds_both_scales(tmp_path, architecture):
    tc = make_transcoder(architecture)
    perturb(tc)
    tc.normalization.set_scales(2.5, 0.5)
    x = MLPData().batch(32)[0] * 3
    raw_before, acts_before = tc(x), tc.encode(x)
    # forward on raw activations: normalize the input, predict, undo the output's normalization.
    expected = tc._reconstruct(tc._activate(tc._pre_acts(2.5 * x)), 2.5 * x) / 0.5
    assert torch.allclose(raw_before, expected, atol=1e-5)
    state = {name: t.clone() for name, t in tc.state_dict().items()}

    tc.save(tmp_path / "tc", metrics={"mse": 1.0})
    assert all(torch.equal(t, state[name]) for name, t in tc.state_dict().items())  # the live one unchanged
    config = json.loads((tmp_path / "tc" / "config.json").read_text())
    assert config["format_version"] == sae_module.FORMAT_VERSION == 2
    assert (config["hook_name"], config["hook_out"], config["d_in"], config["d_out"]) == (HOOK_IN, HOOK_OUT, D_IN, D_OUT)
    assert (config["normalization_scale"], config["output_normalization_scale"]) == (2.5, 0.5)
    assert set(load_file(str(tmp_path / "tc" / "sae.safetensors"))) >= {"W_enc", "b_enc", "W_dec", "b_dec", "W_skip"}

    loaded = load_dictionary(tmp_path / "tc")
    assert type(loaded) is type(tc) and loaded.is_transcoder and loaded.cfg == tc.cfg
    assert (loaded.hook_out, loaded.d_out) == (HOOK_OUT, D_OUT)
    assert loaded.normalization.scales() == (1.0, 1.0)
    assert torch.allclose(loaded(x), raw_before, atol=1e-5)
    assert torch.allclose(loaded.encode(x), acts_before, atol=1e-5)
    assert torch.allclose(loaded.decode(acts_before, x), raw_before, atol=1e-5)

    tc.fold_normalization()  # in place: the same raw outputs
    assert tc.normalization.scales() == (1.0, 1.0)
    assert torch.allclose(tc(x), raw_before, atol=1e-5)


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_transcoder_load_errors(tmp_path):
    make_transcoder().save(tmp_path / "tc")

    bad = tmp_path / "wrong_d_out"
    shutil.copytree(tmp_path / "tc", bad)
    edit_config(bad, d_out=7)
    with pytest.raises(DictionaryLoadError, match=r"W_dec has shape \[64, 20\], expected \[64, 7\]") as info:
        load_dictionary(bad)
    assert "d_out=7" in str(info.value) and "\n" not in str(info.value)

    bad = tmp_path / "sae_with_d_out"
    shutil.copytree(tmp_path / "tc", bad)
    edit_config(bad, hook_out=None)
    with pytest.raises(DictionaryLoadError, match=r"invalid dictionary config \(d_out is 20 but an SAE"):
        load_dictionary(bad)

    bad = tmp_path / "no_skip"
    shutil.copytree(tmp_path / "tc", bad)
    config = json.loads((bad / "config.json").read_text())
    config["sae"]["skip_connection"] = False
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(DictionaryLoadError, match="unexpected W_skip"):
        load_dictionary(bad)

    bad = tmp_path / "wrong_shape"
    shutil.copytree(tmp_path / "tc", bad)
    tensors = load_file(str(bad / "sae.safetensors"))
    tensors["W_skip"] = torch.zeros(D_OUT, D_IN)
    save_file(tensors, str(bad / "sae.safetensors"))
    with pytest.raises(DictionaryLoadError, match=r"W_skip has shape \[20, 12\], expected \[12, 20\]"):
        load_dictionary(bad)

    bad = tmp_path / "newer"
    shutil.copytree(tmp_path / "tc", bad)
    edit_config(bad, format_version=3)
    with pytest.raises(DictionaryLoadError, match="format_version 3, newer than this library reads"):
        load_dictionary(bad)


# ------------------------------------------------------------------ format 1 folders


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_format_1_folders_still_load(architecture):
    """tests/data/format_v1 was written by the format-1 code (before transcoders), with the inputs
    and the outputs that code computed; they must load as SAEs and give the same numbers."""
    folder = FORMAT_V1 / architecture
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1
    sae = load_dictionary(folder)
    assert sae.architecture == architecture and not sae.is_transcoder and sae.d_out == sae.d_in == 8
    assert sae.saved_config["metrics"] == {"l0": 4.0}
    expected = load_file(str(FORMAT_V1 / f"{architecture}_expected.safetensors"))
    sae.eval()
    with torch.no_grad():
        assert torch.allclose(sae.encode(expected["x"]), expected["feature_acts"], atol=1e-6)
        assert torch.allclose(sae(expected["x"]), expected["reconstruction"], atol=1e-6)


def test_a_transcoder_trains_from_the_model_is_evaluated_with_the_mlp_replaced_and_analyzed(tiny_gpt2_dir, tiny_model,
                                                                                             tmp_path):
    """blocks.0.ln2.hook_normalized -> blocks.0.hook_mlp_out on the tiny GPT-2, beside an SAE on the
    same pass: trained, evaluated by splicing its output in place of the MLP's, analyzed (features
    fire on the in-hook, the logit lens reads the decoder in the out-hook's residual space)."""
    import dataclasses

    from core import FeatureStore, analyze, evaluate, load_dictionary, train
    from core.config import DictionaryConfig
    from tests.conftest import tiny_analysis_config, tiny_training_config

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="tc", steps=30)
    cfg.sae.normalize_activations = "expected_average_only_in"  # the random model's MLP output is tiny
    cfg.dictionaries = (
        DictionaryConfig(name="mlp0", hook_name="blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out",
                         sae=dataclasses.replace(cfg.sae, skip_connection=True)),
        DictionaryConfig(name="resid0"))
    result = train(cfg, model=tiny_model)
    transcoder = load_dictionary(result.dictionary_paths["mlp0"])
    assert (transcoder.hook_name, transcoder.hook_out) == ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out")
    metrics = result.final_metrics["mlp0"]
    assert 0 < metrics["explained_variance"] <= 1 and metrics["ce_loss_recovered"] > 0

    # A transcoder that outputs zeros is exactly the MLP zero-ablated: nothing of the loss recovered.
    from tests.test_training import _eval_batches

    batches = _eval_batches(cfg, tiny_model)
    zero = load_dictionary(result.dictionary_paths["mlp0"])
    with torch.no_grad():
        for name in ("W_dec", "b_dec", "W_skip"):
            getattr(zero, name).zero_()
    r = evaluate(tiny_model, zero, batches)
    assert r.ce_loss_reconstructed == pytest.approx(r.ce_loss_zero_ablation, abs=1e-5)
    assert r.ce_loss_recovered == pytest.approx(0.0, abs=1e-5)
    assert r.ce_loss_zero_ablation == pytest.approx(metrics["ce_loss_zero_ablation"], rel=1e-6)

    folder = analyze(tiny_analysis_config(result.dictionary_paths["mlp0"], tiny_gpt2_dir, total_analyzing_tokens=2000),
                     model=tiny_model)
    with FeatureStore(folder) as store:
        assert store.meta["hook_name"] == "blocks.0.ln2.hook_normalized"
        assert store.meta["hook_out"] == "blocks.0.hook_mlp_out" and store.meta["logit_lens_note"] is None
        index = store.list_features(sort="act_count", descending=True, limit=1)[1][0].index
        assert store.get_feature(index).logit_lens.positive
