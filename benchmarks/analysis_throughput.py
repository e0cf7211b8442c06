"""Throughput of the analyzer compared with the model forward pass it cannot avoid.

On the same token batches of the built-in corpus, with SmolLM2-135M-Instruct at
`blocks.3.hook_resid_post` and a 4,608-feature dictionary (576 x 8):

  (a) the truncated forward alone: `ActivationSource.activations_of` (blocks 0..3 only);
  (b) (a) plus `sae.encode` (timed separately in the same pass), the dictionary's own cost;
  (c) the analyzer's streaming loop, `accumulate_features`: forward, encode and all per-feature
      records (statistics, histograms, top-k contexts, interval reservoirs);

then the one-off end of an analysis (logit lens + writing the SQLite store). The overhead of
the analyzer is (c) / (a) - 1 in time; the target is under 30 %.

    python benchmarks/analysis_throughput.py                 # 40k tokens, about 2 minutes on 2 CPU cores
    python benchmarks/analysis_throughput.py --tokens 200000 --device cuda

It uses the trained demo dictionary (results/smollm2-topk-demo/dictionary) when it exists and a
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

from core import (ActivationSource, AnalysisConfig, LanguageModelConfig, SAEConfig, SparseAutoencoder,  # noqa: E402
                  TokenBatches, load_dictionary, load_language_model)
from core.analysis import accumulate_features, logit_lens, write_feature_store  # noqa: E402
from core.config import resolve_device  # noqa: E402

HOOK = "blocks.3.hook_resid_post"
DEMO_DICTIONARY = Path("results/smollm2-topk-demo/dictionary")


@dataclass
class Args:
    tokens: int = 40_000
    """Text tokens analyzed in each measurement."""
    device: str = "auto"
    model_batch_size: int = 16
    repeats: int = 1
    """Measure this many times and keep the fastest time of each variant."""
    threads: int = 0
    """CPU threads for torch (0: torch's default). On a busy shared machine 1 thread gives steadier figures."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_language_model(LanguageModelConfig(), device)
    if DEMO_DICTIONARY.is_dir():
        sae, which = load_dictionary(DEMO_DICTIONARY, device=device), f"trained ({DEMO_DICTIONARY})"
    else:
        torch.manual_seed(0)
        sae = SparseAutoencoder(SAEConfig(architecture="topk", expansion_factor=8, k=32), model.d_model,
                                hook_name=HOOK, model_name=model.name, device=device)
        which = "freshly initialized topk, k=32"
    sae.eval()
    cfg = AnalysisConfig(total_analyzing_tokens=args.tokens, model_batch_size=args.model_batch_size)
    dev = model.device

    # The same batches for every measurement, tokenized beforehand.
    stream = TokenBatches(cfg.dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                          separator_token_id=model.separator_token_id, batch_size=cfg.model_batch_size,
                          cache_dir=cfg.model.cache_dir)
    batches, n_text = [], 0
    while n_text < args.tokens:
        batch = next(stream).to(dev)
        batches.append(batch)
        n_text += int(model.token_mask(batch).sum())
    source = ActivationSource(model, HOOK, iter(()))
    print(f"device {dev}, {torch.get_num_threads()} CPU threads; model {model.name} at {HOOK}; "
          f"dictionary {which}, d_sae {sae.d_sae}; {len(batches)} batches of {tuple(batches[0].shape)}, "
          f"{args.tokens:,} text tokens")

    with torch.no_grad():  # warm-up: first calls allocate and pick kernels
        sae.encode(source.activations_of(batches[0]))
    first_batch_tokens = int(model.token_mask(batches[0]).sum())
    accumulate_features(model, sae, batches[:1], replace(cfg, total_analyzing_tokens=first_batch_tokens),
                        progress=False)

    def timed(run) -> float:
        _sync(dev)
        start = time.perf_counter()
        run()
        _sync(dev)
        return time.perf_counter() - start

    @torch.no_grad()
    def forward_then_encode() -> tuple[float, float]:
        """Seconds spent in the forward and in sae.encode, timed separately in one pass."""
        t_forward = t_encode = 0.0
        for batch in batches:
            start = time.perf_counter()
            acts = source.activations_of(batch)
            _sync(dev)
            middle = time.perf_counter()
            sae.encode(acts)
            _sync(dev)
            t_forward, t_encode = t_forward + middle - start, t_encode + time.perf_counter() - middle
        return t_forward, t_encode

    records = None

    def analyzer() -> None:
        nonlocal records
        records = accumulate_features(model, sae, batches, cfg, progress=False)

    # The forward counts every position of the batches (the analyzer stops at exactly
    # args.tokens text tokens, within the last batch); compare per text token of whole batches.
    t_forward, t_encode, t_analyzer = float("inf"), float("inf"), float("inf")
    for _ in range(args.repeats):  # the fastest of the repeats: less noise on shared machines
        forward, encode = forward_then_encode()
        t_forward, t_encode = min(t_forward, forward), min(t_encode, forward + encode)
        t_analyzer = min(t_analyzer, timed(analyzer))
    assert records is not None and records.n_tokens == args.tokens

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

    print(f"(a) truncated forward          {n_text / t_forward:10,.0f} tokens/s  ({t_forward:6.2f} s)")
    print(f"(b) forward + sae.encode       {n_text / t_encode:10,.0f} tokens/s  ({t_encode:6.2f} s)")
    print(f"(c) analyzer (streaming loop)  {args.tokens / t_analyzer:10,.0f} tokens/s  ({t_analyzer:6.2f} s)")
    overhead = (n_text / t_forward) / (args.tokens / t_analyzer) - 1
    bookkeeping = (n_text / t_encode) / (args.tokens / t_analyzer) - 1
    print(f"analyzer overhead over the forward: {overhead:+.1%} (target < 30%); "
          f"of which per-feature records: {bookkeeping:+.1%} over forward + encode")
    print(f"once per analysis: logit lens + vocabulary {t_lens:.2f} s, writing the store {t_write:.2f} s "
          f"({size_mb:.1f} MiB)")


if __name__ == "__main__":
    main(tyro.cli(Args))
