"""Tests for core/sae/: architectures, losses, AuxK, normalization folding and the on-disk format.
(Transcoders: test_transcoder.py; the sparse training step and matryoshka: test_sae_sparse_step.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import core.sae as sae_module
import core.sae.base as sae_base
from core.config import ARCHITECTURES, ConfigError, SAEConfig
from core.sae import (
    DictionaryLoadError,
    SAEOutput,
    SparseAutoencoder,
    create_dictionary,
    geometric_median,
    load_dictionary,
)

D_IN, D_SAE, K = 16, 64, 4


def make_sae(architecture: str = "topk", seed: int = 0, **overrides) -> SparseAutoencoder:
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=D_SAE, k=K, **overrides)
    return create_dictionary(cfg, D_IN, hook_name="blocks.1.hook_resid_post", model_name="tiny-gpt2")


class SparseData:
    """Each sample is a sum of 3 of 32 random unit directions (coefficients in [1, 2]) plus an offset."""

    def __init__(self, seed: int = 1):
        self.g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(32, D_IN, generator=self.g)
        self.dirs = dirs / dirs.norm(dim=1, keepdim=True)
        self.offset = 0.5 * torch.ones(D_IN)

    def batch(self, n: int) -> torch.Tensor:
        idx = torch.rand(n, 32, generator=self.g).argsort(dim=1)[:, :3]
        coef = torch.zeros(n, 32).scatter(1, idx, 1 + torch.rand(n, 3, generator=self.g))
        return coef @ self.dirs + self.offset


def perturb(sae: SparseAutoencoder, seed: int = 3) -> None:
    """Move every parameter off its (symmetric) initial value so round-trip tests are meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------ architectures and training


ARCH_KWARGS = {
    "relu": dict(l1_coefficient=3e-3),
    "topk": dict(),
    "batchtopk": dict(),
    "jumprelu": dict(l0_coefficient=1e-3, jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05),
    "matryoshka_batchtopk": dict(),
}
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka_batchtopk")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_forward_shapes_and_finite_losses(architecture):
    sae = make_sae(architecture, **ARCH_KWARGS[architecture])
    x = SparseData().batch(32)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:10] = True
    out = sae.training_forward(x, dead_mask=dead)
    assert isinstance(out, SAEOutput)
    assert out.x_hat.shape == (32, D_IN)
    assert out.fire_counts.shape == (D_SAE,) and out.fire_counts.dtype == torch.int64
    for name in ("loss", "mse_loss", "sparsity_loss", "aux_loss", "l0"):
        value = getattr(out, name)
        assert value.shape == (), name
        assert torch.isfinite(value), name
    assert torch.allclose(out.loss, out.mse_loss + out.sparsity_loss + out.aux_loss)
    if architecture != "matryoshka_batchtopk":  # its mse_loss is the mean over prefixes (test_sae_sparse_step.py)
        assert torch.allclose(out.mse_loss, (out.x_hat - x).pow(2).sum(-1).mean())
    assert (out.fire_counts >= 0).all() and (out.fire_counts <= 32).all()
    assert out.fire_counts.sum().item() == pytest.approx(out.l0.item() * 32)
    if architecture in ("relu", "jumprelu"):
        assert out.sparsity_loss > 0 and out.aux_loss == 0
    else:
        assert out.sparsity_loss == 0 and out.aux_loss > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_short_training_lowers_mse(architecture):
    sae = make_sae(architecture, decoder_bias_init="mean", **ARCH_KWARGS[architecture])
    data = SparseData()
    sae.initialize_decoder_bias(data.batch(512))
    eval_x = data.batch(1024)
    def reconstruction_error(out) -> float:  # of x_hat (matryoshka's mse_loss averages its prefixes')
        return (out.x_hat - eval_x).pow(2).sum(-1).mean().item()

    with torch.no_grad():
        mse_before = reconstruction_error(sae.training_forward(eval_x))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(200):
        out = sae.training_forward(data.batch(256))
        opt.zero_grad()
        out.loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
    with torch.no_grad():
        after = sae.training_forward(eval_x)
    assert reconstruction_error(after) < 0.25 * mse_before
    # Better than predicting the mean: the SAE explains most of the variance.
    variance = (eval_x - eval_x.mean(0)).pow(2).sum(-1).mean().item()
    assert reconstruction_error(after) < 0.3 * variance
    if architecture in TOPK_FAMILY:
        assert after.l0.item() == pytest.approx(K)


