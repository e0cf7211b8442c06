"""The analyzer against a brute-force computation on the tiny GPT-2, the feature store it writes,
encode_text, refusals and interruptions, and the notebook that reads the store."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from core import (ActivationSource, AnalysisConfig, ConfigError, DictionaryLoadError, FeatureStore, HookNameError,
                  SAEConfig, SparseAutoencoder, TokenBatches, analyze, encode_text, load_dictionary)
from core.analysis import FeatureRecords
from core.sae import SparseFeatureActs, create_dictionary
from core.store import FeatureStoreWriter
from tests.conftest import ROOT, tiny_analysis_config


class BruteForce(NamedTuple):
    tokens: torch.Tensor
    """[n_sequences, seq] every analyzed sequence."""
    acts: torch.Tensor
    """[n_sequences, seq, d_sae] feature activations, 0 where a position is not analyzed."""
    n_tokens: int


@pytest.fixture(scope="module")
def analysis_cfg(tiny_analysis) -> AnalysisConfig:
    return AnalysisConfig.load_json(tiny_analysis / "config.json")


@pytest.fixture(scope="module")
def sae(tiny_dictionary) -> SparseAutoencoder:
    return load_dictionary(tiny_dictionary).eval()


@pytest.fixture(scope="module")
def store(tiny_analysis):
    with FeatureStore(tiny_analysis) as s:
        yield s


@pytest.fixture(scope="module")
def brute_force(tiny_model, sae, analysis_cfg) -> BruteForce:
    """All activations of the analyzed tokens, recomputed batch by batch from the same data."""
    cfg = analysis_cfg
    batches = TokenBatches(cfg.dataset, tiny_model.tokenizer, bos_token_id=tiny_model.bos_token_id,
                           separator_token_id=tiny_model.separator_token_id, batch_size=cfg.model_batch_size,
                           cache_dir=cfg.model.cache_dir)
    source = ActivationSource(tiny_model, sae.hook_name, iter(()))
    all_tokens, all_acts, n = [], [], 0
    with torch.no_grad():
        while n < cfg.total_analyzing_tokens:
            tokens = next(batches)
            mask = tiny_model.token_mask(tokens)
            # The analysis stops after exactly total_analyzing_tokens text tokens (row-major order).
            running = mask.flatten().cumsum(0).view_as(mask)
            mask &= running <= cfg.total_analyzing_tokens - n
            # The analyzer's encoder (tests/test_sae.py checks it against sae.encode); the records are
            # what is under test here.
            acts = sae.encode_sparse(source.activations_of(tokens)[sae.hook_name], rows=mask).to_dense().view(*mask.shape, -1)
            all_tokens.append(tokens)
            all_acts.append(acts)
            n += int(mask.sum())
    return BruteForce(torch.cat(all_tokens), torch.cat(all_acts), n)


def _window(bf: BruteForce, feature: int, seq: int, pos: int, cfg: AnalysisConfig):
    start = max(0, pos - cfg.context_left)
    end = min(bf.tokens.shape[1], pos + cfg.context_right + 1)
    return bf.tokens[seq, start:end].tolist(), bf.acts[seq, start:end, feature], pos - start


def _matches_some_position(bf: BruteForce, feature: int, sample, cfg: AnalysisConfig) -> bool:
    """True when the sample's window equals the brute-force window at some position where the
    feature takes the sample's activation."""
    target = torch.tensor(sample.max_act, dtype=torch.float32)
    hits = torch.isclose(bf.acts[:, :, feature], target, rtol=1e-6, atol=0).nonzero().tolist()
    for seq, pos in hits:
        ids, acts, max_pos = _window(bf, feature, seq, pos, cfg)
        if ids == sample.token_ids and max_pos == sample.max_pos and torch.allclose(
                acts, torch.tensor(sample.acts, dtype=torch.float32), rtol=1e-5, atol=1e-7):
            return True
    return False


# ------------------------------------------------------------------------------ records vs brute force


def test_statistics_match_brute_force(store, brute_force, analysis_cfg):
    acts = brute_force.acts.flatten(0, 1)  # [tokens, d_sae]
    active = acts > 0
    count = active.sum(0)
    assert brute_force.n_tokens == analysis_cfg.total_analyzing_tokens == store.n_tokens
    total, stats = store.list_features(sort="index", descending=False, limit=500)
    assert total == store.d_sae == acts.shape[1]
    for s in stats:
        f = s.index
        assert s.act_count == int(count[f])
        assert s.density == pytest.approx(int(count[f]) / brute_force.n_tokens)
        if s.act_count:
            values = acts[active[:, f], f].double()
            assert s.max_act == pytest.approx(float(values.max()), rel=1e-6)
            assert s.mean_act == pytest.approx(float(values.mean()), rel=1e-5)
        else:
            assert s.max_act == 0 and s.mean_act == 0
    assert store.summary().n_dead == int((count == 0).sum()) == store.meta["n_dead"]


