"""The explanations of an analysis and their scores: one SQLite file beside its feature store,
`<analysis>/explanations.sqlite` (`core.layout.explanations_path`); the feature store stays immutable.

Written by `explain_features` / `score_explanations` through `ExplanationsWriter`, read by the server
and notebooks through `Explanations`, the one reader API. Runs write while readers read: the file is
in WAL mode, every step of a run is one transaction (synchronous=FULL), so a reader sees whole steps
only and a run killed at any moment (SIGKILL, power loss) loses at most the step in flight.

Schema (version 1)
------------------
``meta(key TEXT PRIMARY KEY, value TEXT)`` -- JSON values: ``schema_version`` (int), ``created_at``.
``explanation_sets(id INTEGER PRIMARY KEY, key TEXT UNIQUE, settings TEXT, explainer_model TEXT,
    prompt_version INTEGER, created_at TEXT)`` -- one row per distinct explainer settings: ``settings``
    is the JSON of `ExplainConfig.settings()` plus ``explainer_model`` and ``prompt_version``; ``key``
    is the SHA-256 of its canonical JSON (first 16 hex digits). A run with the same settings adds to
    its set; different settings (another model, prompt version, sample counts, seed, ...) make a new one.
``explanations(id INTEGER PRIMARY KEY, set_id, feature_index, status TEXT, explanation TEXT,
    raw_response TEXT, prompt TEXT, shown TEXT, held_out TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, created_at TEXT, UNIQUE(set_id, feature_index))`` -- one row per
    explained feature: ``status`` is ``ok`` (``explanation`` is one short line) or ``unparsable``
    (``explanation`` NULL; the answer is kept in ``raw_response``); ``prompt`` is the JSON list of chat
    messages sent; ``shown`` / ``held_out`` are JSON lists of ``[group, rank]`` references to the feature
    store's samples (``shown`` in prompt order; ``held_out`` is what the scorers may use).
``explanations_fts`` -- FTS5 (porter stemming) over ``explanations.explanation``, kept in step by
    triggers; `Explanations.search` ranks by bm25.
``score_sets(id INTEGER PRIMARY KEY, key TEXT UNIQUE, explanation_set_id, settings TEXT, scorer_model
    TEXT, prompt_version INTEGER, control TEXT, created_at TEXT)`` -- one row per distinct scorer settings
    for one explanation set (``settings``: `ScoreConfig.settings()` plus ``scorer_model``,
    ``prompt_version`` and ``explanation_set``); ``control`` is ``none`` or ``shuffled`` (each feature
    scored with another feature's explanation: the chance-level control).
``scores(score_set_id, feature_index, scorer TEXT, status TEXT, explanation_feature INTEGER, explanation TEXT,
    n_items, n_failed, n_positive, n_negative, accuracy, balanced_accuracy, precision, recall, f1,
    auroc, items TEXT, prompt_tokens, completion_tokens, created_at, PRIMARY KEY(score_set_id,
    feature_index, scorer))`` -- one row per feature and scorer (``detection`` / ``fuzzing``):
    ``status`` ``ok``, ``no_explanation`` (its explanation was unparsable) or ``too_few_contexts``
    (metrics NULL); ``explanation`` is the text scored, written by feature ``explanation_feature``
    (itself, except in a control); metrics as in `core.autointerp.metrics` (AUROC NULL when the backend
    gave no probabilities); ``items`` is the JSON list of the contexts asked about: ``context``
    ([feature, group, rank] of the stored sample), ``activating``, ``marking`` (fuzzing: ``correct`` or
    ``wrong``; the marked positions in ``marked``), ``prediction``, ``p_yes``, ``response`` (raw).

Reading never creates the file (a folder without explanations reads as empty).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import re
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from ..errors import StoreError
from ..files import shared_sqlite, sqlite_busy
from ..layout import explanations_path
from .metrics import ClassificationMetrics, classification_metrics

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
MAX_SEARCH_CHARS = 200
SCORE_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc")
"""The per-feature metrics of a score (`scores` columns), as `core.autointerp.metrics` computes them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS explanation_sets (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    explainer_model TEXT NOT NULL,
    prompt_version INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS explanations (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES explanation_sets(id),
    feature_index INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'unparsable')),
    explanation TEXT,
    raw_response TEXT NOT NULL,
    prompt TEXT NOT NULL,
    shown TEXT NOT NULL,
    held_out TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (set_id, feature_index)
);
CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5(
    explanation, content='explanations', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS explanations_fts_insert AFTER INSERT ON explanations
    WHEN new.explanation IS NOT NULL BEGIN
    INSERT INTO explanations_fts(rowid, explanation) VALUES (new.id, new.explanation);
END;
CREATE TRIGGER IF NOT EXISTS explanations_fts_delete AFTER DELETE ON explanations
    WHEN old.explanation IS NOT NULL BEGIN
    INSERT INTO explanations_fts(explanations_fts, rowid, explanation) VALUES ('delete', old.id, old.explanation);
END;
CREATE TABLE IF NOT EXISTS score_sets (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    explanation_set_id INTEGER NOT NULL REFERENCES explanation_sets(id),
    settings TEXT NOT NULL,
    scorer_model TEXT NOT NULL,
    prompt_version INTEGER NOT NULL,
    control TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    score_set_id INTEGER NOT NULL REFERENCES score_sets(id),
    feature_index INTEGER NOT NULL,
    scorer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'no_explanation', 'too_few_contexts')),
    explanation_feature INTEGER,
    explanation TEXT,
    n_items INTEGER NOT NULL, n_failed INTEGER NOT NULL, n_positive INTEGER NOT NULL, n_negative INTEGER NOT NULL,
    accuracy REAL, balanced_accuracy REAL, precision REAL, recall REAL, f1 REAL, auroc REAL,
    items TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (score_set_id, feature_index, scorer)
) WITHOUT ROWID;
"""

_EXPLANATION_COLUMNS = ("e.set_id, e.feature_index, e.status, e.explanation, e.raw_response, e.prompt, e.shown, "
                        "e.held_out, e.prompt_tokens, e.completion_tokens, e.created_at")
_SCORE_COLUMNS = ("score_set_id, feature_index, scorer, status, explanation_feature, explanation, n_items, n_failed, "
                  "n_positive, n_negative, accuracy, balanced_accuracy, precision, recall, f1, auroc, items, "
                  "prompt_tokens, completion_tokens, created_at")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def settings_key(settings: dict[str, Any]) -> str:
    """The identity of a set: a hash of its settings' canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Records (JSON-ready dataclasses: the server's response models)


