"""Replacement models (core/sae/clt.py, core/sae/replacement.py): the cross-layer transcoder's sparse
training step against its dense reference, a one-layer CLT against a transcoder, each activation's L0,
the per-layer loss weights, the inference API, transcoder sets, folders on disk and their errors, and
the memory estimate."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.config import ConfigError, SAEConfig
from core.errors import DictionaryLoadError
from core.sae import (CrossLayerTranscoder, ReplacementModel, SparseAutoencoder, TranscoderSet, create_dictionary, load_dictionary,
                      replacement_model_memory)
from core.sae.replacement import layer_loss_weights

LAYERS, D, D_SAE, K = (1, 2, 4), 16, 64, 4
ARCHITECTURES = ("topk", "batchtopk", "jumprelu")
JUMPRELU = dict(l0_coefficient=0.05, jumprelu_bandwidth=0.5, jumprelu_init_threshold=0.3)


def make_clt(architecture: str, *, layers=LAYERS, skip: bool = False, dtype=torch.float64, seed: int = 0,
             **overrides) -> CrossLayerTranscoder:
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=architecture, d_sae=D_SAE, k=K, skip_connection=skip,
                    **{**(JUMPRELU if architecture == "jumprelu" else {}), **overrides})
    return CrossLayerTranscoder(cfg, D, layers=layers, model_name="m", dtype=dtype)


def perturb(model, seed: int = 3, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


class LayeredData:
    """Inputs [n, L, D] and targets that depend on the inputs of the same and earlier layers, each
    target layer at its own scale (so that the per-layer weights matter)."""

    def __init__(self, n_layers: int = len(LAYERS), seed: int = 1, dtype=torch.float64):
        self.g = torch.Generator().manual_seed(seed)
        self.dtype, self.n_layers = dtype, n_layers
        self.maps = torch.randn(n_layers, n_layers, D, D, generator=self.g, dtype=dtype) / D ** 0.5
        self.scales = torch.tensor([1.0, 3.0, 0.5, 2.0][:n_layers], dtype=dtype)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.n_layers, D, generator=self.g, dtype=self.dtype)
        y = torch.stack([sum((x[:, l] @ self.maps[l, m]).relu() for l in range(m + 1)) * self.scales[m]
                         for m in range(self.n_layers)], dim=1)
        return x, y


def train_step(model, optimizer, x, y, dead=None, coefficient=None):
    """What Trainer.train_step does with a dictionary."""
    optimizer.zero_grad(set_to_none=True)
    out = model.training_forward(x, target=y, dead_mask=dead, sparsity_coefficient=coefficient)
    out.loss.backward()
    model.remove_gradient_parallel_to_decoder_directions()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.set_decoder_norm_to_unit_norm()
    return out


def dead_features(n_layers: int = len(LAYERS), every: int = 5) -> torch.Tensor:
    mask = torch.zeros(n_layers * D_SAE, dtype=torch.bool)
    mask[::every] = True
    return mask


# ------------------------------------------------------------------ the sparse step equals the dense reference


# aux_k None: k_aux = d_out // 2 of the dead features, AuxK through dense blocks over their columns; aux_k 2:
# few AuxK features per token, whose entries ride along with the kept ones.
@pytest.mark.parametrize("architecture, aux_k, skip", [
    ("topk", None, True), ("topk", 2, False), ("batchtopk", None, False), ("batchtopk", 2, True),
    ("jumprelu", None, True)])
def test_sparse_step_gives_the_weights_of_the_dense_step(architecture, aux_k, skip):
    steps = 6
    sparse = make_clt(architecture, skip=skip, aux_k=aux_k)
    data = LayeredData()
    sparse.initialize_decoder_bias(data.batch(256)[1])
    perturb(sparse)
    dense = copy.deepcopy(sparse)
    dense.sparse_training = False
    start = {name: p.detach().clone() for name, p in sparse.named_parameters()}
    batches = [data.batch(64) for _ in range(steps)]
    outs = {}
    for name, model in (("sparse", sparse), ("dense", dense)):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        outs[name] = [train_step(model, optimizer, x, y, dead_features()) for x, y in batches]
    tolerance = 64 * steps * torch.finfo(torch.float64).eps  # the same terms summed in other orders
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        assert (q - start[name]).abs().max() > 1e-4, f"{name} did not train: the comparison would be void"
        assert torch.allclose(p, q, rtol=0, atol=tolerance), name
    for s, d in zip(outs["sparse"], outs["dense"]):
        assert torch.equal(s.fire_counts, d.fire_counts) and s.fire_counts.shape == (len(LAYERS) * D_SAE,)
        assert s.aux_loss.item() > 0  # AuxK (top-k family) or the pre-activation loss (jumprelu) acted
        for field in ("loss", "mse_loss", "sparsity_loss", "aux_loss", "l0"):
            assert getattr(s, field).item() == pytest.approx(getattr(d, field).item(), rel=1e-12, abs=1e-12), field
        assert torch.allclose(s.layer_mse, d.layer_mse, rtol=1e-12) and torch.equal(s.layer_l0, d.layer_l0)
        assert torch.allclose(s.x_hat, d.x_hat, rtol=0, atol=1e-12)
    if architecture == "jumprelu":
        assert outs["sparse"][0].sparsity_loss.item() > 0
    if architecture == "batchtopk":
        assert sparse.threshold.item() == pytest.approx(dense.threshold.item(), rel=1e-12) and sparse.threshold > 0


def test_sparse_step_float32_gradients_match_the_dense_step():
    """float32 is what trains: agreement to float32 rounding of the sums over a batch."""
    for architecture in ARCHITECTURES:
        sparse = make_clt(architecture, skip=True, dtype=torch.float32)
        perturb(sparse)
        dense = copy.deepcopy(sparse)
        dense.sparse_training = False
        x, y = LayeredData(dtype=torch.float32).batch(128)
        for model in (sparse, dense):
            model.training_forward(x, target=y, dead_mask=dead_features()).loss.backward()
        for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
            scale = q.grad.abs().max()
            assert scale > 0 and (p.grad - q.grad).abs().max() <= 64 * torch.finfo(torch.float32).eps * scale, name


# ------------------------------------------------------------------ one layer: a transcoder


@pytest.mark.parametrize("architecture, aux_k", [("topk", None), ("topk", 2), ("batchtopk", None), ("batchtopk", 2),
                                                 ("jumprelu", None)])
def test_a_one_layer_clt_trains_to_the_weights_of_a_transcoder(architecture, aux_k):
    """Same seed, same data, same trainer step: the same weights bit for bit. jumprelu with its
    sparsity penalties off, since they differ by design (the transcoder's L0 penalty, the CLT's tanh
    penalty and pre-activation loss), and the CLT on its dense path, which the transcoder's is."""
    overrides = dict(architecture=architecture, d_sae=D_SAE, k=K, aux_k=aux_k, skip_connection=True,
                     **({**JUMPRELU, "l0_coefficient": 0.0} if architecture == "jumprelu" else {}))
    torch.manual_seed(0)
    transcoder = create_dictionary(SAEConfig(**overrides), D, hook_name="blocks.3.ln2.hook_normalized",
                                   hook_out="blocks.3.hook_mlp_out", d_out=D, model_name="m", dtype=torch.float64)
    torch.manual_seed(0)
    clt = CrossLayerTranscoder(SAEConfig(**overrides), D, layers=(3,), model_name="m", dtype=torch.float64,
                               pre_act_loss_coefficient=0.0)
    clt.sparse_training = architecture != "jumprelu"
    data = LayeredData(n_layers=1)
    sample = data.batch(256)[1]
    transcoder.initialize_decoder_bias(sample[:, 0])
    clt.initialize_decoder_bias(sample)
    assert clt.layer_loss_weights.tolist() == [1.0]
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2, fused=True) for m in (transcoder, clt)]
    for _ in range(12):
        x, y = data.batch(64)
        a = train_step(transcoder, optimizers[0], x[:, 0], y[:, 0], dead_features(1, every=3))
        b = train_step(clt, optimizers[1], x, y, dead_features(1, every=3))
        assert a.loss.item() == b.loss.item() and a.aux_loss.item() == b.aux_loss.item()
        assert torch.equal(a.fire_counts, b.fire_counts) and torch.equal(a.x_hat, b.x_hat[:, 0])
    assert b.aux_loss.item() > 0 or architecture == "jumprelu"
    names = {"W_dec": "W_dec_0"}
    assert [names.get(n, n) for n, _ in transcoder.named_parameters()] == [n for n, _ in clt.named_parameters()]
    for name, p in transcoder.named_parameters():
        assert torch.equal(getattr(clt, names.get(name, name)).reshape(p.shape), p), name
    if architecture == "batchtopk":
        assert clt.threshold.item() == transcoder.threshold.item() > 0