def test_topk_keeps_exactly_k_largest_per_token():
    sae = make_sae("topk")
    x = SparseData().batch(64)
    out = sae.training_forward(x)
    feature_acts = sae.encode(x)  # the rule on raw inputs (normalization scale 1)
    assert ((feature_acts != 0).sum(-1) == K).all()
    assert out.l0.item() == K
    # The kept latents are the k largest pre-activations, with their values unchanged.
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    top_values, top_indices = pre.topk(K, dim=-1)
    assert torch.equal(feature_acts.gather(-1, top_indices), top_values)
    # Training keeps the same latents as encode().
    assert torch.equal(out.fire_counts, (feature_acts != 0).sum(0))


def test_batchtopk_threshold_follows_the_recent_encoder_and_calibrates_to_k():
    sae = make_sae("batchtopk")
    data = SparseData(seed=3)
    for _ in range(300):
        sae.training_forward(data.batch(64))
    early = sae.threshold.item()
    for _ in range(500):  # the inputs (so the pre-activations) grow 3x: early steps must not hold it back
        sae.training_forward(3 * data.batch(64))
    recent = [sae._top_k_per_batch(sae._pre_acts(3 * data.batch(64))) for _ in range(20)]
    recent_smallest = torch.stack([r[r > 0].min() for r in recent]).mean().item()
    assert sae.threshold.item() == pytest.approx(recent_smallest, rel=0.1)
    assert sae.threshold.item() > 1.5 * early
    # Calibration on batches from the final encoder: inference keeps about k latents per token.
    held = [3 * data.batch(64) for _ in range(8)]
    sae.calibrate_threshold(held)
    sae.eval()
    test = 3 * data.batch(512)
    assert (sae.encode(test) != 0).sum(-1).float().mean().item() == pytest.approx(K, rel=0.1)
    with pytest.raises(ValueError, match="batchtopk"):
        make_sae("topk").calibrate_threshold(held)


def test_batchtopk_training_keeps_k_per_token_on_average_and_learns_threshold():
    sae = make_sae("batchtopk")
    x = SparseData().batch(64)
    assert sae.threshold.item() == -1.0
    out = sae.training_forward(x)
    assert out.l0.item() == pytest.approx(K)
    with torch.no_grad():
        feature_acts = sae._top_k_per_batch(sae._pre_acts(x))  # the k * 64 largest over the batch
    assert torch.equal(out.fire_counts, (feature_acts != 0).sum(0))
    counts = (feature_acts != 0).sum(-1)
    assert counts.sum().item() == K * 64
    assert counts.min() != counts.max()  # budget shared over the batch, not per token
    smallest_kept = feature_acts[feature_acts > 0].min()
    assert sae.threshold.item() == pytest.approx(smallest_kept.item())  # first step: no EMA history

    # Later steps move the threshold by a bias-corrected moving average with decay
    # BATCHTOPK_THRESHOLD_DECAY: no weight on an initial guess.
    x2 = SparseData(seed=5).batch(64)
    with torch.no_grad():
        kept2 = sae._top_k_per_batch(sae._pre_acts(x2))
    sae.training_forward(x2)
    smallest2 = kept2[kept2 > 0].min().item()
    decay = sae_module.BATCHTOPK_THRESHOLD_DECAY
    expected = (decay * smallest_kept.item() + smallest2) / (decay + 1)
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-5)

    # Not updated in eval mode.
    sae.eval()
    before = sae.threshold.clone()
    sae.training_forward(SparseData(seed=6).batch(64))
    assert torch.equal(sae.threshold, before)

    # Inference: a latent fires iff its pre-activation exceeds the threshold.
    sae.threshold.fill_(0.5)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    expected_acts = torch.where(pre > 0.5, pre, torch.zeros_like(pre))
    assert torch.equal(sae.encode(x), expected_acts)


