"""Exact resumption under fire: a real training run (tiny GPT-2, a corpus that wraps every ~50
steps) killed with SIGKILL at random steps and in the middle of writing checkpoints, stopped with
SIGTERM and SIGINT, and restarted each time, must end with the uninterrupted run's dictionary, bit
for bit; its evaluation text must never have been trained on."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from core import DatasetConfig, TrainingConfig, held_out_sequences
from tests.conftest import ROOT, TINY_HOOK, tiny_training_config

STEPS = 160
CHECKPOINT_EVERY = 4
CHILD_TIMEOUT = 120


def numbered_corpus(path: Path, n: int = 50) -> Path:
    """Documents whose words name them (`d17w3`); about 15 training steps per epoch below."""
    rng = random.Random(0)
    path.write_text("".join(json.dumps({"text": " ".join(f"d{i}w{j}" for j in range(rng.randint(4, 30)))}) + "\n"
                            for i in range(n)))
    return path


def kill_test_config(model_dir: Path, results_dir: Path, corpus: Path, exp_name: str) -> TrainingConfig:
    cfg = tiny_training_config(model_dir, results_dir, exp_name=exp_name, steps=STEPS, eval_every_steps=40,
                               checkpoint_every_steps=CHECKPOINT_EVERY, keep_checkpoints=2)
    cfg.dataset = DatasetConfig(path=str(corpus), context_size=32, shuffle_documents=True, shuffle_buffer_documents=20)
    cfg.logging.log_every_steps = 1
    return cfg


def start(config_path: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.training_child", str(config_path)], cwd=ROOT,
                            env={**os.environ, **{k: str(v) for k, v in env.items()}}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def logged_step(run_dir: Path) -> int:
    """The step of the last complete line of metrics.jsonl (0 before any)."""
    path = run_dir / "metrics.jsonl"
    step = 0
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError):
                pass
    return step


def newest_checkpoint_state(run_dir: Path) -> dict:
    from core.runs import RunFolder

    checkpoint = RunFolder(run_dir).latest_checkpoint()
    return json.loads((checkpoint / "state.json").read_text()) if checkpoint else {"step": 0, "epoch": 0}


def started_at(line: str, proc: subprocess.Popen) -> int:
    """The step a child says it started training at (`TRAINING from step <n>`)."""
    assert line.startswith("TRAINING from step "), (line, proc.stderr.read()[-3000:])
    return int(line.split()[-1])


def wait_for_step(proc: subprocess.Popen, run_dir: Path, target: int, resumed_at: int) -> bool:
    """Wait until the child has logged `target` steps; False when it exited first. The child must
    have started at step `resumed_at`, the newest checkpoint's (what tells a resume from a restart)."""
    # Its trainer is built (and stale metrics of the killed run dropped) before it says TRAINING.
    assert started_at(proc.stdout.readline(), proc) == resumed_at
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if logged_step(run_dir) >= target:
            return True
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"the training child made no progress to step {target} in {CHILD_TIMEOUT} s")


def final_dictionary(run_dir: Path) -> Path:
    return run_dir / "dictionaries" / TINY_HOOK


