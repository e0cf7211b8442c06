"""Feature store: one self-contained SQLite file per analysis (`analysis/<name>/features.sqlite`).

The analyzer writes it with `FeatureStoreWriter`; the server and notebooks read it with
`FeatureStore`, the one reader API. Everything needed to show a feature is inside the file,
including the vocabulary strings, so no tokenizer or model is needed to browse it.

Schema (version 2; version 1 stores are read too, see below)
------------------------------------------------------------
``meta(key TEXT PRIMARY KEY, value TEXT)`` -- every value is JSON. Keys the writer always sets:
    ``schema_version`` (int), ``complete`` (true, written last, only by a clean close),
    ``d_sae`` (int), ``n_tokens`` (int, tokens analyzed), ``density_histogram``
    ({"edges", "counts"} over alive features of log10(density); computed from the densities when
    the analyzer does not set it; dead features are counted in ``n_dead``, not here),
    ``analysis_config``, ``dictionary_config``, ``metrics`` (dicts, ``{}`` when not set),
    ``logit_lens_note`` (str or null), ``sample_acts_dtype`` ("float32" or "float16"),
    ``created_at`` (ISO 8601, UTC); ``histogram_edges`` (list of n_bins+1 floats) when some
    feature's histogram has no edges of its own (always in version 1, where every feature shares
    them); ``token_index_size`` (int) with the token index; plus any other key the analyzer sets.
    NaN/inf are not JSON, so they are stored as null.
``vocab(token_id INTEGER PRIMARY KEY, token TEXT)`` -- the tokenizer's strings, one per token.
``features(feature_index INTEGER PRIMARY KEY, act_count INTEGER, density REAL, max_act REAL,
    mean_act REAL, hist_counts BLOB, logit_pos_ids BLOB, logit_pos_values BLOB,
    logit_neg_ids BLOB, logit_neg_values BLOB, hist_edges BLOB)`` -- one row per feature 0..d_sae-1.
    Blobs are little-endian arrays: hist_counts int64 [n_bins], hist_edges float64 [n_bins + 1]
    (the feature's own bin edges, over the range where its activations lie; NULL: the shared meta
    ``histogram_edges``; version 1 has no such column), logit ids int32 [k], logit values float32
    [k] (logit blobs are NULL when the logit lens was skipped). Indexed on density, max_act,
    mean_act and act_count so sorted / filtered listings walk an index.
``sample_groups(feature_index, group_name, lower REAL, upper REAL, n_samples)`` -- one row per
    written group, primary key (feature_index, group_name). ``group_name`` is "top" or
    "interval_<i>" (interval_0 holds the lowest activations); lower/upper bound an interval's
    activations (NULL for "top").
``samples(feature_index, group_name, rank, token_ids BLOB, acts BLOB, max_pos, max_act)`` --
    clustered on the primary key (feature_index, group_name, rank) (WITHOUT ROWID), so all samples
    of a feature are one contiguous index range. token_ids is int32 [L], acts is float32 or float16
    [L] (meta ``sample_acts_dtype``), max_pos is the position of the activating token in the window
    and max_act = acts[max_pos] (kept at full precision).
``token_index(token_id INTEGER PRIMARY KEY, occurrences INTEGER, feature_ids BLOB, max_acts BLOB)``
    -- (version 2) one row per vocabulary token that occurred in the analyzed text: how many
    analyzed positions held it, and the (at most ``token_index_size``) features with the largest
    activation on it, strongest first: feature_ids int32 [n], max_acts float32 [n] (each feature's
    maximum activation on this token).
``tokenizer(id INTEGER PRIMARY KEY, json TEXT)`` -- (version 2, optional) one row: the model's
    Hugging Face ``tokenizers`` JSON, so token search splits a phrase exactly as the model does.

Older stores: a version 1 store (no hist_edges column, no token index) opens as before; its
histograms use the shared edges cut to the bins where the feature has mass (one empty bin kept on
each side), and token search answers `FeatureUnavailable` ("rerun the analysis").

Token search (`FeatureStore.search_tokens`) answers from the token index alone, without the
model: a query is split into the model's tokens (with the stored tokenizer; without one, by
longest matches against the vocabulary strings), and a feature's result lists its maximum
activation on each of those tokens (null where it is not among that token's strongest features).
Features are ranked by how many of the query's tokens they are among the strongest features of,
then by the sum of those maxima, then by index. For one token that is simply "its strongest
features by their max activation on it". The index is context-free: for a phrase it says which
features fire strongly on its tokens anywhere in the analyzed text, not on the phrase in context
(run the phrase as custom text for that).

Integrity: the writer fills a sibling ``features.sqlite.partial`` and renames it over the final
path only after a clean close, so a file at the final path is complete; the reader still checks
``complete`` and the schema version and refuses anything else with a `StoreError`.

Errors the reader raises, for callers that map them (the server): `StoreError` -- the file is
missing, not a store, incomplete, corrupt or too new (HTTP 500 / "rerun the analysis");
`LookupError` (`IndexError` for an out-of-range feature or token id, `FeatureUnavailable` for
something an older store lacks, `LookupError` when no feature is alive or a query matches no
token) -- HTTP 404; `ValueError` -- a malformed argument (unknown sort key, bad group name, an
empty or too long query) -- HTTP 422.

Thread safety: a `FeatureStore` holds one read-only connection opened with
``check_same_thread=False``; every public method takes the store's lock, so one instance can be
shared by all server threads (reading a feature takes well under a millisecond, so the lock is
never the bottleneck).
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import random
import re
import sqlite3
import threading
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .errors import FeatureUnavailable, StoreError
from .files import publish
from .layout import STORE_FILENAME

SCHEMA_VERSION = 2
PARTIAL_SUFFIX = ".partial"
SORT_KEYS = ("index", "density", "max_act", "mean_act", "act_count")
ACTS_DTYPES = ("float32", "float16")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_GROUP_RE = re.compile(r"^(top|interval_(0|[1-9][0-9]*))$")
_SORT_COLUMNS = {"index": "feature_index", "density": "density", "max_act": "max_act",
                 "mean_act": "mean_act", "act_count": "act_count"}
_RESERVED_META = ("schema_version", "complete", "sample_acts_dtype")
_DENSITY_BINS = 50
MAX_QUERY_TOKENS = 16
"""Token search takes phrases of at most this many tokens."""
MAX_QUERY_CHARS = 200

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE vocab (token_id INTEGER PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE features (
    feature_index INTEGER PRIMARY KEY,
    act_count INTEGER NOT NULL,
    density REAL NOT NULL,
    max_act REAL NOT NULL,
    mean_act REAL NOT NULL,
    hist_counts BLOB NOT NULL,
    logit_pos_ids BLOB, logit_pos_values BLOB,
    logit_neg_ids BLOB, logit_neg_values BLOB,
    hist_edges BLOB
);
CREATE TABLE sample_groups (
    feature_index INTEGER NOT NULL,
    group_name TEXT NOT NULL,
    lower REAL, upper REAL,
    n_samples INTEGER NOT NULL,
    PRIMARY KEY (feature_index, group_name)
) WITHOUT ROWID;
CREATE TABLE samples (
    feature_index INTEGER NOT NULL,
    group_name TEXT NOT NULL,
    rank INTEGER NOT NULL,
    token_ids BLOB NOT NULL,
    acts BLOB NOT NULL,
    max_pos INTEGER NOT NULL,
    max_act REAL NOT NULL,
    PRIMARY KEY (feature_index, group_name, rank)
) WITHOUT ROWID;
CREATE TABLE token_index (
    token_id INTEGER PRIMARY KEY,
    occurrences INTEGER NOT NULL,
    feature_ids BLOB NOT NULL,
    max_acts BLOB NOT NULL
);
CREATE TABLE tokenizer (id INTEGER PRIMARY KEY CHECK (id = 0), json TEXT NOT NULL);
"""
# Built after the bulk insert (faster than maintaining them row by row).
_INDEXES = """
CREATE INDEX features_by_density ON features(density);
CREATE INDEX features_by_max_act ON features(max_act);
CREATE INDEX features_by_mean_act ON features(mean_act);
CREATE INDEX features_by_act_count ON features(act_count);
"""