# ------------------------------------------------------------------ activations, loss weights


def test_each_activation_keeps_the_features_it_is_configured_to():
    x, y = LayeredData().batch(200)
    topk = make_clt("topk")
    with torch.no_grad():
        topk.b_enc.fill_(5.0)  # every pre-activation positive: exactly k per token and layer
    out = topk.training_forward(x, target=y)
    assert out.layer_l0.tolist() == [K] * 3 and out.l0.item() == 3 * K
    assert (topk.encode(x) != 0).sum(-1).eq(K).all()

    batch = make_clt("batchtopk")
    with torch.no_grad():
        batch.b_enc.copy_(torch.tensor([0.0, 1.0, 3.0])[:, None].expand(3, D_SAE))  # later layers fire more
    out = batch.training_forward(x, target=y)
    assert out.l0.item() == 3 * K  # one budget of k * L per token over all layers ...
    assert out.layer_l0[0] < out.layer_l0[1] < out.layer_l0[2]  # ... which the layers share unequally
    threshold = batch.calibrate_threshold([x[:100], x[100:]])
    assert threshold == batch.threshold.item() > 0
    assert (batch.encode(x) != 0).sum((-1, -2)).float().mean().item() == pytest.approx(3 * K, rel=0.2)

    jump = make_clt("jumprelu")
    perturb(jump, scale=0.3)
    pre = torch.stack([x[:, i] @ jump.W_enc[i] + jump.b_enc[i] for i in range(3)], dim=1)
    active = pre > jump.theta()
    out = jump.training_forward(x, target=y)
    assert out.layer_l0.tolist() == (active.sum((0, 2)) / 200).tolist() and 0 < out.l0.item() < 3 * D_SAE
    assert torch.equal(jump.encode(x) != 0, active)