def test_histograms_count_every_activation_over_the_features_own_range(store, brute_force, analysis_cfg):
    acts = brute_force.acts.flatten(0, 1)
    assert "histogram_edges" not in store.meta  # every feature has its own edges
    for f in range(store.d_sae):
        record = store.get_feature(f)
        edges, counts = np.asarray(record.histogram.edges), np.asarray(record.histogram.counts)
        assert len(edges) == len(counts) + 1 and len(counts) <= analysis_cfg.histogram_bins
        assert counts.sum() == record.stats.act_count
        if record.stats.act_count == 0:
            continue
        assert np.all(np.diff(edges) > 0) and np.allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]))
        values = acts[:, f][acts[:, f] > 0].numpy()
        # The axis spans the feature's own activations: its first and last bins are within a few
        # fine bins (1/8 of a stored bin each) of its smallest and largest activation.
        fine_ratio = (1e4 / 1e-4) ** (1 / (analysis_cfg.histogram_bins * 8))
        assert edges[0] <= values.min() and edges[-1] >= values.max()
        assert values.min() / edges[0] < max(fine_ratio ** 5, edges[1] / edges[0] * fine_ratio)
        assert edges[-1] / values.max() < max(fine_ratio ** 5, edges[-1] / edges[-2] * fine_ratio)
        expected, _ = np.histogram(values, bins=edges)
        # Values lying within float error of a bin edge may land in the neighbouring bin.
        assert np.abs(counts - expected).sum() <= 2


def test_token_index_holds_each_tokens_strongest_features(store, brute_force):
    from core.analysis import TOKEN_INDEX_SIZE

    tokens = brute_force.tokens.flatten()
    acts = brute_force.acts.flatten(0, 1)
    analyzed = acts.abs().sum(1) >= 0  # every position; the mask is in the activations (0 elsewhere)
    vocab = store.decode(range(tokens.max() + 1))
    checked = 0
    for t in torch.unique(tokens).tolist()[:60]:
        rows = (tokens == t) & analyzed
        best = acts[rows].max(0).values  # each feature's max activation on token t
        if best.max() <= 0:
            continue
        result = store.search_tokens(token_ids=[t], limit=TOKEN_INDEX_SIZE)
        expected = best[best > 0].sort(descending=True).values[:TOKEN_INDEX_SIZE]
        assert [m.acts[0] for m in result.matches] == pytest.approx(expected.tolist(), rel=1e-6)
        for m in result.matches:
            assert best[m.index].item() == pytest.approx(m.acts[0], rel=1e-6)
        assert result.tokens[0].token == vocab[t]
        checked += 1
    assert checked > 10
    # The stored tokenizer splits a phrase as the model does, so a vocabulary token comes back whole.
    assert [t.token for t in store.search_tokens(" the quick").tokens] == [" the", " quick"]


def test_top_contexts_are_the_top_activations(store, brute_force, analysis_cfg):
    acts = brute_force.acts.flatten(0, 1)
    for f in range(store.d_sae):
        record = store.get_feature(f)
        values = acts[:, f][acts[:, f] > 0].sort(descending=True).values[:analysis_cfg.top_k]
        got = [s.max_act for s in record.top]
        assert got == sorted(got, reverse=True)
        assert np.allclose(got, values.numpy(), rtol=1e-6), f"feature {f}"
        for sample in record.top:
            assert sample.acts[sample.max_pos] == pytest.approx(sample.max_act)
            assert len(sample.token_ids) <= analysis_cfg.context_left + analysis_cfg.context_right + 1
            assert _matches_some_position(brute_force, f, sample, analysis_cfg), f"feature {f}: top window differs"


