"""Labels, notes and bookmarks (core/annotations.py) in a real SQLite file: versions, conflicts,
concurrent writers (threads and processes), limits, search and the JSON export."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading

import pytest

from core.annotations import (MAX_LABEL_CHARS, MAX_NOTES_CHARS, Annotation, AnnotationConflict, AnnotationError,
                              Annotations, annotations_path, export_annotations)
from tests.conftest import all_at_once


@pytest.fixture()
def notes(tmp_path) -> Annotations:
    return Annotations(tmp_path / "annotations.sqlite", d_sae=100)


def test_save_read_and_versions(notes):
    assert notes.get(7) == Annotation(7) and not notes.path.exists()  # reading creates nothing
    first = notes.save(7, label="  Python imports ", notes="fires on `import`\nand `from`", bookmarked=True, version=0)
    assert (first.label, first.version, first.bookmarked) == ("Python imports", 1, True)
    assert notes.get(7) == first and first.updated_at
    second = notes.save(7, label="imports", notes="", bookmarked=False, version=1)
    assert second.version == 2 and notes.get(7) == second
    assert notes.many([7, 8, 999]) == {7: second}
    assert notes.bookmarked() == []


def test_a_stale_version_is_refused_and_nothing_is_lost(notes):
    mine = notes.get(3)  # two tabs open the same feature
    theirs = notes.get(3)
    saved = notes.save(3, label="first tab", notes="a", bookmarked=False, version=theirs.version)
    with pytest.raises(AnnotationConflict, match="version 0.*version 1") as conflict:
        notes.save(3, label="second tab", notes="b", bookmarked=True, version=mine.version)
    assert conflict.value.current == saved
    assert notes.get(3) == saved  # the first save is kept
    resolved = notes.save(3, label="second tab", notes="a\nb", bookmarked=True, version=conflict.value.current.version)
    assert resolved.version == 2 and notes.get(3).label == "second tab"


def test_limits_and_indices(notes):
    with pytest.raises(ValueError, match=f"limit is {MAX_LABEL_CHARS}"):
        notes.save(1, label="x" * (MAX_LABEL_CHARS + 1), notes="", bookmarked=False, version=0)
    with pytest.raises(ValueError, match=f"limit is {MAX_NOTES_CHARS}"):
        notes.save(1, label="", notes="x" * (MAX_NOTES_CHARS + 1), bookmarked=False, version=0)
    with pytest.raises(ValueError, match="one line"):
        notes.save(1, label="two\nlines", notes="", bookmarked=False, version=0)
    with pytest.raises(IndexError, match="0..99"):
        notes.save(100, label="", notes="", bookmarked=False, version=0)
    with pytest.raises(IndexError):
        notes.get(-1)
    assert notes.get(1).version == 0  # nothing was written


def test_search_by_label_and_notes(notes):
    notes.save(5, label="closing bracket", notes="", bookmarked=False, version=0)
    notes.save(2, label="numbers", notes="also brackets in lists", bookmarked=True, version=0)
    notes.save(9, label="100%_sure", notes="", bookmarked=True, version=0)
    notes.save(4, label="", notes="", bookmarked=False, version=0)  # cleared: not a result
    assert [a.index for a in notes.search("BRACKET")] == [5, 2]  # label matches first
    assert [a.index for a in notes.search("bracket", bookmarked=True)] == [2]
    assert [a.index for a in notes.search("%_")] == [9]  # LIKE wildcards are literal
    assert [a.index for a in notes.search("")] == [2, 5, 9]
    assert notes.bookmarked() == [2, 9]


def _bump(path: str, n: int, worker: int, out) -> None:
    """Add `worker` to feature 0's notes n times, retrying on conflicts (a read-modify-write client);
    puts (worker, [(version read, saved?) of every attempt]) on `out`."""
    notes = Annotations(path)
    attempts = []
    for _ in range(n):
        while True:
            current = notes.get(0)
            try:
                notes.save(0, label="counter", notes=current.notes + f"{worker},", bookmarked=False,
                           version=current.version)
                attempts.append((current.version, True))
                break
            except AnnotationConflict:
                attempts.append((current.version, False))
    out.put((worker, attempts))


def test_first_writers_of_a_new_file_all_get_in(tmp_path):
    """Eight writers released at once on a file that does not exist yet, forty times over: the one
    that creates the file turns it to WAL mode, which needs its exclusive lock, and SQLite does not
    wait for that lock, so without retrying the switch some of them failed with 'database is locked'."""
    failures = []
    for round_ in range(40):
        notes = Annotations(tmp_path / f"round-{round_}" / "annotations.sqlite")
        failures += all_at_once(lambda w: notes.save(w, label=f"writer {w}", notes="", bookmarked=False, version=0), 8)
        assert [a.label for a in notes.all()] == [f"writer {w}" for w in range(8)] or failures
    assert failures == []
    with sqlite3.connect(notes.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_writer_held_up_too_long_gets_one_clear_error_and_loses_nothing(notes, monkeypatch):
    import core.annotations

    notes.save(5, label="kept", notes="", bookmarked=False, version=0)
    monkeypatch.setattr(core.annotations, "BUSY_TIMEOUT_MS", 300)
    other = sqlite3.connect(notes.path, isolation_level=None)  # another process in the middle of a long write
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE annotations SET notes = 'theirs', version = 2 WHERE feature_index = 5")
    with pytest.raises(AnnotationError, match=r"stayed locked by another writer for 0.3 s .*try again"):
        notes.save(5, label="mine", notes="", bookmarked=False, version=1)
    assert notes.get(5).label == "kept"  # readers are not held up by a writer in WAL mode
    other.execute("COMMIT")
    other.close()
    assert (notes.get(5).notes, notes.get(5).version) == ("theirs", 2)
    assert notes.save(5, label="mine", notes="theirs", bookmarked=False, version=2).version == 3


def test_a_damaged_file_is_named_and_left_as_it_is(notes):
    notes.path.write_bytes(b"not an SQLite file " * 100)
    for attempt in (lambda: notes.get(1), lambda: notes.save(1, label="x", notes="", bookmarked=False, version=0)):
        with pytest.raises(AnnotationError, match="is damaged .*move it away"):
            attempt()
    assert notes.path.read_bytes() == b"not an SQLite file " * 100


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_concurrent_writers_never_lose_a_write(tmp_path, kind):
    path, workers, n = str(tmp_path / "annotations.sqlite"), 4, 15
    if kind == "threads":
        import queue

        out = queue.Queue()
        runners = [threading.Thread(target=_bump, args=(path, n, w, out)) for w in range(workers)]
    else:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        runners = [ctx.Process(target=_bump, args=(path, n, w, out)) for w in range(workers)]
    for r in runners:
        r.start()
    attempts = dict(out.get(timeout=120) for _ in runners)
    for r in runners:
        r.join(timeout=60)
    final = Annotations(path).get(0)
    written = final.notes.rstrip(",").split(",")  # the workers in the order their saves were kept
    assert final.version == workers * n == len(written)  # every save kept, each exactly once
    assert sorted(written) == sorted(str(w) for w in range(workers) for _ in range(n))
    # Each attempt based on version v either wrote version v + 1 itself, or was refused because another
    # worker had written version v + 1 meanwhile: no save was refused without a real conflict.
    for worker, tries in attempts.items():
        assert sum(saved for _, saved in tries) == n
        for version, saved in tries:
            assert (written[version] == str(worker)) == saved, (worker, version, saved)


def test_where_annotations_live(tmp_path):
    assert annotations_path(tmp_path / "run" / "dictionaries" / "res3") == tmp_path / "run/dictionaries/res3/annotations.sqlite"
    assert annotations_path(tmp_path / "old-run" / "dictionary") == tmp_path / "old-run/annotations.sqlite"


def test_export_travels_with_the_dictionary(tmp_path):
    folder = tmp_path / "run" / "dictionaries" / "res3"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "res3", "exp_name": "run", "model_name": "gpt2",
                                                    "hook_name": "blocks.3.hook_resid_post", "hook_out": None,
                                                    "architecture": "topk", "d_in": 768, "d_sae": 100}))
    notes = Annotations.of_dictionary(folder, d_sae=100)
    notes.save(12, label="dates", notes="months, years", bookmarked=True, version=0)
    notes.save(3, label="", notes="", bookmarked=False, version=0)  # cleared: not exported
    exported = export_annotations(folder, tmp_path / "out" / "labels.json", dictionary_id="run:res3")
    assert exported["format"] == "gpt2-dictionary-annotations"
    assert exported["dictionary"] == {"id": "run:res3", "name": "res3", "exp_name": "run", "model_name": "gpt2",
                                      "hook_name": "blocks.3.hook_resid_post", "hook_out": None,
                                      "architecture": "topk", "d_in": 768, "d_sae": 100}
    assert [(a["index"], a["label"], a["bookmarked"]) for a in exported["annotations"]] == [(12, "dates", True)]
    assert json.loads((tmp_path / "out" / "labels.json").read_text()) == exported
