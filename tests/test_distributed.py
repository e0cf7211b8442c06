"""Real torchrun jobs of 2 gloo ranks on this CPU: data-parallel and spread-dictionary training
match one process with the same global batch, a 2-rank run resumes exactly, a 2-rank analysis
writes the same store as one process, only rank 0 writes, and bad input (a batch the world size
does not divide, ranks given different configs, a rank that dies) stops every rank with one clear
error instead of a hang."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core import analyze, train
from core.config import DictionaryConfig
from tests.conftest import ROOT, TINY_HOOK, tiny_analysis_config, tiny_training_config

HOOK_1 = "blocks.1.hook_resid_post"
TIMEOUT = 240


def torchrun(*args: str, env: dict | None = None, nproc: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "tests.training_child", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-4000:]
    return out, err


def config(model_dir: Path, results: Path, name: str, **overrides):
    # AuxK stays out here (its own test below); everything else is per token.
    cfg = tiny_training_config(model_dir, results, exp_name=name, steps=16, **overrides)
    cfg.sae.dead_tokens_threshold = 10 ** 9
    return cfg


def write(cfg, path: Path) -> Path:
    cfg.save_json(path)
    return path


def tensors(folder: Path) -> dict:
    return load_file(str(folder / "sae.safetensors"))


def assert_close_dictionaries(a: Path, b: Path, **tolerance) -> None:
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb)
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], msg=name, **tolerance)


def test_data_parallel_matches_one_process_and_only_rank_zero_writes(tiny_gpt2_dir, tiny_model, tmp_path):
    one = train(config(tiny_gpt2_dir, tmp_path, "one"), model=tiny_model)
    audit = tmp_path / "writes"
    out, _ = finish(torchrun(str(write(config(tiny_gpt2_dir, tmp_path, "two"), tmp_path / "two.json")),
                             env={"AUDIT_WRITES": str(audit)}))
    assert out.count("DONE") == 2
    two = tmp_path / "two" / "dictionaries" / TINY_HOOK
    # The same global batches (every rank runs the model on every other batch and all hold every
    # row), gradients averaged over the two halves: the same weights up to float rounding.
    assert_close_dictionaries(one.dictionary_path, two, rtol=1e-4, atol=2e-5)
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [5, 10, 15, 16]  # logged once, by rank 0
    # Rank 1 never wrote into the results folder; rank 0 did.
    rank1 = [p for p in Path(f"{audit}.rank1").read_text().splitlines() if p.startswith(str(tmp_path / "two"))]
    rank0 = [p for p in Path(f"{audit}.rank0").read_text().splitlines() if p.startswith(str(tmp_path / "two"))]
    assert rank1 == [] and any("sae.safetensors" in p or "config.json" in p for p in rank0)


def adam_first_moments(run_dir: Path, name: str) -> dict:
    """Adam's exp_avg of every parameter of dictionary `name` in the run's newest checkpoint: a
    moving average of the gradients themselves, which (unlike Adam's steps) scales with them."""
    from core.runs import RunFolder

    checkpoint = RunFolder(run_dir).latest_checkpoint()
    state = torch.load(checkpoint / "dictionaries" / name / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    return {key: value["exp_avg"] for key, value in sorted(state.items())}


@pytest.mark.parametrize("architecture", ["relu", "jumprelu", "topk"])
def test_data_parallel_gradients_are_averaged_for_every_architecture(architecture, tiny_gpt2_dir, tiny_model, tmp_path):
    """relu, jumprelu and topk with AuxK training dead latents: the 2-rank job's weights and its
    averaged gradients (Adam's first moments, which a sum over the ranks would double) are one
    process's, up to float rounding. AuxK's normalization is over the global batch (`batch_sum`)."""
    def cfg(name: str):
        c = config(tiny_gpt2_dir, tmp_path, name, checkpoint_every_steps=4, max_grad_norm=None)
        # 512 latents, 4 active per token: many have not fired in the last 2 steps, which AuxK trains.
        c.sae = dataclasses.replace(c.sae, architecture=architecture, jumprelu_init_threshold=0.05, expansion_factor=8,
                                    k=4, dead_tokens_threshold=128 * 2)
        return c

    one = train(cfg("one"), model=tiny_model)
    finish(torchrun(str(write(cfg("two"), tmp_path / "two.json"))))
    assert_close_dictionaries(one.dictionary_path, tmp_path / "two" / "dictionaries" / TINY_HOOK, rtol=1e-4,
                              atol=2e-5)
    ones, twos = adam_first_moments(tmp_path / "one", TINY_HOOK), adam_first_moments(tmp_path / "two", TINY_HOOK)
    for key in ones:
        torch.testing.assert_close(twos[key], ones[key], rtol=1e-3, atol=1e-6, msg=f"exp_avg of parameter {key}")
    if architecture == "topk":
        records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("aux_loss", 0) > 0 and r.get("dead_features", 0) > 0 for r in records)  # AuxK did work


def test_a_checkpoint_resumes_on_another_number_of_ranks(tiny_gpt2_dir, tiny_model, tmp_path):
    """2 ranks -> 1 process and 1 process -> 2 ranks: the resumed runs start at the checkpoint's step
    and end with the uninterrupted run's weights up to float rounding."""
    whole = config(tiny_gpt2_dir, tmp_path, "whole", checkpoint_every_steps=4)
    whole.trainer.total_training_tokens = 128 * 24
    reference = train(whole, model=tiny_model)

    # 2 ranks, stopped by SIGTERM after step 8; then one process continues.
    two_then_one = dataclasses.replace(whole, exp_name="two-then-one")
    job = torchrun(str(write(two_then_one, tmp_path / "two-then-one.json")))
    metrics = tmp_path / "two-then-one" / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (metrics.is_file() and "\"step\": 10" in metrics.read_text()):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=TIMEOUT)
    assert "SIGTERM received: stopped at step" in err, err[-3000:]
    state = json.loads(sorted((tmp_path / "two-then-one" / "checkpoints").glob("step_*/state.json"),
                              key=lambda p: int(p.parent.name[5:]))[-1].read_text())
    assert state["world_size"] == 2 and 10 <= state["step"] < 24
    resumed = train(two_then_one, model=tiny_model)
    assert resumed.started_at_step == state["step"]
    assert_close_dictionaries(reference.dictionary_path, resumed.dictionary_path, rtol=1e-4, atol=2e-5)

    # One process to step 10 (a checkpoint at 8); then 2 ranks continue.
    from core.training import build_trainer

    one_then_two = dataclasses.replace(whole, exp_name="one-then-two")
    trainer = build_trainer(one_then_two, model=tiny_model)
    while trainer.step < 10:
        trainer.train_step(trainer.buffer.next_batch())
        if trainer.step % 4 == 0:
            trainer.save_checkpoint()
    out, _ = finish(torchrun(str(write(one_then_two, tmp_path / "one-then-two.json"))))
    assert out.count("TRAINING from step 8") == 2, out
    assert_close_dictionaries(reference.dictionary_path, tmp_path / "one-then-two" / "dictionaries" / TINY_HOOK,
                              rtol=1e-4, atol=2e-5)


