"""The sparse training step of the top-k family (core/sae/topk.py, core/sae/sparse.py) against the
dense autograd path, fire counts, and matryoshka_batchtopk's nested losses and threshold."""

from __future__ import annotations

import copy

import pytest
import torch

import core.sae.sparse as sparse_module
from core.config import ConfigError, SAEConfig
from core.evals import DEAD_MASK_REFRESH_STEPS, FeatureActivityTracker
from core.sae import MatryoshkaBatchTopKSAE, SparseAutoencoder, create_dictionary, load_dictionary

TOPK_FAMILY = ("topk", "batchtopk", "matryoshka_batchtopk")
D_IN, D_OUT, D_SAE, K = 32, 24, 256, 8


def make(architecture: str, *, transcoder: bool = False, dtype=torch.float64, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=D_SAE, k=K, skip_connection=transcoder, **overrides)
    extra = dict(hook_out="blocks.0.hook_mlp_out", d_out=D_OUT) if transcoder else {}
    return create_dictionary(cfg, D_IN, hook_name="blocks.0.ln2.hook_normalized", model_name="m", dtype=dtype,
                             **extra)


def batches(n_batches: int, transcoder: bool, dtype=torch.float64, n: int = 128, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, D_IN, generator=g).to(dtype) for _ in range(n_batches)]
    targets = [torch.randn(n, D_OUT, generator=g).to(dtype) if transcoder else None for _ in range(n_batches)]
    return list(zip(xs, targets))


def dead_mask(every: int = 5) -> torch.Tensor:
    mask = torch.zeros(D_SAE, dtype=torch.bool)
    mask[::every] = True  # 52 dead latents
    return mask


def train(sae, data, dead, steps_out=None):
    """Adam steps as Trainer.train_step takes them."""
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for x, target in data:
        optimizer.zero_grad(set_to_none=True)
        out = sae.training_forward(x, target=target, dead_mask=dead)
        out.loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        sae.set_decoder_norm_to_unit_norm()
        if steps_out is not None:
            steps_out.append(out)
    return {name: p.detach().clone() for name, p in sae.named_parameters()}


def dense_twin(sae):
    twin = copy.deepcopy(sae)
    twin.sparse_training = False
    return twin


# ------------------------------------------------------------------ sparse step == dense autograd step


# aux_k None: k_aux = d_out // 2 of the 52 dead latents, AuxK through dense products over the dead
# columns; aux_k 2: few AuxK latents per token, AuxK's entries ride along with the top-k's.
@pytest.mark.parametrize("aux_k", [None, 2])
@pytest.mark.parametrize("transcoder", [False, True])
@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_sparse_step_gives_the_weights_of_the_dense_step(architecture, transcoder, aux_k):
    steps = 8
    sae = make(architecture, transcoder=transcoder, aux_k=aux_k)
    dense = dense_twin(sae)
    start = {name: p.detach().clone() for name, p in sae.named_parameters()}
    data = batches(steps, transcoder)
    sparse_outs, dense_outs = [], []
    sparse_weights = train(sae, data, dead_mask(), sparse_outs)
    dense_weights = train(dense, data, dead_mask(), dense_outs)
    # float64: the two paths sum the same terms in other orders, a few ulps per step of Adam.
    tolerance = 64 * steps * torch.finfo(torch.float64).eps
    for name, weight in dense_weights.items():
        assert (weight - start[name]).abs().max() > 1e-4, f"{name} did not train: the comparison would be void"
        assert torch.allclose(sparse_weights[name], weight, rtol=0, atol=tolerance), name
    for s, d in zip(sparse_outs, dense_outs):
        assert torch.equal(s.fire_counts, d.fire_counts)
        assert s.aux_loss.item() > 0
        for field in ("loss", "mse_loss", "aux_loss", "l0"):
            assert getattr(s, field).item() == pytest.approx(getattr(d, field).item(), rel=1e-12, abs=1e-12), field
        assert torch.allclose(s.x_hat, d.x_hat, rtol=0, atol=1e-12)
    if sae.has_inference_threshold:
        assert sae.threshold.item() == pytest.approx(dense.threshold.item(), rel=1e-12)


