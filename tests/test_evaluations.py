"""core.evaluations: absorption, sparse probing, synthetic ground truth, SAEBench's result files.

Absorption and sparse probing are checked on dictionaries built so that the answer is known (a
letter's latent deliberately split, a latent that is the separating direction), the synthetic
features on a dictionary set to the truth and on one trained by the real trainer, and the whole
command on the tiny GPT-2, its files validated by SAEBench's own output classes (sae-bench 0.6.0
in the peers' environment; without it, field by field against SAEBench's names listed here).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import core  # noqa: F401  (before torch: idle OpenMP threads then sleep, see core/__init__.py)
import pytest
import torch
import torch.nn.functional as F
from core.config import ActivationStoreConfig, LanguageModelConfig, LoggingConfig, SAEConfig, TrainerConfig, TrainingConfig
from core.errors import ConfigError, DatasetError, EvaluationError
from core.evals import evaluate_dictionaries, evaluate_dictionaries_in_detail
from core.evaluations import (SYNTHETIC_HOOK, AbsorptionConfig, CoreEvalConfig, EvaluationConfig, SparseProbingConfig,
                              SyntheticActivations, SyntheticConfig, SyntheticEvaluator, SyntheticFeatures, absorption,
                              read_eval_outputs, recovery, run_evaluations, sparse_probing, synthetic_run)
from core.evaluations.absorption import LETTERS, FirstLetterTask, word_absorption
from core.evaluations.probing import mean_pooled
from core.evaluations.saebench import OUTPUT_FIELDS
from core.sae import SparseAutoencoder, create_dictionary, load_dictionary
from tests.conftest import TINY_HOOK, tiny_training_config

ROOT = Path(__file__).resolve().parents[1]
D = 32


# ------------------------------------------------------------------ absorption on a constructed dictionary


def relu_dictionary(encoder: torch.Tensor, decoder: torch.Tensor, threshold: float = 0.0) -> SparseAutoencoder:
    """A relu SAE with the given encoder columns [d, n] and decoder rows [n, d], encoder biases
    -threshold, decoder bias 0."""
    sae = create_dictionary(SAEConfig(architecture="relu", d_sae=decoder.shape[0]), decoder.shape[1],
                            hook_name=TINY_HOOK, model_name="constructed")
    with torch.no_grad():
        sae.W_enc.copy_(encoder)
        sae.W_dec.copy_(decoder)
        sae.b_enc.fill_(-threshold)
        sae.b_dec.zero_()
    return sae.eval()


def letter_task(absorbed: list[str]) -> FirstLetterTask:
    """Words of every letter whose activation at the word is that letter's basis direction e_letter
    (plus a little noise in two dimensions nothing reads); the test words of `absorbed` also carry
    a token direction e_26. The probe of each letter is exactly e_letter."""
    basis = torch.eye(D)
    g = torch.Generator().manual_seed(0)

    def words(n: int, tag: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        names = [f"{letter}{tag}{i}" for letter in LETTERS for i in range(n if letter != "a" else 5 * n)]
        letters = torch.tensor([LETTERS.index(w[0]) for w in names])
        acts = basis[letters] + 0.05 * torch.randn(len(names), D, generator=g) * (torch.arange(D) >= 30)
        return names, letters, acts

    train_words, train_letters, train_acts = words(20, "train")
    test_words, test_letters, test_acts = words(20, "test")  # 100 test words of "a"
    for i, w in enumerate(test_words):
        if w in absorbed:
            test_acts[i] += basis[26]
    probe_weight = 5 * basis[:26]
    probe_bias = torch.full((26,), -2.5)
    hits = (test_acts @ probe_weight.T + probe_bias > 0) & (test_letters[:, None] == torch.arange(26))
    task = FirstLetterTask(TINY_HOOK, train_words, train_letters, train_acts, test_words, test_letters, test_acts,
                           probe_weight, probe_bias, probe_f1=torch.ones(26))
    for i, letter in enumerate(LETTERS):  # the absorption prompts: here the same activations
        task.absorption_words[letter] = [w for w, hit in zip(test_words, hits[:, i].tolist()) if hit]
        task.absorption_acts[letter] = test_acts[hits[:, i]]
    return task


ABSORBED = ["atest3", "atest57"]
CONSTRUCTED = AbsorptionConfig(min_feats_for_eval=1, k_sparse_probe_batch_size=64,
                               k_sparse_probe_num_epochs=20, max_k_value=3)


def test_absorption_finds_exactly_the_words_a_split_latent_absorbs():
    """Latent 0 is "starts with a" but its encoder is silenced by the token direction e_26; latent 26
    fires on e_26 and its decoder carries half of the "a" direction: the words with e_26 are absorbed,
    fully, by latent 26, and no other word of any letter is."""
    task = letter_task(ABSORBED)
    basis = torch.eye(D)
    encoder = torch.cat([basis[:26], basis[26:27]]).T.clone()  # [d, 27]
    encoder[26, 0] = -2.0  # latent "a" does not fire where e_26 is
    decoder = torch.cat([basis[:26], F.normalize(basis[0] + basis[26], dim=0)[None]])
    result = absorption(relu_dictionary(encoder, decoder), task, CONSTRUCTED)
    by_letter = {r.first_letter: r for r in result.letters}
    assert len(by_letter) == 26
    a = by_letter["a"]
    assert a.split_features == [0]
    assert a.num_probe_true_positives == 100
    assert a.fully_absorbed == {w: 26 for w in ABSORBED}
    assert {w for w, f in a.absorption_fractions.items() if f > 0} == set(ABSORBED)
    assert a.absorption_fractions["atest3"] == 1.0
    assert a.mean_absorption_fraction == pytest.approx(0.02) and a.full_absorption_rate == pytest.approx(0.02)
    assert all(r.mean_absorption_fraction == 0 and r.num_full_absorption == 0 for r in result.letters if r is not a)
    metrics = result.metrics()
    assert metrics["mean_absorption_fraction_score"] == pytest.approx(0.02 / 26)
    assert metrics["mean_num_split_features"] == 1.0


def test_a_dictionary_of_the_probe_directions_has_no_absorption():
    task = letter_task(ABSORBED)
    result = absorption(relu_dictionary(task.probe_weight.T / 5, task.probe_weight / 5), task, CONSTRUCTED)
    assert len(result.letters) == 26
    assert result.metrics()["mean_absorption_fraction_score"] == 0
    assert result.metrics()["mean_full_absorption_score"] == 0
    assert all(r.split_features == [LETTERS.index(r.first_letter)] for r in result.letters)


def test_partial_absorption_is_the_absorbed_share_of_the_probe_projection():
    """SAEBench's formula where the main latent fires weakly: P = 1, the main latent projects 0.4,
    two aligned latents 0.3 and 0.2 (a third below the cosine threshold does not count): the
    absorbed projection is min(0.5, 1 - 0.4) and the fraction 0.5 / (0.5 + 0.4); no full absorption."""
    direction = torch.eye(4)[0]
    x = direction[None].clone()  # P = x . p = 1
    decoder_cos = torch.tensor([1.0, 0.6, 0.4, 0.05])
    latents = torch.tensor([[0.4, 0.5, 0.5, 4.0]])  # projections 0.4, 0.3, 0.2, 0.2
    fraction, full, top = word_absorption(x, latents, direction, decoder_cos, main=[0])
    assert fraction.tolist() == pytest.approx([0.5 / 0.9]) and not full[0] and top.tolist() == [0]
    silent = torch.tensor([[0.0, 0.5, 0.5, 4.0]])  # the main latent silent: all of it is absorbed, by latent 1
    fraction, full, top = word_absorption(x, silent, direction, decoder_cos, main=[0])
    assert fraction.tolist() == [1.0] and not full[0]  # the top latent carries 0.3 < 0.4 of P: not full
    alone = torch.tensor([[0.0, 0.9, 0.0, 0.0]])
    fraction, full, top = word_absorption(x, alone, direction, decoder_cos, main=[0])
    assert fraction.tolist() == [1.0] and full.tolist() == [True] and top.tolist() == [1]


# ------------------------------------------------------------------ sparse probing


def test_one_latent_on_the_separating_direction_probes_as_well_as_the_model(tmp_path, tiny_model):
    """Two classes of texts made of two disjoint sets of words (a local JSONL file with text and
    label columns, read by core.data's path rules): the class means of the activations differ along
    one direction u; a dictionary whose first latent is u reaches the dense probe's accuracy with k = 1."""
    rng = random.Random(0)
    words = [w for w in (f" {w}" for w in "apple river stone cloud green music paper light house dream table "
                                         "horse storm night glass bread smile ocean train field".split())]
    left, right = words[:10], words[10:]
    rows = [{"text": "".join(rng.choice(left if label == "left" else right) for _ in range(12)), "label": label}
            for label in ("left", "right") for _ in range(60)]
    path = tmp_path / "labeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = SparseProbingConfig(dataset_names=[str(path)], probe_train_set_size=80, probe_test_set_size=40,
                              context_length=16, k_values=[1, 2])
    texts = {label: [r["text"] for r in rows if r["label"] == label] for label in ("left", "right")}
    pooled, _ = mean_pooled(tiny_model, TINY_HOOK, [], texts["left"] + texts["right"], cfg)
    u = F.normalize(pooled[:60].mean(0) - pooled[60:].mean(0), dim=0)
    others = F.normalize(torch.randn(7, 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    decoder = torch.cat([u[None], others])
    sae = relu_dictionary(decoder.T, decoder)
    with torch.no_grad():
        sae.b_dec.copy_(pooled.mean(0))  # latent 0 is the projection on u beyond the overall mean
    result, = sparse_probing(tiny_model, [sae], cfg)
    accuracy = result.dataset_means()[str(path)]
    assert accuracy["llm_test_accuracy"] >= 0.9
    assert accuracy["sae_top_1_test_accuracy"] >= accuracy["llm_test_accuracy"] - 0.05
    details, = result.details()
    assert details["dataset_name"] == f"{path}_results" and set(result.unstructured()[f"{path}_results"]) == {
        "llm_test_accuracy", "llm_top_1_test_accuracy", "llm_top_2_test_accuracy", "sae_test_accuracy",
        "sae_top_1_test_accuracy", "sae_top_2_test_accuracy"}

    with pytest.raises(DatasetError, match="no column 'topic'"):
        sparse_probing(tiny_model, [sae], replace(cfg, label_column="topic"))
    with pytest.raises(EvaluationError, match="at least two labels"):
        sparse_probing(tiny_model, [sae], replace(cfg, classes=["left"]))


# ------------------------------------------------------------------ synthetic ground truth


def test_synthetic_stream_resumes_exactly_and_keeps_its_structure():
    cfg = SyntheticConfig(n_features=40, d_model=16, firing_probability=0.2, n_parents=4, children_per_parent=3,
                          correlation=0.5, seed=3)
    features = SyntheticFeatures.generate(cfg)
    stream = SyntheticActivations(features, batch_tokens=256)
    next(stream), stream.skip()
    resumed = SyntheticActivations(features, batch_tokens=256, position=stream.position())
    assert stream.position() == {"batch": 2}
    assert torch.equal(next(stream)[SYNTHETIC_HOOK], next(resumed)[SYNTHETIC_HOOK])
    x, acts = stream.batch_with_truth(7)
    assert torch.allclose(x, acts @ features.directions, atol=1e-5)
    fires = acts > 0
    children = fires[:, 4:16].view(-1, 4, 3)
    assert not (children.any(-1) & ~fires[:, :4]).any()  # a child fires only with its parent
    assert (children.sum(-1) <= 1).all()  # mutually exclusive children
    many = torch.cat([stream.batch_with_truth(i)[1] for i in range(40)]) > 0  # 10,240 tokens
    assert many[:, 16:].float().mean().item() == pytest.approx(0.2, abs=0.01)  # correlation keeps the marginals
    assert not torch.equal(SyntheticActivations(features, batch_tokens=256, stream="eval").batch_with_truth(0)[0],
                           stream.batch_with_truth(0)[0])


def test_a_dictionary_set_to_the_true_features_recovers_them_all():
    features = SyntheticFeatures.generate(SyntheticConfig(n_features=24, d_model=32, orthogonal=True,
                                                          firing_probability=0.1))
    sae = relu_dictionary(features.directions.T, features.directions, threshold=1e-3)  # (rounding does not fire)
    r = recovery(sae, features, n_tokens=4096, batch_tokens=1024)
    assert r.mean_max_cosine == pytest.approx(1.0) and r.fraction_recovered == 1.0 and r.mcc == pytest.approx(1.0)
    assert r.matched_precision == 1.0 and r.matched_recall == 1.0
    assert r.evaluation.explained_variance == pytest.approx(1.0, abs=1e-4)
    assert r.shrinkage == pytest.approx(1.0, abs=1e-2)
    assert r.evaluation.l0 == pytest.approx(r.true_l0)
    trainer_view, = SyntheticEvaluator(features, n_tokens=2048, batch_tokens=1024)([sae])  # what the trainer logs
    assert trainer_view.explained_variance == pytest.approx(1.0, abs=1e-4) and trainer_view.n_tokens == 2048
    assert trainer_view.l0 == pytest.approx(r.true_l0, rel=0.1) and math.isnan(trainer_view.ce_loss_recovered)
    shuffled = torch.randperm(24, generator=torch.Generator().manual_seed(0))  # a permutation is the same dictionary
    assert recovery(relu_dictionary(features.directions[shuffled].T, features.directions[shuffled], 1e-3), features,
                    n_tokens=4096, batch_tokens=1024).matched_recall == 1.0
    random_sae = relu_dictionary(torch.randn(32, 24), F.normalize(torch.randn(24, 32), dim=-1))
    assert recovery(random_sae, features, n_tokens=1024).fraction_recovered == 0.0


def test_training_recovers_the_features_of_a_small_problem(tmp_path):
    """64 features in 32 dimensions, 5% firing: a top-k SAE of 128 latents (k 4) trained for 300
    steps of 512 tokens recovers at least 90% of them (cosine > 0.9)."""
    training = TrainingConfig(
        exp_name="synthetic", results_dir=str(tmp_path), seed=0,
        activations=ActivationStoreConfig(hook_name=SYNTHETIC_HOOK, buffer_tokens=4096, train_batch_size=512),
        sae=SAEConfig(architecture="topk", d_sae=128, k=4, decoder_bias_init_samples=1024),
        trainer=TrainerConfig(total_training_tokens=512 * 300, lr=1e-2, lr_warmup_steps=10, lr_schedule="cosine"),
        logging=LoggingConfig(progress_bar=False))
    out = synthetic_run(SyntheticConfig(n_features=64, d_model=32, firing_probability=0.05), training,
                        eval_tokens=8192)
    result, = out.values()
    assert result.recovery.fraction_recovered >= 0.9 and result.recovery.mean_max_cosine >= 0.95
    assert load_dictionary(result.folder).d_sae == 128
    written = read_eval_outputs(result.folder)["synthetic_recovery"]
    assert written["eval_result_metrics"]["recovery"]["fraction_recovered"] == result.recovery.fraction_recovered
    check_saebench_files([result.result_file])
    with pytest.raises(ConfigError, match="already holds trained dictionaries"):
        synthetic_run(SyntheticConfig(n_features=64, d_model=32), training)


def test_a_synthetic_run_is_a_normal_run_that_resumes_exactly(tmp_path):
    """The normal trainer, handed the synthetic stream and evaluator: metrics.jsonl, checkpoints, and a
    run stopped after step 13 resumes at its step-10 checkpoint to the uninterrupted run's weights."""
    from core.evaluations import synthetic_trainer
    from core.runs import RunFolder

    features = SyntheticFeatures.generate(SyntheticConfig(n_features=32, d_model=16, firing_probability=0.1))

    def config(name: str) -> TrainingConfig:
        return TrainingConfig(
            exp_name=name, results_dir=str(tmp_path), seed=0, model=LanguageModelConfig(name="synthetic"),
            activations=ActivationStoreConfig(hook_name=SYNTHETIC_HOOK, buffer_tokens=2048, train_batch_size=256),
            sae=SAEConfig(architecture="topk", d_sae=64, k=4, decoder_bias_init_samples=512),
            trainer=TrainerConfig(total_training_tokens=256 * 24, lr=1e-2, lr_warmup_steps=2, eval_every_steps=10,
                                  checkpoint_every_steps=10),
            logging=LoggingConfig(progress_bar=False, log_every_steps=5))

    whole = synthetic_trainer(features, config("whole"), eval_tokens=2048).run()
    trainer = synthetic_trainer(features, config("parted"), eval_tokens=2048)
    while trainer.step < 13:
        trainer.train_step(trainer.buffer.next_batch())
        if trainer.step % 10 == 0:
            trainer.save_checkpoint()
    assert RunFolder(tmp_path / "parted").latest_checkpoint().name == "step_10"
    resumed = synthetic_trainer(features, config("parted"), eval_tokens=2048).run()
    assert resumed.started_at_step == 10 and resumed.steps == whole.steps == 24
    a, b = (load_dictionary(r.dictionary_path) for r in (whole, resumed))
    for name, tensor in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], tensor), name
    records = list(RunFolder(tmp_path / "whole").metrics.records())
    assert [r["step"] for r in records if "eval" in r] == [10, 20] and "final_eval" in records[-1]
    assert math.isnan(records[-1]["final_eval"]["ce_loss_recovered"])  # no language model to ask
    assert a.saved_config["synthetic"]["n_features"] == 32