def test_jumprelu_forward_and_straight_through_threshold_gradients():
    bandwidth, theta0 = 0.5, 0.2
    sae = make_sae("jumprelu", jumprelu_bandwidth=bandwidth, jumprelu_init_threshold=theta0, l0_coefficient=2.0)
    assert torch.allclose(sae.log_threshold.exp(), torch.full((D_SAE,), theta0))
    x = SparseData().batch(32)
    pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).detach()
    theta = torch.full((D_SAE,), theta0)
    out = sae.training_forward(x)
    assert torch.equal(sae.encode(x), torch.where(pre > theta, pre, torch.zeros_like(pre)))
    assert torch.equal(out.fire_counts, (pre > theta).sum(0))
    assert out.sparsity_loss.item() == pytest.approx(2.0 * (pre > theta).float().sum(-1).mean().item())

    in_window = ((pre - theta).abs() < bandwidth / 2).float()  # rectangle kernel support
    assert in_window.sum() > 0

    # L0 term: d/dtheta = coeff * mean_b[-(1/eps) K], and d/dlog(theta) = theta * d/dtheta.
    out.sparsity_loss.backward(retain_graph=True)
    expected = theta * 2.0 * (-(1 / bandwidth) * in_window).sum(0) / 32
    assert torch.allclose(sae.log_threshold.grad, expected, atol=1e-5)
    assert sae.W_enc.grad is None or sae.W_enc.grad.abs().sum() == 0  # step function: no grad to pre

    # JumpReLU output: d(sum f)/dtheta = sum_b -(theta/eps) K.
    sae.zero_grad()
    sae.encode(x).sum().backward()
    expected = theta * (-(theta / bandwidth) * in_window).sum(0)
    assert torch.allclose(sae.log_threshold.grad, expected, atol=1e-5)


def test_jumprelu_thresholds_get_gradient_from_total_loss():
    sae = make_sae("jumprelu", **ARCH_KWARGS["jumprelu"])
    sae.training_forward(SparseData().batch(128)).loss.backward()
    assert sae.log_threshold.grad is not None
    assert sae.log_threshold.grad.abs().sum() > 0


def test_relu_sparsity_loss_is_l1_weighted_by_decoder_norms():
    sae = make_sae("relu", l1_coefficient=0.7)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])
    x = SparseData().batch(16)
    out = sae.training_forward(x)
    expected = 0.7 * (sae.encode(x) * sae.W_dec.norm(dim=1)).sum(-1).mean()
    assert torch.allclose(out.sparsity_loss, expected)
    overridden = sae.training_forward(x, sparsity_coefficient=0.0)
    assert overridden.sparsity_loss.item() == 0.0


# ------------------------------------------------------------------ AuxK


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_auxk_zero_without_dead_latents(architecture):
    sae = make_sae(architecture)
    x = SparseData().batch(32)
    assert sae.training_forward(x).aux_loss.item() == 0.0
    assert sae.training_forward(x, dead_mask=torch.zeros(D_SAE, dtype=torch.bool)).aux_loss.item() == 0.0
    assert sae.training_forward(x, dead_mask=torch.zeros(0, dtype=torch.bool)).aux_loss.item() == 0.0


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_auxk_positive_and_trains_only_dead_encoder_columns(architecture):
    sae = make_sae(architecture)
    x = SparseData().batch(32)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[40:] = True
    out = sae.training_forward(x, dead_mask=dead)
    assert out.aux_loss.item() > 0
    out.aux_loss.backward()
    grad_norms = sae.W_enc.grad.norm(dim=0)
    assert (grad_norms[40:] > 0).any()
    assert grad_norms[:40].abs().max() == 0  # the residual target is detached from live latents


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_auxk_value_matches_formula_when_all_dead_latents_are_used(architecture):
    sae = make_sae(architecture, aux_k=100, aux_k_coefficient=0.5)
    perturb(sae)  # non-zero b_dec: the aux reconstruction must not include it
    x = SparseData().batch(32)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    out = sae.training_forward(x, dead_mask=dead)
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        residual = x - out.x_hat
        residual_hat = pre[:, dead].relu() @ sae.W_dec[dead]
        expected = 0.5 * (residual_hat - residual).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
    assert out.aux_loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_auxk_single_token_batch_is_not_nan(architecture):
    sae = make_sae(architecture)
    dead = torch.ones(D_SAE, dtype=torch.bool)
    out = sae.training_forward(SparseData().batch(1), dead_mask=dead)  # residual variance is 0
    assert out.aux_loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in sae.parameters() if p.grad is not None)


def test_auxk_ignored_for_relu_and_jumprelu():
    for architecture in ("relu", "jumprelu"):
        sae = make_sae(architecture)
        out = sae.training_forward(SparseData().batch(8), dead_mask=torch.ones(D_SAE, dtype=torch.bool))
        assert out.aux_loss.item() == 0.0


# ------------------------------------------------------------------ decoder bias init and geometric median


