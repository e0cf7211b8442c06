"""Durable, atomic writes: the one way the library puts a file or a folder on disk.

Everything is written under a temporary name next to its target, flushed to the disk (`fsync` of
every file, then of the folders holding them), given ordinary permissions (files 0644, folders
0755; `tempfile` would leave them 0600) and only then renamed over the target, after which the
parent folder is synced so the rename itself survives a power cut. A reader, or a run resumed
after SIGKILL, sees the old content or the new one, never a mix.

The files many writers share (a dictionary's annotations, an analysis' explanations) are SQLite
files in WAL mode with synchronous=FULL, opened by `shared_sqlite`.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable, Union

FILE_MODE = 0o644
FOLDER_MODE = 0o755

Content = Union[bytes, str, Callable[[Path], None]]
"""What `atomic_write` writes: bytes, text (UTF-8), or a function that writes the file at the path it is given."""


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's entry to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_and_chmod(path: Path) -> None:
    """fsync and chmod a file, or every file and folder of a tree (files first, folders after)."""
    if path.is_dir():
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.chmod(os.path.join(root, name), FILE_MODE)
                fsync_path(os.path.join(root, name))
            os.chmod(root, FOLDER_MODE)
            fsync_path(root)
    else:
        os.chmod(path, FILE_MODE)
        fsync_path(path)


def temp_sibling(target: str | Path, *, folder: bool = False) -> Path:
    """A new, empty temporary file (or folder) next to `target`, hidden by a leading dot."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, target: str | Path) -> Path:
    """Make the written file or folder `tmp` durable and rename it over `target` (same folder).

    A folder replaces an existing folder at `target` (moved aside first, then deleted), so a crash
    leaves either the old folder or the new one at `target`."""
    tmp, target = Path(tmp), Path(target)
    _sync_and_chmod(tmp)
    aside = None
    if tmp.is_dir() and target.is_dir():
        aside = temp_sibling(target, folder=True)
        os.replace(target, aside / target.name)
    os.replace(tmp, target)
    fsync_path(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def atomic_write(path: str | Path, content: Content) -> Path:
    """Write `content` to `path` atomically and durably (see the module docstring)."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        if callable(content):
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            with open(tmp, "wb") as f:
                f.write(data)
        return publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_tree(path: str | Path) -> None:
    """Delete a folder so that no half-deleted copy can be mistaken for a whole one: it is renamed
    to a hidden temporary name first (and that rename synced), then removed."""
    path = Path(path)
    if not path.exists():
        return
    aside = temp_sibling(path, folder=True)
    os.replace(path, aside / path.name)
    fsync_path(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def sqlite_busy(error: sqlite3.Error) -> bool:
    """Whether an SQLite error is another connection's lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(error, "sqlite_errorcode", None)  # set on every error sqlite3 raises (Python 3.11+)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def shared_sqlite(path: str | Path, *, timeout_s: float) -> sqlite3.Connection:
    """A writer's connection to the SQLite file `path`, which other threads and processes write too:
    autocommit (take `BEGIN IMMEDIATE` to write), WAL mode, synchronous=FULL, and waiting up to
    `timeout_s` for another writer's lock.

    Turning a new file to WAL mode needs the file's exclusive lock, and SQLite does not wait for
    that lock (the busy handler is not called; several first writers at once get "database is
    locked"), so the switch is retried here until `timeout_s`. On a file system without WAL support
    the file keeps its rollback journal, which is just as safe, only slower with many readers.
    sqlite3 errors propagate; the caller words them."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    try:
        deadline, pause = time.monotonic() + timeout_s, 0.001
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if not sqlite_busy(e) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause * random.uniform(0.5, 1.5))  # jittered, so racing first writers spread out
                pause = min(2 * pause, 0.05)
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


__all__ = ["atomic_write", "publish", "temp_sibling", "fsync_path", "remove_tree", "shared_sqlite", "sqlite_busy",
           "FILE_MODE"]