_SQL_FEATURE = ("SELECT feature_index, act_count, density, max_act, mean_act, hist_counts, logit_pos_ids,"
                " logit_pos_values, logit_neg_ids, logit_neg_values, {hist_edges} FROM features WHERE feature_index = ?")
_SQL_FEATURE_GROUPS = "SELECT group_name, lower, upper FROM sample_groups WHERE feature_index = ?"
_SQL_FEATURE_SAMPLES = ("SELECT group_name, rank, token_ids, acts, max_pos, max_act FROM samples"
                        " WHERE feature_index = ? ORDER BY group_name, rank")
_SQL_GROUP = "SELECT lower, upper FROM sample_groups WHERE feature_index = ? AND group_name = ?"
_SQL_GROUP_SAMPLES = ("SELECT token_ids, acts, max_pos, max_act FROM samples"
                      " WHERE feature_index = ? AND group_name = ? ORDER BY rank")
_STATS_COLUMNS = "feature_index, act_count, density, max_act, mean_act"


# ----------------------------------------------------------------------------------------------
# Records returned by the reader. They are also the server's response models (server/API.md): a
# field's description is the API documentation's, and `json_ready(record)` is the record as JSON.


def described(description: str) -> Any:
    """A dataclass field (without default) documented by `description`, which FastAPI's OpenAPI
    schema shows for it (Pydantic reads the field's metadata)."""
    return field(metadata={"description": description})


@dataclass
class Histogram:
    edges: list[float] = described("n + 1 bin edges")
    counts: list[int] = described("n counts")


@dataclass
class FeatureStats:
    index: int
    act_count: int = described("analyzed tokens on which the feature was active (> 0)")
    density: float = described("act_count / n_tokens")
    max_act: float
    mean_act: float = described("mean activation over the tokens where the feature was active")


@dataclass
class Sample:
    token_ids: list[int]
    tokens: list[str] = described("vocabulary strings, one per token (' the' keeps its space)")
    acts: list[float] = described("the feature's activation on each token of the context window")
    max_pos: int = described("position in the window of the token the sample was chosen for")
    max_act: float


@dataclass
class SampleGroup:
    name: str = described('"top" or "interval_<i>" (interval_0 holds the lowest activations)')
    lower: float | None = described("lowest activation of the interval (null for \"top\")")
    upper: float | None = described("highest activation of the interval (null for \"top\")")
    samples: list[Sample]


@dataclass
class LogitToken:
    token_id: int
    token: str
    value: float


@dataclass
class LogitLens:
    positive: list[LogitToken] = described("tokens the feature's decoder direction promotes most, strongest first")
    negative: list[LogitToken] = described("tokens it suppresses most, strongest first")
    note: str | None = described("why the logit lens is missing, or how to read it")


@dataclass
class FeatureRecord(FeatureStats):
    """One feature: its statistics and everything the viewer shows of it."""

    d_sae: int
    histogram: Histogram = described("histogram of the feature's nonzero activations")
    logit_lens: LogitLens
    top: list[Sample] = described("top-activating contexts, highest first")
    intervals: list[SampleGroup] = described("contexts sampled per activation interval, highest interval first")

    @property
    def stats(self) -> FeatureStats:
        """The feature's statistics alone (as `FeatureStore.list_features` lists them)."""
        return FeatureStats(self.index, self.act_count, self.density, self.max_act, self.mean_act)


@dataclass
class StoreSummary:
    n_features: int
    n_alive: int = described("features active on at least one analyzed token")
    n_dead: int
    n_tokens: int
    density_histogram: Histogram = described("histogram of log10(density) over alive features")
    metrics: dict
    dictionary_config: dict
    analysis_config: dict


