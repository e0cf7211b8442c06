"""The README's workflow as a user runs it: the example scripts copied to `exp/` and run from the
repository root and from `exp/` (the project is installed with `pip install -e .`), and errors a
user causes printed as one sentence, not a traceback."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_HOOK

EXP = ROOT / "exp"


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def copied_scripts():
    """run_train_example.py and run_analyze_example.py copied into exp/ under fresh names."""
    tag = uuid.uuid4().hex[:8]
    copies = {}
    for script in ("run_train_example.py", "run_analyze_example.py"):
        copies[script] = EXP / f"my_{tag}_{script}"
        shutil.copy(ROOT / script, copies[script])
    yield copies
    for path in copies.values():
        path.unlink(missing_ok=True)


def test_copied_scripts_run_from_the_root_and_from_exp(copied_scripts, tiny_gpt2_dir, tmp_path):
    train_copy, analyze_copy = copied_scripts["run_train_example.py"], copied_scripts["run_analyze_example.py"]
    for args, cwd in (([f"exp/{train_copy.name}", "smollm2"], ROOT), ([train_copy.name, "smollm2"], EXP),
                      ([f"exp/{analyze_copy.name}"], ROOT), ([analyze_copy.name], EXP)):
        proc = run([*args, "--help"], cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "--model.name" in proc.stdout

    results = tmp_path / "results"
    train_command = [train_copy.name, "smollm2", "--exp-name", "copied", "--results-dir", str(results),
                     "--model.name", str(tiny_gpt2_dir), "--activations.hook-name", TINY_HOOK,
                     "--activations.buffer-tokens", "2048", "--activations.train-batch-size", "256",
                     "--trainer.total-training-tokens", "2560", "--trainer.eval-batches", "1",
                     "--dataset.context-size", "64", "--logging.no-progress-bar"]
    proc = run(train_command, EXP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dictionary = results / "copied" / "dictionaries" / TINY_HOOK
    assert json.loads((dictionary / "config.json").read_text())["training_steps"] == 10

    # A scheduler retrying the finished job: the same command succeeds, trains nothing, touches nothing.
    written = {p: p.stat().st_mtime_ns for p in (results / "copied").rglob("*") if p.is_file()}
    again = run(train_command, EXP)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished with this configuration" in again.stdout and "explained_variance" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (results / "copied").rglob("*") if p.is_file()} == written
    # Another configuration under the same name is still refused, with the same sentence.
    other = run([*train_command, "--sae.k", "8"], EXP)
    assert other.returncode == 2 and "already holds trained dictionaries; choose a new exp_name" in other.stderr

    proc = run([analyze_copy.name, "--dictionary-path", str(dictionary), "--model.name", str(tiny_gpt2_dir),
                "--total-analyzing-tokens", "2000", "--dataset.context-size", "64"], EXP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (dictionary / "analysis" / "default" / "features.sqlite").is_file()
    # the one command that shows it, with the results folder it is in
    assert f"GPT2DICT_RESULTS_DIR={shlex.quote(str(results.resolve()))} python -m server" in proc.stdout, proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--activations.hook-name", "blocks.0.hook_resid_postt"], ["has no hook named", "blocks.0.hook_resid_post"]),
    (["--sae.architecture", "gated"], ["sae.architecture is 'gated'", "'topk'"]),
    (["--dataset.path", "/nonexistent/corpus.jsonl", "--activations.hook-name", TINY_HOOK],
     ["does not exist", "dataset.path"]),
])
def test_training_user_errors_are_one_sentence_not_a_traceback(args, words, tiny_gpt2_dir, tmp_path):
    proc = run(["run_train_example.py", "smollm2", "--results-dir", str(tmp_path), "--model.name", str(tiny_gpt2_dir),
                "--logging.no-progress-bar", *args], ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ")
    for word in words:
        assert word in message


def test_analysis_user_error_is_one_sentence(tmp_path):
    bad = tmp_path / "dictionary"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    proc = run(["run_analyze_example.py", "--dictionary-path", str(bad)], ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not valid JSON" in proc.stderr