def test_spread_dictionaries_match_one_process(tiny_gpt2_dir, tiny_model, tmp_path):
    def two_dictionaries(name):
        cfg = config(tiny_gpt2_dir, tmp_path, name)
        cfg.dictionaries = (DictionaryConfig(name="resid0"),
                            DictionaryConfig(name="resid1", hook_name=HOOK_1, sae=dataclasses.replace(cfg.sae, k=4)))
        return cfg

    one = train(two_dictionaries("one"), model=tiny_model)
    spread = two_dictionaries("spread")
    spread.distributed.strategy = "spread_dictionaries"
    finish(torchrun(str(write(spread, tmp_path / "spread.json"))))
    for name in ("resid0", "resid1"):  # each trained on whole batches by its own rank
        assert_close_dictionaries(one.dictionary_paths[name], tmp_path / "spread" / "dictionaries" / name,
                                  rtol=1e-5, atol=1e-6)
    records = [json.loads(line) for line in (tmp_path / "spread" / "metrics.jsonl").read_text().splitlines()]
    for kind in ("loss", "final_eval"):  # rank 0 logs both, one of them trained on rank 1
        assert sorted(r["dictionary"] for r in records if kind in r and r["step"] == 16) == ["resid0", "resid1"]


def test_a_two_rank_run_stopped_by_sigterm_resumes_exactly(tiny_gpt2_dir, tmp_path):
    whole = config(tiny_gpt2_dir, tmp_path, "whole", checkpoint_every_steps=4)
    whole.trainer.total_training_tokens = 128 * 30
    finish(torchrun(str(write(whole, tmp_path / "whole.json"))))
    parted = dataclasses.replace(whole, exp_name="parted")
    job = torchrun(str(write(parted, tmp_path / "parted.json")))
    metrics = tmp_path / "parted" / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (metrics.is_file() and "\"step\": 10" in metrics.read_text()):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, err = job.communicate(timeout=TIMEOUT)
    assert "SIGTERM received: stopped at step" in err, err[-3000:]
    state = json.loads(sorted((tmp_path / "parted" / "checkpoints").glob("step_*/state.json"),
                              key=lambda p: int(p.parent.name[5:]))[-1].read_text())
    assert 10 <= state["step"] < 30 and state["world_size"] == 2
    out, _ = finish(torchrun(str(tmp_path / "parted.json")))
    # Both ranks resumed at the checkpoint's step (a run that ignored it and started over would also
    # end with the same weights: this is what tells a resume from a restart).
    assert out.count(f"TRAINING from step {state['step']}") == 2, out
    assert_close_dictionaries(tmp_path / "whole" / "dictionaries" / TINY_HOOK,
                              tmp_path / "parted" / "dictionaries" / TINY_HOOK, rtol=0, atol=0)