def test_layer_loss_weights_are_mean_variance_over_each_layers_variance():
    data = LayeredData()
    sample = data.batch(4000)[1]
    clt = make_clt("topk", decoder_bias_init="mean")
    clt.initialize_decoder_bias(sample)
    variance = (sample - sample.mean(0)).pow(2).sum(-1).mean(0)
    expected = variance.mean() / variance
    assert torch.allclose(clt.layer_loss_weights, expected, rtol=1e-12, atol=0)
    assert torch.allclose(layer_loss_weights(sample), expected, rtol=1e-12, atol=0)
    assert torch.allclose(clt.b_dec, sample.mean(0), rtol=0, atol=1e-6)  # (computed in float32, as a transcoder's)
    # Layer 1's targets are 3x layer 0's and 6x layer 2's: the weights undo that, so that each layer's
    # weighted error is its error relative to its variance, times the mean variance.
    assert clt.layer_loss_weights[1] < clt.layer_loss_weights[0] < clt.layer_loss_weights[2]
    x, y = data.batch(64)
    out = clt.training_forward(x, target=y)
    sse = (out.x_hat - y).pow(2).sum(-1).mean(0)
    assert torch.allclose(out.layer_mse, sse, rtol=1e-12)
    assert out.mse_loss.item() == pytest.approx((expected * sse).sum().item(), rel=1e-12)
    assert out.mse_loss.item() == pytest.approx(variance.mean().item() * (sse / variance).sum().item(), rel=1e-12)


