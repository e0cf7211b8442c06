"""The results folder's layout: the one place that knows where everything is written.

    <results>/<run>/                          a run (`TrainingConfig.exp_name`); see `core.runs.RunFolder`
        config.json                           the run's full TrainingConfig
        metrics.jsonl                         one JSON line per dictionary per logged step / evaluation
        checkpoints/step_<n>/                 resumable state (hidden `.step_<n>.*.tmp` while written)
        dictionaries/<name>/                  a dictionary: config.json + sae.safetensors (a transcoder
                                              set: config.json + one member folder layer_<N>/ per layer)
            analysis/<analysis>/              an analysis: config.json + features.sqlite (immutable)
                explanations.sqlite           its explanations and scores (auto-interpretation)
            annotations.sqlite                labels, notes, bookmarks (editable)
            graphs/<slug>.json                attribution graphs of prompts (replacement models)
            evals/<eval_type_id>/<run>_<name>_eval_results.json
                                              evaluations in SAEBench's JSON shape and file names
        dictionary/                           (older runs of one dictionary: the dictionary itself;
        analysis/<analysis>/                   its analyses and annotations sit beside it, in the
        annotations.sqlite                     run folder)
    <results>/imported/dictionaries/<name>/   converted copies of other libraries' dictionaries

Core, the server and the example scripts ask this module for every path; none spells a file or
folder name of the layout itself.
"""

from __future__ import annotations

from pathlib import Path

RUN_CONFIG_FILENAME = "config.json"
METRICS_FILENAME = "metrics.jsonl"
CHECKPOINTS_FOLDER = "checkpoints"
DICTIONARIES_FOLDER = "dictionaries"
"""A run's dictionaries: `<results>/<run>/dictionaries/<name>/`."""
LEGACY_DICTIONARY_FOLDER = "dictionary"
"""Where runs of one dictionary wrote it before multi-dictionary training: `<results>/<run>/dictionary/`."""
DICTIONARY_CONFIG_FILENAME = "config.json"
DICTIONARY_WEIGHTS_FILENAME = "sae.safetensors"
ANALYSIS_FOLDER = "analysis"
ANALYSIS_CONFIG_FILENAME = "config.json"
STORE_FILENAME = "features.sqlite"
ANNOTATIONS_FILENAME = "annotations.sqlite"
EXPLANATIONS_FILENAME = "explanations.sqlite"
GRAPHS_FOLDER = "graphs"
EVALS_FOLDER = "evals"
EVAL_RESULTS_SUFFIX = "_eval_results.json"
"""SAEBench's result files are `<release>_<sae_id>_eval_results.json`; its tools find them by this suffix."""
IMPORTED_RUN = "imported"
"""`core.formats.import_dictionary` writes converted copies to `<results>/imported/dictionaries/<name>/`."""


def run_folder(results_dir: str | Path, exp_name: str) -> Path:
    """`<results>/<exp_name>/`."""
    return Path(results_dir).expanduser() / exp_name


def is_run_folder(folder: str | Path) -> bool:
    """True for a folder holding what a run writes: its config, metrics log or dictionaries (either layout)."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / entry).exists() for entry in (
        RUN_CONFIG_FILENAME, METRICS_FILENAME, DICTIONARIES_FOLDER, LEGACY_DICTIONARY_FOLDER))


def dictionary_folder(run_dir: str | Path, name: str) -> Path:
    """`<run>/dictionaries/<name>/`."""
    return Path(run_dir) / DICTIONARIES_FOLDER / name


TRANSCODER_SET_MEMBER_PREFIX = "layer_"
"""A transcoder set's folder holds one ordinary dictionary folder per layer: `<set>/layer_<N>/`."""


def transcoder_set_member(layer: int) -> str:
    """The name of a transcoder set's member folder for block `layer`: `layer_<N>`."""
    return f"{TRANSCODER_SET_MEMBER_PREFIX}{layer}"


def imported_dictionary_folder(results_dir: str | Path, name: str) -> Path:
    """`<results>/imported/dictionaries/<name>/`."""
    return dictionary_folder(run_folder(results_dir, IMPORTED_RUN), name)


def is_legacy_dictionary(folder: str | Path) -> bool:
    """True for `<results>/<run>/dictionary/`, the one-dictionary layout of older runs (a dictionary
    that happens to be *named* "dictionary" under `dictionaries/` is not one)."""
    folder = Path(folder).expanduser()
    return folder.name == LEGACY_DICTIONARY_FOLDER and folder.parent.name != DICTIONARIES_FOLDER


