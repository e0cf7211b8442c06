"""The activation cache: what it holds maps back to the model's activations and tokens, a run
trained on it equals one trained on the model fed the same activations, it resumes exactly, a
mismatched cache is refused with one sentence, and a killed writer is never read as complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from core import CacheConfig, CachedActivations, CacheError, DatasetConfig, LanguageModelConfig, cache_activations, \
    read_manifest, train
from core.cache import cached_eval_sequences
from core.training import build_trainer
from tests.conftest import ROOT, TINY_HOOK, tiny_training_config

MLP_HOOK = "blocks.1.mlp.hook_post"


def cache_config(model_dir, folder, **overrides) -> CacheConfig:
    fields = dict(cache_path=str(folder), hooks=(TINY_HOOK, MLP_HOOK), total_tokens=3000, shard_tokens=1000,
                  eval_sequences=16, model_batch_size=8, model=LanguageModelConfig(name=str(model_dir)),
                  dataset=DatasetConfig(context_size=32))
    fields.update(overrides)
    return CacheConfig(**fields)


@pytest.fixture(scope="module")
def cache(tiny_gpt2_dir, tiny_model, tmp_path_factory):
    return cache_activations(cache_config(tiny_gpt2_dir, tmp_path_factory.mktemp("caches") / "c"), model=tiny_model,
                             progress=False)


def test_the_cache_maps_back_to_the_models_activations_and_tokens(cache, tiny_model):
    manifest = read_manifest(cache)
    assert manifest["complete"] and manifest["total_tokens"] == 3000
    assert manifest["hooks"] == {TINY_HOOK: {"d_in": 64, "shape": [64]}, MLP_HOOK: {"d_in": 256, "shape": [256]}}
    assert manifest["model"]["name"] == tiny_model.name and manifest["dtype"] == "float32"
    assert manifest["context_size"] == 32 and manifest["eval_sequences"] == 16
    assert [s["tokens"] for s in manifest["shards"]] and sum(s["tokens"] for s in manifest["shards"]) == 3000
    assert all(s["tokens"] >= 1000 for s in manifest["shards"][:-1])
    reader = CachedActivations(cache, (TINY_HOOK, MLP_HOOK), shuffle_shards=False)
    for shard, entry in enumerate(manifest["shards"]):
        tokens, text_mask = reader.token_ids(shard)
        assert int(text_mask.sum()) == entry["tokens"] and tokens.shape == (entry["sequences"], 32)
        assert not text_mask[tokens == tiny_model.bos_token_id].any()
        stored = load_file(str(cache / entry["file"]))
        _, acts = tiny_model.bridge.run_with_cache(tokens, names_filter=[TINY_HOOK, MLP_HOOK])
        for hook in (TINY_HOOK, MLP_HOOK):
            torch.testing.assert_close(stored[f"acts.{hook}"], acts[hook][text_mask], rtol=0, atol=1e-5)
    # The held-out sequences are the dataset's first ones, and the training data starts after them.
    eval_tokens = cached_eval_sequences(cache)
    assert eval_tokens.shape == (16, 32) and manifest["first_document"] > 0
    first_shard_tokens, _ = reader.token_ids(0)
    assert not any(torch.equal(first_shard_tokens[0], row) for row in eval_tokens)


def test_training_on_the_cache_equals_training_on_the_model(cache, tiny_gpt2_dir, tiny_model, tmp_path):
    def config(name):
        cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name=name, steps=20)  # 2,560 of 3,000 cached tokens
        cfg.trainer.eval_batches = 1  # 16 held-out sequences, as the cache keeps
        return cfg

    from_model = train(config("from-model"), model=tiny_model)
    cached_cfg = config("from-cache")
    cached_cfg.activations.cache_path, cached_cfg.activations.cache_shuffle_shards = str(cache), False
    from_cache = train(cached_cfg, model=tiny_model)
    a, b = load_file(str(from_model.dictionary_path / "sae.safetensors")), load_file(
        str(from_cache.dictionary_path / "sae.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert from_model.metrics == from_cache.metrics


class InMemoryRows:
    """An activation stream of rows held in memory, in a given order of the cache's shards, epoch after
    epoch: what the cache reader must amount to, without its files, chunks or positions."""

    def __init__(self, cache: Path, hooks: tuple[str, ...], order_of_epoch, batch_rows: int = 700):
        manifest = read_manifest(cache)
        self.shards = [load_file(str(cache / entry["file"])) for entry in manifest["shards"]]
        self.hooks, self.order_of_epoch, self.batch_rows = hooks, order_of_epoch, batch_rows
        self.epoch, self.rows = 0, None
        self._start_epoch()

    def _start_epoch(self) -> None:
        order = self.order_of_epoch(self.epoch)
        self.rows = {h: torch.cat([self.shards[i][f"acts.{h}"] for i in order]) for h in self.hooks}
        self.at = 0

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.at >= len(next(iter(self.rows.values()))):
            self.epoch += 1
            self._start_epoch()
        batch = {h: t[self.at:self.at + self.batch_rows] for h, t in self.rows.items()}
        self.at += self.batch_rows
        return batch

    def skip(self) -> None:
        next(self)

    def position(self) -> dict:
        return {}


def test_training_on_shuffled_shards_equals_the_same_rows_fed_from_memory(cache, tiny_gpt2_dir, tiny_model, tmp_path):
    """Three epochs over the cache in a new seeded shard order each: the trainer fed by the cache
    reader ends with the weights of the trainer fed the same rows, in the same order, from memory."""
    from core.activations import ActivationBuffer
    from core.evals import HeldOutEvaluation
    from core.runs import RunFolder
    from core.training import DictionaryTrainer, Trainer

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="shuffled", steps=60)  # 7,680 tokens: 2.6 epochs
    cfg.trainer.eval_batches = 1
    cfg.activations.cache_path = str(cache)
    from_cache = train(cfg, model=tiny_model)
    reader = CachedActivations(cache, (TINY_HOOK,), shuffle_shards=True, seed=cfg.seed)
    orders = [reader._shard_order(epoch) for epoch in range(3)]
    assert len({tuple(o) for o in orders}) > 1  # the shards really come in other orders

    memory = dataclasses.replace(cfg, exp_name="from-memory")
    spec, = memory.dictionary_configs()
    widths = {TINY_HOOK: 64}
    total_steps = memory.trainer.total_training_tokens // memory.activations.train_batch_size
    stream = InMemoryRows(cache, (TINY_HOOK,), lambda epoch: reader._shard_order(epoch))
    buffer = ActivationBuffer(stream, widths=widths, buffer_tokens=memory.activations.buffer_tokens,
                              batch_size=memory.activations.train_batch_size, seed=memory.seed,
                              total_tokens=total_steps * memory.activations.train_batch_size)  # as train() limits it
    torch.manual_seed(memory.seed)
    dictionary = DictionaryTrainer(spec, widths=widths, model_name=memory.model.name, total_steps=total_steps,
                                   total_training_tokens=memory.trainer.total_training_tokens,
                                   trainer_cfg=memory.trainer, device="cpu", dtype=torch.float32, seed=memory.seed)
    evaluator = HeldOutEvaluation(tiny_model, cached_eval_sequences(cache).split(memory.activations.model_batch_size),
                                  periodic_batches=1)
    trainer = Trainer(memory, dictionaries=[dictionary], batches=buffer, evaluator=evaluator,
                      run=RunFolder(memory.run_dir))
    trainer.initialize()
    in_memory = trainer.run()
    assert stream.epoch == 2 and in_memory.steps == from_cache.steps == 60
    a, b = (load_file(str(r.dictionary_path / "sae.safetensors")) for r in (from_cache, in_memory))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_cache_trained_run_resumes_through_the_trainer(cache, tiny_gpt2_dir, tiny_model, tmp_path):
    def config(name):
        cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name=name, steps=40, checkpoint_every_steps=10)
        cfg.trainer.eval_batches = 1
        cfg.activations.cache_path = str(cache)  # shuffled shards, epochs wrap at ~23 steps
        return cfg

    whole = train(config("whole"), model=tiny_model)
    trainer = build_trainer(config("parted"), model=tiny_model)
    while trainer.step < 33:  # past an epoch; the newest checkpoint is step 30
        trainer.train_step(trainer.buffer.next_batch())
        if trainer.step % 10 == 0:
            trainer.save_checkpoint()
    resumed = train(config("parted"), model=tiny_model)
    assert resumed.started_at_step == 30 and resumed.steps == 40
    a, b = (load_file(str(r.dictionary_path / "sae.safetensors")) for r in (whole, resumed))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_cached_activations_resume_exactly_across_epochs(cache):
    def rows(reader, n):
        return [reader.__next__() for _ in range(n)]

    reader = CachedActivations(cache, (MLP_HOOK,), shuffle_shards=True, seed=3, chunk_tokens=700)
    expected = rows(reader, 30)
    assert reader.epoch >= 2
    for n in (0, 4, 11, 17):
        first = CachedActivations(cache, (MLP_HOOK,), shuffle_shards=True, seed=3, chunk_tokens=700)
        rows(first, n)
        again = CachedActivations(cache, (MLP_HOOK,), shuffle_shards=True, seed=3, chunk_tokens=700,
                                  position=first.position())
        for want, got in zip(expected[n:n + 8], rows(again, 8)):
            assert torch.equal(want[MLP_HOOK], got[MLP_HOOK])


@pytest.mark.parametrize("change, words", [
    (lambda cfg: setattr(cfg.model, "name", "gpt2"), ["holds activations of model", "set model.name"]),
    (lambda cfg: setattr(cfg.activations, "hook_name", "blocks.0.hook_mlp_out"), ["has no activations of",
                                                                                  "blocks.0.hook_mlp_out"]),
    (lambda cfg: setattr(cfg.activations, "store_dtype", "bfloat16"), ["stores float32", "'float32'"]),
    (lambda cfg: setattr(cfg.trainer, "eval_batches", 4), ["keeps 16 held-out", "eval_batches"]),
])
def test_a_cache_that_does_not_match_the_run_is_refused(change, words, cache, tiny_gpt2_dir, tiny_model, tmp_path):
    from core import CacheError, ConfigError

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="mismatch")
    cfg.trainer.eval_batches = 1
    cfg.activations.cache_path = str(cache)
    change(cfg)
    with pytest.raises((CacheError, ConfigError)) as err:
        build_trainer(cfg, model=tiny_model)
    for word in words:
        assert word in str(err.value)


def test_a_cache_of_another_width_is_refused(cache, tiny_gpt2_dir, tiny_model, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["hooks"][TINY_HOOK]["d_in"] = 128  # as written from a wider model of the same name
    (other / "manifest.json").write_text(json.dumps(manifest))
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="width")
    cfg.trainer.eval_batches = 1
    cfg.activations.cache_path = str(other)
    with pytest.raises(CacheError, match="holds 128 values per token.*the model has 64"):
        build_trainer(cfg, model=tiny_model)


def test_a_killed_writer_is_refused_then_finished_to_the_same_cache(cache, tiny_gpt2_dir, tiny_model, tmp_path):
    folder = tmp_path / "killed"
    command = [sys.executable, "run_cache_example.py", "smollm2", "--cache-path", str(folder), "--model.name",
               str(tiny_gpt2_dir), "--hooks", TINY_HOOK, MLP_HOOK, "--total-tokens", "3000", "--shard-tokens",
               "1000", "--eval-sequences", "16", "--model-batch-size", "8", "--dataset.context-size", "32"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file() and json.loads(manifest_path.read_text())["shards"]:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    manifest = read_manifest(folder, require_complete=False)
    assert not manifest["complete"] and 0 < manifest["total_tokens"] < 3000
    # The shards committed before the kill, as files: a writer that continues keeps them; one that
    # started over would write them again (new files, new inodes).
    written = {entry["file"]: (folder / entry["file"]).stat() for entry in manifest["shards"]}

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="on-killed")
    cfg.trainer.eval_batches = 1
    cfg.activations.cache_path = str(folder)
    with pytest.raises(CacheError, match="incomplete.*Run cache_activations again with the same config"):
        build_trainer(cfg, model=tiny_model)

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, before in written.items():  # continued after them, not started over
        after = (folder / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    finished, reference = read_manifest(folder), read_manifest(cache)
    assert [s["tokens"] for s in finished["shards"]] == [s["tokens"] for s in reference["shards"]]
    for ours, theirs in zip(finished["shards"], reference["shards"]):
        a, b = load_file(str(folder / ours["file"])), load_file(str(cache / theirs["file"]))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # A finished cache is never written over.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_bfloat16_cache_and_bad_configs(tiny_gpt2_dir, tiny_model, tmp_path):
    from core import ConfigError

    folder = cache_activations(cache_config(tiny_gpt2_dir, tmp_path / "bf16", hooks=(TINY_HOOK,), total_tokens=500,
                                            store_dtype="bfloat16"), model=tiny_model, progress=False)
    reader = CachedActivations(folder, (TINY_HOOK,), shuffle_shards=False)
    assert next(reader)[TINY_HOOK].dtype == torch.bfloat16
    for bad, word in ((dict(hooks=()), "hooks is empty"), (dict(total_tokens=0), "total_tokens"),
                      (dict(store_dtype="int8"), "store_dtype"), (dict(hooks=(TINY_HOOK, TINY_HOOK)), "repeats")):
        with pytest.raises(ConfigError, match=word):
            cache_activations(cache_config(tiny_gpt2_dir, tmp_path / "bad", **bad), model=tiny_model)
    with pytest.raises(CacheError, match="No activation cache"):
        read_manifest(tmp_path / "nowhere")