# ------------------------------------------------------------------ inference API


def test_inference_api_shapes_and_raw_space(tmp_path):
    clt = make_clt("jumprelu", skip=True)
    perturb(clt, scale=0.3)
    clt.set_normalization_scales([2.0, 0.5, 1.5], [0.25, 4.0, 1.0])
    assert isinstance(clt, ReplacementModel)
    x = torch.randn(5, 7, 3, D, dtype=torch.float64)
    features = clt.encode(x)
    assert features.shape == (5, 7, 3, D_SAE) and features.count_nonzero() > 0
    assert torch.equal(clt.encode_layer(x[..., 1, :], 2), features[..., 1, :])
    sparse = clt.encode_layer_sparse(x[..., 2, :].reshape(-1, D), 4)
    assert torch.allclose(sparse.to_dense().double(), features[..., 2, :].reshape(-1, D_SAE), atol=1e-6)
    # decode = sum of every source layer's writes to its target layers + decoder bias + skip, in raw space.
    y = clt(x)
    assert y.shape == (5, 7, 3, D)
    manual = clt.decoder_bias().expand(5, 7, 3, D) + clt.skip(x)
    for i, layer in enumerate(clt.layers):
        assert clt.target_layers(layer) == clt.layers[i:]
        manual = manual + torch.nn.functional.pad(clt.decode_layer(features[..., i, :], layer), (0, 0, i, 0))
    assert torch.allclose(y, manual, atol=1e-10)
    # Encoder and decoder vectors of chosen features, in raw space.
    chosen = torch.tensor([0, 5, 63])
    enc, dec = clt.encoder_vectors(2, chosen), clt.decoder_vectors(2, chosen)
    assert enc.shape == (3, D) and dec.shape == (3, 2, D)
    pre = x[..., 1, :] @ enc.T + clt.encoder_bias(2)[chosen]
    assert torch.allclose(features[..., 1, :][..., chosen], pre * (pre > clt.theta()[1][chosen]), atol=1e-10)
    assert torch.allclose(clt.decode_layer(features[..., 1, :], 2), torch.einsum("...f,ftd->...td", features[..., 1, :],
                          clt.decoder_vectors(2, torch.arange(D_SAE))), atol=1e-10)
    # Saved (normalization folded), it computes the same on raw activations, and its vectors are the same.
    loaded = load_dictionary(clt.save(tmp_path / "clt"), dtype=torch.float64)
    assert loaded.normalization_scale.tolist() == [1.0] * 3
    assert torch.allclose(loaded(x), y, atol=1e-10) and torch.equal(loaded.encode(x) != 0, features != 0)
    assert torch.allclose(loaded.decoder_vectors(2, chosen), dec, atol=1e-12)
    assert torch.allclose(loaded.encoder_vectors(2, chosen), enc, atol=1e-12)
    with pytest.raises(ValueError, match=r"layer 3 is not covered; this replacement model covers layers \[1, 2, 4\]"):
        clt.encode_layer(x[..., 0, :], 3)
    with pytest.raises(ValueError, match=r"expected inputs of shape \[\.\.\., L, 16\] with L=3 covered layers"):
        clt.encode(x[..., :2, :])
    with pytest.raises(ValueError, match=r"skip paths, so decode needs the inputs too"):
        clt.decode(features)