@dataclass(frozen=True)
class ExplanationSet:
    id: int
    key: str
    settings: dict
    explainer_model: str
    prompt_version: int
    created_at: str
    n_explained: int
    """Features with a parsed explanation."""
    n_unparsable: int
    """Features whose answer could not be parsed (their raw answer is kept)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Explanation:
    set_id: int
    feature_index: int
    status: str
    """"ok" or "unparsable"."""
    explanation: Optional[str]
    """One short line; None when unparsable."""
    raw_response: str
    prompt: list[dict]
    """The chat messages sent to the explainer."""
    shown: list[list]
    """[group, rank] of the feature-store samples in the prompt, in prompt order."""
    held_out: list[list]
    """[group, rank] of the samples kept away from the explainer (the scorers' material)."""
    prompt_tokens: int
    completion_tokens: int
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreSet:
    id: int
    key: str
    explanation_set_id: int
    settings: dict
    scorer_model: str
    prompt_version: int
    control: str
    """"none", or "shuffled" (features scored with other features' explanations)."""
    created_at: str
    n_scored: dict
    """{scorer: features with a computed score}."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreItem:
    context: list
    """[feature, group, rank] of the stored sample shown."""
    activating: bool
    """The truth: the feature fires on it (detection) / its marking is the correct one (fuzzing)."""
    prediction: Optional[bool]
    """The scorer's answer; None when it could not be read."""
    p_yes: Optional[float]
    response: str
    marking: Optional[str] = None
    """Fuzzing: "correct" or "wrong"."""
    marked: Optional[list] = None
    """Fuzzing: positions marked in the (cropped) context."""


@dataclass(frozen=True)
class FeatureScore:
    score_set_id: int
    feature_index: int
    scorer: str
    """"detection" or "fuzzing"."""
    status: str
    """"ok", "no_explanation" or "too_few_contexts" (metrics None)."""
    explanation_feature: Optional[int]
    """Whose explanation was scored (the feature itself, except in a shuffled control)."""
    explanation: Optional[str]
    n_items: int
    n_failed: int
    n_positive: int
    n_negative: int
    accuracy: Optional[float]
    balanced_accuracy: Optional[float]
    precision: Optional[float]
    recall: Optional[float]
    f1: Optional[float]
    auroc: Optional[float]
    items: list[ScoreItem]
    prompt_tokens: int
    completion_tokens: int
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScorerSummary:
    scorer: str
    n_features: int
    """Features with a computed score."""
    mean_accuracy: Optional[float]
    mean_balanced_accuracy: Optional[float]
    mean_precision: Optional[float]
    mean_recall: Optional[float]
    mean_f1: Optional[float]
    mean_auroc: Optional[float]
    """Over the features that have an AUROC (None when none has)."""
    n_auroc: int
    pooled: ClassificationMetrics
    """The metrics of every item of every feature taken together (delphi's aggregate)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchMatch:
    feature_index: int
    explanation: str
    highlighted: str
    """The explanation with the matched words between [ and ]."""
    rank: float
    """bm25 (lower is better)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


# ----------------------------------------------------------------------------------------------
# Writer


class ExplanationsWriter:
    """Adds explanation sets, explanations, score sets and scores to an analysis' explanations file
    (created on first use). Each `write_*` call of several rows is one transaction; a row that
    already exists (same set, feature, scorer) is kept as it is, so reruns and concurrent runs never
    duplicate or overwrite."""

    def __init__(self, analysis: str | Path) -> None:
        self.path = _resolve(analysis)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = shared_sqlite(self.path, timeout_s=BUSY_TIMEOUT_S)
            with self._transaction() as conn:
                _check_version(conn, self.path)
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (json.dumps(now()),))
        except sqlite3.DatabaseError as e:
            if hasattr(self, "_conn"):
                self._conn.close()
            if sqlite_busy(e):
                raise StoreError(f"The explanations file {self.path} stayed locked by another writer for "
                                 f"{BUSY_TIMEOUT_S:g} s ({e}); try again when it is done.") from e
            raise StoreError(f"Cannot write the explanations file {self.path} ({e}); move it away to start a new one.") from e

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ExplanationsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def explanation_set(self, settings: dict[str, Any], *, explainer_model: str, prompt_version: int) -> int:
        """The id of the set with these settings (created when new)."""
        full = {**settings, "explainer_model": explainer_model, "prompt_version": prompt_version}
        key = settings_key(full)
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO explanation_sets(key, settings, explainer_model, prompt_version, "
                         "created_at) VALUES (?, ?, ?, ?, ?)",
                         (key, json.dumps(full, sort_keys=True), explainer_model, prompt_version, now()))
            return conn.execute("SELECT id FROM explanation_sets WHERE key = ?", (key,)).fetchone()[0]

    def score_set(self, settings: dict[str, Any], *, explanation_set_id: int, scorer_model: str,
                  prompt_version: int, control: str) -> int:
        full = {**settings, "scorer_model": scorer_model, "prompt_version": prompt_version,
                "explanation_set": explanation_set_id}
        key = settings_key(full)
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO score_sets(key, explanation_set_id, settings, scorer_model, "
                         "prompt_version, control, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key, explanation_set_id, json.dumps(full, sort_keys=True), scorer_model, prompt_version,
                          control, now()))
            return conn.execute("SELECT id FROM score_sets WHERE key = ?", (key,)).fetchone()[0]

    def done_features(self, set_id: int) -> set[int]:
        return {r[0] for r in self._conn.execute("SELECT feature_index FROM explanations WHERE set_id = ?", (set_id,))}

    def done_scores(self, score_set_id: int) -> set[tuple[int, str]]:
        return {(r[0], r[1]) for r in self._conn.execute(
            "SELECT feature_index, scorer FROM scores WHERE score_set_id = ?", (score_set_id,))}

    def write_explanations(self, rows: Sequence[Explanation]) -> None:
        """Explanations of one step, in one transaction."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO explanations(set_id, feature_index, status, explanation, raw_response, prompt, "
                "shown, held_out, prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.set_id, r.feature_index, r.status, r.explanation, r.raw_response, json.dumps(r.prompt),
                  json.dumps(r.shown), json.dumps(r.held_out), r.prompt_tokens, r.completion_tokens, r.created_at)
                 for r in rows])

    def write_scores(self, rows: Sequence[FeatureScore]) -> None:
        """Scores of one step, in one transaction."""
        with self._transaction() as conn:
            conn.executemany(
                f"INSERT OR IGNORE INTO scores({_SCORE_COLUMNS}) VALUES ({', '.join('?' * 20)})",
                [(r.score_set_id, r.feature_index, r.scorer, r.status, r.explanation_feature, r.explanation, r.n_items,
                  r.n_failed, r.n_positive, r.n_negative, r.accuracy, r.balanced_accuracy, r.precision, r.recall,
                  r.f1, r.auroc, json.dumps([asdict(i) for i in r.items]), r.prompt_tokens, r.completion_tokens,
                  r.created_at) for r in rows])


def _statements(script: str) -> list[str]:
    """The schema's statements one by one (executescript would commit the open transaction)."""
    out, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            current = []
    return out


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
    if row is not None and json.loads(row[0]) > SCHEMA_VERSION:
        raise StoreError(f"The explanations file {path} has schema version {json.loads(row[0])}, newer than the "
                         f"{SCHEMA_VERSION} this library reads; upgrade the library.")


