"""Training end to end on the tiny GPT-2: every architecture, exact resume, schedules, bad input."""

import json
import math

import pytest
import torch

from core import ConfigError, SAEConfig, SparseAutoencoder, create_dictionary, TrainerConfig, load_dictionary, train
from core.evals import evaluate, explained_variance
from core.runs import RunFolder
from core.training import build_trainer, learning_rate
from tests.conftest import TINY_HOOK, tiny_training_config


@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk", "jumprelu"])
def test_each_architecture_trains_and_saves_an_evaluated_dictionary(architecture, tiny_gpt2_dir, tiny_model,
                                                                      tmp_path):
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name=f"t-{architecture}", architecture=architecture,
                               steps=25, eval_every_steps=10)
    cfg.sae.normalize_activations = "expected_average_only_in"
    result = train(cfg, model=tiny_model)
    run_dir = tmp_path / f"t-{architecture}"
    assert result.steps == 25 and result.tokens == 25 * 128
    assert json.loads((run_dir / "config.json").read_text())["sae"]["architecture"] == architecture
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["mse_loss"] for r in lines if "mse_loss" in r]
    assert losses[-1] < losses[0]  # it learns
    assert any("eval" in r for r in lines) and "final_eval" in lines[-1]
    sae = load_dictionary(result.dictionary_path)
    assert sae.cfg.architecture == architecture and sae.hook_name == TINY_HOOK and sae.d_sae == 128
    metrics = sae.saved_config["metrics"]
    for key in ("l0", "explained_variance", "ce_loss_recovered", "kl_divergence", "ce_loss_clean", "mse"):
        assert key in metrics
    assert metrics["explained_variance"] > 0.0
    if architecture in ("topk", "batchtopk"):
        assert metrics["l0"] == pytest.approx(8, abs=4 if architecture == "batchtopk" else 1e-6)
    # The saved dictionary (normalization folded) reproduces the saved metrics on raw activations.
    again = evaluate(tiny_model, sae, _eval_batches(cfg, tiny_model))
    assert again.explained_variance == pytest.approx(metrics["explained_variance"], abs=1e-4)


def _eval_batches(cfg, model):
    """The evaluation sequences of a run of `cfg`: the held-out start of the dataset."""
    from core import held_out_sequences

    mbs = cfg.activations.model_batch_size
    held = held_out_sequences(cfg.dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                              separator_token_id=model.separator_token_id, n_sequences=2 * cfg.trainer.eval_batches * mbs)
    return list(torch.tensor(held.sequences).split(mbs))


def test_resume_from_checkpoint_matches_uninterrupted_run(tiny_gpt2_dir, tiny_model, tmp_path):
    whole = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="whole", steps=24, checkpoint_every_steps=100)
    reference = train(whole, model=tiny_model)

    part = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="parted", steps=24, checkpoint_every_steps=10)
    trainer = build_trainer(part, model=tiny_model)
    while trainer.step < 13:  # "crash" after step 13: the newest checkpoint is step 10
        trainer.train_step(trainer.buffer.next_batch())
        if trainer.step % 10 == 0:
            trainer.save_checkpoint()
    assert RunFolder(tmp_path / "parted").latest_checkpoint().name == "step_10"
    resumed = train(part, model=tiny_model)
    assert resumed.steps == 24 and resumed.tokens == reference.tokens
    # It continued from the checkpoint (a run that started over would end with the same weights too).
    assert resumed.started_at_step == 10 and reference.started_at_step == 0

    a, b = load_dictionary(reference.dictionary_path), load_dictionary(resumed.dictionary_path)
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "parted" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # lines after the checkpoint were replaced, not duplicated


def test_existing_results_are_never_overwritten(tiny_gpt2_dir, tiny_model, tiny_dictionary, tiny_results_dir):
    before = (tiny_dictionary / "sae.safetensors").read_bytes()
    cfg = tiny_training_config(tiny_gpt2_dir, tiny_results_dir, exp_name="tiny-topk")
    with pytest.raises(ConfigError, match="already holds trained dictionaries"):
        build_trainer(cfg, model=tiny_model)
    assert (tiny_dictionary / "sae.safetensors").read_bytes() == before


def test_resume_refuses_a_different_config_and_resume_false(tiny_gpt2_dir, tiny_model, tmp_path):
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="c", steps=12, checkpoint_every_steps=5)
    trainer = build_trainer(cfg, model=tiny_model)
    for _ in range(5):
        trainer.train_step(trainer.buffer.next_batch())
    trainer.save_checkpoint()
    changed = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="c", steps=12, checkpoint_every_steps=5)
    changed.sae.k = 4
    with pytest.raises(ConfigError, match="has a different `sae` config"):
        build_trainer(changed, model=tiny_model)
    fresh = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="c", steps=12)
    fresh.resume = False
    with pytest.raises(ConfigError, match="resume=False"):
        build_trainer(fresh, model=tiny_model)