# ------------------------------------------------------------------ the whole command on the tiny GPT-2


def test_detailed_evaluation_is_the_trainers_evaluation(tiny_model, tiny_dictionary):
    sae = load_dictionary(tiny_dictionary)
    batches = [torch.randint(300, 5000, (4, 24), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    plain, = evaluate_dictionaries(tiny_model, [sae], batches)
    detailed, details = evaluate_dictionaries_in_detail(tiny_model, [sae], batches)[0]
    assert detailed == plain
    assert details.kl_divergence_zero_ablation > plain.kl_divergence > 0
    assert details.n_sequences == 8 and len(details.feature_density) == sae.d_sae
    assert 0 < details.cosine_similarity <= 1 and details.l1 > 0


SMALL = EvaluationConfig(
    core=CoreEvalConfig(n_eval_reconstruction_batches=2, batch_size_prompts=4),
    absorption=AbsorptionConfig(max_words=300, min_GT_probe_f1=0.0, min_feats_for_eval=1, k_sparse_probe_num_epochs=5),
    sparse_probing=SparseProbingConfig(probe_train_set_size=60, probe_test_set_size=30, context_length=24))
"""Seconds on the tiny GPT-2 (whose random weights know no first letters: absorption's gates are lowered)."""


@pytest.fixture(scope="module")
def two_dictionaries(tmp_path_factory, tiny_gpt2_dir, tiny_model) -> Path:
    """A run of two dictionaries (topk and relu) on the tiny GPT-2's block 0."""
    from core import DictionaryConfig, train

    cfg = tiny_training_config(tiny_gpt2_dir, tmp_path_factory.mktemp("eval-results"), exp_name="two", steps=20)
    cfg = replace(cfg, dictionaries=(DictionaryConfig(name="topk"), DictionaryConfig(
        name="relu", sae=replace(cfg.sae, architecture="relu"))))
    return train(cfg, model=tiny_model).dictionary_paths["topk"].parent.parent


def test_a_run_is_evaluated_with_shared_model_passes_and_saebench_files(two_dictionaries, tiny_model):
    run = run_evaluations([two_dictionaries], SMALL, model=tiny_model)
    assert not run.skipped and set(run.seconds) == {"core", "absorption", "sparse_probing"}
    folders = sorted(run.written)
    assert [f.name for f in folders] == ["relu", "topk"]
    files = [path for f in folders for path in run.written[f].values()]
    assert {p.relative_to(two_dictionaries).as_posix() for p in files} >= {
        "dictionaries/topk/evals/absorption_first_letter/two_topk_eval_results.json",
        "dictionaries/topk/evals/core/two_topk_eval_results.json",
        "dictionaries/topk/evals/sparse_probing/two_topk_eval_results.json"}
    check_saebench_files(files)
    topk = read_eval_outputs(two_dictionaries / "dictionaries" / "topk")
    core = topk["core"]
    assert core["sae_lens_release_id"] == "two" and core["sae_lens_id"] == "topk"
    assert core["sae_cfg_dict"]["architecture"] == "topk" and "metrics" not in core["sae_cfg_dict"]
    assert len(core["eval_result_details"]) == core["sae_cfg_dict"]["d_sae"]
    saved = json.loads((two_dictionaries / "dictionaries" / "topk" / "config.json").read_text())["metrics"]
    assert core["eval_result_metrics"]["sparsity"]["l0"] == pytest.approx(saved["l0"], rel=0.5)
    assert len({out["eval_id"] for out in topk.values()}) == 1

    # The other dictionary of the hook changes nothing of this one's results (sharing is exact).
    only = run_evaluations([two_dictionaries / "dictionaries" / "topk"],
                           replace(SMALL, evals=("absorption", "sparse_probing")), model=tiny_model)
    for eval_type, path in next(iter(only.written.values())).items():
        assert json.loads(path.read_text())["eval_result_metrics"] == topk[eval_type]["eval_result_metrics"]


def test_an_eval_that_cannot_run_is_reported_and_the_others_go_on(two_dictionaries, tiny_model):
    """The tiny random GPT-2 knows no first letters: with SAEBench's gates absorption is refused."""
    cfg = replace(SMALL, evals=("absorption",), absorption=replace(SMALL.absorption, min_GT_probe_f1=0.6,
                                                                   min_feats_for_eval=20))
    run = run_evaluations([two_dictionaries / "dictionaries" / "relu"], cfg, model=tiny_model)
    assert not run.written and len(run.skipped) == 1 and "min_feats_for_eval = 20" in run.skipped[0]


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "core.evaluations", "dictionaries", str(tmp_path / "nothing")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "neither a dictionary folder" in done.stderr


# ------------------------------------------------------------------ SAEBench's output classes

SAEBENCH_NAMES = {
    # sae-bench 0.6.0, sae_bench/evals/*/eval_output.py and eval_config.py: the field names the
    # fallback check compares with when sae-bench is not installed.
    "core": {
        "config": ["model_name", "llm_dtype", "batch_size_prompts", "n_eval_reconstruction_batches",
                   "n_eval_sparsity_variance_batches", "dataset", "context_size", "compute_kl", "compute_ce_loss",
                   "compute_l2_norms", "compute_sparsity_metrics", "compute_variance_metrics",
                   "compute_featurewise_density_statistics", "compute_featurewise_weight_based_metrics",
                   "exclude_special_tokens_from_reconstruction", "verbose"],
        "metrics": {"model_behavior_preservation": ["kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"],
                    "model_performance_preservation": ["ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae",
                                                       "ce_loss_without_sae"],
                    "reconstruction_quality": ["explained_variance", "explained_variance_legacy", "mse", "cossim"],
                    "shrinkage": ["l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias"],
                    "sparsity": ["l0", "l1"],
                    "token_stats": ["total_tokens_eval_reconstruction", "total_tokens_eval_sparsity_variance"],
                    "misc_metrics": ["freq_over_1_percent", "freq_over_10_percent", "normalized_freq_over_1_percent",
                                     "normalized_freq_over_10_percent", "average_max_encoder_cosine_sim",
                                     "average_max_decoder_cosine_sim", "frac_alive"]},
        "details": ["index", "feature_density", "consistent_activation_heuristic", "encoder_bias", "encoder_norm",
                    "encoder_decoder_cosine_sim", "max_decoder_cosine_sim", "max_encoder_cosine_sim"]},
    "absorption_first_letter": {
        "config": ["model_name", "random_seed", "f1_jump_threshold", "max_k_value", "prompt_template",
                   "prompt_token_pos", "llm_batch_size", "llm_dtype", "k_sparse_probe_l1_decay",
                   "k_sparse_probe_batch_size", "k_sparse_probe_num_epochs", "min_GT_probe_f1", "min_feats_for_eval",
                   "eval_k_sparse_probe_batch_size", "precalc_k_sparse_probe_sae_acts"],
        "metrics": {"mean": ["mean_absorption_fraction_score", "mean_full_absorption_score", "mean_num_split_features",
                             "std_dev_absorption_fraction_score", "std_dev_full_absorption_score",
                             "std_dev_num_split_features"]},
        "details": ["first_letter", "mean_absorption_fraction", "full_absorption_rate", "num_full_absorption",
                    "num_probe_true_positives", "num_split_features"]},
    "sparse_probing": {
        "config": ["random_seed", "dataset_names", "probe_train_set_size", "probe_test_set_size", "context_length",
                   "sae_batch_size", "llm_batch_size", "llm_dtype", "model_name", "k_values", "lower_vram_usage"],
        "metrics": {"llm": ["llm_test_accuracy"] + [f"llm_top_{k}_test_accuracy" for k in (1, 2, 5, 10, 20, 50, 100)],
                    "sae": ["sae_test_accuracy"] + [f"sae_top_{k}_test_accuracy" for k in (1, 2, 5, 10, 20, 50, 100)]},
        "details": ["dataset_name", "llm_test_accuracy"] + [f"llm_top_{k}_test_accuracy" for k in
                                                            (1, 2, 5, 10, 20, 50, 100)]
        + ["sae_test_accuracy"] + [f"sae_top_{k}_test_accuracy" for k in (1, 2, 5, 10, 20, 50, 100)]},
}
OUR_CONFIG_FIELDS = {"absorption_first_letter": {"max_words"},
                     "sparse_probing": {"text_column", "label_column", "dataset_split", "classes"}}
"""Settings this library adds to SAEBench's eval configs (documented in each config's docstring)."""


def peers_python() -> Path | None:
    venv = Path(os.environ.get("GPT2DICT_PEERS_VENV", ROOT / ".venv-peers"))
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import sae_bench"], capture_output=True).returncode == 0:
        return python
    if os.environ.get("GPT2DICT_REQUIRE_PEERS") == "1":  # CI made it: missing means broken
        pytest.fail(f"sae-bench is missing from the peers' environment {venv}; CI installs it with "
                    f"`python3 tests/data/make_foreign_fixtures.py --setup-only`.")
    return None


def check_saebench_files(files: list[Path]) -> None:
    """Every file is valid for SAEBench's output class of its eval type, and only this library's own
    config fields are unknown to it; without sae-bench, the names are compared with SAEBench's."""
    outputs = {str(p): json.loads(Path(p).read_text()) for p in files}
    for path, output in outputs.items():
        assert tuple(sorted(output)) == tuple(sorted(OUTPUT_FIELDS)), path
        for category in output["eval_result_metrics"].values():
            assert all(isinstance(v, (int, float)) for v in category.values())  # flat, as BaseMetrics requires
    python = peers_python()
    if python is not None:
        report = json.loads(subprocess.run([str(python), str(ROOT / "tests" / "peer_saebench.py"), *outputs],
                                           capture_output=True, text=True, check=True).stdout)
        for path, found in report.items():
            eval_type = outputs[path]["eval_type_id"]
            assert found["error"] is None, (path, found["error"])
            assert found["changed"] == [], (path, found["changed"])
            assert set(found["dropped"]) == {f"eval_config.{f}" for f in OUR_CONFIG_FIELDS.get(eval_type, ())}, path
        return
    for path, output in outputs.items():
        names = SAEBENCH_NAMES.get(output["eval_type_id"])
        if names is None:  # synthetic_recovery: this library's own eval type
            continue
        assert set(output["eval_config"]) - OUR_CONFIG_FIELDS.get(output["eval_type_id"], set()) == set(names["config"])
        assert set(output["eval_result_metrics"]) == set(names["metrics"]), path
        for category, metrics in output["eval_result_metrics"].items():
            assert set(metrics) <= set(names["metrics"][category]), (path, category)
        for record in output["eval_result_details"]:
            assert set(record) <= set(names["details"]), path
