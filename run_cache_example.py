"""Cache a model's activations once, then train many dictionaries on them without the model's forward.

Copy this file to `exp/`, edit the preset you start from, and run it:

    python run_cache_example.py                                  # offline preset: SmolLM2-135M, blocks 3 and 5
    python run_cache_example.py smollm2 --total-tokens 200000 --store-dtype bfloat16
    python run_cache_example.py gpt2                             # GPT-2 small, every residual stream (needs the hub)
    python run_cache_example.py smollm2 --help                   # every field, with its documentation

The cache folder holds shards (safetensors: every hook's activations of the text tokens, and the
token ids they came from) and a manifest.json naming the model, hooks, widths, dtype, dataset and
context size. An interrupted run is continued by running the same command again; a cache is never
read for training until its manifest says it is complete. Train on it with

    python run_train_example.py smollm2 --activations.cache-path results/activation-caches/smollm2-blocks3-5
"""

from __future__ import annotations

import logging
from typing import Annotated

import tyro

from core import CacheConfig, DatasetConfig, LanguageModelConfig, cache_activations, read_manifest
from core.cli import run_entry_point
from core.distributed import is_main_process

# Offline default: 200k tokens of the built-in corpus at blocks 3 and 5 of SmolLM2-135M (576 floats
# per token and hook: 0.9 GB in float32, half that in bfloat16), about a minute on a 2-core CPU.
OFFLINE_PRESET = CacheConfig(
    cache_path="results/activation-caches/smollm2-blocks3-5",
    hooks=("blocks.3.hook_resid_post", "blocks.5.hook_resid_post"),
    total_tokens=200_000, shard_tokens=65_536, store_dtype="float32", eval_sequences=128,
    model=LanguageModelConfig(name="SmolLM2-135M-Instruct"),
    dataset=DatasetConfig(path="builtin:python-docs", context_size=128),
    model_batch_size=16,
)

# GPT-2 small's 12 residual streams, 100M tokens of OpenWebText in bfloat16 (about 1.8 TB: pick
# fewer hooks or tokens for a single disk). Needs the hub and a GPU.
GPT2_PRESET = CacheConfig(
    cache_path="results/activation-caches/gpt2-resid",
    hooks=tuple(f"blocks.{i}.hook_resid_post" for i in range(12)),
    total_tokens=100_000_000, shard_tokens=1_048_576, store_dtype="bfloat16", eval_sequences=512,
    model=LanguageModelConfig(name="gpt2"),
    dataset=DatasetConfig(path="Skylion007/openwebtext", context_size=128, streaming=True),
    model_batch_size=64,
)

PRESETS = {"smollm2": OFFLINE_PRESET, "gpt2": GPT2_PRESET}
Preset = tyro.extras.subcommand_type_from_defaults(
    PRESETS, descriptions={"smollm2": "offline default (SmolLM2-135M, built-in corpus, blocks 3 and 5)",
                           "gpt2": "GPT-2 small, OpenWebText, every residual stream"})


def main(cfg: Annotated[CacheConfig, tyro.conf.arg(name="")]) -> None:
    folder = cache_activations(cfg)
    if not is_main_process():  # under torchrun, rank 0 prints the summary
        return
    manifest = read_manifest(folder)
    print(f"\nActivation cache written to {folder}")
    print(f"  {manifest['total_tokens']:,} tokens of {', '.join(manifest['hooks'])} in {len(manifest['shards'])} "
          f"shards ({manifest['dtype']})")
    print(f"Train on it:  python run_train_example.py smollm2 --activations.cache-path {folder}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_entry_point(main, tyro.cli(Preset, default=OFFLINE_PRESET, config=(tyro.conf.OmitSubcommandPrefixes,)))