def test_interval_samples_lie_in_their_intervals(store, brute_force, analysis_cfg):
    n = analysis_cfg.n_intervals
    alive = [s for s in store.list_features(sort="index", descending=False, limit=500)[1] if s.act_count]
    assert alive
    for stats in alive:
        record = store.get_feature(stats.index)
        assert [g.name for g in record.intervals] == [f"interval_{i}" for i in reversed(range(n))]
        for group in record.intervals:
            i = int(group.name.split("_")[1])
            assert group.lower == pytest.approx(stats.max_act * i / n)
            assert group.upper == pytest.approx(stats.max_act * (i + 1) / n)
            assert len(group.samples) <= analysis_cfg.samples_per_interval
            for sample in group.samples:
                assert group.lower * (1 + 1e-6) < sample.max_act <= group.upper * (1 + 1e-6)
                assert _matches_some_position(brute_force, stats.index, sample, analysis_cfg)
        # The occurrence that set the maximum fell into the top interval, which thus is never empty.
        assert record.intervals[0].samples


def test_logit_lens_reads_decoder_rows_through_the_unembedding(store, tiny_model, sae, analysis_cfg):
    bridge = tiny_model.bridge
    for f in (0, 17, store.d_sae - 1):
        direction = sae.W_dec[f].detach()
        direction = (direction - direction.mean()) * bridge.ln_final.weight  # GPT-2's final LayerNorm
        logits = direction @ bridge.W_U
        lens = store.get_feature(f).logit_lens
        assert lens.note is None
        assert [t.token_id for t in lens.positive] == logits.topk(analysis_cfg.logit_lens_k).indices.tolist()
        assert [t.token_id for t in lens.negative] == logits.topk(analysis_cfg.logit_lens_k, largest=False).indices.tolist()
        assert np.allclose([t.value for t in lens.positive], logits.topk(analysis_cfg.logit_lens_k).values, rtol=1e-4)


def test_store_round_trip(store, tiny_analysis, tiny_dictionary, tiny_model, sae, analysis_cfg):
    assert tiny_analysis == tiny_dictionary.resolve() / "analysis" / "default"
    assert sorted(p.name for p in tiny_analysis.iterdir()) == ["config.json", "features.sqlite"]
    summary = store.summary()
    assert summary.n_features == 128 and summary.n_tokens == 4000
    assert summary.n_alive + summary.n_dead == 128
    assert sum(summary.density_histogram.counts) == summary.n_alive
    assert summary.analysis_config == analysis_cfg.to_dict()
    assert summary.dictionary_config["hook_name"] == sae.hook_name
    assert summary.metrics == json.loads(json.dumps(sae.saved_config["metrics"]).replace("NaN", "null"))
    assert store.meta["model_name"] == sae.model_name and store.meta["hook_name"] == sae.hook_name
    vocab = tiny_model.token_strings()
    assert store.decode([0, 198, 995, len(vocab) - 1]) == [vocab[0], vocab[198], vocab[995], vocab[-1]]
    assert store.decode([198]) == ["\n"] and store.decode([995]) == [" world"]


# ------------------------------------------------------------------------------ the records kernels


def _feed(records: FeatureRecords, acts: list[list[float]]) -> None:
    """One batch of one feature's activations: acts [batch][seq], every position analyzed."""
    dense = torch.tensor(acts, dtype=torch.float32)
    tokens = torch.arange(dense.numel()).view(dense.shape)
    records.update(tokens, SparseFeatureActs.from_dense(dense.reshape(-1, 1)), torch.ones(dense.shape, dtype=torch.bool))


def test_interval_samples_are_uniform_over_their_interval():
    """After the maximum is set, 40 occurrences fall into one interval that keeps 4: over many
    seeds every occurrence is kept about equally often (4/40), whatever its value or position,
    and however the tokens are batched."""
    n_occurrences, capacity, n_seeds = 40, 4, 500
    kept = np.zeros(n_occurrences)
    for seed in range(n_seeds):
        cfg = AnalysisConfig(top_k=1, n_intervals=2, samples_per_interval=capacity, context_left=0,
                             context_right=0, histogram_bins=4, seed=seed)
        records = FeatureRecords(1, cfg)
        values = [1.0] + [0.1 + 0.01 * i for i in range(n_occurrences)]  # all but the first in (0, 0.5]
        _feed(records, [values[:11]])
        _feed(records, [values[11:21], values[21:31]])
        _feed(records, [values[31:]])
        samples = records.interval_samples()
        low = samples[(0, 0)]
        assert len(low) == capacity and [s.acts[0] for s in samples[(0, 1)]] == [1.0]
        for sample in low:  # the activation tells the occurrence
            kept[round((float(sample.acts[0]) - 0.1) / 0.01)] += 1
    expected = n_seeds * capacity / n_occurrences
    chi2 = float(((kept - expected) ** 2 / expected).sum())
    assert chi2 < 80, f"chi-square {chi2:.1f} over {n_occurrences - 1} degrees of freedom: not uniform"  # p < 1e-4
    # And the keys do not depend on batching: one batch gives the same samples as three.
    cfg = AnalysisConfig(top_k=1, n_intervals=2, samples_per_interval=capacity, context_left=0, context_right=0,
                         histogram_bins=4, seed=7)
    one, three = FeatureRecords(1, cfg), FeatureRecords(1, cfg)
    _feed(one, [values])
    for part in (values[:11], values[11:31], values[31:]):
        _feed(three, [part])
    values_of = lambda r: sorted(float(s.acts[0]) for s in r.interval_samples()[(0, 0)])  # noqa: E731
    assert values_of(one) == values_of(three) and len(values_of(one)) == capacity


