"""The compiled CPU kernels (core/kernels.py) against plain references, and the sparse encoder
built on them (SparseAutoencoder.encode_sparse) against SparseAutoencoder.encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import core.sae as sae_module
from core.config import ARCHITECTURES, SAEConfig
from core.kernels import batch_top_k, positive_entries, row_dots, scatter_add_rows, top_k_rows, update_token_index
from core.sae import SparseAutoencoder, create_dictionary, SparseFeatureActs


def reference_top_k(row: np.ndarray, k: int) -> set[int]:
    """Indices of the k largest entries, the earlier index first among equal values, NaN last."""
    keys = [(0 if np.isnan(v) else 1, -1e300 if np.isnan(v) else v, -j) for j, v in enumerate(row.tolist())]
    return {-key[2] for key in sorted(keys, reverse=True)[:k]}


def run_top_k(pre: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.empty((pre.shape[0], k), pre.dtype)
    indices = np.empty((pre.shape[0], k), np.int64)
    top_k_rows(pre, k, values, indices)
    return values, indices


@pytest.mark.parametrize("n, k", [(4608, 32), (1000, 7), (128, 8), (100, 7), (50, 50), (33, 1), (16, 16), (3000, 64)])
def test_top_k_rows_matches_a_sort(n, k):
    rng = np.random.default_rng(n * 100 + k)
    pre = rng.standard_normal((40, n)).astype(np.float32)
    pre[0] = np.abs(pre[0])  # an all-positive row
    pre[1] = -np.abs(pre[1])  # an all-negative row
    pre[2] *= 1e-30  # tiny values
    values, indices = run_top_k(pre, k)
    for r in range(len(pre)):
        assert set(indices[r].tolist()) == reference_top_k(pre[r], k), f"row {r}"
        assert np.array_equal(values[r], pre[r, indices[r]])


def test_top_k_rows_breaks_ties_by_index_and_handles_inf_and_nan():
    rng = np.random.default_rng(0)
    ties = rng.integers(0, 5, size=(30, 700)).astype(np.float32)  # heavy ties, also at the k-th place
    values, indices = run_top_k(ties, 40)
    for r in range(len(ties)):
        assert set(indices[r].tolist()) == reference_top_k(ties[r], 40)
    constant = np.full((2, 4608), 3.0, np.float32)  # every entry ties: the first k win
    assert all(set(row.tolist()) == set(range(32)) for row in run_top_k(constant, 32)[1])

    special = rng.standard_normal((4, 4608)).astype(np.float32)
    special[0, [5, 900, 4000]] = np.inf
    special[1, [7, 11]] = np.nan  # NaN never beats a number
    special[2, :] = np.nan
    special[2, [100, 200]] = [1.0, -np.inf]  # two numbers, then the earliest NaN positions
    special[3, :] = -np.inf
    special[3, 10] = 0.0
    _, indices = run_top_k(special, 32)
    assert {5, 900, 4000} <= set(indices[0].tolist())
    assert set(indices[1].tolist()) == reference_top_k(special[1], 32) and not {7, 11} & set(indices[1].tolist())
    assert set(indices[2].tolist()) == {100, 200} | set(range(30))
    assert 10 in indices[3].tolist() and len(set(indices[3].tolist())) == 32


def test_top_k_rows_on_float64():
    pre = np.random.default_rng(1).standard_normal((8, 2000))
    values, indices = run_top_k(pre, 20)
    assert values.dtype == np.float64
    assert all(set(indices[r].tolist()) == reference_top_k(pre[r], 20) for r in range(8))


@pytest.mark.parametrize("n_slots", [1, 3, 8])
def test_token_index_keeps_each_tokens_strongest_features(n_slots):
    """update_token_index over several batches against a brute force over every (token, feature) maximum."""
    rng = np.random.default_rng(n_slots)
    vocab, d_sae, batch, seq = 30, 40, 4, 16
    occurrences = np.zeros(vocab, np.int64)
    ids = np.full((vocab, n_slots), -1, np.int32)
    values = np.zeros((vocab, n_slots), np.float32)
    fill, min_slot = np.zeros(vocab, np.int64), np.zeros(vocab, np.int64)
    best = np.zeros((vocab, d_sae))  # brute force: max activation of each feature on each token
    counts = np.zeros(vocab, np.int64)
    for _ in range(5):
        tokens = rng.integers(0, vocab, (batch, seq))
        mask = rng.random((batch, seq)) < 0.85
        dense = np.where(rng.random((batch * seq, d_sae)) < 0.15, rng.random((batch * seq, d_sae)), 0.0)
        dense[rng.random(dense.shape) < 0.02] = -1.0  # non-positive entries are ignored
        dense = dense.astype(np.float32)
        row_ptr = np.zeros(batch * seq + 1, np.int64)
        features = np.zeros(dense.size, np.int64)
        acts = np.zeros(dense.size, np.float32)
        positive_entries(np.abs(dense), row_ptr, features, acts)
        acts = dense.reshape(-1)[np.arange(batch * seq).repeat(np.diff(row_ptr)) * d_sae + features[:row_ptr[-1]]]
        update_token_index(tokens, mask, row_ptr, features, acts, occurrences, ids, values, fill, min_slot)
        for p in np.flatnonzero(mask.reshape(-1)):
            t = tokens.reshape(-1)[p]
            counts[t] += 1
            best[t] = np.maximum(best[t], dense[p])
    assert occurrences.tolist() == counts.tolist()
    for t in range(vocab):
        expected = sorted(((-v, f) for f, v in enumerate(best[t]) if v > 0))[:n_slots]
        kept = sorted((-v, f) for f, v in zip(ids[t].tolist(), values[t].tolist()) if f >= 0)
        # The same maxima (a tie at the last place may keep either feature).
        assert [v for v, _ in kept] == pytest.approx([v for v, _ in expected])
        for v, f in kept:
            assert best[t, f] == pytest.approx(-v)


def test_positive_entries_and_sparse_round_trip():
    rng = np.random.default_rng(2)
    dense = rng.standard_normal((50, 70)).astype(np.float32)
    dense[dense < 0.8] = 0
    dense[3] = 0  # an empty row
    nnz = int((dense > 0).sum())
    row_ptr, features, values = np.empty(51, np.int64), np.empty(nnz, np.int64), np.empty(nnz, np.float32)
    assert positive_entries(dense, row_ptr, features, values) == nnz
    rows, cols = np.nonzero(dense > 0)
    assert np.array_equal(row_ptr, np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=50))]))
    assert np.array_equal(features, cols) and np.array_equal(values, dense[rows, cols])
    sparse = SparseFeatureActs.from_dense(torch.from_numpy(dense))
    assert sparse.n_tokens == 50 and sparse.d_sae == 70
    assert torch.equal(sparse.to_dense(), torch.from_numpy(dense))


# ------------------------------------------------------------------ encode_sparse


def _sae(architecture: str, d_in: int = 32, d_sae: int = 300, k: int = 12) -> SparseAutoencoder:
    torch.manual_seed(0)
    sae = create_dictionary(SAEConfig(architecture=architecture, d_sae=d_sae, k=k), d_in,
                            hook_name="blocks.0.hook_resid_post", model_name="test")
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    if architecture == "batchtopk":
        sae.threshold.fill_(0.2)
    return sae.eval()


def assert_same_activations(sparse: torch.Tensor, dense: torch.Tensor, pre: torch.Tensor, k: int | None) -> None:
    """Equal up to float rounding: values close, and a feature on in one but not the other only
    where its pre-activation ties the k-th largest of its token within rounding."""
    assert torch.allclose(sparse, dense, rtol=1e-5, atol=1e-6)
    differ = (sparse > 0) != (dense > 0)
    if differ.any():
        assert k is not None, "only a top-k choice can swap within rounding"
        kth = pre.topk(k, dim=-1).values[:, -1:]
        assert torch.allclose(pre[differ], kth.expand_as(pre)[differ], atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_sparse_gives_the_activations_of_encode(architecture):
    sae = _sae(architecture)
    n = sae_module.ENCODE_CHUNK_TOKENS * 2 + 37  # full blocks and a padded last one
    x = torch.randn(n, sae.d_in) * 2
    sparse = sae.encode_sparse(x)
    assert sparse.n_tokens == n and sparse.d_sae == sae.d_sae
    k = sae.cfg.k if architecture == "topk" else None
    pre = sae._pre_acts(x)
    assert_same_activations(sparse.to_dense(), sae.encode(x), pre, k)
    if architecture == "topk":
        assert torch.equal(sparse.row_ptr.diff(), torch.full((n,), sae.cfg.k))

    # Leading dimensions and a row selection: unselected tokens get empty rows.
    x3 = x[:60].view(3, 20, sae.d_in)
    rows = torch.rand(3, 20, generator=torch.Generator().manual_seed(1)) > 0.3
    selected = sae.encode_sparse(x3, rows=rows)
    assert selected.n_tokens == 60
    assert torch.equal(selected.row_ptr.diff()[~rows.flatten()], torch.zeros(int((~rows).sum()), dtype=torch.long))
    dense = selected.to_dense()
    assert torch.equal(dense[~rows.flatten()], torch.zeros(int((~rows).sum()), sae.d_sae))
    assert_same_activations(dense[rows.flatten()], sae.encode(x[:60][rows.flatten()]), pre[:60][rows.flatten()], k)
    with pytest.raises(ValueError, match="rows has shape"):
        sae.encode_sparse(x3, rows=rows.flatten())


def test_encode_sparse_does_not_depend_on_the_other_tokens_and_follows_weight_updates():
    sae = _sae("topk", d_in=64, d_sae=512, k=16)
    x = torch.randn(700, 64)
    full = sae.encode_sparse(x).to_dense()
    # A token's activations are the same whichever block (and place in it) it lands in.
    assert torch.equal(sae.encode_sparse(x[300:333]).to_dense(), full[300:333])
    assert torch.equal(sae.encode_sparse(x.flip(0)).to_dense().flip(0), full)
    # An in-place weight update (an optimizer step) invalidates any cached weight layout.
    with torch.no_grad():
        sae.W_enc.mul_(-1.0)
    flipped = sae.encode_sparse(x).to_dense()
    assert_same_activations(flipped, sae.encode(x), sae._pre_acts(x), 16)
    assert not torch.equal(flipped, full)


def test_encode_sparse_generic_path_for_dtypes_without_a_kernel():
    """bfloat16 has no numpy type: encode_sparse takes torch's top-k, the path GPUs take too."""
    sae = _sae("topk").to(torch.bfloat16)
    x = torch.randn(50, sae.d_in)
    rows = torch.arange(50) % 7 != 0
    sparse = sae.encode_sparse(x, rows=rows)
    assert sparse.values.dtype == torch.float32
    dense = sae.encode(x[rows]).float()
    assert torch.equal(sparse.to_dense()[rows], dense)
    assert int(sparse.row_ptr.diff()[~rows].sum()) == 0