@pytest.mark.parametrize("transcoder", [False, True])
@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_sparse_step_float32_gradients_match_the_dense_step(architecture, transcoder):
    """float32 is what trains: the kernels' gradients agree with autograd's to float32 rounding of
    sums over a batch (a relative 1e-6 of each gradient's scale)."""
    sae = make(architecture, transcoder=transcoder, dtype=torch.float32)
    dense = dense_twin(sae)
    (x, target), = batches(1, transcoder, dtype=torch.float32, n=256)
    grads = []
    for model in (sae, dense):
        model.training_forward(x, target=target, dead_mask=dead_mask()).loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    tolerance = 32 * torch.finfo(torch.float32).eps
    for name, grad in grads[1].items():
        scale = grad.abs().max()
        assert scale > 0, name
        assert (grads[0][name] - grad).abs().max() <= tolerance * scale, name


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_kernels_split_over_threads_give_the_dense_gradients(architecture):
    """At sizes where the kernels split their rows over two threads (>= 2,048 rows)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        cfg = SAEConfig(architecture=architecture, d_sae=2048, k=16)
        sae = create_dictionary(cfg, D_IN, hook_name="h", model_name="m", dtype=torch.float64)
        dense = dense_twin(sae)
        x = torch.randn(2048, D_IN, dtype=torch.float64)
        dead = torch.arange(2048) % 10 == 0
        for model in (sae, dense):
            model.training_forward(x, dead_mask=dead).loss.backward()
        for (name, p), q in zip(sae.named_parameters(), dense.parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-12 * q.grad.abs().max()), name
    finally:
        torch.set_num_threads(threads)


def test_torch_fallback_matches_the_kernels(monkeypatch):
    """The torch ops that serve CUDA and bf16 compute the same step as the CPU kernels."""
    results = []
    for use_kernels in (True, False):
        monkeypatch.setattr(sparse_module, "USE_KERNELS", use_kernels)
        for architecture in TOPK_FAMILY:
            for aux_k in (None, 2):
                sae = make(architecture, transcoder=True, aux_k=aux_k)
                outs = []
                results.append((train(sae, batches(3, True), dead_mask(), outs), [o.fire_counts for o in outs]))
    half = len(results) // 2
    for (kernel_weights, kernel_counts), (torch_weights, torch_counts) in zip(results[:half], results[half:]):
        for name, weight in kernel_weights.items():
            assert torch.allclose(torch_weights[name], weight, rtol=0, atol=1e-13), name
        assert all(torch.equal(a, b) for a, b in zip(kernel_counts, torch_counts))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projecting_out_the_decoder_directions_kernel_and_torch_agree(monkeypatch, dtype):
    """grad -= <grad, w> / |w|^2 * w per row, by the one-pass kernel (rows split over two threads)
    and by the torch ops, against a float64 reference; a zero decoder row leaves its gradient alone."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(4100, 700, generator=generator, dtype=torch.float64) * torch.rand(4100, 1, generator=generator,
                                                                                       dtype=torch.float64)
    w[17] = 0
    g = torch.randn(4100, 700, generator=generator, dtype=torch.float64)
    expected = g - (g * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True).clamp_min(1e-24) * w
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for use_kernels in (True, False):
            monkeypatch.setattr(sparse_module, "USE_KERNELS", use_kernels)
            got = sparse_module.project_out_rows(g.to(dtype), w.to(dtype))
            tolerance = 1e-12 if dtype == torch.float64 else 2e-5
            assert torch.allclose(got.double(), expected, rtol=0, atol=tolerance), use_kernels
            assert torch.equal(got[17], g[17].to(dtype))
            assert ((got.double() * w).sum(1).abs() < 100 * tolerance).all()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("aux_k", [None, 2])
