"""Replacement models in the whole pipeline, on the real tiny GPT-2: a transcoder set and a CLT
trained from one model pass beside an SAE (one config line each), evaluated with every covered MLP
replaced at once, resumed after SIGKILL, trained by two torchrun ranks and from an activation cache,
analyzed into a feature store. Their models themselves are tested in tests/test_clt.py."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core import (AnalysisConfig, CacheConfig, DatasetConfig, FeatureStore, SAEConfig, analyze, cache_activations,
                  create_dictionary, encode_text, load_dictionary, train)
from core.config import DictionaryConfig
from core.evals import evaluate_replacement
from core.runs import RunFolder
from core.sae import CrossLayerTranscoder, TranscoderSet
from tests.conftest import ROOT, tiny_training_config

TIMEOUT = 240
LAYERS = (0, 1)


def replacement_config(model_dir: Path, results: Path, name: str, kind: str = "clt", steps: int = 24, **overrides):
    """A run of one replacement model over both blocks of the tiny GPT-2 (batchtopk, normalized)."""
    cfg = tiny_training_config(model_dir, results, exp_name=name, steps=steps, **overrides)
    cfg.sae = dataclasses.replace(cfg.sae, architecture="batchtopk", normalize_activations="expected_average_only_in",
                                  dead_tokens_threshold=10 ** 9)
    cfg.dictionaries = (DictionaryConfig(name="mlps", kind=kind, layers="0..1"),)
    return cfg


def same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    for file in sorted(a.rglob("*.safetensors")):
        x, y = load_file(str(file)), load_file(str(b / file.relative_to(a)))
        assert set(x) == set(y), file
        for key in x:
            torch.testing.assert_close(y[key], x[key], rtol=0, atol=atol, msg=f"{file.name}:{key}")


def test_one_pass_trains_a_transcoder_set_a_clt_and_an_sae(tiny_gpt2_dir, tiny_model, tmp_path):
    cfg = replacement_config(tiny_gpt2_dir, tmp_path, "three", steps=30, eval_every_steps=15)
    cfg.dictionaries = (DictionaryConfig(kind="transcoder_set", layers="0..1"), DictionaryConfig(kind="clt", layers="0..1"),
                        DictionaryConfig(name="sae", sae=dataclasses.replace(cfg.sae, normalize_activations="none")))
    result = train(cfg, model=tiny_model)
    assert sorted(result.dictionary_paths) == ["clt-layers0-1", "sae", "transcoders-layers0-1"]
    tset = load_dictionary(result.dictionary_paths["transcoders-layers0-1"])
    clt = load_dictionary(result.dictionary_paths["clt-layers0-1"])
    assert isinstance(tset, TranscoderSet) and isinstance(clt, CrossLayerTranscoder)
    assert tset.layers == clt.layers == LAYERS
    assert tset.hook_names == ("blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized")
    assert clt.hooks_out == ("blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out")
    for name in ("transcoders-layers0-1", "clt-layers0-1"):
        final = result.final_metrics[name]
        layers = final["layers"]
        assert layers["layer"] == [0, 1] and len(layers["normalized_mse"]) == len(layers["l0"]) == 2
        assert final["l0"] == pytest.approx(sum(layers["l0"]))  # features active per token over all layers
        assert math.isfinite(final["ce_loss_recovered"]) and final["kl_divergence"] >= 0
        saved = json.loads((result.dictionary_paths[name] / "config.json").read_text())
        assert saved["metrics"]["layers"] == layers  # the per-layer evaluation is in the dictionary's config
    # Each member of the set is an ordinary transcoder, with its own layer's numbers.
    member = load_dictionary(result.dictionary_paths["transcoders-layers0-1"] / "layer_1")
    assert member.hook_out == "blocks.1.hook_mlp_out"
    assert member.saved_config["metrics"]["l0"] == result.final_metrics["transcoders-layers0-1"]["layers"]["l0"][1]
    records = list(RunFolder(tmp_path / "three").metrics.records())
    train_records = [r for r in records if r.get("dictionary") == "clt-layers0-1" and "loss" in r]
    assert train_records and all(len(r["layers"]["l0"]) == 2 and len(r["layer_dead_features"]) == 2
                                 for r in train_records)
    assert [r["step"] for r in records if r.get("dictionary") == "clt-layers0-1" and "eval" in r] == [15]
    assert len(records[-1]["final_eval"]) > 5


def exact_mlp_replacement(model_dir: Path, kind: str, *, zero: bool = False):
    """A replacement of both MLPs that is exact (its skip path is each MLP's output projection,
    applied to the MLP's hidden activations, `mlp.hook_post`; no feature writes anything), or with
    `zero` one whose reconstruction is 0 everywhere."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(model_dir)
    d_mlp, d_model = hf.transformer.h[0].mlp.c_proj.weight.shape
    cfg = SAEConfig(architecture="jumprelu" if kind == "clt" else "relu", d_sae=16, skip_connection=not zero)
    hook_in, hook_out = "blocks.{layer}.mlp.hook_post", "blocks.{layer}.hook_mlp_out"
    if kind == "clt":
        model = CrossLayerTranscoder(cfg, d_mlp, layers=LAYERS, model_name=str(model_dir), d_out=d_model,
                                     input_hook=hook_in, output_hook=hook_out)
    else:
        model = TranscoderSet({layer: create_dictionary(cfg, d_mlp, hook_name=hook_in.format(layer=layer),
                                                        hook_out=hook_out.format(layer=layer), d_out=d_model,
                                                        model_name=str(model_dir)) for layer in LAYERS})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for i, layer in enumerate(LAYERS):
            if zero:
                continue
            proj = hf.transformer.h[layer].mlp.c_proj
            if kind == "clt":
                model.W_skip[i].copy_(proj.weight)
                model.b_dec[i].copy_(proj.bias)
            else:
                model.member(layer).W_skip.copy_(proj.weight)
                model.member(layer).b_dec.copy_(proj.bias)
    return model


@pytest.mark.parametrize("kind", ["transcoder_set", "clt"])
def test_an_exact_replacement_recovers_all_the_loss_and_a_zero_one_none(kind, tiny_gpt2_dir, tiny_model):
    tokens = torch.randint(0, 2000, (4, 32), generator=torch.Generator().manual_seed(0))
    exact = evaluate_replacement(tiny_model, exact_mlp_replacement(tiny_gpt2_dir, kind), [tokens])
    assert exact.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert exact.kl_divergence == pytest.approx(0.0, abs=1e-6)
    assert exact.ce_loss_reconstructed == pytest.approx(exact.ce_loss_clean, abs=1e-5)
    assert max(exact.layers["normalized_mse"]) < 1e-10 and min(exact.layers["explained_variance"]) > 1 - 1e-8
    zero = evaluate_replacement(tiny_model, exact_mlp_replacement(tiny_gpt2_dir, kind, zero=True), [tokens])
    # Replacing every covered MLP by 0 is the zero ablation, whose loss is the reference of the score.
    assert zero.ce_loss_reconstructed == pytest.approx(zero.ce_loss_zero_ablation, abs=1e-6)
    assert zero.ce_loss_recovered == pytest.approx(0.0, abs=1e-4)
    assert zero.ce_loss_zero_ablation == pytest.approx(exact.ce_loss_zero_ablation)
    assert zero.kl_divergence > 1e-4 and zero.layers["normalized_mse"] == pytest.approx([1.0, 1.0])


def test_a_one_layer_clt_trains_as_the_transcoder_beside_it(tiny_gpt2_dir, tiny_model, tmp_path):
    """The same seed and data, through the trainer: a CLT over block 0 alone ends with the weights of
    the transcoder of block 0's MLP trained beside it (topk, no AuxK, normalized)."""
    cfg = replacement_config(tiny_gpt2_dir, tmp_path, "one", steps=12)
    cfg.sae = dataclasses.replace(cfg.sae, architecture="topk")
    cfg.dictionaries = (DictionaryConfig(name="clt", kind="clt", layers="0"),
                        DictionaryConfig(name="tc", hook_name="blocks.0.ln2.hook_normalized",
                                         hook_out="blocks.0.hook_mlp_out"))
    result = train(cfg, model=tiny_model)
    clt, tc = (load_dictionary(result.dictionary_paths[n]) for n in ("clt", "tc"))
    torch.testing.assert_close(clt.W_enc[0], tc.W_enc, rtol=0, atol=1e-6)
    torch.testing.assert_close(clt.W_dec[0][:, 0], tc.W_dec, rtol=0, atol=1e-6)
    torch.testing.assert_close(clt.b_dec[0], tc.b_dec, rtol=0, atol=1e-6)
    assert result.final_metrics["clt"]["explained_variance"] == pytest.approx(
        result.final_metrics["tc"]["explained_variance"], abs=1e-5)


def test_a_clt_run_killed_with_sigkill_resumes_to_the_same_weights(tiny_gpt2_dir, tmp_path):
    whole = replacement_config(tiny_gpt2_dir, tmp_path, "whole", steps=40, checkpoint_every_steps=8)
    whole.logging.log_every_steps = 1
    whole.save_json(tmp_path / "whole.json")
    done = subprocess.run([sys.executable, "-m", "tests.training_child", str(tmp_path / "whole.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = dataclasses.replace(whole, exp_name="killed")
    killed.save_json(tmp_path / "killed.json")
    proc = subprocess.Popen([sys.executable, "-m", "tests.training_child", str(tmp_path / "killed.json")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunFolder(tmp_path / "killed")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (run.latest_checkpoint() is None or
                                           int(run.latest_checkpoint().name[5:]) < 16):
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    at = int(run.latest_checkpoint().name[5:])
    again = subprocess.run([sys.executable, "-m", "tests.training_child", str(tmp_path / "killed.json")], cwd=ROOT,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[0] == f"TRAINING from step {at}"  # resumed, not started over
    same_weights(tmp_path / "whole" / "dictionaries" / "mlps", tmp_path / "killed" / "dictionaries" / "mlps")


@pytest.mark.parametrize("kind", ["clt", "transcoder_set"])
def test_two_torchrun_ranks_train_a_replacement_model_as_one_process(kind, tiny_gpt2_dir, tiny_model, tmp_path):
    """Data parallel: the ranks' averaged gradients give one process's weights up to float rounding
    (topk: no batch-level budget, AuxK off)."""
    cfg = replacement_config(tiny_gpt2_dir, tmp_path, "one-process", kind=kind, steps=16)
    cfg.sae = dataclasses.replace(cfg.sae, architecture="topk")
    train(cfg, model=tiny_model)
    two = dataclasses.replace(cfg, exp_name="two-ranks")
    two.save_json(tmp_path / "two.json")
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                          "tests.training_child", str(tmp_path / "two.json")], cwd=ROOT, capture_output=True,
                         text=True, timeout=TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert job.returncode == 0, job.stderr[-4000:]
    same_weights(tmp_path / "one-process" / "dictionaries" / "mlps", tmp_path / "two-ranks" / "dictionaries" / "mlps",
                 atol=1e-5)


def test_a_clt_trained_from_an_activation_cache_equals_one_trained_from_the_model(tiny_gpt2_dir, tiny_model,
                                                                                   tmp_path):
    cfg = replacement_config(tiny_gpt2_dir, tmp_path, "from-model", steps=12)
    spec, = cfg.dictionary_configs()
    cache = cache_activations(CacheConfig(cache_path=str(tmp_path / "cache"), hooks=spec.hooks, total_tokens=3000,
                                          shard_tokens=1000, eval_sequences=16, model_batch_size=8, device="cpu",
                                          model=cfg.model, dataset=cfg.dataset), model=tiny_model, progress=False)
    from_model = train(cfg, model=tiny_model)
    from_cache = dataclasses.replace(cfg, exp_name="from-cache")
    from_cache.activations = dataclasses.replace(cfg.activations, cache_path=str(cache), cache_shuffle_shards=False)
    train(from_cache, model=tiny_model)
    assert from_model.steps == 12
    same_weights(tmp_path / "from-model" / "dictionaries" / "mlps", tmp_path / "from-cache" / "dictionaries" / "mlps")


@pytest.mark.parametrize("kind", ["clt", "transcoder_set"])
def test_the_analyzer_records_every_layers_features(kind, tiny_gpt2_dir, tiny_model, tmp_path):
    result = train(replacement_config(tiny_gpt2_dir, tmp_path, "analyzed", kind=kind, steps=10), model=tiny_model)
    folder = analyze(AnalysisConfig(dictionary_path=str(result.dictionary_path), model=tiny_model.config,
                                    dataset=DatasetConfig(context_size=32), total_analyzing_tokens=2000, device="cpu"),
                     model=tiny_model)
    replacement = load_dictionary(result.dictionary_path)
    with FeatureStore(folder) as store:
        summary = store.summary()
        assert summary.n_features == 2 * replacement.d_sae  # flat index: layer position * d_sae + feature
        meta = dict(store.query("SELECT key, value FROM meta"))
        assert json.loads(meta["replacement"]) == {"kind": replacement.kind, "layers": [0, 1],
                                                   "d_sae": replacement.d_sae}
        assert json.loads(meta["hook_names"]) == list(replacement.hook_names)
        alive = [f for f, stats in store.feature_stats(range(summary.n_features)).items() if stats.act_count]
        assert any(f < replacement.d_sae for f in alive) and any(f >= replacement.d_sae for f in alive)
    # Custom text is encoded as the analyzer encodes: layer 1's features from block 1's MLP input.
    text = encode_text(tiny_model, replacement, "The configuration file is read, and then the parser runs.")
    tokens = tiny_model.tokenize("The configuration file is read, and then the parser runs.")
    _, cache = tiny_model.bridge.run_with_cache(tokens, names_filter=list(replacement.hook_names),
                                                return_cache_object=False)
    expected = replacement.encode(torch.stack([cache[h][0, 1:] for h in replacement.hook_names], dim=1))
    dense = text.acts.to_dense()
    torch.testing.assert_close(dense, expected.flatten(1), rtol=1e-5, atol=1e-5)