def test_decoder_constraint_and_gradient_projection_span_all_target_layers():
    clt = make_clt("topk")
    perturb(clt, scale=1.0)
    clt.set_decoder_norm_to_unit_norm()
    for W in clt.W_dec:
        assert torch.allclose(W.flatten(1).norm(dim=1), torch.ones(D_SAE, dtype=W.dtype), atol=1e-12)
    x, y = LayeredData().batch(32)
    clt.training_forward(x, target=y).loss.backward()
    clt.remove_gradient_parallel_to_decoder_directions()
    for W in clt.W_dec:
        assert torch.allclose((W.grad * W).flatten(1).sum(1), torch.zeros(D_SAE, dtype=W.dtype), atol=1e-12)
        assert W.grad.abs().max() > 0


def test_bad_arguments_give_one_clear_error():
    with pytest.raises(ConfigError, match=r"sae.architecture is 'relu', which cross-layer transcoders do not have"):
        make_clt("relu")
    with pytest.raises(ValueError, match=r"layers is \(2, 1\); it must be increasing block numbers"):
        make_clt("topk", layers=(2, 1))
    with pytest.raises(ValueError, match=r"input_hook is 'blocks.ln2'; it must be a hook name with a \{layer\}"):
        CrossLayerTranscoder(SAEConfig(d_sae=D_SAE, k=K), D, layers=(0,), model_name="m", input_hook="blocks.ln2")
    clt = make_clt("topk")
    x, y = LayeredData().batch(8)
    with pytest.raises(ValueError, match=r"targets of shape \[batch, L, d_out\]=\[8, 3, 16\]"):
        clt.training_forward(x, target=y[:, :2])
    with pytest.raises(ValueError, match=r"dead_mask must have shape \[L \* d_sae\]=\[192\]"):
        clt.training_forward(x, target=y, dead_mask=torch.zeros(D_SAE, dtype=torch.bool))


# ------------------------------------------------------------------ transcoder sets


def member(layer: int, architecture: str = "topk", seed: int = 0, **overrides) -> SparseAutoencoder:
    torch.manual_seed(seed + layer)
    cfg = SAEConfig(**{"architecture": architecture, "d_sae": D_SAE, "k": K, "skip_connection": True,
                       **(JUMPRELU if architecture == "jumprelu" else {}), **overrides})
    sae = create_dictionary(cfg, D, hook_name=f"blocks.{layer}.ln2.hook_normalized",
                            hook_out=f"blocks.{layer}.hook_mlp_out", d_out=D, model_name="m", dtype=torch.float64)
    perturb(sae, seed=layer)
    return sae


def test_transcoder_set_is_its_members_as_one_replacement_model():
    members = [member(1, "topk"), member(2, "jumprelu"), member(4, "relu")]
    transcoders = TranscoderSet(members)
    assert isinstance(transcoders, ReplacementModel) and transcoders.layers == LAYERS
    assert transcoders.member(2) is members[1] and list(transcoders) == members
    assert transcoders.hooks_out == ("blocks.1.hook_mlp_out", "blocks.2.hook_mlp_out", "blocks.4.hook_mlp_out")
    x = torch.randn(9, 3, D, dtype=torch.float64)
    features = transcoders.encode(x)
    assert torch.equal(features[:, 1], members[1].encode(x[:, 1]))
    assert torch.allclose(transcoders(x)[:, 2], members[2](x[:, 2]))
    assert transcoders.target_layers(4) == (4,) and transcoders.decoder_vectors(4, torch.tensor([3])).shape == (1, 1, D)
    manual = transcoders.decoder_bias() + transcoders.skip(x) + torch.cat(
        [transcoders.decode_layer(features[:, i], l) for i, l in enumerate(LAYERS)], dim=1)
    assert torch.allclose(transcoders.decode(features, x), manual, atol=1e-12)
    # Training: the members' own steps, their losses added.
    x, y = LayeredData().batch(32)
    out = transcoders.training_forward(x, target=y, dead_mask=dead_features())
    alone = [m.training_forward(x[:, i], target=y[:, i], dead_mask=dead_features()[i * D_SAE:(i + 1) * D_SAE])
             for i, m in enumerate(members)]
    assert out.loss.item() == pytest.approx(sum(o.loss.item() for o in alone), rel=1e-12)
    assert torch.equal(out.fire_counts, torch.cat([o.fire_counts for o in alone]))
    assert out.layer_l0.tolist() == [o.l0.item() for o in alone]
    with pytest.raises(ValueError, match=r"must share d_sae"):
        TranscoderSet([member(1), member(2, d_sae=32)])
    with pytest.raises(ValueError, match=r"reads blocks.1.ln2.hook_normalized and predicts blocks.1.hook_mlp_out; both "
                                         r"hooks must belong to block 2"):
        TranscoderSet({2: member(1)})
    sae = create_dictionary(SAEConfig(d_sae=D_SAE, k=K), D, hook_name="blocks.1.hook_resid_post", model_name="m")
    with pytest.raises(ValueError, match=r"the member of layer 1 is not a transcoder"):
        TranscoderSet([sae])