def test_interval_samples_are_rebucketed_when_the_maximum_grows():
    cfg = AnalysisConfig(top_k=2, n_intervals=2, samples_per_interval=3, context_left=0, context_right=0,
                         histogram_bins=4)
    records = FeatureRecords(1, cfg)
    _feed(records, [[0.1, 0.2, 0.3, 0.4]])  # max 0.4: 0.1, 0.2 | 0.3, 0.4
    _feed(records, [[0.0, 0.0, 0.0, 0.8]])  # max 0.8: all but 0.8 fall low
    samples = records.interval_samples()
    kept = {g: [float(s.acts[s.max_pos]) for s in samples.get((0, g), [])] for g in range(2)}
    # After the maximum doubled, every earlier activation lies in the lower interval, which keeps 3 of them.
    assert len(kept[0]) == 3 and all(any(abs(v - w) < 1e-6 for w in (0.1, 0.2, 0.3, 0.4)) for v in kept[0])
    assert kept[1] == pytest.approx([0.8])
    assert [float(s.acts[s.max_pos]) for s in records.top_samples()[(0, 0)]] == pytest.approx([0.8, 0.4])
    assert records.n_tokens == 8
    assert int(records.act_count[0]) == 5 and float(records.max_act[0]) == pytest.approx(0.8)


def test_windows_show_the_feature_on_every_token_and_zero_outside_the_mask():
    """Two features in one batch of 2 sequences; the mask leaves out the first position of each."""
    cfg = AnalysisConfig(top_k=2, n_intervals=1, samples_per_interval=1, context_left=2, context_right=1,
                         histogram_bins=4)
    records = FeatureRecords(2, cfg)
    acts = torch.zeros(2, 4, 2)
    acts[0, :, 0] = torch.tensor([9.0, 1.0, 2.0, 3.0])  # 9.0 sits on a masked position: ignored
    acts[1, :, 1] = torch.tensor([0.0, 5.0, 0.0, 4.0])
    tokens = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    mask = torch.tensor([[False, True, True, True], [False, True, True, True]])
    records.update(tokens, SparseFeatureActs.from_dense(acts.view(8, 2)), mask)
    top = records.top_samples()
    first = top[(0, 0)][0]  # 3.0 at position 3: window [1, 4) with nothing right of it
    assert first.token_ids.tolist() == [11, 12, 13] and first.acts.tolist() == [1.0, 2.0, 3.0] and first.max_pos == 2
    second = top[(0, 0)][1]  # 2.0 at position 2: window [0, 4); position 0 is masked, so 0
    assert second.token_ids.tolist() == [10, 11, 12, 13] and second.acts.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert second.max_pos == 2
    other = top[(1, 0)][0]
    assert other.token_ids.tolist() == [20, 21, 22] and other.acts.tolist() == [0.0, 5.0, 0.0] and other.max_pos == 1
    stats = records.statistics()
    assert stats["act_count"].tolist() == [3, 2] and stats["max_act"].tolist() == [3.0, 5.0]
    assert records.n_tokens == 6


# ------------------------------------------------------------------------------ encode_text