def test_geometric_median_is_robust_to_outliers():
    g = torch.Generator().manual_seed(0)
    center = torch.tensor([1.0, -2.0, 3.0])
    inliers = center + 0.1 * torch.randn(200, 3, generator=g)
    outliers = torch.full((20, 3), 1000.0)
    points = torch.cat([inliers, outliers])
    median = geometric_median(points)
    assert (median - center).norm() < 0.1
    assert (points.mean(0) - center).norm() > 50


def test_geometric_median_known_points():
    center = torch.tensor([0.5, -1.0, 2.0, 0.0])
    signs = torch.cat([torch.eye(4), -torch.eye(4)]) * 3.0
    assert torch.allclose(geometric_median(center + signs), center, atol=1e-4)
    # On a line the geometric median is the ordinary median, not the mean (11/3).
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    assert torch.allclose(geometric_median(line), torch.tensor([1.0, 0.0]), atol=1e-3)


@pytest.mark.parametrize("how", ["geometric_median", "mean", "zeros"])
def test_initialize_decoder_bias(how):
    sae = make_sae("topk", decoder_bias_init=how)
    sample = SparseData().batch(300)
    with torch.no_grad():
        sae.b_dec.fill_(7.0)
    sae.initialize_decoder_bias(sample)
    expected = {"geometric_median": geometric_median(sample), "mean": sample.mean(0),
                "zeros": torch.zeros(D_IN)}[how]
    assert torch.allclose(sae.b_dec, expected, atol=1e-6)


# ------------------------------------------------------------------ decoder constraints


def test_set_decoder_norm_to_unit_norm():
    sae = make_sae("topk")
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1) * 5 + 0.1)
    directions = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    sae.set_decoder_norm_to_unit_norm()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-6)
    assert torch.allclose(sae.W_dec, directions, atol=1e-6)
    # Fresh SAEs start with unit-norm rows and W_enc = W_dec.T.
    fresh = make_sae("relu")
    assert torch.allclose(fresh.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-6)
    assert torch.equal(fresh.W_enc, fresh.W_dec.T)


def test_remove_gradient_parallel_to_decoder_directions():
    sae = make_sae("topk")
    grad = torch.randn(D_SAE, D_IN)
    sae.W_dec.grad = grad.clone()
    sae.remove_gradient_parallel_to_decoder_directions()
    new_grad = sae.W_dec.grad
    assert (new_grad * sae.W_dec).sum(-1).abs().max() < 1e-5
    # Only the parallel part was removed.
    unit = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    expected = grad - (grad * unit).sum(-1, keepdim=True) * unit
    assert torch.allclose(new_grad, expected, atol=1e-6)
    assert not torch.allclose(new_grad, grad)


# ------------------------------------------------------------------ normalization


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_decode_apply_normalization_scale(architecture):
    sae = make_sae(architecture)
    perturb(sae)
    if sae.has_inference_threshold:
        sae.threshold.fill_(0.3)
    sae.normalization.set_scales(2.5)  # the trainer sets the constant from data
    assert sae.normalization.scales() == (2.5, 2.5)  # an SAE's output is its input: one constant
    assert "normalization.input_scale" in sae.state_dict() and "normalization.output_scale" not in sae.state_dict()
    x = SparseData().batch(16)
    acts = sae.encode(x)
    assert torch.allclose(acts, sae._activate(sae._pre_acts(2.5 * x)))
    assert torch.allclose(sae.decode(acts), (acts @ sae.W_dec + sae.b_dec) / 2.5)
    # encode accepts any leading dimensions (e.g. [batch, seq, d_in]).
    assert sae.encode(x.reshape(4, 4, D_IN)).shape == (4, 4, D_SAE)
    with pytest.raises(ValueError, match="d_in=16"):
        sae.encode(torch.zeros(3, 5))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fold_normalization_preserves_raw_outputs(architecture):
    sae = make_sae(architecture)
    perturb(sae)
    if sae.has_inference_threshold:
        sae.threshold.fill_(0.3)
    sae.normalization.set_scales(3.0)
    x = SparseData().batch(32) * 10  # "raw" activations with a large norm
    acts_before, recon_before = sae.encode(x), sae(x)
    sae.fold_normalization()
    assert sae.normalization.scales() == (1.0, 1.0)
    assert torch.allclose(sae.encode(x), acts_before, atol=1e-4)
    assert torch.allclose(sae(x), recon_before, atol=1e-4)


