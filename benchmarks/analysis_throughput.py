"""Throughput of the analyzer compared with the model forward pass it cannot avoid.

On the same token batches of the built-in corpus, with SmolLM2-135M-Instruct at
`blocks.3.hook_resid_post` and a 4,608-feature dictionary (576 x 8):

  (a) the truncated forward alone: `ActivationSource.activations_of` (blocks 0..3 only);
  (b) (a) plus `sae.encode_sparse` (timed separately in the same pass), the dictionary's own cost;
  (c) the analyzer's streaming loop, `accumulate_features`: forward, encode and all per-feature
      records (statistics, histograms, top-k contexts, interval reservoirs);

then the one-off end of an analysis (logit lens + writing the SQLite store). The overhead of
the analyzer is (c) / (a) - 1 in time; the target is under 30 %.

The batches are measured in segments of a few batches, (a), (b) and (c) one after the other on
each segment, and every segment keeps its fastest time over the repeats. Measuring the three
side by side, seconds apart, keeps slow phases of a shared machine from landing on one variant
only. The analyzer continues the same records from segment to segment, so its figure includes
the early batches, when every feature's slots are still filling and cost the most.

    python benchmarks/analysis_throughput.py                 # 100k tokens, about 3 minutes on 2 CPU cores
    python benchmarks/analysis_throughput.py --tokens 200000 --device cuda
    python benchmarks/analysis_throughput.py --smoke      # seconds: tiny GPT-2, tiny sizes (benchmarks/smoke.py)

It uses the trained demo dictionary (results/smollm2-topk-demo/dictionaries/...) when it exists and a
freshly initialized topk dictionary (k = 32) otherwise; both fire exactly 32 features per token,
so the bookkeeping cost is the same.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import (ActivationSource, AnalysisConfig, LanguageModelConfig, SAEConfig, SparseAutoencoder, create_dictionary,  # noqa: E402
                  TokenBatches, load_dictionary, load_language_model)
from core.analysis import accumulate_features, logit_lens, write_feature_store  # noqa: E402
from core.config import resolve_device  # noqa: E402
from benchmarks.smoke import SMOKE_HOOK, tiny_gpt2  # noqa: E402

HOOK = "blocks.3.hook_resid_post"
# The demo run's dictionary, in today's layout or the older one-dictionary layout.
DEMO_DICTIONARY = next((p for p in (Path("results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post"),
                                    Path("results/smollm2-topk-demo/dictionary")) if p.is_dir()), None)


@dataclass
class Args:
    tokens: int = 100_000
    """Text tokens analyzed (rounded up to whole batches)."""
    device: str = "auto"
    model_batch_size: int = 16
    segment_batches: int = 5
    """Batches per segment: (a), (b) and (c) run one after the other on each segment."""
    repeats: int = 2
    """Measure every segment this many times and keep the fastest time of each variant."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    smoke: bool = False
    """Seconds, not minutes: the tiny GPT-2 and a fresh dictionary, 1,000 tokens, one repeat."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: Args) -> None:
    with tempfile.TemporaryDirectory(prefix="analysis-bench-") as work:
        if args.smoke:
            args = replace(args, tokens=1000, model_batch_size=4, segment_batches=1, repeats=1)
            measure(args, LanguageModelConfig(name=str(tiny_gpt2(Path(work)))), SMOKE_HOOK, None)
        else:
            measure(args, LanguageModelConfig(), HOOK, DEMO_DICTIONARY)


def measure(args: Args, model_cfg: LanguageModelConfig, hook: str, trained: Path | None) -> None:
    """The measurements of the module docstring, at `hook` of `model_cfg`'s model, with the dictionary
    `trained` (None: a freshly initialized topk dictionary)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_language_model(model_cfg, device)
    if trained is not None:
        sae, which = load_dictionary(trained, device=device), f"trained ({trained})"
    else:
        torch.manual_seed(0)
        sae = create_dictionary(SAEConfig(architecture="topk", expansion_factor=8, k=32), model.d_model,
                                hook_name=hook, model_name=model.name, device=device)
        which = "freshly initialized topk, k=32"
    sae.eval()
    cfg = AnalysisConfig(model_batch_size=args.model_batch_size, model=model_cfg)
    dev = model.device

    # The same batches for every measurement, tokenized beforehand.
    stream = TokenBatches(cfg.dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                          separator_token_id=model.separator_token_id, batch_size=cfg.model_batch_size,
                          cache_dir=cfg.model.cache_dir)
    batches, text_tokens = [], []
    while sum(text_tokens) < args.tokens:
        batch = next(stream).to(dev)
        batches.append(batch)
        text_tokens.append(int(model.token_mask(batch).sum()))
    n_text = sum(text_tokens)
    segments = [range(i, min(i + args.segment_batches, len(batches)))
                for i in range(0, len(batches), args.segment_batches)]
    source = ActivationSource(model, hook, iter(()))
    print(f"device {dev}, {torch.get_num_threads()} CPU threads; model {model.name} at {hook}; "
          f"dictionary {which}, d_sae {sae.d_sae}; {len(batches)} batches of {tuple(batches[0].shape)} "
          f"({n_text:,} text tokens) in {len(segments)} segments, best of {args.repeats}")

    with torch.no_grad():  # warm-up: first calls allocate, pick kernels and load the compiled kernels
        sae.encode_sparse(source.activations_of(batches[0])[hook])
    accumulate_features(model, sae, batches[:1], replace(cfg, total_analyzing_tokens=text_tokens[0]), progress=False)

    @torch.no_grad()
    def forward(segment: range) -> float:
        _sync(dev)
        start = time.perf_counter()
        for i in segment:
            source.activations_of(batches[i])
        _sync(dev)
        return time.perf_counter() - start

    @torch.no_grad()
    def encode(segment: range) -> float:
        """Seconds in encode_sparse alone (after each batch's forward, timed apart)."""
        seconds = 0.0
        for i in segment:
            acts = source.activations_of(batches[i])[hook]
            mask = model.token_mask(batches[i])
            _sync(dev)
            start = time.perf_counter()
            sae.encode_sparse(acts, rows=mask)
            _sync(dev)
            seconds += time.perf_counter() - start
        return seconds

    t_forward = [float("inf")] * len(segments)
    t_encode = [float("inf")] * len(segments)
    t_analyzer = [float("inf")] * len(segments)
    records = None
    for _ in range(args.repeats):
        records, done = None, 0
        for s, segment in enumerate(segments):
            t_forward[s] = min(t_forward[s], forward(segment))
            t_encode[s] = min(t_encode[s], encode(segment))
            done += sum(text_tokens[i] for i in segment)
            seg_cfg = replace(cfg, total_analyzing_tokens=done)
            _sync(dev)
            start = time.perf_counter()
            records = accumulate_features(model, sae, [batches[i] for i in segment], seg_cfg, records=records,
                                          progress=False)
            _sync(dev)
            t_analyzer[s] = min(t_analyzer[s], time.perf_counter() - start)
    assert records is not None and records.n_tokens == n_text

    start = time.perf_counter()
    lens = logit_lens(model, sae, cfg.logit_lens_k)
    vocab = model.token_strings()
    t_lens = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_feature_store(Path(tmp) / "features.sqlite", records, vocab=vocab, meta={}, lens=lens, overwrite=False,
                            progress=False)
        t_write = time.perf_counter() - start
        size_mb = (Path(tmp) / "features.sqlite").stat().st_size / 2 ** 20

    forward_s, encode_s, analyzer_s = sum(t_forward), sum(t_encode), sum(t_analyzer)
    print(f"(a) truncated forward          {n_text / forward_s:10,.0f} tokens/s  ({forward_s:6.2f} s)")
    print(f"(b) forward + encode_sparse    {n_text / (forward_s + encode_s):10,.0f} tokens/s  "
          f"({forward_s + encode_s:6.2f} s)")
    print(f"(c) analyzer (streaming loop)  {n_text / analyzer_s:10,.0f} tokens/s  ({analyzer_s:6.2f} s)")
    print(f"analyzer overhead over the forward: {analyzer_s / forward_s - 1:+.1%} (target < 30%): "
          f"encode_sparse {encode_s / forward_s:+.1%}, per-feature records and the rest "
          f"{(analyzer_s - forward_s - encode_s) / forward_s:+.1%}")
    first, rest = t_analyzer[0] / t_forward[0] - 1, sum(t_analyzer[1:]) / max(sum(t_forward[1:]), 1e-9) - 1
    print(f"overhead in the first segment (slots filling) {first:+.1%}, in the others {rest:+.1%}")
    print(f"once per analysis: logit lens + vocabulary {t_lens:.2f} s, writing the store {t_write:.2f} s "
          f"({size_mb:.1f} MiB)")


if __name__ == "__main__":
    main(tyro.cli(Args))
