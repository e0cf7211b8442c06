"""What people add to a dictionary's features: a short label, free notes and a bookmark.

Annotations live in their own SQLite file, `annotations.sqlite`, in the folder that holds the
dictionary's `analysis/` folder (`<dictionary>/annotations.sqlite`; for a run of the older
one-dictionary layout, `results/<run>/annotations.sqlite` beside `results/<run>/analysis/`), so
the feature stores stay immutable. They belong to the dictionary, not to one analysis of it.

Concurrent edits never lose a write silently: every annotation has a `version` (0 before its first
save), a save names the version it was based on, and a save based on an older version than the
stored one is refused with `AnnotationConflict`, which carries the stored annotation. Each save is
one SQLite transaction taken with `BEGIN IMMEDIATE` (so the version check and the write cannot
interleave with another writer, in this process or another) in WAL mode with synchronous=FULL:
after a crash the file holds the old annotation or the new one, never a mix.

Reading never creates the file, so browsing a read-only results folder works.

    from core import Annotations, export_annotations
    notes = Annotations.of_dictionary("results/my-run/dictionaries/blocks.3.hook_resid_post")
    saved = notes.save(42, label="Python imports", notes="fires on `import`", bookmarked=True, version=0)
    export_annotations("results/my-run/dictionaries/blocks.3.hook_resid_post", "labels.json")
"""

from __future__ import annotations

import contextlib
import json
import operator
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import AnnotationError
from .files import atomic_write, shared_sqlite, sqlite_busy
from .layout import ANNOTATIONS_FILENAME, DICTIONARY_CONFIG_FILENAME, annotations_path

EXPORT_FORMAT = "gpt2-dictionary-annotations"
MAX_LABEL_CHARS = 120
MAX_NOTES_CHARS = 10_000
BUSY_TIMEOUT_MS = 10_000
"""How long a save waits for another writer's transaction before giving up."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    feature_index INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    notes TEXT NOT NULL,
    bookmarked INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_bookmarked ON annotations(bookmarked) WHERE bookmarked = 1;
"""


class AnnotationConflict(RuntimeError):
    """A save was based on an older version than the stored one (another tab or person saved first)."""

    def __init__(self, current: "Annotation", version: int) -> None:
        super().__init__(f"Feature {current.index}'s annotation was changed elsewhere (your edit was based on "
                         f"version {version}, the saved one is version {current.version}); nothing was overwritten. "
                         "Look at the saved text, then save again on top of it.")
        self.current = current


@dataclass(frozen=True)
class Annotation:
    index: int
    """The feature."""
    label: str = ""
    """A short name (at most MAX_LABEL_CHARS characters, one line)."""
    notes: str = ""
    """Free text (at most MAX_NOTES_CHARS characters)."""
    bookmarked: bool = False
    version: int = 0
    """Incremented by every save; 0: never saved."""
    updated_at: str | None = None
    """ISO 8601 time (UTC) of the last save."""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "notes": self.notes, "bookmarked": self.bookmarked,
                "version": self.version, "updated_at": self.updated_at}

    @property
    def empty(self) -> bool:
        return not (self.label or self.notes or self.bookmarked)


def check_label(label: str) -> str:
    """The label without surrounding whitespace; ValueError when it is too long or not one line."""
    label = label.strip()
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"The label has {len(label)} characters; the limit is {MAX_LABEL_CHARS} (use the notes "
                         "for more).")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in label):
        raise ValueError("The label must be one line of text, without line breaks or control characters.")
    return label


def check_notes(notes: str) -> str:
    if len(notes) > MAX_NOTES_CHARS:
        raise ValueError(f"The notes have {len(notes)} characters; the limit is {MAX_NOTES_CHARS}.")
    if "\x00" in notes:
        raise ValueError("The notes must not contain NUL characters.")
    return notes