def test_a_two_rank_analysis_writes_the_same_store_as_one_process(tiny_dictionary, tiny_gpt2_dir, tiny_model,
                                                                  tmp_path):
    import shutil

    copies = {}
    for name in ("one", "two"):  # the shared tiny dictionary is left as it is
        copies[name] = tmp_path / f"dictionary-{name}"
        shutil.copytree(tiny_dictionary, copies[name], ignore=shutil.ignore_patterns("analysis"))
    one_folder = analyze(tiny_analysis_config(copies["one"], tiny_gpt2_dir, analysis_name="one"), model=tiny_model)
    copy = copies["two"]
    cfg = tiny_analysis_config(copy, tiny_gpt2_dir, analysis_name="two")
    cfg.save_json(tmp_path / "analysis.json")
    finish(torchrun("--analysis", str(tmp_path / "analysis.json")))

    def content(store: Path) -> dict:
        with sqlite3.connect(store) as db:
            tables = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                      for t in ("features", "sample_groups", "samples", "vocab")}
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        for key in ("created_at", "analysis_config", "analysis_name"):
            meta.pop(key)
        return {**tables, "meta": meta}

    one, two = content(one_folder / "features.sqlite"), content(copy / "analysis" / "two" / "features.sqlite")
    assert one["samples"] and one == two


def test_a_batch_the_world_size_does_not_divide_is_refused_on_every_rank(tiny_gpt2_dir, tmp_path):
    cfg = config(tiny_gpt2_dir, tmp_path, "odd")
    cfg.activations.train_batch_size = 127
    job = torchrun(str(write(cfg, tmp_path / "odd.json")))
    out, err = job.communicate(timeout=TIMEOUT)
    assert job.returncode != 0 and "TRAINING" not in out
    assert err.count("must divide by the 2 ranks") == 2 and "Traceback" not in err.split("error:")[1]


def test_ranks_given_different_configs_are_stopped(tiny_gpt2_dir, tmp_path):
    cfg = config(tiny_gpt2_dir, tmp_path, "mixed")
    write(cfg, tmp_path / "mixed.json")
    other = dataclasses.replace(cfg, seed=7)
    write(other, tmp_path / "mixed.rank1.json")  # rank 1 reads this one
    job = torchrun(str(tmp_path / "mixed.json"))
    out, err = job.communicate(timeout=TIMEOUT)
    assert job.returncode != 0 and "TRAINING" not in out
    assert err.count("were given different training configs (rank(s) [1] differ from rank 0)") == 2