# ------------------------------------------------------------------ save / load


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_load_round_trip_is_exact(tmp_path, architecture):
    sae = make_sae(architecture)
    perturb(sae)
    if sae.has_inference_threshold:
        sae.threshold.fill_(0.3)
    folder = sae.save(tmp_path / "dictionary", metrics={"mse": 0.5}, extra={"dataset": "builtin:python-docs"})
    assert folder == tmp_path / "dictionary"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "sae.safetensors"]  # no temp files left
    loaded = load_dictionary(folder)
    x = SparseData().batch(32)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded(x), sae(x))
    assert torch.equal(loaded.state_dict()["W_dec"], sae.W_dec)
    assert loaded.cfg == sae.cfg
    assert (loaded.hook_name, loaded.model_name, loaded.d_in, loaded.d_sae) == \
        ("blocks.1.hook_resid_post", "tiny-gpt2", D_IN, D_SAE)
    assert loaded.saved_config["metrics"] == {"mse": 0.5}
    assert sae.saved_config == {}


def test_saved_config_contents(tmp_path):
    sae = make_sae("jumprelu")
    sae.normalization.set_scales(1.75)
    sae.save(tmp_path, metrics={"l0": torch.tensor(3.5), "fvu": 0.1},
             extra={"dataset": "wikitext", "context_size": 128, "training_tokens": 10_000})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == sae_module.FORMAT_VERSION
    assert config["architecture"] == "jumprelu"
    assert (config["d_in"], config["d_sae"]) == (D_IN, D_SAE)
    assert config["hook_name"] == "blocks.1.hook_resid_post" and config["model_name"] == "tiny-gpt2"
    assert config["hook_out"] is None and config["d_out"] is None  # an SAE, not a transcoder
    assert "output_normalization_scale" not in config
    assert config["sae"] == json.loads(json.dumps(sae.cfg.to_dict()))  # (tuples are JSON lists)
    assert config["normalization_scale"] == 1.75 and config["normalization_folded"] is True
    assert config["metrics"] == {"l0": 3.5, "fvu": 0.1}
    assert (config["dataset"], config["context_size"], config["training_tokens"]) == ("wikitext", 128, 10_000)
    with pytest.raises(ValueError, match="d_in"):
        sae.save(tmp_path / "other", extra={"d_in": 3})


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_folds_normalization_into_copy(tmp_path, architecture):
    sae = make_sae(architecture)
    perturb(sae)
    if sae.has_inference_threshold:
        sae.threshold.fill_(0.3)
    sae.normalization.set_scales(4.0)
    state_before = {name: t.clone() for name, t in sae.state_dict().items()}
    sae.save(tmp_path)
    # The live SAE keeps training in normalized space: nothing changed.
    for name, tensor in sae.state_dict().items():
        assert torch.equal(tensor, state_before[name]), name
    assert sae.normalization.scales() == (4.0, 4.0)

    loaded = load_dictionary(tmp_path)
    assert loaded.normalization.scales() == (1.0, 1.0)
    assert loaded.saved_config["normalization_scale"] == 4.0
    x = SparseData().batch(32) * 8
    assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-4)
    assert torch.allclose(loaded(x), sae(x), atol=1e-4)


def test_load_with_other_dtype(tmp_path):
    sae = make_sae("topk")
    sae.save(tmp_path)
    loaded = load_dictionary(tmp_path, dtype=torch.float64)
    assert loaded.W_enc.dtype == torch.float64
    x = SparseData().batch(8)
    assert torch.allclose(loaded(x.double()).float(), sae(x), atol=1e-5)


def test_failed_save_keeps_previous_dictionary(tmp_path, monkeypatch):
    sae = make_sae("topk")
    sae.save(tmp_path)
    original = load_dictionary(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sae_base, "save_file", crash)
    other = make_sae("topk", seed=9)
    with pytest.raises(OSError, match="disk full"):
        other.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "sae.safetensors"]
    assert torch.equal(load_dictionary(tmp_path).W_enc, original.W_enc)