@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_bfloat16_step_runs_through_the_torch_ops(architecture, aux_k):
    """bf16 (a GPU's training dtype) takes the torch ops; on CPU it must run and agree with float32
    to bf16 precision."""
    losses = []
    for dtype in (torch.float32, torch.bfloat16):
        sae = make(architecture, transcoder=True, dtype=dtype, aux_k=aux_k)
        (x, target), = batches(1, True, dtype=dtype, n=256)
        out = sae.training_forward(x, target=target, dead_mask=dead_mask())
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in sae.parameters())
        assert out.x_hat.dtype == dtype and out.aux_loss.item() > 0
        losses.append(out.loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_inputs_that_require_grad_take_the_dense_path():
    sae = make("topk")
    x = torch.randn(16, D_IN, dtype=torch.float64, requires_grad=True)
    sae.training_forward(x).loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------ fire counts


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_fire_counts_count_the_tokens_each_latent_is_active_on(architecture):
    sae = make(architecture)
    x = torch.randn(200, D_IN, dtype=torch.float64)
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        if architecture == "topk":
            values, indices = pre.topk(K, dim=-1)
            active = torch.zeros_like(pre, dtype=torch.bool).scatter(-1, indices, values > 0)
        else:
            flat = pre.relu().flatten()
            active = torch.zeros_like(flat, dtype=torch.bool)
            active[flat.topk(K * 200).indices] = True
            active = active.view_as(pre) & (pre > 0)
    out = sae.training_forward(x)
    assert out.fire_counts.dtype == torch.int64 and out.fire_counts.shape == (D_SAE,)
    assert torch.equal(out.fire_counts, active.sum(0))
    assert out.l0.item() == pytest.approx(active.sum().item() / 200)
    # A token on which fewer than k pre-activations are positive: zeros are kept but never counted.
    sae = make("topk")
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
        sae.b_enc[:3] = 100.0
    out = sae.training_forward(torch.randn(10, D_IN, dtype=torch.float64))
    assert out.fire_counts[:3].tolist() == [10, 10, 10] and out.fire_counts[3:].sum() == 0
    assert out.l0.item() == 3


def test_feature_activity_tracker_counts_from_fire_counts():
    tracker = FeatureActivityTracker(4, window_tokens=10, dead_tokens_threshold=8, dense_threshold=0.5)
    tracker.update(torch.tensor([6, 0, 1, 0]), 6)
    assert tracker.tokens_since_fired.tolist() == [0, 6, 0, 6]
    tracker.update(torch.tensor([4, 0, 0, 1]), 4)  # the window of 10 tokens is complete
    assert tracker.tokens_since_fired.tolist() == [0, 10, 4, 0]
    assert torch.equal(tracker.last_density, torch.tensor([1.0, 0.0, 0.1, 0.1], dtype=torch.float64))
    assert tracker.stats() == {"dead_features": 1, "dense_features": 1, "window_unfired_features": 1}
    assert tracker.dead_mask.tolist() == [False] * 4  # AuxK's mask is a snapshot, refreshed every few steps
    for _ in range(DEAD_MASK_REFRESH_STEPS - 2):
        tracker.update(torch.tensor([1, 0, 1, 1]), 1)
    assert tracker.dead_mask.tolist() == [False, True, False, False]


# ------------------------------------------------------------------ matryoshka


def test_matryoshka_widths_default_and_validation():
    assert make("matryoshka_batchtopk").matryoshka_widths == (16, 64, 256)
    assert make("matryoshka_batchtopk", matryoshka_widths=(32, 256)).matryoshka_widths == (32, 256)
    with pytest.raises(ConfigError, match=r"matryoshka_widths ends at 128 but the dictionary has d_sae=256"):
        create_dictionary(SAEConfig(architecture="matryoshka_batchtopk", expansion_factor=8, matryoshka_widths=(32, 128)),
                          D_IN, hook_name="h", model_name="m")  # d_sae = 8 * 32
    with pytest.raises(ConfigError, match="increasing positive integers"):
        SAEConfig(architecture="matryoshka_batchtopk", matryoshka_widths=(64, 32, 256)).validate()
    with pytest.raises(ConfigError, match="increasing positive integers"):
        SAEConfig(architecture="matryoshka_batchtopk", matryoshka_widths=(0, 256)).validate()
    with pytest.raises(ConfigError, match="ends at 128 but sae.d_sae is 256"):
        SAEConfig(architecture="matryoshka_batchtopk", d_sae=256, matryoshka_widths=(32, 128)).validate()
    with pytest.raises(ConfigError, match="for 'matryoshka_batchtopk' only"):
        SAEConfig(architecture="batchtopk", matryoshka_widths=(32, 256)).validate()
    # JSON round trip of the widths (a list in JSON, a tuple in the config).
    cfg = SAEConfig(architecture="matryoshka_batchtopk", d_sae=256, matryoshka_widths=(32, 256))
    assert SAEConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("transcoder", [False, True])
def test_matryoshka_loss_is_the_mean_of_the_nested_prefix_losses(transcoder):
    widths = (16, 40, 100, 256)
    sae = make("matryoshka_batchtopk", transcoder=transcoder, matryoshka_widths=widths)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    (x, target), = batches(1, transcoder, n=64)
    target = x if target is None else target
    out = sae.training_forward(x, target=None if not transcoder else target)
    out.loss.backward()
    sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}

    # Directly: batch top-k of the pre-activations, each prefix's reconstruction, the mean error.
    sae.zero_grad()
    centered = x if transcoder else x - sae.b_dec
    pre = centered @ sae.W_enc + sae.b_enc
    flat = pre.relu().flatten()
    kept = flat.topk(K * 64).indices
    f = torch.zeros_like(flat).index_put((kept,), flat[kept]).view_as(pre)
    skip = x @ sae.W_skip if transcoder else 0.0
    losses = []
    for m in widths:
        prefix_reconstruction = f[:, :m] @ sae.W_dec[:m] + sae.b_dec + skip
        losses.append((prefix_reconstruction - target).pow(2).sum(-1).mean())
    expected = torch.stack(losses).mean()
    assert out.mse_loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12)  # no dead latents: no AuxK
    assert torch.allclose(out.x_hat, prefix_reconstruction, rtol=0, atol=1e-12)
    # The prefixes' errors differ, so the mean is not the full reconstruction's error.
    assert len({round(loss.item(), 6) for loss in losses}) == len(widths)
    assert out.mse_loss.item() != pytest.approx(losses[-1].item(), rel=1e-3)
    expected.backward()
    for name, p in sae.named_parameters():
        assert torch.allclose(sparse_grads[name], p.grad, rtol=0, atol=1e-12), name