# ------------------------------------------------------------------ batch top-k and the sparse products


def run_batch_top_k(pre: np.ndarray, n_keep: int) -> tuple[int, list[int]]:
    """(kept, flat indices kept), checking that the entries come in row-major order with their values."""
    n = pre.shape[1]
    bits = pre.view(np.int32 if pre.dtype == np.float32 else np.int64)
    rows, columns, kept_bits = (np.empty(max(n_keep, 1), dtype) for dtype in (np.int64, np.int64, bits.dtype))
    kept = batch_top_k(bits, n_keep, rows, columns, kept_bits)
    flat = rows[:kept] * n + columns[:kept]
    assert (np.diff(flat) > 0).all() and ((0 <= columns[:kept]) & (columns[:kept] < n)).all()
    assert np.array_equal(kept_bits[:kept].view(pre.dtype), pre.reshape(-1)[flat])
    return kept, flat.tolist()


def reference_batch_top_k(pre: np.ndarray, n_keep: int) -> list[int]:
    """The n_keep largest positive entries, the earlier (row-major) entry first among equal values."""
    flat = pre.reshape(-1)
    order = sorted((i for i in range(flat.size) if flat[i] > 0), key=lambda i: (-flat[i], i))
    return sorted(order[:n_keep])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_top_k_matches_a_sort(dtype):
    rng = np.random.default_rng(3)
    cases = [
        (rng.standard_normal((64, 300)), 64 * 8),
        (rng.standard_normal((7, 13)), 20),
        (-np.abs(rng.standard_normal((5, 9))), 10),  # nothing positive
        (np.where(rng.random((30, 40)) < 0.02, 1 + rng.random((30, 40)), -1.0), 200),  # fewer positive than n_keep
        (rng.integers(-3, 4, size=(50, 60)).astype(float), 700),  # heavy ties at the threshold
        (np.full((8, 50), 2.0), 33),  # all equal: the first ones win
        (rng.standard_normal((40, 512)) + np.where(np.arange(40) == 7, 30.0, 0.0)[:, None], 40 * 4),  # one row dominates
        (rng.standard_normal((3, 5)), 100),  # n_keep larger than the matrix
    ]
    for pre, n_keep in cases:
        pre = np.ascontiguousarray(pre.astype(dtype))
        kept, flat = run_batch_top_k(pre, min(n_keep, pre.size))
        expected = reference_batch_top_k(pre, n_keep)
        assert kept == len(expected) and flat == expected