def test_transcoder_set_folder_loads_whole_and_member_by_member(tmp_path):
    members = [member(1, "topk"), member(2, "jumprelu"), member(4, "batchtopk")]
    members[2].threshold.fill_(0.2)
    for m in members:
        m.normalization.set_scales(1.5, 0.5)
    transcoders = TranscoderSet(members)
    folder = transcoders.save(tmp_path / "set", metrics={"explained_variance": 0.5}, member_metrics={2: {"l0": 3.0}})
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "transcoder_set" and config["layers"] == [1, 2, 4]
    assert config["members"] == ["layer_1", "layer_2", "layer_4"] and config["metrics"] == {"explained_variance": 0.5}
    loaded = load_dictionary(folder, dtype=torch.float64)
    assert isinstance(loaded, TranscoderSet) and loaded.layers == LAYERS
    x = torch.randn(9, 3, D, dtype=torch.float64)
    assert torch.allclose(loaded(x), transcoders(x), atol=1e-12)
    alone = load_dictionary(folder / "layer_2", dtype=torch.float64)  # a member is an ordinary dictionary folder
    assert alone.architecture == "jumprelu" and alone.saved_config["metrics"] == {"l0": 3.0}
    assert torch.allclose(alone(x[:, 1]), members[1](x[:, 1]), atol=1e-12)

    shutil.rmtree(folder / "layer_4")
    with pytest.raises(DictionaryLoadError, match=r"member of layer 4 \(layer_4/\) is missing or incomplete"):
        load_dictionary(folder)
    transcoders.save(folder)
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "d_sae": 32}))
    with pytest.raises(DictionaryLoadError, match=r"says d_sae=32 but its members have 64"):
        load_dictionary(folder)
    (folder / "config.json").write_text(json.dumps({**data, "members": ["layer_1", "layer_2", "../x"]}))
    with pytest.raises(DictionaryLoadError, match=r"names member folder '../x', which is not a folder inside the set"):
        load_dictionary(folder)
    shutil.copytree(folder / "layer_1", folder / "layer_9")
    (folder / "config.json").write_text(json.dumps({**data, "members": ["layer_1", "layer_2", "layer_9"]}))
    with pytest.raises(DictionaryLoadError, match=r"do not form a transcoder set .*both hooks must belong to block 4"):
        load_dictionary(folder)


# ------------------------------------------------------------------ CLT folders


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_clt_save_load_round_trip_is_bit_exact(tmp_path, architecture):
    clt = make_clt(architecture, skip=True, dtype=torch.float32)
    clt.initialize_decoder_bias(LayeredData(dtype=torch.float32).batch(64)[1])
    perturb(clt)
    if architecture == "batchtopk":
        clt.threshold.fill_(0.25)
    folder = clt.save(tmp_path / "clt", metrics={"l0": 12.0}, extra={"dataset": "tiny"})
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "cross_layer_transcoder" and config["layers"] == list(LAYERS)
    assert config["hook_names"][2] == "blocks.4.ln2.hook_normalized" and config["dataset"] == "tiny"
    loaded = load_dictionary(folder)
    assert isinstance(loaded, CrossLayerTranscoder) and loaded.cfg == clt.cfg and loaded.layers == LAYERS
    assert loaded.saved_config["metrics"] == {"l0": 12.0}
    for (name, t), (_, u) in zip(clt.state_dict().items(), loaded.state_dict().items()):
        assert t.dtype == u.dtype and torch.equal(t, u), name
    # The same file again, written from the loaded one: the same bytes.
    loaded.save(tmp_path / "again")
    assert (tmp_path / "again" / "sae.safetensors").read_bytes() == (folder / "sae.safetensors").read_bytes()