def test_corrupt_checkpoint_is_a_clear_error(tiny_gpt2_dir, tiny_model, tmp_path):
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="corrupt", steps=12)
    trainer = build_trainer(cfg, model=tiny_model)
    trainer.train_step(trainer.buffer.next_batch())
    path = trainer.save_checkpoint()
    (path / "dictionaries" / TINY_HOOK / "sae.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=f"unreadable for dictionary '{TINY_HOOK}'.*delete that folder"):
        build_trainer(cfg, model=tiny_model)
    (path / "trainer_state.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="unreadable.*delete that folder"):
        build_trainer(cfg, model=tiny_model)


def test_unknown_hook_name_fails_before_training(tiny_gpt2_dir, tiny_model, tmp_path):
    from core import HookNameError

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path)
    cfg.activations.hook_name = "blocks.0.hook_resid_postt"
    with pytest.raises(HookNameError, match="blocks.0.hook_resid_post"):
        build_trainer(cfg, model=tiny_model)


def test_wandb_offline_logging(tiny_gpt2_dir, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="wb", steps=6)
    cfg.logging.wandb_mode = "offline"
    train(cfg, model=tiny_model)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_learning_rate_schedules():
    cfg = TrainerConfig(lr=1.0, lr_warmup_steps=10, lr_schedule="cosine", lr_end_factor=0.1)
    assert learning_rate(0, 110, cfg) == pytest.approx(0.1)
    assert learning_rate(9, 110, cfg) == pytest.approx(1.0)
    assert learning_rate(60, 110, cfg) == pytest.approx(0.55)
    assert learning_rate(110, 110, cfg) == pytest.approx(0.1)
    cfg.lr_schedule = "linear"
    assert learning_rate(60, 110, cfg) == pytest.approx(0.55)
    cfg.lr_schedule, cfg.lr_decay_steps = "linear", 20
    assert learning_rate(80, 110, cfg) == 1.0 and learning_rate(100, 110, cfg) == pytest.approx(0.55)
    cfg.lr_schedule = "constant"
    assert learning_rate(100, 110, cfg) == 1.0


@pytest.mark.parametrize("hook", [TINY_HOOK, "blocks.0.attn.hook_z"])
def test_evaluate_an_exact_dictionary_recovers_all_loss(hook, tiny_model, tiny_gpt2_dir):
    """relu(x) - relu(-x) = x: an SAE with W_enc = [I, -I], W_dec = [I; -I] reconstructs perfectly,
    also on per-head activations (attn.hook_z, heads flattened, spliced back per head)."""
    d = tiny_model.hook_width(hook)
    sae = create_dictionary(SAEConfig(architecture="relu", d_sae=2 * d), d, hook_name=hook,
                            model_name=str(tiny_gpt2_dir))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    cfg = tiny_training_config(tiny_gpt2_dir, "unused")
    result = evaluate(tiny_model, sae, _eval_batches(cfg, tiny_model)[:1])
    assert result.explained_variance == pytest.approx(1.0, abs=1e-5)
    assert result.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert result.kl_divergence == pytest.approx(0.0, abs=1e-5)
    assert abs(result.ce_loss_zero_ablation - result.ce_loss_clean) > 1e-3  # the splice reaches the loss
    if hook == TINY_HOOK:
        assert result.ce_loss_zero_ablation > result.ce_loss_clean and result.unfired_features == 0


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", TINY_HOOK, "blocks.1.hook_mlp_out", "blocks.0.attn.hook_z",
                                  "blocks.1.ln2.hook_normalized", "hook_embed"])