def test_encode_text_matches_the_analyzer(tiny_model, sae, brute_force, store):
    ids = brute_force.tokens[0, 1:21].tolist()
    text = tiny_model.tokenizer.decode(ids)
    encoded = encode_text(tiny_model, sae, text)
    assert encoded.token_ids == ids
    assert encoded.tokens == store.decode(ids)
    assert isinstance(encoded.acts, SparseFeatureActs)  # sparse rows, never a dense [tokens, d_sae] matrix
    assert encoded.acts.n_tokens == 20 and encoded.acts.d_sae == sae.d_sae
    assert len(encoded.acts.features) <= 20 * sae.cfg.k
    dense = encoded.acts.to_dense()
    assert torch.allclose(dense, brute_force.acts[0, 1:21], atol=1e-5, rtol=1e-4)

    short = encode_text(tiny_model, sae, text, max_tokens=3)
    assert short.token_ids == ids[:3] and short.acts.n_tokens == 3
    assert torch.allclose(short.acts.to_dense(), dense[:3], atol=1e-5, rtol=1e-4)
    empty = encode_text(tiny_model, sae, "")
    assert empty.token_ids == [] and empty.acts.to_dense().shape == (0, sae.d_sae)
    assert empty.top_features(3) == [] and empty.feature(0).shape == (0,)


def test_text_activations_read_from_sparse_rows(tiny_model, sae):
    encoded = encode_text(tiny_model, sae, "The quick brown fox jumps over the lazy dog.")
    dense = encoded.acts.to_dense()
    active = int((dense > 0).sum(0).argmax())
    assert torch.equal(encoded.feature(active), dense[:, active]) and dense[:, active].max() > 0
    for k in (1, 3, sae.d_sae):
        top = encoded.top_features(k)
        assert len(top) == len(encoded.token_ids)
        for row, acts in zip(top, dense):
            expected = acts.topk(min(k, int((acts > 0).sum()))).values.tolist()
            assert [v for _, v in row] == expected
            assert all(acts[i].item() == v for i, v in row)
    with pytest.raises(IndexError, match="0..127"):
        encoded.feature(sae.d_sae)


def test_encode_text_zeroes_special_tokens(tiny_model, sae):
    encoded = encode_text(tiny_model, sae, "Hello world<|endoftext|> again")
    eos = encoded.token_ids.index(tiny_model.tokenizer.eos_token_id)
    dense = encoded.acts.to_dense()
    assert dense[eos].abs().sum() == 0 and dense[eos - 1].abs().sum() > 0
    assert encoded.top_features(5)[eos] == []


# ------------------------------------------------------------------------------ other hooks


def test_non_residual_hook_has_no_logit_lens(tiny_model, tiny_gpt2_dir, tmp_path):
    hook = "blocks.0.mlp.hook_post"  # [.., d_mlp = 256], not in the residual-stream basis
    fresh = create_dictionary(SAEConfig(architecture="relu", d_sae=32), 256, hook_name=hook,
                              model_name=str(tiny_gpt2_dir))
    dictionary = fresh.save(tmp_path / "mlp" / "dictionary")
    folder = analyze(tiny_analysis_config(dictionary, tiny_gpt2_dir, total_analyzing_tokens=200), model=tiny_model)
    with FeatureStore(folder) as s:
        assert s.n_tokens == 200 and s.meta["hook_name"] == hook
        assert "not in the residual-stream basis" in s.meta["logit_lens_note"]
        lens = s.get_feature(s.random_alive_feature()).logit_lens
        assert lens.positive == [] and lens.negative == [] and lens.note == s.meta["logit_lens_note"]


# ------------------------------------------------------------------------------ bad input, refusals


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_not_a_dictionary(tiny_gpt2_dir, tmp_path, tiny_model):
    with pytest.raises(DictionaryLoadError, match="not a dictionary"):
        analyze(tiny_analysis_config(tmp_path, tiny_gpt2_dir), model=tiny_model)
    with pytest.raises(DictionaryLoadError, match="does not exist"):
        analyze(tiny_analysis_config(tmp_path / "missing", tiny_gpt2_dir), model=tiny_model)