def _resolve(path: str | Path) -> Path:
    """An analysis folder -> its explanations file; a file path is kept."""
    path = Path(path).expanduser()
    return explanations_path(path) if path.is_dir() else path


# ----------------------------------------------------------------------------------------------
# Reader


class Explanations:
    """Read access to one analysis' explanations and scores (`path`: the analysis folder or its
    explanations.sqlite). One instance can be shared by threads (a lock guards its connection); it
    sees what a running writer commits, step by step. A missing file reads as empty."""

    def __init__(self, path: str | Path) -> None:
        self.path = _resolve(path)
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None

    def _connection(self) -> Optional[sqlite3.Connection]:
        if self._conn is None and self.path.is_file():
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                       check_same_thread=False, isolation_level=None)
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "meta" in tables:
                    _check_version(conn, self.path)
                if not {"explanations", "scores"} <= tables:
                    conn.close()
                    return None  # created a moment ago by a writer that has not made its tables yet
            except sqlite3.DatabaseError as e:
                raise StoreError(f"The explanations file {self.path} is not readable ({e}); move it away and "
                                 "explain the features again.") from e
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Optional[sqlite3.Connection]]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.DatabaseError as e:
                raise StoreError(f"The explanations file {self.path} is damaged ({e}); move it away and explain the "
                                 "features again.") from e

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Explanations":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sets ------------------------------------------------------------------------------

    def sets(self) -> list[ExplanationSet]:
        """Every explanation set, oldest first."""
        with self._reading() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT s.id, s.key, s.settings, s.explainer_model, s.prompt_version, s.created_at, "
                "(SELECT COUNT(*) FROM explanations e WHERE e.set_id = s.id AND e.status = 'ok'), "
                "(SELECT COUNT(*) FROM explanations e WHERE e.set_id = s.id AND e.status = 'unparsable') "
                "FROM explanation_sets s ORDER BY s.id").fetchall()
        return [ExplanationSet(r[0], r[1], json.loads(r[2]), *r[3:]) for r in rows]

    def default_set(self) -> Optional[int]:
        """The explanation set shown by default: the newest one with a parsed explanation (None: none)."""
        with_explanations = [s for s in self.sets() if s.n_explained]
        return with_explanations[-1].id if with_explanations else None

    def score_sets(self, explanation_set: Optional[int] = None) -> list[ScoreSet]:
        """Every score set (of one explanation set when given), oldest first."""
        with self._reading() as conn:
            if conn is None:
                return []
            where, params = ("WHERE s.explanation_set_id = ?", (explanation_set,)) if explanation_set is not None else ("", ())
            rows = conn.execute("SELECT s.id, s.key, s.explanation_set_id, s.settings, s.scorer_model, s.prompt_version, "
                                f"s.control, s.created_at FROM score_sets s {where} ORDER BY s.id", params).fetchall()
            counts = conn.execute("SELECT score_set_id, scorer, COUNT(*) FROM scores WHERE status = 'ok' "
                                  "GROUP BY score_set_id, scorer").fetchall()
        by_set: dict[int, dict[str, int]] = {}
        for set_id, scorer, n in counts:
            by_set.setdefault(set_id, {})[scorer] = n
        return [ScoreSet(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], by_set.get(r[0], {})) for r in rows]

    def default_score_set(self, explanation_set: Optional[int] = None) -> Optional[int]:
        """The newest non-control score set of the explanation set (default: `default_set()`)."""
        explanation_set = self.default_set() if explanation_set is None else explanation_set
        candidates = [s for s in self.score_sets(explanation_set) if s.control == "none"]
        return candidates[-1].id if candidates else None

    # -- explanations ----------------------------------------------------------------------

    def explanation(self, feature: int, set_id: Optional[int] = None) -> Optional[Explanation]:
        """Feature `feature`'s explanation in set `set_id` (default: `default_set()`); None when it has none."""
        found = self.explanations(set_id, features=[feature], limit=1)
        return found[0] if found else None

    def explanations(self, set_id: Optional[int] = None, *, features: Optional[Iterable[int]] = None,
                     status: Optional[str] = None, offset: int = 0, limit: int = 100) -> list[Explanation]:
        """Explanations of a set (default: `default_set()`) by feature index, optionally only of
        `features` and / or of one `status`."""
        set_id = self.default_set() if set_id is None else operator.index(set_id)
        if set_id is None:
            return []
        clauses, params = ["e.set_id = ?"], [set_id]
        if features is not None:
            clauses.append("e.feature_index IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted({operator.index(f) for f in features})))
        if status is not None:
            clauses.append("e.status = ?")
            params.append(status)
        with self._reading() as conn:
            if conn is None:
                return []
            rows = conn.execute(f"SELECT {_EXPLANATION_COLUMNS} FROM explanations e WHERE {' AND '.join(clauses)} "
                                "ORDER BY e.feature_index LIMIT ? OFFSET ?",
                                (*params, operator.index(limit), operator.index(offset))).fetchall()
        return [_explanation(r) for r in rows]

    def search(self, query: str, set_id: Optional[int] = None, *, limit: int = 20) -> list[SearchMatch]:
        """Features whose explanation matches `query` (words, stemmed; every word must occur; a word
        ending in * matches as a prefix), best bm25 first."""
        if not query or not query.strip():
            raise ValueError("The search is empty; type a word such as 'import'.")
        if len(query) > MAX_SEARCH_CHARS:
            raise ValueError(f"The search has {len(query)} characters; the limit is {MAX_SEARCH_CHARS}.")
        set_id = self.default_set() if set_id is None else operator.index(set_id)
        if set_id is None:
            return []
        fts_query = _fts_query(query)
        if not fts_query:
            raise ValueError(f"The search {query!r} has no words; type a word such as 'import'.")
        with self._reading() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT e.feature_index, e.explanation, highlight(explanations_fts, 0, '[', ']'), "
                "bm25(explanations_fts) AS rank FROM explanations_fts JOIN explanations e ON e.id = explanations_fts.rowid "
                "WHERE explanations_fts MATCH ? AND e.set_id = ? ORDER BY rank, e.feature_index LIMIT ?",
                (fts_query, set_id, operator.index(limit))).fetchall()
        return [SearchMatch(*r) for r in rows]

    # -- scores ----------------------------------------------------------------------------

    def scores(self, score_set_id: Optional[int] = None, *, features: Optional[Iterable[int]] = None,
               scorer: Optional[str] = None) -> list[FeatureScore]:
        """Scores of a score set (default: `default_score_set()`), by feature then scorer."""
        score_set_id = self.default_score_set() if score_set_id is None else operator.index(score_set_id)
        if score_set_id is None:
            return []
        clauses, params = ["score_set_id = ?"], [score_set_id]
        if features is not None:
            clauses.append("feature_index IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted({operator.index(f) for f in features})))
        if scorer is not None:
            clauses.append("scorer = ?")
            params.append(scorer)
        with self._reading() as conn:
            if conn is None:
                return []
            rows = conn.execute(f"SELECT {_SCORE_COLUMNS} FROM scores WHERE {' AND '.join(clauses)} "
                                "ORDER BY feature_index, scorer", params).fetchall()
        return [_score(r) for r in rows]

    def score_values(self, score_set_id: Optional[int] = None, *, metric: str = "balanced_accuracy",
                     features: Optional[Iterable[int]] = None) -> dict[int, dict[str, float]]:
        """{feature: {scorer: `metric`}} of a score set (default: `default_score_set()`), for the features with
        a computed value: one column of `scores` (the questions are not read), so a table of every feature
        can be sorted and filtered by it. `metric`: one of `SCORE_METRICS`."""
        if metric not in SCORE_METRICS:
            raise ValueError(f"metric is {metric!r}; allowed values: {', '.join(map(repr, SCORE_METRICS))}.")
        score_set_id = self.default_score_set() if score_set_id is None else operator.index(score_set_id)
        if score_set_id is None:
            return {}
        clauses, params = ["score_set_id = ?", f"{metric} IS NOT NULL"], [score_set_id]
        if features is not None:
            clauses.append("feature_index IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted({operator.index(f) for f in features})))
        with self._reading() as conn:
            if conn is None:
                return {}
            rows = conn.execute(f"SELECT feature_index, scorer, {metric} FROM scores WHERE {' AND '.join(clauses)}",
                                params).fetchall()
        out: dict[int, dict[str, float]] = {}
        for feature, scorer, value in rows:
            out.setdefault(feature, {})[scorer] = value
        return out

    def summary(self, score_set_id: Optional[int] = None) -> list[ScorerSummary]:
        """Per scorer: the mean of each per-feature metric over the scored features, and the pooled
        metrics of all their items."""
        out = []
        by_scorer: dict[str, list[FeatureScore]] = {}
        for row in self.scores(score_set_id):
            if row.status == "ok":
                by_scorer.setdefault(row.scorer, []).append(row)
        for scorer, rows in sorted(by_scorer.items()):
            items = [i for r in rows for i in r.items]
            pooled = classification_metrics([i.activating for i in items], [i.prediction for i in items],
                                             [i.p_yes for i in items])
            aurocs = [r.auroc for r in rows if r.auroc is not None]
            out.append(ScorerSummary(
                scorer=scorer, n_features=len(rows), mean_accuracy=_mean(r.accuracy for r in rows),
                mean_balanced_accuracy=_mean(r.balanced_accuracy for r in rows),
                mean_precision=_mean(r.precision for r in rows), mean_recall=_mean(r.recall for r in rows),
                mean_f1=_mean(r.f1 for r in rows), mean_auroc=_mean(aurocs), n_auroc=len(aurocs), pooled=pooled))
        return out


def _explanation(r: tuple) -> Explanation:
    return Explanation(set_id=r[0], feature_index=r[1], status=r[2], explanation=r[3], raw_response=r[4],
                       prompt=json.loads(r[5]), shown=json.loads(r[6]), held_out=json.loads(r[7]),
                       prompt_tokens=r[8], completion_tokens=r[9], created_at=r[10])


def _score(r: tuple) -> FeatureScore:
    return FeatureScore(*r[:16], items=[ScoreItem(**i) for i in json.loads(r[16])], prompt_tokens=r[17],
                        completion_tokens=r[18], created_at=r[19])


def _fts_query(query: str) -> str:
    """The words of `query` as an FTS5 query: each word quoted (so FTS syntax in the input is text),
    a trailing * kept as a prefix search."""
    terms = []
    for word in re.findall(r"[\w']+\*?", query):
        prefix = word.endswith("*")
        word = word.rstrip("*").replace('"', "")
        if word:
            terms.append(f'"{word}"' + ("*" if prefix else ""))
    return " ".join(terms)


__all__ = ["Explanation", "ExplanationSet", "Explanations", "ExplanationsWriter", "FeatureScore", "ScoreItem",
           "ScoreSet", "ScorerSummary", "SearchMatch", "SCHEMA_VERSION", "SCORE_METRICS", "settings_key"]