def test_matryoshka_threshold_is_learned_calibrated_saved_and_used(tmp_path):
    sae = make("matryoshka_batchtopk", dtype=torch.float32)
    assert isinstance(sae, MatryoshkaBatchTopKSAE) and sae.has_inference_threshold
    assert not make("topk").has_inference_threshold and not make("relu").has_inference_threshold
    assert sae.threshold.item() == -1.0
    data = batches(50, False, dtype=torch.float32)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for x, _ in data:
        optimizer.zero_grad()
        sae.training_forward(x).loss.backward()
        optimizer.step()
    assert sae.threshold.item() > 0
    threshold = sae.calibrate_threshold([x for x, _ in data[:8]])
    assert threshold == pytest.approx(sae.threshold.item())
    sae.eval()
    test = torch.randn(2000, D_IN)
    assert (sae.encode(test) != 0).sum(-1).float().mean().item() == pytest.approx(K, rel=0.15)
    pre = sae._pre_acts(test)
    assert torch.equal(sae.encode(test), torch.where(pre > sae.threshold, pre, torch.zeros_like(pre)))
    sae.save(tmp_path)
    loaded = load_dictionary(tmp_path)
    assert isinstance(loaded, MatryoshkaBatchTopKSAE) and loaded.matryoshka_widths == sae.matryoshka_widths
    assert loaded.threshold.item() == sae.threshold.item()
    assert torch.equal(loaded.encode(test), sae.encode(test))