def _edited_dictionary(tiny_dictionary: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "run" / "dictionary"
    shutil.copytree(tiny_dictionary, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_model_mismatch(tiny_dictionary, tiny_gpt2_dir, tiny_model, tmp_path):
    # Configured model differs from the dictionary's: refused before loading anything.
    with pytest.raises(ConfigError, match="set model.name to"):
        analyze(tiny_analysis_config(tiny_dictionary, "gpt2", analysis_name="mismatch"))
    # A loaded model that is not the dictionary's.
    other = _edited_dictionary(tiny_dictionary, tmp_path, model_name="gpt2")
    with pytest.raises(ConfigError, match="trained on model 'gpt2'"):
        analyze(tiny_analysis_config(other, tiny_gpt2_dir), model=tiny_model)
    assert not (other.parent / "analysis").exists()


def test_hook_mismatch(tiny_dictionary, tiny_gpt2_dir, tiny_model, tmp_path):
    other = _edited_dictionary(tiny_dictionary, tmp_path, hook_name="blocks.7.hook_resid_post")
    with pytest.raises(HookNameError, match="blocks.1.hook_resid_post|layers are 0..1"):
        analyze(tiny_analysis_config(other, tiny_gpt2_dir), model=tiny_model)


def test_existing_analysis_is_refused_without_overwrite(tiny_analysis, tiny_dictionary, tiny_gpt2_dir, tiny_model):
    before = _digest(tiny_analysis / "features.sqlite"), _digest(tiny_analysis / "config.json")
    with pytest.raises(FileExistsError, match="overwrite=True.*another analysis_name"):
        analyze(tiny_analysis_config(tiny_dictionary, tiny_gpt2_dir), model=tiny_model)
    assert (_digest(tiny_analysis / "features.sqlite"), _digest(tiny_analysis / "config.json")) == before
    FeatureStore(tiny_analysis).close()


@pytest.fixture()
def copied_analysis(tiny_analysis):
    """A copy of the session analysis under another name, for tests that try to replace it."""
    copy = tiny_analysis.parent / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(tiny_analysis, copy)
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


class SimulatedCrash(Exception):
    pass


def _crash_on_call(n: int, original):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise SimulatedCrash(f"crash on call {n}")
        return original(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("where", ["streaming", "writing"])
def test_interrupted_run_keeps_the_previous_analysis(where, copied_analysis, tiny_dictionary, tiny_gpt2_dir,
                                                     tiny_model, monkeypatch):
    before = _digest(copied_analysis / "features.sqlite"), _digest(copied_analysis / "config.json")
    if where == "streaming":
        monkeypatch.setattr(FeatureRecords, "update", _crash_on_call(3, FeatureRecords.update))
    else:
        monkeypatch.setattr(FeatureStoreWriter, "write_samples", _crash_on_call(20, FeatureStoreWriter.write_samples))
    cfg = tiny_analysis_config(tiny_dictionary, tiny_gpt2_dir, analysis_name="copy", overwrite=True,
                               total_analyzing_tokens=600)
    with pytest.raises(SimulatedCrash):
        analyze(cfg, model=tiny_model)
    assert sorted(p.name for p in copied_analysis.iterdir()) == ["config.json", "features.sqlite"]
    assert (_digest(copied_analysis / "features.sqlite"), _digest(copied_analysis / "config.json")) == before
    with FeatureStore(copied_analysis) as s:
        assert s.n_tokens == 4000


def test_leftover_partial_is_replaced_and_overwrite_replaces(tiny_dictionary, tiny_gpt2_dir, tiny_model):
    cfg = tiny_analysis_config(tiny_dictionary, tiny_gpt2_dir, analysis_name="rerun", total_analyzing_tokens=300)
    folder = tiny_dictionary.resolve() / "analysis" / "rerun"
    folder.mkdir(parents=True)
    (folder / "features.sqlite.partial").write_bytes(b"left by a killed run")
    try:
        assert analyze(cfg, model=tiny_model) == folder
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "features.sqlite"]
        with FeatureStore(folder) as s:
            assert s.n_tokens == 300
        cfg.total_analyzing_tokens, cfg.overwrite = 400, True
        analyze(cfg, model=tiny_model)
        with FeatureStore(folder) as s:
            assert s.n_tokens == 400
        assert AnalysisConfig.load_json(folder / "config.json").total_analyzing_tokens == 400
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------ the notebook


def test_notebook_runs_on_the_tiny_analysis(tiny_analysis, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("FEATURE_STORE", str(tiny_analysis))
    monkeypatch.setenv("TEXT", "Return the value of the attribute.")
    monkeypatch.delenv("DICTIONARY_PATH", raising=False)
    monkeypatch.delenv("FEATURE", raising=False)
    path = ROOT / "notebooks" / "observe_feature_activation.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Top activations" in html and "background: rgba" in html
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the histogram


def test_example_script_takes_overrides_and_refuses_an_existing_analysis(tiny_analysis, tiny_dictionary, tiny_gpt2_dir):
    import subprocess
    import sys

    command = [sys.executable, "run_analyze_example.py", "--dictionary-path", str(tiny_dictionary),
               "--model.name", str(tiny_gpt2_dir), "--dataset.context-size", "32", "--total-analyzing-tokens", "100"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr  # a user error: one sentence, exit status 2
    assert "set overwrite=True (--overwrite)" in done.stderr and "Traceback" not in done.stderr