def test_batch_top_k_at_training_size_matches_torch():
    pre = torch.randn(1024, 4608)
    _, flat = run_batch_top_k(pre.numpy(), 1024 * 32)
    assert sorted(flat) == sorted(pre.flatten().topk(1024 * 32).indices.tolist())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_rows_and_row_dots_match_torch(dtype):
    rng = np.random.default_rng(4)
    src = rng.standard_normal((50, 37)).astype(dtype)
    out_rows = rng.integers(0, 20, 400)
    src_rows = rng.integers(0, 50, 400)
    coef = rng.standard_normal(400).astype(dtype)
    start = rng.standard_normal((20, 37)).astype(dtype)
    expected = torch.from_numpy(start).index_add(0, torch.from_numpy(out_rows),
                                                 torch.from_numpy(src[src_rows] * coef[:, None]))
    out = start.copy()
    scatter_add_rows(out, out_rows, coef, src, src_rows, 0, 8)  # two threads' disjoint ranges of rows
    scatter_add_rows(out, out_rows, coef, src, src_rows, 8, 20)
    eps = np.finfo(dtype).eps  # rounding of sums of ~20 terms of size ~1-10: a few dozen eps
    assert np.abs(out - expected.numpy()).max() <= 64 * eps * np.abs(expected.numpy()).max()

    b = rng.standard_normal((20, 37)).astype(dtype)
    dots = np.full(400, np.nan, dtype)
    row_dots(dots, src, src_rows, b, out_rows, 0, 150)
    row_dots(dots, src, src_rows, b, out_rows, 150, 400)
    terms = src[src_rows].astype(np.float64) * b[out_rows]
    # A sum of 37 products is exact up to 37 eps times the sum of their magnitudes.
    assert (np.abs(dots - terms.sum(-1)) <= 37 * eps * np.abs(terms).sum(-1)).all()
