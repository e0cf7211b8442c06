"""Discovery of dictionaries and analyses in the results folder, and the cache of open stores.

The folder is scanned on every request (a listdir and a few stats), so results written while the
server runs appear without a restart. Parsed dictionary configs and open `FeatureStore` readers
are cached per file and reused while the file's identity (device, inode, size, mtime) is
unchanged; a rerun that replaces a store (a rename gives a new inode) is picked up on the next
request, and the old reader is closed when the last request using it lets go of it.

Dictionaries are named by where they are:

- `<run>:<name>` for `<results>/<run>/dictionaries/<name>/` (runs of one or many dictionaries),
  analyses in `<results>/<run>/dictionaries/<name>/analysis/<analysis>/`;
- `<run>` for `<results>/<run>/dictionary/`, the one-dictionary layout of older runs, analyses in
  `<results>/<run>/analysis/<analysis>/`.

A run is a folder `<results>/<run>/` holding a `config.json`, a `metrics.jsonl` or dictionaries;
its name is the folder's. A dictionary's annotations (labels, notes, bookmarks) are the
`annotations.sqlite` beside its analyses (`core.annotations`).

Every name that comes from a URL is checked here: each part a plain folder name (no `/`, `\\`,
NUL, no leading `.`, so neither `.` nor `..`), and the path it leads to must resolve (symlinks
followed) inside the results folder. Anything else is `NotFound` and never opened.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from core import layout
from core.annotations import Annotations
from core.autointerp.explanations import Explanations
from core.store import PARTIAL_SUFFIX, FeatureStore, StoreError, json_ready

log = logging.getLogger(__name__)

ID_SEPARATOR = ":"
"""Between a run's name and a dictionary's name in a dictionary's id (neither may contain it)."""
_REQUIRED_KEYS = {"model_name": str, "hook_name": str, "architecture": str, "d_in": int}
REPLACEMENT_KINDS = ("transcoder_set", "cross_layer_transcoder")
"""config.json "kind" of replacement models (core.sae.replacement): one folder for many layers."""
_REPLACEMENT_KEYS = {"model_name": str, "d_in": int, "d_sae": int, "layers": list, "hook_names": list}


class NotFound(LookupError):
    """No such dictionary / analysis (or a name that is refused); HTTP 404."""


class DictionaryError(RuntimeError):
    """A dictionary's config.json exists but cannot be read; HTTP 500."""


FileSignature = tuple[int, int, int, int]


def file_signature(path: Path) -> FileSignature:
    """Identity of a file's current contents (symlinks followed); OSError when it is missing."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_name(name: str, what: str) -> str:
    if (not name or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name
            or os.path.isabs(name) or len(name) > 255):
        shown = repr(name[:80]) + ("..." if len(name) > 80 else "")
        raise NotFound(f"{shown} is not a valid {what} name; names are plain folder names (at most 255 characters) "
                       "inside the results folder.")
    return name


def dictionary_path(root: Path, name: str) -> Path:
    """The folder of dictionary id `name` in results folder `root` (see the module docstring), not yet
    checked to be inside it; NotFound for an id that is not one."""
    run, sep, dictionary = name.partition(ID_SEPARATOR)
    run_dir = layout.run_folder(root, check_name(run, "run"))
    if not sep:
        return run_dir / layout.LEGACY_DICTIONARY_FOLDER
    return layout.dictionary_folder(run_dir, check_name(dictionary, "dictionary"))


def dictionary_id(folder: str | Path) -> str:
    """The id of the dictionary in `folder` (`dictionary_path` inverted): `<run>:<name>`, or `<run>` for
    the older one-dictionary layout."""
    run = layout.run_of_dictionary(folder).name
    return run if layout.is_legacy_dictionary(folder) else f"{run}{ID_SEPARATOR}{Path(folder).name}"


@dataclass(frozen=True)
class DictionaryInfo:
    name: str
    """Its id: `<run>:<dictionary>`, or `<run>` for an older run's only dictionary."""
    folder: Path
    """The dictionary folder (as found, not resolved)."""
    config: dict
    """config.json with NaN/inf replaced by None."""
    signature: FileSignature
    """Of config.json, which `SparseAutoencoder.save` writes last: a new save changes it."""
    architecture: str
    """config.json's architecture; a transcoder set's, its first member's (the set's own config names none)."""

    @property
    def d_sae(self) -> int:
        if isinstance(self.config.get("d_sae"), int):
            return self.config["d_sae"]
        sae = self.config.get("sae") if isinstance(self.config.get("sae"), dict) else {}
        if isinstance(sae.get("d_sae"), int):
            return sae["d_sae"]
        factor = sae.get("expansion_factor", 8)  # SAEConfig's default
        return factor * self.config["d_in"] if isinstance(factor, int) else 0

    @property
    def kind(self) -> str:
        """"sparse_autoencoder" (an SAE or transcoder), or a replacement model's kind (REPLACEMENT_KINDS)."""
        kind = self.config.get("kind")
        return kind if kind in REPLACEMENT_KINDS else "sparse_autoencoder"

    @property
    def layers(self) -> list[int] | None:
        """A replacement model's covered layers (blocks), in order; None for an SAE or transcoder."""
        layers = self.config.get("layers") if self.kind != "sparse_autoencoder" else None
        return list(layers) if isinstance(layers, list) and layers else None

    @property
    def n_features(self) -> int:
        """Features in its analyses and annotations: d_sae, times the layers for a replacement model (whose
        feature of layer position i is `i * d_sae + feature`)."""
        return self.d_sae * len(self.layers or [None])

    @property
    def source(self) -> dict | None:
        """Where an imported dictionary came from (`core.formats.import_dictionary`): format, version,
        path, SAELens release / id, original model and hook names; None for one trained here."""
        source = self.config.get("source")
        return source if isinstance(source, dict) else None

    @property
    def metrics(self) -> dict[str, float | int | None]:
        """The scalar evaluation metrics (nested ones such as histograms stay in `config`)."""
        metrics = self.config.get("metrics") or {}
        return {k: v for k, v in metrics.items()
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))} if isinstance(metrics, dict) else {}