def test_spliced_forwards_from_the_hooks_block_equal_forwards_from_the_embedding(hook, tiny_model, tiny_gpt2_dir):
    """The evaluation runs its spliced and zero-ablated forwards from the block holding the hook (the
    clean run's residual entering it stands for the blocks before): the same CE losses and KL as full
    forwards with the splice, computed here the plain way."""
    from core.evals import _splice

    d = tiny_model.hook_width(hook)
    sae = create_dictionary(SAEConfig(architecture="topk", d_sae=4 * d, k=4), d, hook_name=hook,
                            model_name=str(tiny_gpt2_dir))
    tokens = _eval_batches(tiny_training_config(tiny_gpt2_dir, "unused"), tiny_model)[0]
    result = evaluate(tiny_model, sae, [tokens])
    mask = tiny_model.token_mask(tokens)
    pred = mask[:, :-1] & mask[:, 1:]
    with torch.no_grad():
        clean, cache = tiny_model.bridge.run_with_cache(tokens, names_filter=[hook], return_cache_object=False)
        x = cache[hook][mask].flatten(1)
        spliced = tiny_model.bridge.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, _splice(mask, sae(x)))])
        zeroed = tiny_model.bridge.run_with_hooks(tokens, return_type="logits",
                                                  fwd_hooks=[(hook, _splice(mask, torch.zeros_like(x)))])
    n = float(pred.sum())

    def next_token_log_probs(logits):  # [n_pred, vocab], the predicting positions of text tokens
        return logits[:, :-1][pred].double().log_softmax(-1)

    targets = tokens[:, 1:][pred]

    def cross_entropy(logits):
        return float(-next_token_log_probs(logits).gather(1, targets[:, None]).sum())

    reference, logp = next_token_log_probs(clean), next_token_log_probs(spliced)
    ce, kl = cross_entropy(spliced), float((reference.exp() * (reference - logp)).sum())
    assert result.ce_loss_clean == pytest.approx(cross_entropy(clean) / n, rel=1e-5)
    assert result.ce_loss_reconstructed == pytest.approx(ce / n, rel=1e-5)
    assert result.kl_divergence == pytest.approx(kl / n, rel=1e-4, abs=1e-7)
    assert result.ce_loss_zero_ablation == pytest.approx(cross_entropy(zeroed) / n, rel=1e-5)
    assert result.ce_loss_reconstructed != pytest.approx(result.ce_loss_clean, abs=1e-4)  # the splice counts


def test_explained_variance_formula():
    x = torch.randn(100, 8)
    assert explained_variance(x, x) == pytest.approx(1.0)
    assert explained_variance(x, x.mean(0, keepdim=True).expand_as(x)) == pytest.approx(0.0, abs=1e-6)


def test_saved_batchtopk_dictionary_keeps_about_k_latents_on_held_out_tokens(tiny_gpt2_dir, tiny_model, tmp_path):
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="btk", architecture="batchtopk", steps=60,
                               lr_schedule="cosine")
    result = train(cfg, model=tiny_model)
    sae = load_dictionary(result.dictionary_path)
    held_out = _eval_batches(cfg, tiny_model)  # the run's evaluation sequences: never trained on
    x = torch.cat([tiny_model.bridge.run_with_cache(t, names_filter=[TINY_HOOK])[1][TINY_HOOK]
                   [tiny_model.token_mask(t)] for t in held_out])
    l0 = (sae.encode(x) != 0).sum(-1).float().mean().item()
    assert l0 == pytest.approx(cfg.sae.k, rel=0.1)
    assert result.metrics["l0"] == pytest.approx(l0, rel=1e-5)


@pytest.mark.parametrize("hook, shape", [("blocks.1.attn.hook_z", (4, 16)), ("blocks.0.mlp.hook_post", (256,)),
                                         ("blocks.0.mlp.hook_pre", (256,))])
def test_hooks_of_other_widths_train_and_splice_back(hook, shape, tiny_gpt2_dir, tiny_model, tmp_path):
    assert tiny_model.hook_shape(hook) == shape
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="w", steps=20)
    cfg.activations.hook_name = hook
    result = train(cfg, model=tiny_model)
    sae = load_dictionary(result.dictionary_path)
    assert sae.d_in == math.prod(shape) and sae.d_sae == 2 * sae.d_in
    # The evaluation spliced the reconstruction back in the hook's own shape: a perfect dictionary
    # recovers all of the loss there, a zero one none of it.
    metrics = result.metrics
    assert metrics["ce_loss_zero_ablation"] != pytest.approx(metrics["ce_loss_clean"], abs=1e-4)
    assert 0.0 < metrics["explained_variance"] <= 1.0


def test_hooks_that_are_not_per_token_are_refused_before_any_compute(tiny_gpt2_dir, tiny_model, tmp_path):
    from core import HookNameError

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="pattern")
    cfg.activations.hook_name = "blocks.0.attn.hook_pattern"
    with pytest.raises(HookNameError, match=r"not one vector per token.*hook_resid_post"):
        build_trainer(cfg, model=tiny_model)
    assert not (tmp_path / "pattern" / "checkpoints").exists()


