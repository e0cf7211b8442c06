"""Feature store: real SQLite files written by FeatureStoreWriter and read back by FeatureStore."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import threading

import numpy as np
import pytest

from core import store as store_module
from core.store import FeatureStore, FeatureStoreWriter, SampleArrays, StoreError, json_ready
from tests.conftest import ROOT

D_SAE = 50
N_BINS = 8
K = 5
N_INTERVALS = 3
VOCAB = [f"tok{i}" for i in range(100)]
VOCAB[1], VOCAB[2], VOCAB[3] = " the", "\n", "café ✓"


def make_data(seed: int = 0) -> dict:
    """Synthetic analysis results with dead features, ties in act_count and samples."""
    rng = np.random.default_rng(seed)
    act_count = rng.integers(0, 30, size=D_SAE)
    act_count[[0, 7, 13, 31]] = 0  # dead features
    act_count[[20, 21, 22]] = 5  # ties, to check the tie-break by index
    n_tokens = 1000
    alive = act_count > 0
    max_act = np.where(alive, rng.uniform(0.5, 10, D_SAE), 0.0).astype(np.float32)
    mean_act = np.where(alive, max_act * rng.uniform(0.1, 0.9, D_SAE), 0.0).astype(np.float32)
    hist = rng.integers(0, 20, size=(D_SAE, N_BINS)) * alive[:, None]
    data = dict(
        act_count=act_count, max_act=max_act, mean_act=mean_act, density=act_count / n_tokens,
        hist_counts=hist,
        logit_pos_ids=rng.integers(0, len(VOCAB), size=(D_SAE, K)),
        logit_pos_values=np.sort(rng.normal(size=(D_SAE, K)).astype(np.float32), axis=1)[:, ::-1],
        logit_neg_ids=rng.integers(0, len(VOCAB), size=(D_SAE, K)),
        logit_neg_values=np.sort(rng.normal(size=(D_SAE, K)).astype(np.float32), axis=1),
    )
    samples: dict[tuple[int, str], tuple] = {}
    for f in np.flatnonzero(alive):
        f = int(f)

        def make(n, lo, hi):
            out = []
            for _ in range(n):
                length = int(rng.integers(3, 9))
                ids = rng.integers(0, len(VOCAB), size=length).astype(np.int32)
                acts = rng.uniform(0, lo, size=length).astype(np.float32)
                pos = int(rng.integers(0, length))
                acts[pos] = rng.uniform(lo, hi)
                out.append(SampleArrays(ids, acts, pos))
            return out

        samples[(f, "top")] = (make(4, float(max_act[f]) * 0.9, float(max_act[f])), None, None)
        edges = np.linspace(0, float(max_act[f]), N_INTERVALS + 1)
        for i in range(N_INTERVALS):
            n = 0 if i == 1 else 2  # interval_1 is an empty group
            samples[(f, f"interval_{i}")] = (make(n, edges[i], edges[i + 1]), float(edges[i]), float(edges[i + 1]))
    return {"features": data, "samples": samples, "n_tokens": n_tokens,
            "edges": np.logspace(-3, 1, N_BINS + 1).tolist()}


def write_store(path, data, *, overwrite=False, acts_dtype="float32", logit_lens=True):
    features = dict(data["features"])
    if not logit_lens:
        for key in ("logit_pos_ids", "logit_pos_values", "logit_neg_ids", "logit_neg_values"):
            features.pop(key)
    with FeatureStoreWriter(path, overwrite=overwrite, acts_dtype=acts_dtype) as w:
        w.set_meta("n_tokens", data["n_tokens"])
        w.set_meta("histogram_edges", data["edges"])
        w.set_meta("analysis_config", {"top_k": 4, "n_intervals": N_INTERVALS})
        w.set_meta("dictionary_config", {"hook_name": "blocks.6.hook_resid_post", "model_name": "gpt2",
                                         "architecture": "topk", "d_in": 16, "d_sae": D_SAE})
        w.set_meta("metrics", {"l0": np.float32(12.5), "explained_variance": 0.8, "ce_loss_recovered": float("nan")})
        w.set_meta("logit_lens_note", None if logit_lens else "skipped: no unembedding")
        w.write_vocab(VOCAB)
        w.write_features(**features)
        for (f, group), (samples, lower, upper) in data["samples"].items():
            w.write_samples(f, group, samples, lower=lower, upper=upper)
    return path


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, data):
    return write_store(tmp_path_factory.mktemp("analysis") / "features.sqlite", data)


@pytest.fixture()
def store(store_path):
    with FeatureStore(store_path) as s:
        yield s


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Round trip


def test_meta_vocab_and_summary_round_trip(store, data):
    assert store.d_sae == D_SAE and store.n_tokens == data["n_tokens"]
    assert store.meta["complete"] is True and store.meta["schema_version"] == store_module.SCHEMA_VERSION
    assert store.meta["histogram_edges"] == pytest.approx(data["edges"])
    assert store.decode([1, 2, 3, 99, 100, -1]) == [" the", "\n", "café ✓", "tok99", "<100>", "<-1>"]

    summary = store.summary()
    n_dead = int((data["features"]["act_count"] == 0).sum())
    assert (summary.n_features, summary.n_alive, summary.n_dead) == (D_SAE, D_SAE - n_dead, n_dead)
    assert summary.n_tokens == data["n_tokens"]
    # NaN is not JSON: saved as null; numpy scalars became plain numbers.
    assert summary.metrics == {"l0": 12.5, "explained_variance": 0.8, "ce_loss_recovered": None}
    assert summary.dictionary_config["hook_name"] == "blocks.6.hook_resid_post"
    assert summary.analysis_config == {"top_k": 4, "n_intervals": N_INTERVALS}
    # density histogram computed by the writer: every alive feature counted once, log10 edges up to 0
    dh = summary.density_histogram
    assert sum(dh.counts) == D_SAE - n_dead and len(dh.edges) == len(dh.counts) + 1 and dh.edges[-1] == 0.0
    d = json_ready(summary)
    json.dumps(d, allow_nan=False)
    assert set(d) == {"n_features", "n_alive", "n_dead", "n_tokens", "density_histogram", "metrics",
                      "dictionary_config", "analysis_config"}


def test_feature_stats_histogram_and_logit_lens_round_trip(store, data):
    f = data["features"]
    for i in range(D_SAE):
        rec = store.get_feature(i)
        assert rec.stats.index == i and rec.d_sae == D_SAE
        assert rec.stats.act_count == f["act_count"][i]
        assert rec.stats.density == pytest.approx(f["density"][i])
        assert rec.stats.max_act == pytest.approx(f["max_act"][i])
        assert rec.stats.mean_act == pytest.approx(f["mean_act"][i])
        # Shared edges (as version 1 stores have them) are cut to the feature's bins, one empty bin each side.
        counts = f["hist_counts"][i]
        nonzero = np.flatnonzero(counts)
        start, end = (max(nonzero[0] - 1, 0), min(nonzero[-1] + 2, N_BINS)) if nonzero.size else (0, N_BINS)
        assert rec.histogram.counts == counts[start:end].tolist()
        assert rec.histogram.edges == pytest.approx(data["edges"][start:end + 1])
        pos, neg = rec.logit_lens.positive, rec.logit_lens.negative
        assert [t.token_id for t in pos] == f["logit_pos_ids"][i].tolist()
        assert [t.value for t in pos] == pytest.approx(f["logit_pos_values"][i].tolist())
        assert [t.token for t in neg] == [VOCAB[j] for j in f["logit_neg_ids"][i]]
        assert [t.value for t in neg] == pytest.approx(f["logit_neg_values"][i].tolist())
        assert rec.logit_lens.note is None


def test_samples_round_trip_and_interval_order(store, data):
    for i in range(D_SAE):
        rec = store.get_feature(i)
        if data["features"]["act_count"][i] == 0:
            assert rec.top == [] and rec.intervals == []
            continue
        assert [g.name for g in rec.intervals] == [f"interval_{j}" for j in reversed(range(N_INTERVALS))]
        groups = {"top": (rec.top, None, None), **{g.name: (g.samples, g.lower, g.upper) for g in rec.intervals}}
        for name, (got, lower, upper) in groups.items():
            expected, exp_lower, exp_upper = data["samples"][(i, name)]
            assert (lower, upper) == (exp_lower, exp_upper)
            assert len(got) == len(expected)
            for s, e in zip(got, expected):  # rank order preserved
                assert s.token_ids == e.token_ids.tolist()
                assert s.tokens == [VOCAB[t] for t in e.token_ids]
                assert s.acts == pytest.approx(e.acts.tolist())
                assert s.max_pos == e.max_pos
                assert s.max_act == pytest.approx(float(e.acts[e.max_pos]))
        assert groups["interval_1"][0] == []  # an empty group is kept, with its bounds


def test_get_samples(store, data):
    alive = int(np.flatnonzero(data["features"]["act_count"])[0])
    group = store.get_samples(alive, "interval_2")
    expected, lower, upper = data["samples"][(alive, "interval_2")]
    assert (group.name, group.lower, group.upper) == ("interval_2", lower, upper)
    assert [s.token_ids for s in group.samples] == [e.token_ids.tolist() for e in expected]
    assert store.get_samples(alive, "top").samples == store.get_feature(alive).top
    assert store.get_samples(0, "top").samples == []  # dead feature: nothing written, empty group
    with pytest.raises(ValueError, match="interval_<i>"):
        store.get_samples(alive, "bottom")


def test_records_as_json_match_the_api_shapes(store, data):
    alive = int(np.flatnonzero(data["features"]["act_count"])[0])
    d = json_ready(store.get_feature(alive))
    json.dumps(d, allow_nan=False)
    assert set(d) == {"index", "act_count", "density", "max_act", "mean_act", "d_sae", "histogram",
                      "logit_lens", "top", "intervals"}
    assert set(d["histogram"]) == {"edges", "counts"}
    assert set(d["logit_lens"]) == {"positive", "negative", "note"}
    assert set(d["logit_lens"]["positive"][0]) == {"token_id", "token", "value"}
    assert set(d["top"][0]) == {"token_ids", "tokens", "acts", "max_pos", "max_act"}
    assert set(d["intervals"][0]) == {"name", "lower", "upper", "samples"}
    assert d["intervals"][0]["name"] == f"interval_{N_INTERVALS - 1}"
    _, page = store.list_features(limit=1)
    assert set(json_ready(page[0])) == {"index", "act_count", "density", "max_act", "mean_act"}


def test_float16_acts_and_missing_logit_lens(tmp_path, data):
    path = write_store(tmp_path / "features.sqlite", data, acts_dtype="float16", logit_lens=False)
    with FeatureStore(tmp_path) as s:  # the analysis folder works as well as the file
        assert s.meta["sample_acts_dtype"] == "float16"
        i = int(np.flatnonzero(data["features"]["act_count"])[0])
        rec = s.get_feature(i)
        expected = data["samples"][(i, "top")][0]
        for got, e in zip(rec.top, expected):
            assert got.acts == pytest.approx(e.acts.tolist(), rel=1e-3, abs=1e-3)
            assert got.max_act == pytest.approx(float(e.acts[e.max_pos]), rel=1e-6)  # kept at full precision
        assert rec.logit_lens.positive == [] and rec.logit_lens.negative == []
        assert rec.logit_lens.note == "skipped: no unembedding"
    assert path.exists()


# ---------------------------------------------------------------------------------------------
# Listing


def reference_order(data, sort, descending, mask=None):
    f = data["features"]
    keys = {"index": np.arange(D_SAE), "density": f["density"], "max_act": f["max_act"].astype(np.float64),
            "mean_act": f["mean_act"].astype(np.float64), "act_count": f["act_count"]}[sort]
    primary = -keys if descending else keys
    order = np.lexsort((np.arange(D_SAE), primary))  # ties by ascending index
    if mask is not None:
        order = order[mask[order]]
    return order.tolist()


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("sort", store_module.SORT_KEYS)
def test_list_features_sorting(store, data, sort, descending):
    total, page = store.list_features(sort=sort, descending=descending, limit=D_SAE)
    assert total == D_SAE
    assert [s.index for s in page] == reference_order(data, sort, descending)


def test_list_features_filters_and_pagination(store, data):
    f = data["features"]
    min_d, max_d, min_max = 0.005, 0.02, 3.0
    mask = (f["density"] >= min_d) & (f["density"] <= max_d) & (f["max_act"] >= np.float32(min_max))
    expected = reference_order(data, "density", False, mask)
    assert 3 < len(expected) < D_SAE
    got = []
    for offset in range(0, len(expected) + 3, 3):
        total, page = store.list_features(sort="density", descending=False, min_density=min_d, max_density=max_d,
                                          min_max_act=min_max, offset=offset, limit=3)
        assert total == len(expected)
        got += [s.index for s in page]
    assert got == expected
    # a filter bound is inclusive
    exact = float(f["density"][5])
    assert 5 in [s.index for s in store.list_features(min_density=exact, max_density=exact, limit=500)[1]]
    # dead features can be filtered out with a tiny min_density
    total, _ = store.list_features(min_density=1e-12)
    assert total == int((f["act_count"] > 0).sum())
    assert store.list_features(offset=D_SAE + 10)[1] == []


def test_list_features_rejects_bad_arguments(store):
    with pytest.raises(ValueError, match="allowed values: 'index', 'density', 'max_act', 'mean_act', 'act_count'"):
        store.list_features(sort="name")
    with pytest.raises(ValueError, match="offset"):
        store.list_features(offset=-1)


def test_random_alive_feature_never_dead(store, data, tmp_path):
    alive = set(np.flatnonzero(data["features"]["act_count"]).tolist())
    rng = random.Random(0)
    seen = {store.random_alive_feature(rng) for _ in range(2000)}
    assert seen == alive  # never a dead one, and every alive one reachable
    assert store.random_alive_feature() in alive

    dead = make_data()
    dead["features"]["act_count"] = np.zeros(D_SAE, dtype=np.int64)
    dead["samples"] = {}
    with FeatureStore(write_store(tmp_path / "dead.sqlite", dead)) as s:
        with pytest.raises(LookupError, match="no alive features"):
            s.random_alive_feature()
        assert s.summary().n_alive == 0


def test_get_feature_out_of_range(store):
    for bad in (-1, D_SAE):
        with pytest.raises(IndexError, match=f"0..{D_SAE - 1}"):
            store.get_feature(bad)
    assert store.get_feature(np.int64(3)).stats.index == 3


def test_concurrent_readers_share_one_store(store):
    expected = {i: json_ready(store.get_feature(i)) for i in range(D_SAE)}
    errors = []

    def work(offset):
        try:
            for k in range(60):
                i = (offset + k) % D_SAE
                assert json_ready(store.get_feature(i)) == expected[i]
                store.list_features(sort="density", limit=5)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t * 7,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---------------------------------------------------------------------------------------------
# Writer safety


def test_exception_in_writer_leaves_no_store(tmp_path, data):
    path = tmp_path / "features.sqlite"
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureStoreWriter(path) as w:
            w.write_features(**data["features"])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_exception_in_writer_keeps_existing_store(tmp_path, data):
    path = write_store(tmp_path / "features.sqlite", data)
    before = sha(path)
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureStoreWriter(path, overwrite=True) as w:
            w.set_meta("n_tokens", 1)
            raise RuntimeError("boom")
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.sqlite"]
    FeatureStore(path).close()


def test_existing_store_needs_overwrite(tmp_path, data):
    path = write_store(tmp_path / "features.sqlite", data)
    with pytest.raises(StoreError, match="already exists.*overwrite=True"):
        FeatureStoreWriter(path)
    other = make_data(seed=1)
    write_store(path, other, overwrite=True)
    with FeatureStore(path) as s:
        assert s.get_feature(4).stats.act_count == other["features"]["act_count"][4]


def test_writer_validates_inputs(tmp_path, data):
    path = tmp_path / "features.sqlite"
    bad = dict(data["features"], mean_act=np.full(D_SAE, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="mean_act has 50 NaN"):
        with FeatureStoreWriter(path) as w:
            w.write_features(**bad)
    with pytest.raises(ValueError, match="hist_counts"):
        with FeatureStoreWriter(path) as w:
            w.write_features(**dict(data["features"], hist_counts=np.zeros((D_SAE - 1, N_BINS), dtype=int)))
    with pytest.raises(ValueError, match="max_pos 9"):
        with FeatureStoreWriter(path) as w:
            w.write_samples(1, "top", [SampleArrays(np.arange(3, dtype=np.int32), np.ones(3, np.float32), 9)])
    with pytest.raises(ValueError, match="not valid"):
        with FeatureStoreWriter(path) as w:
            w.write_samples(1, "interval_x", [])
    with pytest.raises(ValueError, match="set by the writer"):
        with FeatureStoreWriter(path) as w:
            w.set_meta("complete", True)
    # a store missing required meta is refused at close, and nothing is left behind
    with pytest.raises(StoreError, match="n_tokens"):
        with FeatureStoreWriter(path) as w:
            w.set_meta("histogram_edges", data["edges"])
            w.write_features(**data["features"])
    with pytest.raises(StoreError, match="histogram_edges must be 9"):
        with FeatureStoreWriter(path) as w:
            w.set_meta("n_tokens", 5)
            w.set_meta("histogram_edges", [0.0, 1.0])
            w.write_features(**data["features"])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Refusing bad files


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(StoreError, match="No feature store at .*run the analysis"):
        FeatureStore(tmp_path / "nope.sqlite")
    with pytest.raises(StoreError, match="No feature store at"):
        FeatureStore(tmp_path)  # a folder without features.sqlite


@pytest.mark.parametrize("content", [b"", b"hello, not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 200])
def test_garbage_file_is_refused(tmp_path, content):
    path = tmp_path / "features.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=str(path)):
        FeatureStore(path)


def test_truncated_file_is_refused(tmp_path, store_path):
    path = tmp_path / "features.sqlite"
    raw = store_path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StoreError, match="truncated.*rerun the analysis"):
        FeatureStore(path)


def test_corruption_found_while_reading_is_a_store_error(tmp_path, store_path):
    path = tmp_path / "features.sqlite"
    raw = bytearray(store_path.read_bytes())
    page = 4096
    for start in range(2 * page, len(raw), page):  # keep the header page, scramble the b-tree pages
        raw[start:start + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="corrupt|not a feature store"):
        with FeatureStore(path) as s:
            for i in range(D_SAE):
                s.get_feature(i)
            s.list_features(sort="density")


def test_sqlite_file_that_is_not_a_store(tmp_path):
    path = tmp_path / "features.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(path)


def test_interrupted_analysis_is_refused_with_rerun_message(tmp_path, data):
    path = tmp_path / "features.sqlite"
    writer = FeatureStoreWriter(path)  # an analysis that never finished
    writer.write_features(**data["features"])
    try:
        assert (tmp_path / "features.sqlite.partial").exists() and not path.exists()
        with pytest.raises(StoreError, match="incomplete.*rerun the analysis"):
            FeatureStore(tmp_path)
    finally:
        writer.abort()
    # a store file whose "complete" flag is missing (e.g. copied mid-write) is refused too
    shutil.copy(write_store(tmp_path / "src.sqlite", data), path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'complete'")
    conn.close()
    with pytest.raises(StoreError, match="incomplete.*rerun the analysis"):
        FeatureStore(path)


def test_newer_schema_version_is_refused(tmp_path, store_path):
    path = tmp_path / "features.sqlite"
    shutil.copy(store_path, path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(store_module.SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(StoreError, match="newer.*upgrade"):
        FeatureStore(path)


def test_reader_is_read_only(store_path):
    before = sha(store_path)
    with FeatureStore(store_path) as s:
        s.get_feature(3)
        s.list_features(sort="mean_act")
        s.summary()
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            s.query("DELETE FROM meta")
        with pytest.raises(sqlite3.OperationalError):
            s.query("CREATE TABLE scratch (x)")
        assert s.query("SELECT COUNT(*) FROM features") == [(D_SAE,)]
    assert sha(store_path) == before
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["features.sqlite"]  # no journal / wal files
    with pytest.raises(StoreError, match="closed"):
        s.get_feature(3)


# ---------------------------------------------------------------------------------------------
# Indexes


def plan(store, sql, params=()):
    return " | ".join(row[-1] for row in store.query("EXPLAIN QUERY PLAN " + sql, params))


def test_queries_use_indexes(store):
    for sql in (store_module._SQL_FEATURE_SAMPLES, store_module._SQL_FEATURE_GROUPS, store._sql_feature):
        p = plan(store, sql, (3,))
        assert "SEARCH" in p and ("PRIMARY KEY" in p or "INTEGER PRIMARY KEY" in p), p
        assert "TEMP B-TREE" not in p, p
    for sort in store_module.SORT_KEYS:
        for descending in (True, False):
            p = plan(store, store_module._list_sql(sort, descending, ""), (10, 0))
            # ordered by walking an index; only ties may need a small sort (RIGHT PART)
            assert "USE TEMP B-TREE FOR ORDER BY" not in p, (sort, p)
    where, params = store_module._feature_filters(0.001, 0.5, None)
    p = plan(store, f"SELECT COUNT(*) FROM features{where}", params)
    assert "features_by_density" in p, p
    names = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"features_by_density", "features_by_max_act", "features_by_mean_act", "features_by_act_count"} <= names


# ---------------------------------------------------------------------------------------------
# Per-feature histograms, the token index, and stores of schema version 1

V1_STORE = ROOT / "tests" / "data" / "store_v1.sqlite"
"""A real schema-1 store: `write_store(path, make_data(0))` run with the FeatureStoreWriter of schema
version 1 (before per-feature histograms and the token index)."""


def test_a_schema_1_store_still_opens_and_answers(tmp_path, data):
    path = tmp_path / "features.sqlite"
    shutil.copy(V1_STORE, path)
    with FeatureStore(path) as old:
        assert old.schema_version == 1 and not old.has_token_index
        assert old.d_sae == D_SAE and old.summary().n_tokens == data["n_tokens"]
        for i in range(D_SAE):
            rec = old.get_feature(i)
            assert rec.stats.act_count == data["features"]["act_count"][i]
            assert sum(rec.histogram.counts) == int(data["features"]["hist_counts"][i].sum())
            assert len(rec.histogram.edges) == len(rec.histogram.counts) + 1
        assert old.list_features(sort="index", descending=False, indices=[3, 5], limit=10)[0] == 2
        with pytest.raises(store_module.FeatureUnavailable, match="schema version 1.*rerun the analysis"):
            old.search_tokens(" the")


def test_a_feature_histogram_spans_its_own_range(tmp_path, data):
    """A feature peaking at 5 is drawn on its own axis, not on the analysis-wide one that runs to 160."""
    features = dict(data["features"])
    edges, counts = [], []
    for i in range(D_SAE):
        top = max(float(features["max_act"][i]), 1e-3)
        edges.append(np.geomspace(top / 100, top, 4 + i % 5))
        counts.append(np.arange(3 + i % 5))
    features.update(hist_counts=counts, hist_edges=edges)
    path = tmp_path / "features.sqlite"
    with FeatureStoreWriter(path) as w:
        w.set_meta("n_tokens", data["n_tokens"])
        w.write_vocab(VOCAB)
        w.write_features(**features)
    with FeatureStore(path) as s:
        assert "histogram_edges" not in s.meta  # not needed: every feature has its own edges
        for i in (0, 4, 17):
            h = s.get_feature(i).histogram
            assert h.edges == pytest.approx(edges[i].tolist()) and h.counts == counts[i].tolist()
    bad = dict(features, hist_edges=[e[::-1] for e in edges])
    with pytest.raises(ValueError, match="increasing"):
        with FeatureStoreWriter(tmp_path / "bad.sqlite") as w:
            w.set_meta("n_tokens", 1)
            w.write_features(**bad)
    with pytest.raises(ValueError, match=r"\[n\] and \[n \+ 1\]"):
        with FeatureStoreWriter(tmp_path / "bad.sqlite") as w:
            w.write_features(**dict(features, hist_edges=[e[:-1] for e in edges]))


TOKEN_INDEX = {  # token id -> (occurrences, [(feature, max activation on it)], strongest first)
    1: (40, [(5, 9.0), (8, 4.0), (2, 1.0)]),  # " the"
    2: (12, [(8, 6.0), (3, 2.5)]),  # "\n"
    4: (3, [(5, 0.5)]),  # "tok4"
}


def write_token_store(path, data, tokenizer_json=None):
    n_slots = 4
    occurrences = np.zeros(len(VOCAB), np.int64)
    ids = np.full((len(VOCAB), n_slots), -1, np.int32)
    acts = np.zeros((len(VOCAB), n_slots), np.float32)
    for t, (count, entries) in TOKEN_INDEX.items():
        occurrences[t] = count
        for j, (f, v) in enumerate(entries):
            ids[t, j], acts[t, j] = f, v
    with FeatureStoreWriter(path) as w:
        w.set_meta("n_tokens", data["n_tokens"])
        w.set_meta("histogram_edges", data["edges"])
        w.write_vocab(VOCAB)
        w.write_token_index(occurrences, ids, acts, tokenizer_json=tokenizer_json)
        w.write_features(**data["features"])
    return path


def test_token_search_ranks_features_by_their_max_activation_on_the_token(tmp_path, data):
    with FeatureStore(write_token_store(tmp_path / "features.sqlite", data)) as s:
        assert s.has_token_index and s.meta["token_index_size"] == 4
        one = s.search_tokens(" the")
        assert [(t.token_id, t.token, t.occurrences) for t in one.tokens] == [(1, " the", 40)]
        assert [(m.index, m.acts) for m in one.matches] == [(5, [9.0]), (8, [4.0]), (2, [1.0])]
        assert json_ready(s.search_tokens(token_ids=[1], limit=2))["matches"] == [
            {"index": 5, "acts": [9.0], "n_tokens": 1, "score": 9.0},
            {"index": 8, "acts": [4.0], "n_tokens": 1, "score": 4.0}]
        # A phrase: features among the strongest of more of its tokens first, then by the summed maxima.
        phrase = s.search_tokens(" the\n")  # no tokenizer stored: longest vocabulary matches, " the" + "\n"
        assert [t.token_id for t in phrase.tokens] == [1, 2]
        assert [(m.index, m.acts, m.n_tokens) for m in phrase.matches] == [
            (8, [4.0, 6.0], 2), (5, [9.0, None], 1), (3, [None, 2.5], 1), (2, [1.0, None], 1)]
        # A token that never occurred: an honest empty answer, not an error.
        never = s.search_tokens("tok7")
        assert never.tokens[0].occurrences == 0 and never.matches == []
        assert [t.token_id for t in s.search_tokens(" the the").tokens] == [1]  # each token once
        with pytest.raises(IndexError, match="token id 100 is not in the vocabulary"):
            s.search_tokens(token_ids=[100])
        with pytest.raises(ValueError, match="empty"):
            s.search_tokens("")
        with pytest.raises(LookupError, match="No vocabulary token matches"):
            s.search_tokens("€€")
        with pytest.raises(ValueError, match="limit is 16"):
            s.search_tokens(token_ids=list(range(17)))


def test_token_search_splits_a_phrase_with_the_stored_tokenizer(tmp_path, data):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(VOCAB) if token.strip() and token.isascii()}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="tok0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    with FeatureStore(write_token_store(tmp_path / "f.sqlite", data, tokenizer.to_str())) as s:
        assert s.tokenize("tok4 tok9") == [4, 9]  # the tokenizer's split (the fallback would fail on the space)
        assert [m.index for m in s.search_tokens("tok4 tok9").matches] == [5]


def test_list_features_restricted_to_given_indices(store, data):
    total, page = store.list_features(sort="index", descending=False, indices=[40, 3, 3, 12, 999])
    assert total == 3 and [f.index for f in page] == [3, 12, 40]
    assert store.list_features(indices=[])[0] == 0
    assert set(store.feature_stats([1, 2, 999])) == {1, 2}
