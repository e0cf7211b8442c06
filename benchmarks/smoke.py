"""What the benchmarks' `--smoke` modes share: a tiny random GPT-2 with the real GPT-2 tokenizer
(tests/tiny_gpt2.py) in place of the real model.

A smoke run goes through every step of its benchmark at tiny sizes, in seconds, and prints the same
lines as a real run; its figures mean nothing. tests/test_benchmarks.py runs each script's smoke
mode, so a benchmark that no longer runs fails the test suite instead of rotting unseen.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_gpt2 import build_tiny_gpt2

SMOKE_HOOK = "blocks.1.hook_resid_post"
"""A hook of the tiny GPT-2 (2 layers, d_model 64)."""


def tiny_gpt2(work: Path, n_layer: int = 2) -> Path:
    """The folder of a tiny GPT-2 (d_model 64) of `n_layer` layers under `work` (built on first use)."""
    return build_tiny_gpt2(Path(work) / f"tiny-gpt2-{n_layer}", n_layer=n_layer)