def test_a_rank_that_dies_stops_the_others_with_an_error_not_a_hang(tiny_gpt2_dir, tmp_path):
    """Two ranks started by hand with torchrun's environment contract (no agent to tear the job
    down): rank 1 is SIGKILLed mid-training; rank 0 must end with one clear error."""
    cfg = config(tiny_gpt2_dir, tmp_path, "dying")
    cfg.trainer.total_training_tokens = 128 * 10 ** 4
    cfg.distributed.collective_timeout_s = 60
    write(cfg, tmp_path / "dying.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        ranks.append(subprocess.Popen([sys.executable, "-m", "tests.training_child", str(tmp_path / "dying.json")],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    assert ranks[1].stdout.readline().startswith("TRAINING"), ranks[1].stderr.read()[-3000:]
    time.sleep(2)
    ranks[1].kill()
    started = time.monotonic()
    _, err = ranks[0].communicate(timeout=TIMEOUT)
    assert ranks[0].returncode == 1, err[-3000:]
    assert time.monotonic() - started < cfg.distributed.collective_timeout_s + 30
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: Rank 0: the collective") and "another rank probably stopped" in message


def test_a_two_rank_cache_holds_the_same_rows_as_one_process(tiny_gpt2_dir, tiny_model, tmp_path):
    """torchrun writes one cache, each rank its shards: the same sequences and activations as a
    single process's cache of the same config, in shards of both ranks."""
    from core import CacheConfig, DatasetConfig, LanguageModelConfig, cache_activations, read_manifest
    from core.cache import CachedActivations

    def cache_config(folder):
        return CacheConfig(cache_path=str(folder), hooks=(TINY_HOOK,), total_tokens=3000, shard_tokens=500,
                           eval_sequences=16, model_batch_size=8, model=LanguageModelConfig(name=str(tiny_gpt2_dir)),
                           dataset=DatasetConfig(context_size=32))

    one = cache_activations(cache_config(tmp_path / "one"), model=tiny_model, progress=False)
    command = ["run_cache_example.py", "smollm2", "--cache-path", str(tmp_path / "two"), "--model.name",
               str(tiny_gpt2_dir), "--hooks", TINY_HOOK, "--total-tokens", "3000", "--shard-tokens", "500",
               "--eval-sequences", "16", "--model-batch-size", "8", "--dataset.context-size", "32"]
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          *command], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert job.returncode == 0, job.stderr[-4000:]
    two = tmp_path / "two"
    manifest = read_manifest(two)
    assert manifest["complete"] and manifest["total_tokens"] == 3000 and len(manifest["shards"]) >= 4

    def rows_by_sequence(folder: Path) -> dict:
        reader = CachedActivations(folder, (TINY_HOOK,), shuffle_shards=False)
        out = {}
        for shard, entry in enumerate(read_manifest(folder)["shards"]):
            tokens, mask = reader.token_ids(shard)
            acts = load_file(str(folder / entry["file"]))[f"acts.{TINY_HOOK}"]
            starts = mask.sum(1).cumsum(0) - mask.sum(1)
            for seq, m, start in zip(tokens.tolist(), mask, starts.tolist()):
                out[(tuple(seq), tuple(m.tolist()))] = acts[start:start + int(m.sum())]
        return out

    a, b = rows_by_sequence(one), rows_by_sequence(two)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_the_example_script_runs_under_torchrun_unchanged(tiny_gpt2_dir, tmp_path):
    job = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "run_train_example.py",
         "smollm2", "--exp-name", "example", "--results-dir", str(tmp_path), "--model.name", str(tiny_gpt2_dir),
         "--activations.hook-name", TINY_HOOK, "--activations.buffer-tokens", "2048",
         "--activations.train-batch-size", "256", "--trainer.total-training-tokens", "2560",
         "--trainer.eval-batches", "1", "--dataset.context-size", "64", "--logging.no-progress-bar"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert job.returncode == 0, job.stderr[-4000:]
    assert job.stdout.count("Trained 1 dictionary in 10 steps") == 1  # rank 0 prints the summary
    assert (tmp_path / "example" / "dictionaries" / TINY_HOOK / "sae.safetensors").is_file()
