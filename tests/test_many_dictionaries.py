"""Many dictionaries from one model pass: each ends exactly as in a run of its own, sweeps expand
into named dictionaries with their own folders and metrics, and a run of several resumes exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from core import load_dictionary, train
from core.config import DictionaryConfig, OptimizerConfig
from core.runs import RunFolder
from core.training import build_trainer
from tests.conftest import TINY_HOOK, tiny_training_config

HOOK_1 = "blocks.1.hook_resid_post"


def weights(folder):
    return load_file(str(folder / "sae.safetensors"))


def assert_same_dictionary(a, b):
    ta, tb = weights(a), weights(b)
    assert set(ta) == set(tb)
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    ma, mb = (json.loads((f / "config.json").read_text())["metrics"] for f in (a, b))
    assert ma == mb


def test_a_two_dictionary_run_equals_two_single_runs(tiny_gpt2_dir, tiny_model, tmp_path):
    both = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="both", steps=20)
    both.dictionaries = (DictionaryConfig(name="resid0"),
                         DictionaryConfig(name="resid1-k4", hook_name=HOOK_1, sae=dataclasses.replace(both.sae, k=4),
                                          optimizer=OptimizerConfig(lr=3e-3, lr_warmup_steps=2)))
    result = train(both, model=tiny_model)
    assert sorted(result.dictionary_paths) == ["resid0", "resid1-k4"]

    alone0 = train(tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="alone0", steps=20), model=tiny_model)
    alone1_cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="alone1", steps=20, lr=3e-3, lr_warmup_steps=2)
    alone1_cfg.activations.hook_name = HOOK_1
    alone1_cfg.sae.k = 4
    alone1 = train(alone1_cfg, model=tiny_model)

    assert_same_dictionary(result.dictionary_paths["resid0"], alone0.dictionary_path)
    assert_same_dictionary(result.dictionary_paths["resid1-k4"], alone1.dictionary_path)
    sae = load_dictionary(result.dictionary_paths["resid1-k4"])
    assert sae.hook_name == HOOK_1 and sae.cfg.k == 4
    assert sae.saved_config["name"] == "resid1-k4" and sae.saved_config["optimizer"]["lr"] == 3e-3


def test_a_sweep_trains_every_grid_point_into_its_own_folder(tiny_gpt2_dir, tiny_model, tmp_path):
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="sweep", steps=12, eval_every_steps=6)
    cfg.sweep = ("sae.k=4,8", "hook_name=blocks.{0..1}.hook_resid_post")
    result = train(cfg, model=tiny_model)
    names = sorted(result.dictionary_paths)
    assert names == sorted(f"blocks.{i}.hook_resid_post-k{k}" for i in (0, 1) for k in (4, 8))
    for name, folder in result.dictionary_paths.items():
        assert folder == tmp_path / "sweep" / "dictionaries" / name
        sae = load_dictionary(folder)
        assert f"k{sae.cfg.k}" in name and sae.hook_name in name
        assert result.final_metrics[name]["l0"] == pytest.approx(sae.cfg.k)
    with pytest.raises(ValueError, match="trained 4 dictionaries"):
        result.dictionary_path
    records = [json.loads(line) for line in (tmp_path / "sweep" / "metrics.jsonl").read_text().splitlines()]
    for kind in ("loss", "eval", "final_eval"):
        assert sorted({r["dictionary"] for r in records if kind in r}) == names


def test_a_run_of_several_dictionaries_resumes_exactly(tiny_gpt2_dir, tiny_model, tmp_path):
    def config(name):
        cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name=name, steps=24, checkpoint_every_steps=10)
        cfg.dictionaries = (DictionaryConfig(name="a"), DictionaryConfig(
            name="b", hook_name=HOOK_1, sae=dataclasses.replace(cfg.sae, architecture="relu")))
        return cfg

    reference = train(config("whole"), model=tiny_model)
    trainer = build_trainer(config("parted"), model=tiny_model)
    while trainer.step < 13:  # "crash" after step 13: the newest checkpoint is step 10
        trainer.train_step(trainer.buffer.next_batch())
        if trainer.step % 10 == 0:
            trainer.save_checkpoint()
    checkpoint = RunFolder(tmp_path / "parted").latest_checkpoint()
    assert checkpoint.name == "step_10"
    assert sorted(p.name for p in (checkpoint / "dictionaries").iterdir()) == ["a", "b"]
    resumed = train(config("parted"), model=tiny_model)
    assert resumed.started_at_step == 10  # resumed, not started over
    for name in ("a", "b"):
        assert_same_dictionary(resumed.dictionary_paths[name], reference.dictionary_paths[name])