def test_default_dead_threshold_lets_auxk_act_in_a_run_of_any_length(tiny_gpt2_dir, tiny_model, tmp_path):
    assert SAEConfig().resolve_dead_tokens_threshold(TrainerConfig().total_training_tokens) == 100_000
    assert SAEConfig().resolve_dead_tokens_threshold(10 ** 10) == 10_000_000
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="auxk", steps=30)
    cfg.sae.dead_tokens_threshold = None  # a tenth of the run: 384 tokens, 3 steps
    cfg.sae.expansion_factor, cfg.sae.k = 32, 4  # 2,048 latents, 512 activations a step: some stay silent
    train(cfg, model=tiny_model)
    records = [json.loads(line) for line in (tmp_path / "auxk" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("aux_loss", 0) > 0 for r in records)
    assert any(r.get("dead_features", 0) > 0 for r in records)
    final = records[-1]["final_eval"]
    assert "unfired_features" in final and "dead_features" not in final



def test_autocast_and_compiled_steps_keep_float32_weights_and_learn(tiny_gpt2_dir, tiny_model, tmp_path):
    """The GPU path's options work on any device: the model's forward and the dictionary's step under
    bfloat16 autocast, the step compiled by torch.compile; weights and Adam state stay float32."""
    from core import LanguageModelConfig, load_language_model

    model_cfg = LanguageModelConfig(name=str(tiny_gpt2_dir), autocast_dtype="bfloat16")
    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path, exp_name="amp", steps=12, autocast_dtype="bfloat16",
                               compile=True)
    cfg.model = model_cfg
    trainer = build_trainer(cfg, model=load_language_model(model_cfg))
    assert next(iter(trainer.buffer.peek(4).values())).dtype == torch.float32  # stored as configured
    result = trainer.run()
    sae = trainer.sae
    assert {p.dtype for p in sae.parameters()} == {torch.float32}
    assert {s["exp_avg"].dtype for s in trainer.dictionaries[0].optimizer.state.values()} == {torch.float32}
    losses = [json.loads(line)["mse_loss"] for line in (tmp_path / "amp" / "metrics.jsonl").read_text().splitlines()
              if "mse_loss" in line]
    assert losses[-1] < losses[0] and math.isfinite(result.metrics["ce_loss_recovered"])


def test_the_dead_mask_is_a_snapshot_refreshed_every_few_steps():
    from core.evals import DEAD_MASK_REFRESH_STEPS, FeatureActivityTracker

    tracker = FeatureActivityTracker(4, window_tokens=100, dead_tokens_threshold=30, dense_threshold=0.5)
    fires = torch.tensor([1, 0, 0, 1])
    masks = []
    for _ in range(2 * DEAD_MASK_REFRESH_STEPS):
        masks.append(tracker.dead_mask)
        tracker.update(fires, 10)
    assert all(m is masks[0] for m in masks[:DEAD_MASK_REFRESH_STEPS])  # the same tensor until a refresh
    assert masks[DEAD_MASK_REFRESH_STEPS].tolist() == [False, True, True, False]
    assert tracker.stats()["dead_features"] == 2
    again = FeatureActivityTracker(4, window_tokens=100, dead_tokens_threshold=30, dense_threshold=0.5)
    again.load_state_dict(tracker.state_dict())
    assert torch.equal(again.dead_mask, tracker.dead_mask) and again.updates == tracker.updates


def test_progress_reports_tokens_per_second_and_eta_averaged_over_the_run():
    """Steps come in bursts (every refill of the shuffle buffer runs the model for many batches at
    once): the ETA must move smoothly, not swing with each burst."""
    from core.training import TrainingProgress

    now = [100.0]
    progress = TrainingProgress(total_tokens=100 * 4096, start_tokens=0, clock=lambda: now[0])
    assert progress.eta_s is None and "ETA ?" in progress.describe()
    etas, predicted_totals = [], []
    for step in range(1, 101):
        now[0] += 5.0 if step % 10 == 1 else 0.2  # a slow step every 10 (the refill), fast ones between
        progress.update(step * 4096)
        if step >= 20:
            etas.append(progress.eta_s)
            predicted_totals.append(now[0] - 100.0 + progress.eta_s)
    # The run takes 68 s: from the second refill on, elapsed + ETA stays near that, and the ETA never
    # jumps by more than a third (an ETA from the last step's rate would swing 25-fold at every refill).
    assert all(50 < total < 90 for total in predicted_totals), predicted_totals
    assert max(b / a for a, b in zip(etas, etas[1:]) if a > 5) < 1.34
    assert progress.tokens_per_s == pytest.approx(100 * 4096 / 68.0)
    assert "409,600/409,600 tok" in progress.describe() and "ETA 00:00:00" in progress.describe()
    resumed = TrainingProgress(total_tokens=100 * 4096, start_tokens=50 * 4096, clock=lambda: now[0])
    now[0] += 10.0
    resumed.update(60 * 4096)  # the rate counts this process's tokens only, not the checkpoint's
    assert resumed.tokens_per_s == pytest.approx(10 * 4096 / 10.0) and resumed.eta_s == pytest.approx(40.0)