@dataclass
class QueryToken:
    token_id: int
    token: str
    occurrences: int = described("analyzed positions that held this token (0: it never occurred)")


@dataclass
class TokenMatch:
    index: int = described("the feature")
    acts: list[float | None] = described(
        "per query token, the feature's max activation on it (null: not among its strongest features)")
    n_tokens: int = described("how many of the query's tokens it is among the strongest features of")
    score: float = described("sum of acts (the ranking key after n_tokens)")


@dataclass
class TokenSearch:
    """The answer of `FeatureStore.search_tokens` (see the module docstring for the semantics)."""

    tokens: list[QueryToken] = described("the query's tokens, in order, each once")
    matches: list[TokenMatch] = described("features ranked by n_tokens, then score, then index")
    index_size: int = described("features the analysis kept per token (a token's list is complete up to this many)")


class SampleArrays(NamedTuple):
    """One sample context as the analyzer hands it to `FeatureStoreWriter.write_samples`."""

    token_ids: np.ndarray
    """int32 [L] token ids of the context window."""
    acts: np.ndarray
    """float32 [L] the feature's activation on each token."""
    max_pos: int
    """Position of the activating token inside the window."""


# ----------------------------------------------------------------------------------------------
# Helpers shared by writer and reader.


def json_ready(value: Any) -> Any:
    """numpy -> Python, a dataclass (a record) -> dict, NaN/inf -> None (JSON has neither), recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def density_histogram(density: np.ndarray, n_bins: int = _DENSITY_BINS) -> dict[str, list]:
    """{"edges", "counts"} of log10(density) over alive features (density > 0), edges from
    the decade below the rarest alive feature up to 0 (density 1)."""
    density = np.asarray(density, dtype=np.float64)
    alive = np.log10(density[density > 0])
    low = math.floor(float(alive.min())) if alive.size else -6.0
    low = min(low, -1.0)
    counts, edges = np.histogram(alive, bins=n_bins, range=(low, 0.0))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def resolve_store_path(path: str | Path) -> Path:
    """The store file for `path`: the file itself, or `<path>/features.sqlite` for an analysis folder."""
    path = Path(path).expanduser()
    return path / STORE_FILENAME if path.is_dir() else path


def _interval_number(group: str) -> int:
    return int(group.split("_", 1)[1])


def _check_group(group: str) -> None:
    if not isinstance(group, str) or not _GROUP_RE.match(group):
        raise ValueError(f"sample group {group!r} is not valid; use 'top' or 'interval_<i>' (interval_0 = lowest).")


# ----------------------------------------------------------------------------------------------
# Writer


class FeatureStoreWriter:
    """Writes one analysis into a new feature store; use as a context manager.

    Rows go into `<path>.partial` inside one transaction; only a clean `close()` (or a `with`
    block left without an exception) marks the store complete and renames it over `path`.
    On an exception the partial file is deleted and an existing store at `path` is untouched.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, acts_dtype: str = "float32") -> None:
        self.path = Path(path).expanduser()
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        if acts_dtype not in ACTS_DTYPES:
            raise ValueError(f"acts_dtype is {acts_dtype!r}; allowed values: {', '.join(map(repr, ACTS_DTYPES))}.")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; pass the store file, e.g. {self.path / STORE_FILENAME}.")
        if self.path.exists() and not overwrite:
            raise StoreError(f"A feature store already exists at {self.path}; pass overwrite=True "
                             "(AnalysisConfig.overwrite) to replace it, or choose another analysis name.")
        self.acts_dtype = acts_dtype
        self._acts_np = np.dtype("<f4") if acts_dtype == "float32" else np.dtype("<f2")
        self._d_sae: int | None = None
        self._n_bins: int | None = None
        self._densities: np.ndarray | None = None
        self._vocab_size: int | None = None
        self._groups_written: set[tuple[int, str]] = set()
        self._max_sample_feature = -1
        self._meta: dict[str, Any] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial_path.unlink(missing_ok=True)  # leftover of an interrupted run
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.partial_path, isolation_level=None)
        try:
            # The partial file is thrown away on any failure, so durability while writing is not needed;
            # a MEMORY journal keeps statement rollback working.
            self._conn.execute("PRAGMA journal_mode=MEMORY")
            self._conn.execute("PRAGMA synchronous=OFF")
            self._conn.executescript(_SCHEMA)
            self._conn.execute("BEGIN")
        except BaseException:
            self.abort()
            raise
        self._put_meta("schema_version", SCHEMA_VERSION)
        self._put_meta("sample_acts_dtype", acts_dtype)

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> "FeatureStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writing ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"The writer for {self.path} is already closed; open a new FeatureStoreWriter.")
        return self._conn

    def _put_meta(self, key: str, value: Any) -> None:
        value = json_ready(value)
        text = json.dumps(value, allow_nan=False)
        self._connection().execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, text))
        self._meta[key] = value

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value (numpy values are converted, NaN/inf become null)."""
        if key in _RESERVED_META:
            raise ValueError(f"meta key {key!r} is set by the writer itself; choose another key.")
        try:
            self._put_meta(key, value)
        except TypeError as e:
            raise ValueError(f"meta {key!r} is not JSON-serializable ({e}); pass plain dicts, lists, numbers and strings.") from e

    def write_vocab(self, tokens: Sequence[str]) -> None:
        """The tokenizer's string for each token id (tokens[i] is token id i), decoded one token at a time."""
        if self._vocab_size is not None:
            raise StoreError(f"write_vocab was already called for {self.path}; call it once.")
        # Lone surrogates (from odd tokenizers) cannot be stored as UTF-8; replace them.
        rows = ((i, t.encode("utf-8", "replace").decode("utf-8")) for i, t in enumerate(tokens))
        self._connection().executemany("INSERT INTO vocab(token_id, token) VALUES (?, ?)", rows)
        self._vocab_size = len(tokens)

    def write_features(self, *, act_count, max_act, mean_act, density, hist_counts, hist_edges=None,
                       logit_pos_ids=None, logit_pos_values=None,
                       logit_neg_ids=None, logit_neg_values=None) -> None:
        """Per-feature statistics: 1-D arrays [d_sae]; histograms: either hist_counts int [d_sae, n_bins]
        over the meta `histogram_edges` shared by all features, or (with `hist_edges`) each feature's
        own: hist_counts[i] int [n_i] over hist_edges[i] [n_i + 1] (increasing); optional logit-lens
        ids/values [d_sae, k] (strongest first)."""
        if self._d_sae is not None:
            raise StoreError(f"write_features was already called for {self.path}; call it once with all features.")
        stats = {name: np.asarray(value) for name, value in
                 (("act_count", act_count), ("max_act", max_act), ("mean_act", mean_act), ("density", density))}
        d_sae = stats["act_count"].shape[0] if stats["act_count"].ndim == 1 else -1
        for name, arr in stats.items():
            if arr.ndim != 1 or arr.shape[0] != d_sae or d_sae == 0:
                raise ValueError(f"write_features: {name} has shape {arr.shape}; all statistics must be "
                                 f"non-empty 1-D arrays of the same length d_sae (act_count has {stats['act_count'].shape}).")
            _check_finite(name, arr)
        if not np.issubdtype(stats["act_count"].dtype, np.integer) and not np.all(
                stats["act_count"] == np.round(stats["act_count"])):
            raise ValueError("write_features: act_count must hold whole numbers.")
        if np.any(stats["act_count"] < 0):
            raise ValueError("write_features: act_count must be >= 0.")
        hists, edges = _check_histograms(hist_counts, hist_edges, d_sae)
        logits = []
        for side, ids, values in (("pos", logit_pos_ids, logit_pos_values), ("neg", logit_neg_ids, logit_neg_values)):
            if (ids is None) != (values is None):
                raise ValueError(f"write_features: pass both logit_{side}_ids and logit_{side}_values, or neither.")
            if ids is None:
                logits.append((None, None))
                continue
            ids, values = np.asarray(ids), np.asarray(values)
            if ids.ndim != 2 or ids.shape[0] != d_sae or ids.shape != values.shape:
                raise ValueError(f"write_features: logit_{side}_ids {ids.shape} and logit_{side}_values "
                                 f"{values.shape} must both have shape [d_sae={d_sae}, k].")
            if not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"write_features: logit_{side}_ids must be integer token ids.")
            _check_finite(f"logit_{side}_values", values)
            logits.append((ids.astype("<i4"), values.astype("<f4")))
        (pos_ids, pos_vals), (neg_ids, neg_vals) = logits

        def blob(arr: np.ndarray | None, i: int) -> bytes | None:
            return None if arr is None else arr[i].tobytes()

        counts = stats["act_count"].astype(np.int64).tolist()
        dens = stats["density"].astype(np.float64).tolist()
        maxs = stats["max_act"].astype(np.float64).tolist()
        means = stats["mean_act"].astype(np.float64).tolist()
        rows = ((i, counts[i], dens[i], maxs[i], means[i], hists[i].tobytes(),
                 blob(pos_ids, i), blob(pos_vals, i), blob(neg_ids, i), blob(neg_vals, i), blob(edges, i))
                for i in range(d_sae))
        self._connection().executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._d_sae, self._n_bins = d_sae, (None if edges is not None else hists.shape[1])
        self._densities = stats["density"].astype(np.float64)
        self._put_meta("d_sae", d_sae)

    def write_token_index(self, occurrences, feature_ids, max_acts, *, tokenizer_json: str | None = None) -> None:
        """The token-search index: occurrences int [vocab] (analyzed positions holding each token),
        feature_ids int [vocab, n] (-1 in unused slots) and max_acts float [vocab, n], each row
        strongest first; plus, optionally, the model's `tokenizers` JSON. Call after write_vocab."""
        if self._vocab_size is None:
            raise StoreError(f"Call write_vocab before write_token_index for {self.path}.")
        occurrences, ids, acts = np.asarray(occurrences), np.asarray(feature_ids), np.asarray(max_acts)
        if occurrences.ndim != 1 or ids.ndim != 2 or ids.shape != acts.shape or ids.shape[0] != occurrences.shape[0]:
            raise ValueError(f"write_token_index: occurrences {occurrences.shape}, feature_ids {ids.shape} and max_acts "
                             f"{acts.shape} must be [vocab], [vocab, n], [vocab, n].")
        if occurrences.shape[0] > self._vocab_size:
            raise ValueError(f"write_token_index: {occurrences.shape[0]} tokens but the vocabulary has {self._vocab_size}.")
        _check_finite("max_acts", acts)
        if np.any(np.diff(np.where(ids >= 0, acts.astype(np.float64), np.finfo(np.float64).min), axis=1) > 0):
            raise ValueError("write_token_index: each token's features must be ordered strongest first.")
        rows = []
        for t in np.flatnonzero(occurrences).tolist():
            kept = ids[t] >= 0
            rows.append((t, int(occurrences[t]), ids[t][kept].astype("<i4").tobytes(),
                         acts[t][kept].astype("<f4").tobytes()))
        conn = self._connection()
        conn.executemany("INSERT INTO token_index VALUES (?, ?, ?, ?)", rows)
        if tokenizer_json is not None:
            conn.execute("INSERT INTO tokenizer VALUES (0, ?)", (tokenizer_json,))
        self._put_meta("token_index_size", int(ids.shape[1]))

    def write_samples(self, feature_index: int, group: str, samples: Iterable[SampleArrays],
                      lower: float | None = None, upper: float | None = None) -> None:
        """The contexts of one feature's group ("top" or "interval_<i>", interval_0 lowest) in rank
        order; lower/upper are the interval's activation bounds. Call once per (feature, group)."""
        conn = self._connection()
        feature_index = operator.index(feature_index)
        _check_group(group)
        if feature_index < 0 or (self._d_sae is not None and feature_index >= self._d_sae):
            raise ValueError(f"write_samples: feature_index {feature_index} is outside 0..d_sae-1.")
        if (feature_index, group) in self._groups_written:
            raise ValueError(f"write_samples: samples of feature {feature_index} group {group!r} were already written.")
        bounds = []
        for name, bound in (("lower", lower), ("upper", upper)):
            if bound is not None:
                bound = float(bound)
                if not math.isfinite(bound):
                    raise ValueError(f"write_samples: {name} bound {bound} is not finite.")
            bounds.append(bound)
        rows = []
        for rank, sample in enumerate(samples):
            token_ids, acts, max_pos = sample
            token_ids = np.asarray(token_ids)
            acts = np.asarray(acts, dtype=np.float32)
            max_pos = operator.index(max_pos)
            where = f"write_samples: feature {feature_index} group {group!r} sample {rank}"
            if token_ids.ndim != 1 or acts.shape != token_ids.shape or token_ids.size == 0:
                raise ValueError(f"{where}: token_ids {token_ids.shape} and acts {acts.shape} must be equal-length, non-empty 1-D arrays.")
            if not np.issubdtype(token_ids.dtype, np.integer):
                raise ValueError(f"{where}: token_ids must be integers.")
            if not 0 <= max_pos < token_ids.size:
                raise ValueError(f"{where}: max_pos {max_pos} is outside the window of {token_ids.size} tokens.")
            _check_finite(f"{where}: acts", acts)
            stored = acts.astype(self._acts_np)
            if not np.all(np.isfinite(stored)):
                raise ValueError(f"{where}: acts exceed the float16 range; write the store with acts_dtype='float32'.")
            rows.append((feature_index, group, rank, token_ids.astype("<i4").tobytes(), stored.tobytes(),
                         max_pos, float(acts[max_pos])))
        conn.execute("INSERT INTO sample_groups VALUES (?, ?, ?, ?, ?)", (feature_index, group, *bounds, len(rows)))
        conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._groups_written.add((feature_index, group))
        self._max_sample_feature = max(self._max_sample_feature, feature_index)

    # -- finishing -------------------------------------------------------------------------

    def _finish_meta(self) -> None:
        if self._d_sae is None:
            raise StoreError(f"No features were written to {self.path}; call write_features before closing.")
        if self._max_sample_feature >= self._d_sae:
            raise StoreError(f"Samples were written for feature {self._max_sample_feature} but d_sae is {self._d_sae}.")
        if self._meta.get("d_sae") != self._d_sae:
            raise StoreError(f"meta d_sae is {self._meta.get('d_sae')!r} but {self._d_sae} features were written; "
                             "do not set d_sae by hand, write_features sets it.")
        shared_edges = self._n_bins is not None  # histograms over the meta histogram_edges
        missing = [key for key in ("n_tokens", "histogram_edges") if key not in self._meta
                   and (key != "histogram_edges" or shared_edges)]
        if missing:
            raise StoreError(f"Feature store {self.path} lacks meta {', '.join(missing)}; call set_meta for them before closing.")
        edges = self._meta.get("histogram_edges")
        if shared_edges and (not isinstance(edges, list) or len(edges) != self._n_bins + 1
                             or any(e is None for e in edges) or np.any(np.diff(np.asarray(edges, dtype=float)) < 0)):
            raise StoreError(f"meta histogram_edges must be {self._n_bins + 1} increasing finite numbers "
                             f"(hist_counts has {self._n_bins} bins).")
        defaults = {"analysis_config": {}, "dictionary_config": {}, "metrics": {}, "logit_lens_note": None,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for key, value in defaults.items():
            if key not in self._meta:
                self._put_meta(key, value)
        if "density_histogram" not in self._meta:
            self._put_meta("density_histogram", density_histogram(self._densities))

    def close(self) -> None:
        """Finish the store: validate, build indexes, mark complete, move it to `path`."""
        if self._conn is None:
            return
        try:
            self._finish_meta()
            self._conn.executescript(_INDEXES)  # executescript commits the open transaction first
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('complete', 'true')")
            self._conn.close()
            self._conn = None
            publish(self.partial_path, self.path)  # durable before the rename makes it visible
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written; an existing store at `path` is left as it was."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self.partial_path.unlink(missing_ok=True)


def _check_histograms(hist_counts, hist_edges, d_sae: int) -> tuple[Any, list[np.ndarray] | None]:
    """(counts per feature as int64 arrays, edges per feature as float64 arrays or None)."""
    if hist_edges is None:
        hist = np.asarray(hist_counts)
        if hist.ndim != 2 or hist.shape[0] != d_sae or hist.shape[1] == 0:
            raise ValueError(f"write_features: hist_counts has shape {hist.shape}; expected [d_sae={d_sae}, n_bins].")
        if not np.issubdtype(hist.dtype, np.integer) or np.any(hist < 0):
            raise ValueError("write_features: hist_counts must be non-negative integers.")
        return hist.astype("<i8"), None
    if len(hist_counts) != d_sae or len(hist_edges) != d_sae:
        raise ValueError(f"write_features: hist_counts and hist_edges need one entry per feature (d_sae={d_sae}), "
                         f"got {len(hist_counts)} and {len(hist_edges)}.")
    counts_out, edges_out = [], []
    for i, (counts, edges) in enumerate(zip(hist_counts, hist_edges)):
        counts, edges = np.asarray(counts), np.asarray(edges, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0 or edges.shape != (counts.size + 1,):
            raise ValueError(f"write_features: feature {i} has hist_counts {counts.shape} and hist_edges {edges.shape}; "
                             "expected [n] and [n + 1] with n >= 1.")
        if not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
            raise ValueError(f"write_features: hist_counts of feature {i} must be non-negative integers.")
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ValueError(f"write_features: hist_edges of feature {i} must be increasing finite numbers.")
        counts_out.append(counts.astype("<i8"))
        edges_out.append(edges.astype("<f8"))
    return counts_out, edges_out


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
    bad = ~np.isfinite(arr)
    if np.any(bad):
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf value(s) (first at {where}); "
                         "store finite numbers (e.g. mean_act 0 for dead features).")


# ----------------------------------------------------------------------------------------------
# Reader


class FeatureStore:
    """Read-only access to one analysis' feature store (see the module docstring for the schema).

    `path` is the `features.sqlite` file or the analysis folder holding it. Opening validates that
    the file is a complete store of a supported schema version and raises `StoreError` otherwise.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = resolve_store_path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._vocab: list[str] | None = None
        self._alive: list[int] | None = None
        _check_file(self.path)
        try:
            self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA query_only=1")
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as e:
            self.close()
            if "no such table" in str(e):
                raise StoreError(f"{self.path} is an SQLite file but not a feature store (no meta table); "
                                 "point to an analysis' features.sqlite.") from e
            raise StoreError(f"Feature store {self.path} is corrupt or unreadable ({e}); rerun the analysis "
                             "with overwrite=True to rebuild it.") from e
        try:
            self.meta: dict[str, Any] = {key: json.loads(value) for key, value in rows}
        except (json.JSONDecodeError, TypeError) as e:
            self.close()
            raise StoreError(f"Feature store {self.path} has unreadable meta ({e}); rerun the analysis "
                             "with overwrite=True to rebuild it.") from e
        self._validate_meta()
        self.d_sae: int = int(self.meta["d_sae"])
        self.n_tokens: int = int(self.meta.get("n_tokens") or 0)
        self.schema_version: int = int(self.meta["schema_version"])
        shared = self.meta.get("histogram_edges")
        self._edges: list[float] | None = None if shared is None else [float(e) for e in shared]
        self._acts_dtype = np.dtype("<f2") if self.meta.get("sample_acts_dtype") == "float16" else np.dtype("<f4")
        with self._reading() as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(features)")}
        self._sql_feature = _SQL_FEATURE.format(hist_edges="hist_edges" if "hist_edges" in columns else "NULL")
        self.has_token_index: bool = "token_index" in tables and isinstance(self.meta.get("token_index_size"), int)
        """Whether the analysis wrote the token-search index (schema version 2)."""
        self._has_tokenizer = "tokenizer" in tables
        self._tokenizer: Any = None
        self._token_ids: dict[str, int] | None = None
        self._longest_token = 0

    def _validate_meta(self) -> None:
        version = self.meta.get("schema_version")
        if self.meta.get("complete") is not True:
            self.close()
            raise StoreError(f"Feature store {self.path} is incomplete (its analysis was interrupted); "
                             "rerun the analysis with overwrite=True.")
        if not isinstance(version, int) or version < 1:
            self.close()
            raise StoreError(f"Feature store {self.path} has no valid schema_version; rerun the analysis to rebuild it.")
        if version > SCHEMA_VERSION:
            self.close()
            raise StoreError(f"Feature store {self.path} has schema version {version}, newer than the {SCHEMA_VERSION} "
                             "this library reads; upgrade the library.")
        missing = [k for k in ("d_sae", "histogram_edges") if k not in self.meta
                   and (k != "histogram_edges" or version == 1)]
        if missing:
            self.close()
            raise StoreError(f"Feature store {self.path} lacks meta {', '.join(missing)}; rerun the analysis to rebuild it.")

    @classmethod
    def open(cls, path: str | Path) -> "FeatureStore":
        return cls(path)

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, d_sae={getattr(self, 'd_sae', '?')})"

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock; turn SQLite failures (corruption found late) into StoreError."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"Feature store {self.path} is closed; open it again with FeatureStore(path).")
            try:
                yield self._conn
            except sqlite3.DatabaseError as e:
                raise StoreError(f"Feature store {self.path} is corrupt or unreadable ({e}); rerun the analysis "
                                 "with overwrite=True to rebuild it.") from e

    # -- whole-store views -----------------------------------------------------------------

    def summary(self) -> StoreSummary:
        with self._reading() as conn:
            n_alive = conn.execute("SELECT COUNT(*) FROM features WHERE act_count > 0").fetchone()[0]
        dh = self.meta.get("density_histogram") or {"edges": [], "counts": []}
        return StoreSummary(
            n_features=self.d_sae, n_alive=n_alive, n_dead=self.d_sae - n_alive, n_tokens=self.n_tokens,
            density_histogram=Histogram(edges=list(dh["edges"]), counts=list(dh["counts"])),
            metrics=dict(self.meta.get("metrics") or {}),
            dictionary_config=dict(self.meta.get("dictionary_config") or {}),
            analysis_config=dict(self.meta.get("analysis_config") or {}),
        )

    def decode(self, token_ids: Iterable[int]) -> list[str]:
        """Token strings for token ids; ids missing from the stored vocabulary show as "<id>"."""
        vocab = self._load_vocab()
        n = len(vocab)
        return [vocab[i] if 0 <= i < n else f"<{i}>" for i in map(int, token_ids)]

    def _load_vocab(self) -> list[str]:
        if self._vocab is None:
            with self._reading() as conn:
                rows = conn.execute("SELECT token_id, token FROM vocab ORDER BY token_id").fetchall()
            vocab = [f"<{i}>" for i in range(rows[-1][0] + 1)] if rows else []
            for i, token in rows:
                vocab[i] = token
            self._vocab = vocab
        return self._vocab

    def list_features(self, *, sort: str = "max_act", descending: bool = True, min_density: float | None = None,
                      max_density: float | None = None, min_max_act: float | None = None,
                      indices: Iterable[int] | None = None, offset: int = 0,
                      limit: int = 50) -> tuple[int, list[FeatureStats]]:
        """(number of features matching the filters, one page of them) sorted by `sort`, ties by index.
        Filters are inclusive bounds; `indices` keeps only those features (e.g. the bookmarked ones)."""
        offset, limit = operator.index(offset), operator.index(limit)
        if offset < 0 or limit < 0:
            raise ValueError(f"offset ({offset}) and limit ({limit}) must be >= 0.")
        where, params = _feature_filters(min_density, max_density, min_max_act)
        if indices is not None:
            # A JSON array read by json_each: one parameter however many indices (SQLite caps parameters).
            clause = "feature_index IN (SELECT value FROM json_each(?))"
            where = f"{where} AND {clause}" if where else f" WHERE {clause}"
            params = [*params, json.dumps(sorted({operator.index(i) for i in indices}))]
        with self._reading() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM features{where}", params).fetchone()[0]
            rows = conn.execute(_list_sql(sort, descending, where), (*params, limit, offset)).fetchall()
        return total, [FeatureStats(*row) for row in rows]

    def feature_stats(self, indices: Iterable[int]) -> dict[int, FeatureStats]:
        """The statistics of the given features (indices outside 0..d_sae-1 are left out)."""
        wanted = json.dumps(sorted({operator.index(i) for i in indices}))
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {_STATS_COLUMNS} FROM features WHERE feature_index IN "
                                "(SELECT value FROM json_each(?))", (wanted,)).fetchall()
        return {row[0]: FeatureStats(*row) for row in rows}

    # -- token search ----------------------------------------------------------------------

    def _require_token_index(self) -> None:
        if not self.has_token_index:
            raise FeatureUnavailable(f"This analysis ({self.path}) was written before token search existed (store schema "
                                     f"version {self.schema_version}); rerun the analysis with overwrite=True to get it.")

    def tokenize(self, text: str) -> list[int]:
        """`text` as the analyzed model's token ids (no BOS): with the stored tokenizer, or, for a store
        without one, by longest matches against the vocabulary strings. LookupError when some text
        matches no vocabulary string."""
        if self._has_tokenizer and self._tokenizer is None:
            with self._reading() as conn:
                row = conn.execute("SELECT json FROM tokenizer").fetchone()
            if row is not None:
                from tokenizers import Tokenizer

                self._tokenizer = Tokenizer.from_str(row[0])
            else:
                self._has_tokenizer = False
        if self._tokenizer is not None:
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        if self._token_ids is None:
            ids: dict[str, int] = {}
            for i, token in enumerate(self._load_vocab()):
                ids.setdefault(token, i)
            self._token_ids = ids
            self._longest_token = max(map(len, ids), default=0)
        longest = self._longest_token
        out, start = [], 0
        while start < len(text):
            for end in range(min(len(text), start + longest), start, -1):
                if text[start:end] in self._token_ids:
                    out.append(self._token_ids[text[start:end]])
                    start = end
                    break
            else:
                raise LookupError(f"No vocabulary token matches {text[start:start + 20]!r} (character {start} of the "
                                  "query); this store has no tokenizer to split it.")
        return out

    def search_tokens(self, query: str | None = None, *, token_ids: Sequence[int] | None = None,
                      limit: int = 20) -> TokenSearch:
        """The features that fire most on the tokens of `query` (a token or a phrase), or on the given
        `token_ids`, from the analysis' token index (see the module docstring for the ranking)."""
        self._require_token_index()
        if (query is None) == (token_ids is None):
            raise ValueError("Pass either a query text or token ids.")
        if query is not None:
            if not query:
                raise ValueError("The query is empty; type a token or a phrase such as ' import'.")
            if len(query) > MAX_QUERY_CHARS:
                raise ValueError(f"The query has {len(query)} characters; the limit is {MAX_QUERY_CHARS}.")
            token_ids = self.tokenize(query)
        vocab = self._load_vocab()
        ids = list(dict.fromkeys(operator.index(t) for t in token_ids))  # each token once, in order
        if not ids:
            raise ValueError("The query has no tokens.")
        if len(ids) > MAX_QUERY_TOKENS:
            raise ValueError(f"The query has {len(ids)} distinct tokens; the limit is {MAX_QUERY_TOKENS}.")
        for t in ids:
            if not 0 <= t < len(vocab):
                raise IndexError(f"token id {t} is not in the vocabulary (ids 0..{len(vocab) - 1}).")
        with self._reading() as conn:
            rows = conn.execute("SELECT token_id, occurrences, feature_ids, max_acts FROM token_index WHERE token_id IN "
                                "(SELECT value FROM json_each(?))", (json.dumps(ids),)).fetchall()
        by_token = {row[0]: row for row in rows}
        tokens, acts_of = [], {}
        for j, t in enumerate(ids):
            row = by_token.get(t)
            tokens.append(QueryToken(t, vocab[t], row[1] if row else 0))
            if row is None:
                continue
            for f, v in zip(np.frombuffer(row[2], "<i4").tolist(), np.frombuffer(row[3], "<f4").tolist()):
                acts_of.setdefault(f, [None] * len(ids))[j] = v
        matches = [TokenMatch(f, acts, sum(a is not None for a in acts), sum(a for a in acts if a is not None))
                   for f, acts in acts_of.items()]
        matches.sort(key=lambda m: (-m.n_tokens, -m.score, m.index))
        return TokenSearch(tokens, matches[:max(0, operator.index(limit))], int(self.meta["token_index_size"]))

    def random_alive_feature(self, rng: random.Random | None = None) -> int:
        """Index of a uniformly chosen feature with act_count > 0."""
        if self._alive is None:
            with self._reading() as conn:
                self._alive = [r[0] for r in conn.execute(
                    "SELECT feature_index FROM features WHERE act_count > 0 ORDER BY feature_index")]
        if not self._alive:
            raise LookupError(f"Feature store {self.path} has no alive features (every feature has act_count 0).")
        return (rng or random).choice(self._alive)

    # -- one feature -----------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        try:
            index = operator.index(index)
        except TypeError:
            raise ValueError(f"feature index must be an integer, got {index!r}.") from None
        if not 0 <= index < self.d_sae:
            raise IndexError(f"feature {index} does not exist; this dictionary has features 0..{self.d_sae - 1}.")
        return index

    def get_feature(self, index: int) -> FeatureRecord:
        """Statistics, histogram, logit lens and all sample contexts of one feature."""
        index = self._check_index(index)
        with self._reading() as conn:
            row = conn.execute(self._sql_feature, (index,)).fetchone()
            groups = conn.execute(_SQL_FEATURE_GROUPS, (index,)).fetchall()
            sample_rows = conn.execute(_SQL_FEATURE_SAMPLES, (index,)).fetchall()
        if row is None:
            raise StoreError(f"Feature store {self.path} has no row for feature {index}; rerun the analysis to rebuild it.")
        counts = np.frombuffer(row[5], dtype="<i8")
        by_group: dict[str, list[Sample]] = {}
        for group, _rank, ids, acts, max_pos, max_act in sample_rows:
            by_group.setdefault(group, []).append(self._sample(ids, acts, max_pos, max_act))
        intervals = [SampleGroup(name, lower, upper, by_group.get(name, []))
                     for name, lower, upper in groups if name != "top"]
        intervals.sort(key=lambda g: _interval_number(g.name), reverse=True)
        return FeatureRecord(*row[:5], d_sae=self.d_sae, histogram=self._histogram(counts, row[10]),
                             logit_lens=LogitLens(self._logit_tokens(row[6], row[7]), self._logit_tokens(row[8], row[9]),
                                                  self.meta.get("logit_lens_note")),
                             top=by_group.get("top", []), intervals=intervals)

    def get_samples(self, index: int, group: str) -> SampleGroup:
        """One group ("top" or "interval_<i>") of a feature; a group the analysis did not write
        (e.g. for a dead feature) comes back empty with no bounds."""
        index = self._check_index(index)
        _check_group(group)
        with self._reading() as conn:
            bounds = conn.execute(_SQL_GROUP, (index, group)).fetchone()
            rows = conn.execute(_SQL_GROUP_SAMPLES, (index, group)).fetchall()
        lower, upper = bounds if bounds else (None, None)
        return SampleGroup(group, lower, upper, [self._sample(*r) for r in rows])

    def _histogram(self, counts: np.ndarray, edges: bytes | None) -> Histogram:
        """The feature's own edges, or (older stores) the shared edges cut to the bins where the
        feature has mass, keeping one empty bin on each side."""
        if edges is not None:
            return Histogram(np.frombuffer(edges, dtype="<f8").tolist(), counts.tolist())
        if self._edges is None or len(self._edges) != len(counts) + 1:
            raise StoreError(f"Feature store {self.path} has a histogram without bin edges; rerun the analysis to "
                             "rebuild it.")
        nonzero = np.flatnonzero(counts)
        if nonzero.size == 0:
            return Histogram(list(self._edges), counts.tolist())
        start, end = max(int(nonzero[0]) - 1, 0), min(int(nonzero[-1]) + 2, len(counts))
        return Histogram(self._edges[start:end + 1], counts[start:end].tolist())

    def _sample(self, ids: bytes, acts: bytes, max_pos: int, max_act: float) -> Sample:
        token_ids = np.frombuffer(ids, dtype="<i4").tolist()
        return Sample(token_ids=token_ids, tokens=self.decode(token_ids),
                      acts=np.frombuffer(acts, dtype=self._acts_dtype).astype(np.float64).tolist(),
                      max_pos=max_pos, max_act=max_act)

    def _logit_tokens(self, ids: bytes | None, values: bytes | None) -> list[LogitToken]:
        if ids is None or values is None:
            return []
        id_list = np.frombuffer(ids, dtype="<i4").tolist()
        value_list = np.frombuffer(values, dtype="<f4").astype(np.float64).tolist()
        return [LogitToken(i, t, v) for i, t, v in zip(id_list, self.decode(id_list), value_list)]

    # -- escape hatch for notebooks --------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read-only SQL query on the store (see the schema in the module docstring).
        SQL errors are raised as sqlite3 errors; writing is refused by SQLite."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"Feature store {self.path} is closed; open it again with FeatureStore(path).")
            return self._conn.execute(sql, params).fetchall()


def _feature_filters(min_density, max_density, min_max_act) -> tuple[str, list[float]]:
    clauses, params = [], []
    for column, op, value in (("density", ">=", min_density), ("density", "<=", max_density),
                              ("max_act", ">=", min_max_act)):
        if value is not None:
            value = float(value)
            if math.isnan(value):
                raise ValueError(f"filter on {column} is NaN; pass a number or None.")
            clauses.append(f"{column} {op} ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _list_sql(sort: str, descending: bool, where: str) -> str:
    if sort not in _SORT_COLUMNS:
        raise ValueError(f"sort is {sort!r}; allowed values: {', '.join(map(repr, SORT_KEYS))}.")
    column = _SORT_COLUMNS[sort]
    order = f"{column} {'DESC' if descending else 'ASC'}"
    if column != "feature_index":
        order += ", feature_index ASC"
    return f"SELECT {_STATS_COLUMNS} FROM features{where} ORDER BY {order} LIMIT ? OFFSET ?"


def _check_file(path: Path) -> None:
    """Cheap checks before SQLite sees the file, so a wrong or truncated file gives a clear StoreError."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if not path.exists():
        if partial.exists():
            raise StoreError(f"Feature store {path} is incomplete (only {partial.name} exists: the analysis was "
                             "interrupted or is still running); rerun the analysis.")
        raise StoreError(f"No feature store at {path}; run the analysis (see run_analyze_example.py) to create it.")
    if not path.is_file():
        raise StoreError(f"{path} is not a file; pass an analysis folder or its {STORE_FILENAME}.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise StoreError(f"Cannot read feature store {path} ({e}); check the file's permissions.") from e
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path} is not a feature store (not an SQLite database, or empty); "
                         "point to an analysis' features.sqlite or rerun the analysis.")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(header[28:32], "big")
    header_count_valid = header[24:28] == header[92:96]  # SQLite's rule for trusting the page count
    if header_count_valid and n_pages and size < n_pages * page_size:
        raise StoreError(f"Feature store {path} is truncated ({size} of {n_pages * page_size} bytes); "
                         "rerun the analysis with overwrite=True to rebuild it.")