class Annotations:
    """The annotations of one dictionary (`path`: its annotations.sqlite). Safe to use from many
    threads and processes: every call opens its own short connection."""

    def __init__(self, path: str | Path, *, d_sae: int | None = None) -> None:
        self.path = Path(path).expanduser()
        self.d_sae = d_sae
        """When set, feature indices are checked against 0..d_sae-1 (IndexError)."""

    @classmethod
    def of_dictionary(cls, dictionary_folder: str | Path, *, d_sae: int | None = None) -> "Annotations":
        return cls(annotations_path(dictionary_folder), d_sae=d_sae)

    # -- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection | None]:
        """A connection, or None when reading a file that does not exist yet."""
        if not write and not self.path.is_file():
            yield None
            return
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = shared_sqlite(self.path, timeout_s=BUSY_TIMEOUT_MS / 1000)
            else:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except OSError as e:
            raise AnnotationError(f"Cannot open the annotations file {self.path} ({e}); check that the folder is "
                                  "writable.") from e
        except sqlite3.Error as e:
            raise self._error(e) from e
        try:
            if write:
                conn.executescript(_SCHEMA)
            yield conn
        except sqlite3.Error as e:
            raise self._error(e) from e
        finally:
            conn.close()

    def _error(self, e: sqlite3.Error) -> AnnotationError:
        if sqlite_busy(e):
            return AnnotationError(f"The annotations file {self.path} stayed locked by another writer for "
                                   f"{BUSY_TIMEOUT_MS / 1000:g} s ({e}); try again.")
        if isinstance(e, sqlite3.OperationalError):
            return AnnotationError(f"Cannot use the annotations file {self.path} ({e}); check that the folder is "
                                   "writable.")
        return AnnotationError(f"The annotations file {self.path} is damaged ({e}); move it away to start a new "
                               "one.")

    def _index(self, index: int) -> int:
        index = operator.index(index)
        if index < 0 or (self.d_sae is not None and index >= self.d_sae):
            upper = f"0..{self.d_sae - 1}" if self.d_sae is not None else "0 or more"
            raise IndexError(f"feature {index} does not exist; this dictionary has features {upper}.")
        return index

    # -- reading ---------------------------------------------------------------------------

    def get(self, index: int) -> Annotation:
        """The annotation of feature `index` (an empty one, version 0, when it has none)."""
        index = self._index(index)
        return self.many([index]).get(index, Annotation(index))

    def many(self, indices: Iterable[int]) -> dict[int, Annotation]:
        """The saved annotations among `indices` (features without one are left out)."""
        wanted = json.dumps(sorted({operator.index(i) for i in indices}))
        return self._select("WHERE feature_index IN (SELECT value FROM json_each(?))", (wanted,))

    def all(self) -> list[Annotation]:
        """Every saved annotation, by feature index (empty ones, whose text was cleared, included)."""
        return list(self._select("", ()).values())

    def bookmarked(self) -> list[int]:
        return [a.index for a in self._select("WHERE bookmarked = 1", ()).values()]

    def search(self, text: str = "", *, bookmarked: bool | None = None, limit: int = 50) -> list[Annotation]:
        """Annotations whose label or notes contain `text` (case-insensitive for ASCII letters), label
        matches first, then by feature index; `bookmarked` restricts to (non-)bookmarked ones."""
        clauses, params = ["(label != '' OR notes != '' OR bookmarked = 1)"], []
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(label LIKE ? ESCAPE '\\' OR notes LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        if bookmarked is not None:
            clauses.append("bookmarked = ?")
            params.append(int(bookmarked))
        found = list(self._select("WHERE " + " AND ".join(clauses), params).values())
        if text:
            lowered = text.lower()
            found.sort(key=lambda a: (lowered not in a.label.lower(), a.index))
        return found[:max(0, operator.index(limit))]

    def _select(self, where: str, params) -> dict[int, Annotation]:
        with self._connect(write=False) as conn:
            if conn is None:
                return {}
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'annotations'").fetchone() is None:
                return {}  # created a moment ago by a first save that has not made its table yet
            rows = conn.execute("SELECT feature_index, label, notes, bookmarked, version, updated_at FROM annotations "
                                f"{where} ORDER BY feature_index", params).fetchall()
        return {row[0]: Annotation(row[0], row[1], row[2], bool(row[3]), row[4], row[5]) for row in rows}

    # -- writing ---------------------------------------------------------------------------

    def save(self, index: int, *, label: str, notes: str, bookmarked: bool, version: int) -> Annotation:
        """Save feature `index`'s annotation, based on the annotation of `version` (0: none yet).

        Returns the saved annotation (version + 1). AnnotationConflict when the stored version is not
        `version`: someone saved in between, and their text is kept; ValueError for a label or notes
        over the limits."""
        index = self._index(index)
        label, notes = check_label(label), check_notes(notes)
        version = operator.index(version)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: no other save between the check and the write
            try:
                row = conn.execute("SELECT label, notes, bookmarked, version, updated_at FROM annotations "
                                   "WHERE feature_index = ?", (index,)).fetchone()
                current = Annotation(index) if row is None else Annotation(index, row[0], row[1], bool(row[2]),
                                                                           row[3], row[4])
                if current.version != version:
                    raise AnnotationConflict(current, version)
                saved = Annotation(index, label, notes, bool(bookmarked), version + 1, now)
                conn.execute("INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(feature_index) DO UPDATE "
                             "SET label = excluded.label, notes = excluded.notes, bookmarked = excluded.bookmarked, "
                             "version = excluded.version, updated_at = excluded.updated_at",
                             (index, label, notes, int(bookmarked), saved.version, now))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return saved


def export_annotations(dictionary_folder: str | Path, out: str | Path | None = None, *,
                       dictionary_id: str | None = None) -> dict[str, Any]:
    """The dictionary's annotations as one JSON-ready dict that travels with the dictionary: which
    dictionary they describe (its config's name, model, hook(s), architecture and size) and every
    annotation. Written to `out` (atomically) when given."""
    folder = Path(dictionary_folder).expanduser()
    config_path = folder / DICTIONARY_CONFIG_FILENAME
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{folder} is not a readable dictionary folder ({e}); pass the folder holding its "
                              "config.json.") from e
    keys = ("name", "exp_name", "model_name", "hook_name", "hook_out", "architecture", "d_in", "d_sae")
    export = {
        "format": EXPORT_FORMAT, "format_version": 1,
        "dictionary": {"id": dictionary_id, **{k: config.get(k) for k in keys}},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "annotations": [a.to_dict() for a in Annotations.of_dictionary(folder).all() if not a.empty],
    }
    if out is not None:
        atomic_write(out, json.dumps(export, indent=2, ensure_ascii=False) + "\n")
    return export


__all__ = ["Annotation", "AnnotationConflict", "AnnotationError", "Annotations", "annotations_path",
           "export_annotations", "ANNOTATIONS_FILENAME", "MAX_LABEL_CHARS", "MAX_NOTES_CHARS"]