def test_crash_between_renames_never_pairs_new_weights_with_old_config(tmp_path, monkeypatch):
    make_sae("topk", seed=1).save(tmp_path)
    import core.files

    real_replace = core.files.os.replace

    def replace(src, dst):
        if Path(dst).name == "config.json":
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(core.files.os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        make_sae("relu", seed=2).save(tmp_path)
    monkeypatch.undo()
    # New weights are in place, so the old config must be gone: the folder is plainly not a dictionary.
    with pytest.raises(DictionaryLoadError, match="not a dictionary"):
        load_dictionary(tmp_path)


def test_save_overwrites_existing_dictionary(tmp_path):
    make_sae("topk", seed=1).save(tmp_path)
    newer = make_sae("relu", seed=2)
    newer.save(tmp_path)
    loaded = load_dictionary(tmp_path)
    assert loaded.cfg.architecture == "relu"
    assert torch.equal(loaded.W_dec, newer.W_dec)


# ------------------------------------------------------------------ load errors


def test_load_missing_folder(tmp_path):
    with pytest.raises(DictionaryLoadError, match="does not exist") as info:
        load_dictionary(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_folder_without_config(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DictionaryLoadError, match="not a dictionary.*config.json"):
        load_dictionary(tmp_path)


def test_load_file_instead_of_folder(tmp_path):
    make_sae("topk").save(tmp_path)
    with pytest.raises(DictionaryLoadError, match="is a file"):
        load_dictionary(tmp_path / "config.json")


def test_load_invalid_json(tmp_path):
    make_sae("topk").save(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DictionaryLoadError, match="not valid JSON"):
        load_dictionary(tmp_path)


def test_load_unknown_architecture_lists_allowed(tmp_path):
    make_sae("topk").save(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["architecture"] = "gated"
    path.write_text(json.dumps(config))
    with pytest.raises(DictionaryLoadError, match="unknown architecture 'gated'") as info:
        load_dictionary(tmp_path)
    for name in ARCHITECTURES:
        assert name in str(info.value)


def test_load_corrupt_safetensors(tmp_path):
    make_sae("topk").save(tmp_path)
    (tmp_path / "sae.safetensors").write_bytes(b"\x00garbage bytes, not a tensor file" * 10)
    with pytest.raises(DictionaryLoadError, match="sae.safetensors is not a readable safetensors file"):
        load_dictionary(tmp_path)


def test_load_truncated_safetensors(tmp_path):
    make_sae("topk").save(tmp_path)
    path = tmp_path / "sae.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DictionaryLoadError, match="corrupt or truncated"):
        load_dictionary(tmp_path)


def test_load_missing_safetensors(tmp_path):
    make_sae("topk").save(tmp_path)
    (tmp_path / "sae.safetensors").unlink()
    with pytest.raises(DictionaryLoadError, match="no sae.safetensors"):
        load_dictionary(tmp_path)


def test_load_shape_mismatch(tmp_path):
    make_sae("topk").save(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["d_in"] = 8
    config["sae"]["d_sae"] = 32
    config["d_sae"] = 32
    path.write_text(json.dumps(config))
    with pytest.raises(DictionaryLoadError, match=r"W_enc has shape \[16, 64\], expected \[8, 32\]"):
        load_dictionary(tmp_path)


def test_load_missing_tensor(tmp_path):
    # A topk file under a jumprelu config lacks the thresholds.
    make_sae("topk").save(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["architecture"] = config["sae"]["architecture"] = "jumprelu"
    path.write_text(json.dumps(config))
    with pytest.raises(DictionaryLoadError, match="log_threshold missing"):
        load_dictionary(tmp_path)


def test_load_invalid_sae_config(tmp_path):
    make_sae("topk").save(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["sae"]["bogus_field"] = 1
    path.write_text(json.dumps(config))
    with pytest.raises(DictionaryLoadError, match="bogus_field"):
        load_dictionary(tmp_path)


# ------------------------------------------------------------------ construction


def test_construction_validates_config():
    with pytest.raises(ConfigError, match="sae.k"):
        create_dictionary(SAEConfig(architecture="topk", d_sae=8, k=9), D_IN, hook_name="h", model_name="m")
    with pytest.raises(ConfigError, match="architecture"):
        create_dictionary(SAEConfig(architecture="gated"), D_IN, hook_name="h", model_name="m")
    sae = create_dictionary(SAEConfig(expansion_factor=4), 12, hook_name="h", model_name="m")
    assert sae.d_sae == 48 and sae.W_enc.shape == (12, 48) and sae.W_dec.shape == (48, 12)
    assert not hasattr(sae, "threshold") and not hasattr(sae, "log_threshold")
    assert math.isclose(make_sae("jumprelu").log_threshold.exp()[0].item(), 0.001, rel_tol=1e-6)