def dictionary_home(folder: str | Path) -> Path:
    """The folder holding a dictionary's analyses and annotations: the dictionary folder itself, or
    for the older layout the run folder beside `dictionary/`."""
    folder = Path(folder).expanduser()
    return folder.parent if is_legacy_dictionary(folder) else folder


def analyses_folder(dictionary: str | Path) -> Path:
    """Where a dictionary's analyses are: `<dictionary>/analysis/` (older layout: `<run>/analysis/`)."""
    return dictionary_home(dictionary) / ANALYSIS_FOLDER


def analysis_folder(dictionary: str | Path, analysis_name: str) -> Path:
    """`<dictionary>/analysis/<analysis_name>/` (older layout: `<run>/analysis/<analysis_name>/`)."""
    return analyses_folder(dictionary) / analysis_name


def store_path(analysis: str | Path) -> Path:
    """The feature store of an analysis folder."""
    return Path(analysis) / STORE_FILENAME


def analyzed_dictionary(analysis: str | Path) -> Path:
    """The dictionary folder an analysis folder `<...>/analysis/<name>/` belongs to (`analysis_folder`
    inverted): the folder holding `analysis/`, or `dictionary/` beside it for the older layout."""
    owner = Path(analysis).expanduser().resolve().parent.parent
    legacy = owner / LEGACY_DICTIONARY_FOLDER
    if (legacy / DICTIONARY_CONFIG_FILENAME).is_file() or not (owner / DICTIONARY_CONFIG_FILENAME).is_file():
        return legacy
    return owner


def annotations_path(dictionary: str | Path) -> Path:
    """A dictionary's annotations file, beside its `analysis/` folder."""
    return dictionary_home(dictionary) / ANNOTATIONS_FILENAME


def explanations_path(analysis: str | Path) -> Path:
    """The explanations (auto-interpretation) of an analysis, beside its feature store."""
    return Path(analysis) / EXPLANATIONS_FILENAME


def graphs_folder(dictionary: str | Path) -> Path:
    """Attribution graphs computed through a replacement model: `<dictionary>/graphs/`."""
    return dictionary_home(dictionary) / GRAPHS_FOLDER


def evals_folder(dictionary: str | Path) -> Path:
    """Evaluation results (SAEBench's JSON shape) of a dictionary: `<dictionary>/evals/`."""
    return dictionary_home(dictionary) / EVALS_FOLDER


def eval_results_path(dictionary: str | Path, eval_type_id: str) -> Path:
    """`<dictionary>/evals/<eval_type_id>/<run>_<name>_eval_results.json`: SAEBench's folder per eval
    type and its file name for release <run> (the run folder's name) and id <name> (the dictionary's);
    `dictionary_key` says what SAEBench's tools key the result by."""
    return evals_folder(dictionary) / eval_type_id / f"{dictionary_key(dictionary)}{EVAL_RESULTS_SUFFIX}"


def dictionary_key(dictionary: str | Path) -> str:
    """`<run>_<name>` ("/" made "_", as SAEBench names files): a dictionary's key in SAEBench's tools."""
    folder = Path(dictionary).expanduser().resolve()
    return f"{run_of_dictionary(folder).name}_{folder.name}".replace("/", "_")


def run_of_dictionary(dictionary: str | Path) -> Path:
    """The run folder a dictionary belongs to (`<results>/<run>/`)."""
    folder = Path(dictionary).expanduser().resolve()
    return folder.parent if is_legacy_dictionary(folder) else folder.parent.parent


def results_root_of(dictionary: str | Path) -> Path:
    """The results folder a dictionary lives in (what the server scans to find it)."""
    return run_of_dictionary(dictionary).parent


def finished_dictionaries(run_dir: str | Path) -> list[Path]:
    """The saved dictionaries of a run, by folder (the older layout's `dictionary/` included)."""
    run_dir = Path(run_dir)
    found = sorted(p.parent for p in (run_dir / DICTIONARIES_FOLDER).glob(f"*/{DICTIONARY_CONFIG_FILENAME}"))
    legacy = run_dir / LEGACY_DICTIONARY_FOLDER
    return ([legacy] if (legacy / DICTIONARY_CONFIG_FILENAME).is_file() else []) + found


__all__ = [name for name in dir() if name.isupper() or (not name.startswith("_") and callable(globals()[name])
                                                         and globals()[name].__module__ == __name__)]