class ResultsFolder:
    """Read-only view of one results folder, safe to share between server threads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._lock = threading.Lock()
        # Failures are cached as their message (re-raising one exception object would grow its traceback).
        self._configs: dict[Path, tuple[FileSignature, tuple[dict, str] | str]] = {}
        self._stores: dict[Path, tuple[FileSignature, FeatureStore | str]] = {}
        self._explanations: dict[Path, tuple[tuple[int, int] | None, Explanations]] = {}

    # -- paths -----------------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        """`path` (under the results folder), refused unless it resolves inside the (resolved) results folder."""
        try:
            real = path.resolve()
            root = self.root.resolve()
        except (OSError, RuntimeError) as e:  # symlink loops
            raise NotFound(f"{self._relative(path)} cannot be resolved ({e}).") from e
        if real != root and not real.is_relative_to(root):
            raise NotFound(f"{self._relative(path)} resolves outside the results folder and is not served.")
        return path

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _dictionary_path(self, name: str) -> Path:
        return dictionary_path(self.root, name)

    def _listdir(self, path: Path) -> list[str]:
        try:
            return sorted(e for e in os.listdir(path) if not e.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            log.warning("Cannot list %s: %s", path, e)
            return []

    # -- dictionaries ----------------------------------------------------------------------

    def dictionary_names(self) -> list[str]:
        """Ids of every dictionary with a config.json, sorted by run then name (unsafe ones skipped)."""
        return [name for run in self._listdir(self.root) if ID_SEPARATOR not in run
                for name in self.run_dictionaries(run)]

    def run_dictionaries(self, run: str) -> list[str]:
        """Ids of the dictionaries of run `run` with a config.json, sorted (unsafe ones skipped)."""
        dictionaries = layout.run_folder(self.root, run) / layout.DICTIONARIES_FOLDER
        candidates = [run] + [f"{run}{ID_SEPARATOR}{d}" for d in self._listdir(dictionaries) if ID_SEPARATOR not in d]
        names = []
        for name in candidates:
            try:
                config = self._inside(self._dictionary_path(name) / layout.DICTIONARY_CONFIG_FILENAME)
            except NotFound:
                continue
            if config.is_file():
                names.append(name)
        return names

    def dictionary(self, name: str) -> DictionaryInfo:
        """The dictionary of id `name`; NotFound or DictionaryError."""
        config_path = self._inside(self._dictionary_path(name) / layout.DICTIONARY_CONFIG_FILENAME)
        try:
            signature = file_signature(config_path)
        except OSError:
            with self._lock:
                self._configs.pop(config_path, None)
            raise NotFound(f"No dictionary named {name!r} in the results folder "
                           f"(expected {self._relative(config_path)}).") from None
        with self._lock:
            cached = self._configs.get(config_path)
        if cached is None or cached[0] != signature:
            cached = (signature, self._read_config(name, config_path))
            with self._lock:
                self._configs[config_path] = cached
        read = cached[1]
        if isinstance(read, str):
            raise DictionaryError(read)
        config, architecture = read
        return DictionaryInfo(name=name, folder=config_path.parent, config=config, signature=signature,
                              architecture=architecture)

    @staticmethod
    def _read_config(name: str, path: Path) -> tuple[dict, str] | str:
        """(config.json with NaN/inf made None, its architecture), or why it cannot be read."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return (f"The config.json of dictionary {name!r} cannot be read ({e}); "
                    "save or copy the dictionary again.")
        if not isinstance(data, dict):
            return f"The config.json of dictionary {name!r} is not a JSON object; save or copy the dictionary again."
        required = _REPLACEMENT_KEYS if data.get("kind") in REPLACEMENT_KINDS else _REQUIRED_KEYS
        bad = [key for key, kind in required.items()
               if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool)]
        if not bad and data.get("kind") in REPLACEMENT_KINDS and not (
                data["layers"] and len(data["hook_names"]) == len(data["layers"])
                and all(isinstance(x, int) and not isinstance(x, bool) for x in data["layers"])):
            bad = ["layers", "hook_names"]
        if bad:
            return (f"The config.json of dictionary {name!r} lacks or has invalid {', '.join(bad)}; "
                    "it was not written by SparseAutoencoder.save or is damaged, save the dictionary again.")
        architecture = data.get("architecture")
        if not isinstance(architecture, str):  # a transcoder set: its members'
            member = path.parent / layout.transcoder_set_member(data["layers"][0]) / layout.DICTIONARY_CONFIG_FILENAME
            try:
                architecture = json.loads(member.read_text(encoding="utf-8")).get("architecture")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                architecture = None
        return json_ready(data), architecture if isinstance(architecture, str) else data.get("kind", "unknown")

    def annotations(self, name: str) -> Annotations:
        """The annotations of dictionary `name` (NotFound for an unknown dictionary)."""
        info = self.dictionary(name)
        return Annotations.of_dictionary(info.folder, d_sae=info.n_features)

    # -- runs ------------------------------------------------------------------------------

    def run_names(self) -> list[str]:
        """Every run folder of the results folder, sorted (unsafe names skipped)."""
        names = []
        for run in self._listdir(self.root):
            if ID_SEPARATOR in run:
                continue
            try:
                folder = self._inside(layout.run_folder(self.root, check_name(run, "run")))
            except NotFound:
                continue
            if layout.is_run_folder(folder):
                names.append(run)
        return names

    def run_folder(self, run: str) -> Path:
        """The folder of run `run`; NotFound when there is no such run."""
        if ID_SEPARATOR in run:
            raise NotFound(f"{run!r} is a dictionary id, not a run name; the run is the part before "
                           f"{ID_SEPARATOR!r}.")
        folder = self._inside(layout.run_folder(self.root, check_name(run, "run")))
        if not layout.is_run_folder(folder):
            raise NotFound(f"No run named {run!r} in the results folder.")
        return folder

    # -- analyses --------------------------------------------------------------------------

    def analysis_names(self, name: str) -> list[str]:
        """Analyses of dictionary `name` whose store opens as a complete store, sorted."""
        names = []
        for analysis in self._listdir(self._inside(layout.analyses_folder(self._dictionary_path(name)))):
            try:
                self.store(name, analysis)
            except (NotFound, StoreError):
                continue
            names.append(analysis)
        return names

    def store(self, name: str, analysis: str) -> FeatureStore:
        """The open reader of the store of analysis `analysis` of dictionary `name`.

        NotFound when the dictionary or analysis does not exist (or is still being written);
        StoreError when the file exists but is not a usable store.
        """
        check_name(analysis, "analysis")
        path = self._inside(layout.store_path(layout.analysis_folder(self._dictionary_path(name), analysis)))
        try:
            signature = file_signature(path)
        except OSError:
            with self._lock:
                self._stores.pop(path, None)  # deleted: let its reader close
            if path.with_name(path.name + PARTIAL_SUFFIX).exists():
                raise NotFound(f"Analysis {analysis!r} of {name!r} is not complete yet (it is still running or "
                               "was interrupted); wait for it or rerun it.") from None
            raise NotFound(f"Dictionary {name!r} has no analysis named {analysis!r}.") from None
        with self._lock:
            cached = self._stores.get(path)
        if cached is None or cached[0] != signature:
            try:
                opened: FeatureStore | str = FeatureStore(path)
            except StoreError as e:
                log.warning("Cannot open feature store %s: %s", path, e)
                opened = f"Analysis {analysis!r} of dictionary {name!r} cannot be read: {e}"

            cached = (signature, opened)
            with self._lock:
                self._stores[path] = cached  # a replaced reader closes once no request holds it
        store = cached[1]
        if isinstance(store, str):
            raise StoreError(store)
        return store

    def explanations(self, name: str, analysis: str) -> Explanations:
        """The reader of the explanations file of analysis `analysis` of dictionary `name` (empty when it has
        none yet); NotFound or StoreError as `store` for the analysis. A reader is kept per file and made
        anew when the file is replaced (a new inode) or appears."""
        self.store(name, analysis)
        path = self._inside(layout.explanations_path(layout.analysis_folder(self._dictionary_path(name), analysis)))
        try:
            st = os.stat(path)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        with self._lock:
            cached = self._explanations.get(path)
            if cached is None or cached[0] != identity:  # the old reader closes once no request holds it
                cached = (identity, Explanations(path))
                self._explanations[path] = cached
        return cached[1]

    def close(self) -> None:
        with self._lock:
            for _, reader in self._explanations.values():
                reader.close()
            self._explanations.clear()
            for _, store in self._stores.values():
                if isinstance(store, FeatureStore):
                    store.close()
            self._stores.clear()
            self._configs.clear()