def test_bad_clt_folders_are_refused_in_one_sentence(tmp_path):
    clt = make_clt("jumprelu", dtype=torch.float32)
    good = clt.save(tmp_path / "good")

    def broken(name: str, edit_config=None, edit_tensors=None) -> Path:
        folder = Path(shutil.copytree(good, tmp_path / name))
        if edit_config:
            data = json.loads((folder / "config.json").read_text())
            edit_config(data)
            (folder / "config.json").write_text(json.dumps(data))
        if edit_tensors:
            tensors = load_file(str(folder / "sae.safetensors"))
            edit_tensors(tensors)
            save_file(tensors, str(folder / "sae.safetensors"))
        return folder

    cases = [
        (broken("no_weights"), r"has config.json but no sae.safetensors"),
        (broken("nan", edit_tensors=lambda t: t["W_dec_1"].view(-1).__setitem__(7, float("nan"))),
         r"1 non-finite value\(s\) \(NaN or inf\) in W_dec_1"),
        (broken("shape", edit_tensors=lambda t: t.__setitem__("W_enc", t["W_enc"][:, :, :32].contiguous())),
         r"W_enc is \[3, 16, 32\], expected \[3, 16, 64\]"),
        (broken("missing", edit_tensors=lambda t: t.pop("W_dec_2")), r"it lacks W_dec_2"),
        (broken("layers", edit_config=lambda d: d.__setitem__("layers", [1, 2])), r"it holds W_dec_2, which this "
                                                                                   r"architecture does not have"),
        (broken("kind", edit_config=lambda d: d.__setitem__("kind", "crosscoder")), r"names unknown kind 'crosscoder'"),
        (broken("newer", edit_config=lambda d: d.__setitem__("format_version", 7)), r"has format_version 7; this "
                                                                                    r"library reads replacement"),
        (broken("arch", edit_config=lambda d: d.update(architecture="relu", sae={**d["sae"], "architecture": "relu"})),
         r"invalid cross-layer transcoder config \(sae.architecture is 'relu'"),
        (broken("hooks", edit_config=lambda d: d.pop("input_hook")), r"lacks key\(s\) input_hook"),
    ]
    (tmp_path / "no_weights" / "sae.safetensors").unlink()
    for folder, message in cases:
        with pytest.raises(DictionaryLoadError, match=message) as info:
            load_dictionary(folder)
        assert "\n" not in str(info.value), folder.name


# ------------------------------------------------------------------ memory


def test_memory_counts_the_parameters_a_model_has():
    for architecture, skip in (("topk", False), ("jumprelu", True)):
        clt = make_clt(architecture, skip=skip)
        counted = replacement_model_memory("cross_layer_transcoder", 3, D, D_SAE, skip=skip,
                                           thresholds=architecture == "jumprelu")
        assert counted.parameters == sum(p.numel() for p in clt.parameters())
        assert counted.training_bytes == 4 * 4 * counted.parameters  # weights, gradients, Adam's two moments
    transcoders = TranscoderSet([member(1), member(2), member(4)])
    assert replacement_model_memory("transcoder_set", 3, D, D_SAE, skip=True).parameters == \
        sum(p.numel() for p in transcoders.parameters())
    gpt2 = replacement_model_memory("cross_layer_transcoder", 12, 768, 768 * 32)
    assert gpt2.parameters == 12 * (768 * 24576 + 24576 + 768) + 78 * 24576 * 768