def final_tensors(run_dir: Path) -> dict:
    return load_file(str(final_dictionary(run_dir) / "sae.safetensors"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return numbered_corpus(tmp_path_factory.mktemp("corpus") / "numbered.jsonl")


@pytest.fixture(scope="module")
def uninterrupted(tiny_gpt2_dir, corpus, tmp_path_factory) -> Path:
    """The run folder of the reference run, trained in one go in a child process."""
    results = tmp_path_factory.mktemp("reference")
    cfg = kill_test_config(tiny_gpt2_dir, results, corpus, "reference")
    cfg.save_json(results / "reference.json")
    proc = start(results / "reference.json")
    out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    return results / "reference"


def test_killed_and_stopped_at_random_moments_resumes_to_the_same_dictionary(tiny_gpt2_dir, tiny_model, corpus,
                                                                               uninterrupted, tmp_path):
    rng = random.Random(2026)
    cfg = kill_test_config(tiny_gpt2_dir, tmp_path, corpus, "killed")
    config_path = tmp_path / "killed.json"
    cfg.save_json(config_path)
    run_dir = tmp_path / "killed"
    # A checkpoint write fsyncs its 3 files and its folder, then (after the rename) the checkpoints
    # folder, then once more per pruned checkpoint: a kill before one of a process's first 16
    # checkpoint fsyncs lands inside a write, between a rename and the pruning, or in the pruning.
    plan = [("fsync", n) for n in rng.sample(range(1, 17), 3)]
    plan += [("SIGTERM", None), ("SIGINT", None)] + [("SIGKILL", None)] * 7
    rng.shuffle(plan)

    resumed_from, interruptions = [], []
    for action, fsync_index in plan:
        before = newest_checkpoint_state(run_dir)
        resumed_from.append(before)
        if action == "fsync":
            proc = start(config_path, KILL_AT_CHECKPOINT_FSYNC=fsync_index)
            proc.wait(timeout=CHILD_TIMEOUT)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
            assert started_at(proc.stdout.readline(), proc) == before["step"]
        else:
            proc = start(config_path)
            target = before["step"] + rng.randint(1, 3 * CHECKPOINT_EVERY)
            assert wait_for_step(proc, run_dir, target, before["step"]), f"the run ended before step {target}"
            time.sleep(rng.uniform(0, 0.05))  # somewhere inside a step
            proc.send_signal(getattr(signal, action))
            proc.wait(timeout=CHILD_TIMEOUT)
            stderr = proc.stderr.read()
            if action == "SIGKILL":
                assert proc.returncode == -signal.SIGKILL
            else:  # a clean stop: a checkpoint at the step it stopped at, and one sentence, no traceback
                assert proc.returncode == 128 + getattr(signal, action), stderr[-3000:]
                assert f"{action} received: stopped at step" in stderr and "Traceback" not in stderr
                assert newest_checkpoint_state(run_dir)["step"] >= target
        interruptions.append(action)
    last = newest_checkpoint_state(run_dir)
    proc = start(config_path)
    out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0 and "DONE" in out, err[-3000:]
    assert started_at(out.splitlines()[0], proc) == last["step"] > 0

    print("resumed at steps", [state["step"] for state in resumed_from], "epochs",
          [state["epoch"] for state in resumed_from])
    assert len(interruptions) == 12  # what the docs say: a dozen
    assert max(state["epoch"] for state in resumed_from) >= 1  # some resumptions came after the data wrapped
    assert newest_checkpoint_state(run_dir)["epoch"] >= 2  # the corpus wrapped at least twice

    expected, got = final_tensors(uninterrupted), final_tensors(run_dir)
    assert set(got) == set(expected)
    for name in expected:  # bit for bit on CPU
        assert got[name].dtype == expected[name].dtype and bool((got[name] == expected[name]).all()), name
    reference_config = json.loads((final_dictionary(uninterrupted) / "config.json").read_text())
    config = json.loads((final_dictionary(run_dir) / "config.json").read_text())
    assert config["metrics"] == reference_config["metrics"]

    # The evaluation sequences came from the first documents, and training always started after them.
    held = held_out_sequences(cfg.dataset, tiny_model.tokenizer, bos_token_id=tiny_model.bos_token_id,
                              separator_token_id=tiny_model.separator_token_id,
                              n_sequences=2 * cfg.trainer.eval_batches * cfg.activations.model_batch_size)
    for state in resumed_from[1:]:
        if state["step"]:
            assert state["first_training_document"] == held.n_documents

    # What a kill left behind was cleaned up; what stays is whole and readable by others.
    checkpoints = run_dir / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]
    for path in [*checkpoints.rglob("*"), *final_dictionary(run_dir).iterdir(), run_dir / "metrics.jsonl",
                 run_dir / "config.json"]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    def logged_losses(folder: Path) -> list[tuple[int, float]]:
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in records if "loss" in r]

    logged = logged_losses(run_dir)
    assert [step for step, _ in logged] == list(range(1, STEPS + 1))  # each step once, in order
    assert logged == logged_losses(uninterrupted)
