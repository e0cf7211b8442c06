"""Analysis of a trained dictionary: what does each feature respond to?

`analyze(cfg)` streams `total_analyzing_tokens` text tokens (the same packed sequences as
training, BOS / EOS / pad positions excluded) through the model and the dictionary, keeps running
per-feature records, and writes them to a feature store (`core/store.py`):

    <dictionary_path>/analysis/<analysis_name>/config.json       the AnalysisConfig
    <dictionary_path>/analysis/<analysis_name>/features.sqlite   the feature store

(runs of the older one-dictionary layout, `results/<exp>/dictionary/`, keep theirs in
`results/<exp>/analysis/<analysis_name>/`; see `analysis_dir`).

Per feature it keeps, whatever the number of tokens (memory is d_sae x samples kept):

- act_count, density (act_count / tokens analyzed), max and mean of the non-zero activations;
- a histogram of the non-zero activations, log-spaced bins over the range where that feature's
  activations lie (a feature peaking at 5 is not drawn on an axis that runs to 160 because another
  feature does);
- the top `top_k` contexts (highest activations);
- `samples_per_interval` contexts in each of `n_intervals` equal intervals of (0, max], drawn
  by reservoir sampling;
- the logit lens of its decoder direction (residual-stream hooks only).

And per vocabulary token (memory vocab x TOKEN_INDEX_SIZE): how often it occurred and the
TOKEN_INDEX_SIZE features with the largest activation on it, the index behind token search
(`FeatureStore.search_tokens`: "which features fire most on ` import`"), updated by a second
compiled kernel (`core.kernels.update_token_index`) from the same sparse rows.

A context is the window [pos - context_left, pos + context_right] around the activating token,
clipped to its sequence: token ids plus this feature's activation on every token of the window
(0 on BOS / EOS / pad positions, which are not analyzed).

The dictionary encodes each batch straight into sparse rows (`SparseAutoencoder.encode_sparse`:
for topk dictionaries on CPU a [tokens, d_sae] matrix is never built), and a compiled kernel
(`core.kernels.update_records`) walks those non-zero activations feature by feature, in token
order within each feature, updating only the arrays of the feature each activation belongs to:

- count, sum, max and a fine log-spaced histogram;
- top-k contexts: the `top_k` largest activations (an earlier occurrence wins a tie);
- interval samples: every occurrence gets a random 64-bit key (a hash of the seed, the token's
  ordinal in the analysis and the feature, so it does not depend on batching), and each interval
  keeps the `samples_per_interval` occurrences with the smallest keys.

A slot taken during a batch only notes the position; the context windows are cut at the end of
the batch, once per slot that changed, so their cost does not grow with the number of tokens.

Interval sampling. Keeping the `samples_per_interval` smallest of i.i.d. uniform keys among the
occurrences of a group is a uniform sample without replacement of that group (reservoir sampling
with random keys). The intervals depend on the feature's running maximum: when it grows, the
kept entries are re-bucketed by their activation values under the new intervals. So sampling is
exactly uniform over occurrences seen after the feature's final maximum was reached, and only
approximately uniform before (an occurrence dropped from its old interval cannot come back when
the interval boundaries move).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from . import kernels
from .activations import ActivationSource
from .config import AnalysisConfig, resolve_device
from .errors import ConfigError
from .layout import ANALYSIS_CONFIG_FILENAME, STORE_FILENAME, analysis_folder, analyzed_dictionary
from .data import held_out_and_batches
from .distributed import SINGLE_PROCESS, Distributed, init_distributed, rank_device
from .lm import LanguageModel, check_model_matches, is_residual_hook, load_language_model
from .sae import SparseAutoencoder, SparseFeatureActs, is_foreign, load_dictionary
from .store import FeatureStoreWriter, SampleArrays

log = logging.getLogger(__name__)


HISTOGRAM_RANGE = (1e-4, 1e4)
"""Activation range of the shared histogram grid; values outside fall into the first / last bin."""
HISTOGRAM_OVERSAMPLING = 8
"""The running histogram has `histogram_bins * HISTOGRAM_OVERSAMPLING` bins over HISTOGRAM_RANGE;
the stored one has `histogram_bins` bins over the part of the range activations actually used."""
LOGIT_LENS_CHUNK = 256
"""Decoder rows multiplied by the unembedding at once ([chunk, vocab] logits in memory)."""
HISTOGRAM_MIN_FINE_BINS = 8
"""A feature's stored histogram spans at least this many fine bins (padded around its activations),
so a feature whose activations are nearly constant still shows some context."""
TOKEN_INDEX_SIZE = 32
"""Features kept per vocabulary token in the token-search index (the strongest by max activation)."""


def analysis_dir(cfg: AnalysisConfig) -> Path:
    """Where the analysis of `cfg` is written: `<dictionary folder>/analysis/<analysis_name>`, or for
    a run of the older one-dictionary layout (`results/<exp>/dictionary/`) beside it, in
    `results/<exp>/analysis/<analysis_name>`, where those runs keep their analyses."""
    return analysis_folder(Path(cfg.dictionary_path).expanduser().resolve(), cfg.analysis_name)


# ----------------------------------------------------------------------------------------------
# Running per-feature records


class SampleSlots:
    """Per feature, `n_slots` slots of kept sample contexts (numpy arrays on CPU).

    A slot holds the activation it was chosen for (`value`) and its window: `token_ids` [window]
    (-1 past the window's end), `acts` [window] (the feature's activation on each token) and
    `max_pos` (the activating token's place in the window). `pending` is the batch position of a
    slot taken in the current batch whose window is not cut yet (-1 otherwise).
    """

    def __init__(self, d_sae: int, n_slots: int, window: int):
        self.value = np.zeros((d_sae, n_slots), np.float32)
        self.pending = np.full((d_sae, n_slots), -1, np.int64)
        self.token_ids = np.full((d_sae, n_slots, window), -1, np.int32)
        self.acts = np.zeros((d_sae, n_slots, window), np.float32)
        self.max_pos = np.zeros((d_sae, n_slots), np.int32)

    def samples(self, occupied: np.ndarray, group: np.ndarray) -> dict[tuple[int, int], list[SampleArrays]]:
        """The contexts of the occupied slots by (feature, group), highest activation first."""
        lengths = (self.token_ids >= 0).sum(-1)
        feature, slot = np.nonzero(occupied)
        order = np.lexsort((-self.value[feature, slot], group[feature, slot], feature))
        out: dict[tuple[int, int], list[SampleArrays]] = {}
        for f, s in zip(feature[order].tolist(), slot[order].tolist()):
            n = lengths[f, s]
            out.setdefault((f, int(group[f, s])), []).append(
                SampleArrays(self.token_ids[f, s, :n], self.acts[f, s, :n], int(self.max_pos[f, s])))
        return out


class FeatureRecords:
    """Running records of every feature over the tokens analyzed so far (see the module docstring).

    Feed it batch by batch with `update(tokens, feature_acts, mask)`; read the finished records with
    `statistics()`, `histogram()`, `top_samples()` and `interval_samples()`. Everything lives in
    numpy arrays on CPU, sized by d_sae and the samples kept, and `update` is one compiled kernel
    (`core.kernels.update_records`) over the batch's non-zero activations.
    """

    def __init__(self, d_sae: int, cfg: AnalysisConfig, *, vocab_size: Optional[int] = None):
        self.d_sae = d_sae
        self.context_left, self.context_right = cfg.context_left, cfg.context_right
        self.n_intervals, self.samples_per_interval = cfg.n_intervals, cfg.samples_per_interval
        self.histogram_bins = cfg.histogram_bins
        self.seed = cfg.seed
        self.n_tokens = 0
        self.act_count = np.zeros(d_sae, np.int64)
        self.act_sum = np.zeros(d_sae, np.float64)
        self.max_act = np.zeros(d_sae, np.float32)
        self.fine_bins = cfg.histogram_bins * HISTOGRAM_OVERSAMPLING
        self.fine_hist = np.zeros((d_sae, self.fine_bins), np.int64)
        window = cfg.context_left + cfg.context_right + 1
        self.top = SampleSlots(d_sae, cfg.top_k, window)
        self.top_count = np.zeros(d_sae, np.int64)
        self.top_min_slot = np.zeros(d_sae, np.int64)  # slot of the smallest kept value once full
        self.intervals = SampleSlots(d_sae, cfg.n_intervals * cfg.samples_per_interval, window)
        self.interval_key = np.zeros((d_sae, cfg.n_intervals * cfg.samples_per_interval), np.uint64)
        self.interval_group = np.full((d_sae, cfg.n_intervals * cfg.samples_per_interval), -1, np.int64)
        # The token index (None without a vocabulary size): per token, occurrences and its strongest features.
        self.vocab_size = vocab_size
        if vocab_size is not None:
            self.token_occurrences = np.zeros(vocab_size, np.int64)
            self.token_features = np.full((vocab_size, TOKEN_INDEX_SIZE), -1, np.int32)
            self.token_values = np.zeros((vocab_size, TOKEN_INDEX_SIZE), np.float32)
            self.token_fill = np.zeros(vocab_size, np.int64)
            self.token_min_slot = np.zeros(vocab_size, np.int64)

    def update(self, tokens: Tensor, feature_acts: SparseFeatureActs, mask: Tensor) -> None:
        """Add one batch: tokens [batch, seq], feature_acts with one row per position (row-major),
        mask [batch, seq] (True on the positions analyzed; activations elsewhere are ignored and
        shown as 0 in windows)."""
        if feature_acts.n_tokens != tokens.numel() or mask.shape != tokens.shape:
            raise ValueError(f"update: tokens {tuple(tokens.shape)}, mask {tuple(mask.shape)} and "
                             f"{feature_acts.n_tokens} activation rows do not match.")
        tokens = np.ascontiguousarray(tokens.cpu().numpy(), dtype=np.int64)
        mask = np.ascontiguousarray(mask.cpu().numpy(), dtype=np.bool_)
        row_ptr, features, values = (t.numpy() for t in feature_acts[:3])
        low, high = (math.log10(x) for x in HISTOGRAM_RANGE)
        top, intervals = self.top, self.intervals
        n_new = kernels.update_records(
            tokens, mask, row_ptr, features, values, self.n_tokens, self.seed,
            self.act_count, self.act_sum, self.max_act, self.fine_hist, low, self.fine_bins / (high - low),
            top.value, self.top_count, self.top_min_slot, top.pending, top.token_ids, top.acts, top.max_pos,
            intervals.value, self.interval_key, self.interval_group, intervals.pending, intervals.token_ids,
            intervals.acts, intervals.max_pos, self.n_intervals, self.samples_per_interval,
            self.context_left, self.context_right)
        if self.vocab_size is not None:
            analyzed = tokens[mask]
            if analyzed.size and not 0 <= analyzed.min() <= analyzed.max() < self.vocab_size:
                raise ValueError(f"update: token ids must lie in 0..{self.vocab_size - 1} (the vocabulary), got "
                                 f"{int(analyzed.min())}..{int(analyzed.max())}.")
            kernels.update_token_index(tokens, mask, row_ptr, features, values, self.token_occurrences,
                                       self.token_features, self.token_values, self.token_fill, self.token_min_slot)
        self.n_tokens += n_new

    def top_samples(self) -> dict[tuple[int, int], list[SampleArrays]]:
        """The top contexts by (feature, 0), highest activation first."""
        occupied = np.arange(self.top.value.shape[1]) < self.top_count[:, None]
        return self.top.samples(occupied, np.zeros_like(self.top.max_pos))

    def interval_samples(self) -> dict[tuple[int, int], list[SampleArrays]]:
        """The interval samples by (feature, interval), highest activation first."""
        return self.intervals.samples(self.interval_group >= 0, self.interval_group)

    def statistics(self) -> dict[str, np.ndarray]:
        """act_count, density, max_act, mean_act as numpy arrays [d_sae]."""
        count = self.act_count.copy()
        return {"act_count": count, "density": count / max(self.n_tokens, 1),
                "max_act": self.max_act.astype(np.float64), "mean_act": self.act_sum / np.maximum(count, 1)}

    def histogram(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per feature (edges [n+1], counts [n]) with n <= histogram_bins: its running histogram
        merged onto the stretch of the log grid its own activations used (padded by a fine bin on
        each side, at least HISTOGRAM_MIN_FINE_BINS fine bins), so every activation is counted and
        the bins stay log-spaced. A dead feature gets one empty bin over the whole grid."""
        low, high = (math.log10(x) for x in HISTOGRAM_RANGE)
        step = (high - low) / self.fine_bins  # log10 width of a fine bin
        n = self.fine_bins
        used = self.fine_hist > 0
        first = np.argmax(used, axis=1)
        last = n - 1 - np.argmax(used[:, ::-1], axis=1)
        alive = used.any(axis=1)
        all_edges, all_counts = [], []
        for f in range(self.d_sae):
            if not alive[f]:
                all_edges.append(np.array(HISTOGRAM_RANGE, np.float64))
                all_counts.append(np.zeros(1, np.int64))
                continue
            start, end = int(first[f]) - 1, int(last[f]) + 2  # fine bins [start, end), one empty bin each side
            if end - start < HISTOGRAM_MIN_FINE_BINS:
                start -= (HISTOGRAM_MIN_FINE_BINS - (end - start)) // 2
                end = start + HISTOGRAM_MIN_FINE_BINS
            shift = max(0, -start) - max(0, end - n)  # keep it on the grid where the grid is wide enough
            start, end = start + shift, end + shift
            merge = math.ceil((end - start) / self.histogram_bins)  # fine bins per stored bin
            end = start + merge * math.ceil((end - start) / merge)
            # Bins outside the grid (only when the span is wider than what remains of it) are empty.
            fine = np.zeros(end - start, np.int64)
            lo, hi = max(start, 0), min(end, n)
            fine[lo - start:hi - start] = self.fine_hist[f, lo:hi]
            all_counts.append(fine.reshape(-1, merge).sum(-1))
            all_edges.append(10.0 ** (low + step * np.arange(start, end + 1, merge)))
        return all_edges, all_counts

    def token_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(occurrences [vocab], features [vocab, n], max activations [vocab, n]): per token, how
        often it was analyzed and its strongest features, strongest first (-1 / 0 in unused slots)."""
        if self.vocab_size is None:
            raise ValueError("These records keep no token index; create them with vocab_size.")
        order = np.argsort(-self.token_values, axis=1, kind="stable")
        return (self.token_occurrences.copy(), np.take_along_axis(self.token_features, order, 1),
                np.take_along_axis(self.token_values, order, 1))


# ----------------------------------------------------------------------------------------------
# Streaming


def _first_tokens(mask: Tensor, n: int) -> Tensor:
    """`mask` [batch, seq] restricted to its first `n` True positions (row-major order)."""
    flat = mask.flatten()
    return (flat & (flat.cumsum(0) <= n)).view_as(mask)


@torch.no_grad()
def accumulate_features(model: LanguageModel, sae: SparseAutoencoder, token_batches: Iterable[Tensor],
                        cfg: AnalysisConfig, *, records: Optional[FeatureRecords] = None,
                        progress: bool = True, dist: Distributed = SINGLE_PROCESS) -> Optional[FeatureRecords]:
    """Run `token_batches` ([batch, seq], BOS first) through the model and `sae` until
    `cfg.total_analyzing_tokens` text tokens are analyzed (or the batches run out). `records`
    continues earlier records (the token count includes theirs) instead of starting new ones.

    In a torchrun job every rank walks the same batches and encodes every world_size-th one (rank r
    the r-th of each round); the sparse activations travel to rank 0, which updates the records with
    every batch in order, so they equal one process's exactly. Returns the records on rank 0, None
    on the other ranks."""
    from tqdm.auto import tqdm

    device = model.device
    source = ActivationSource(model, sae.hook_name, iter(()))
    if dist.is_main:
        records = FeatureRecords(sae.d_sae, cfg, vocab_size=model.d_vocab) if records is None else records
    total = cfg.total_analyzing_tokens
    analyzed = dist.broadcast_object(records.n_tokens if dist.is_main else None)
    bar = tqdm(total=total, initial=analyzed, unit="tok", unit_scale=True, desc=f"analyze {cfg.analysis_name}",
               disable=not progress or not dist.is_main, dynamic_ncols=True)
    batches = iter(token_batches)
    try:
        while analyzed < total:
            round_: list[tuple[Tensor, Tensor]] = []  # (tokens, analyzed positions) of every rank's batch

            def read() -> Optional[Tensor]:
                """Every rank reads every batch of the round and knows its analyzed positions."""
                nonlocal analyzed
                tokens = next(batches, None)
                if tokens is not None:
                    mask = _first_tokens(model.token_mask(tokens), total - analyzed)
                    analyzed += int(mask.sum())
                    round_.append((tokens, mask))
                return tokens

            def encode() -> Optional[SparseFeatureActs]:
                tokens = read()
                if tokens is None:
                    return None
                acts = source.activations_of(tokens.to(device))[sae.hook_name].to(sae.device)
                return sae.encode_sparse(acts, rows=round_[-1][1].to(acts.device))

            encoded = dist.gather_objects(dist.take_turns(encode, read))
            if not round_:
                break
            if dist.is_main:
                for (tokens, mask), feature_acts in zip(round_, encoded):
                    n_before = records.n_tokens
                    records.update(tokens, feature_acts, mask)
                    bar.update(records.n_tokens - n_before)
    finally:
        bar.close()
    if analyzed < total and dist.is_main:
        log.warning("The token batches ran out after %d of %d tokens.", analyzed, total)
    return records if dist.is_main else None

# ----------------------------------------------------------------------------------------------
# Logit lens


class LogitLens(NamedTuple):
    """Top tokens of each feature's decoder direction read through the unembedding."""

    pos_ids: np.ndarray
    """int [d_sae, k] tokens whose logits the direction raises most, strongest first."""
    pos_values: np.ndarray
    """float [d_sae, k] their logit changes per unit of activation."""
    neg_ids: np.ndarray
    """int [d_sae, k] tokens it lowers most, strongest (most negative) first."""
    neg_values: np.ndarray


@torch.no_grad()
def logit_lens(model: LanguageModel, sae: SparseAutoencoder, k: int) -> LogitLens:
    """Decoder rows (raw activation space) times the final norm's weight, then `W_U`.

    The final norm's input-dependent scale is ignored (it is a positive number per token, so the
    ranking of tokens is unchanged); a LayerNorm's centering is applied, being linear.
    """
    bridge = model.bridge
    W_U = bridge.W_U.float()  # [d_model, vocab]
    final_norm = getattr(bridge, "ln_final", None)
    norm_weight = getattr(final_norm, "weight", None)
    centers = str(getattr(bridge.cfg, "normalization_type", "") or "").startswith("LN")
    k = min(k, W_U.shape[1])
    parts: list[list[Tensor]] = [[], [], [], []]
    for start in range(0, sae.d_sae, LOGIT_LENS_CHUNK):
        directions = sae.W_dec[start:start + LOGIT_LENS_CHUNK].float().to(W_U.device)  # [chunk, d_in]
        if centers:
            directions = directions - directions.mean(-1, keepdim=True)
        if norm_weight is not None:
            directions = directions * norm_weight.float().to(W_U.device)
        logits = directions @ W_U  # [chunk, vocab]
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
        for out, t in zip(parts, (top.indices, top.values, bottom.indices, bottom.values)):
            out.append(t.cpu())
    return LogitLens(*(torch.cat(p).numpy() for p in parts))


# ----------------------------------------------------------------------------------------------
# The analysis


def _check_can_write(folder: Path, overwrite: bool) -> None:
    store = folder / STORE_FILENAME
    if store.exists() and not overwrite:
        raise FileExistsError(f"An analysis already exists at {folder}; set overwrite=True (--overwrite) to "
                              "replace it or pick another analysis_name.")


def write_feature_store(path: Path, records: FeatureRecords, *, vocab: list[str], meta: dict,
                        lens: Optional[LogitLens], overwrite: bool, tokenizer_json: Optional[str] = None,
                        progress: bool = True) -> None:
    """Write `records` as a complete feature store at `path` (atomically, see FeatureStoreWriter);
    `tokenizer_json` (a Hugging Face fast tokenizer's JSON) lets token search split phrases exactly
    as the model does."""
    from tqdm.auto import tqdm

    stats = records.statistics()
    edges, hist_counts = records.histogram()
    top, intervals = records.top_samples(), records.interval_samples()
    max_act = stats["max_act"]
    n = records.n_intervals
    with FeatureStoreWriter(path, overwrite=overwrite) as writer:
        for key, value in meta.items():
            writer.set_meta(key, value)
        writer.set_meta("n_tokens", records.n_tokens)
        writer.set_meta("n_dead", int((stats["act_count"] == 0).sum()))
        writer.write_vocab(vocab)
        if records.vocab_size is not None:
            writer.write_token_index(*records.token_index(), tokenizer_json=tokenizer_json)
        logit_columns = {} if lens is None else dict(
            logit_pos_ids=lens.pos_ids, logit_pos_values=lens.pos_values,
            logit_neg_ids=lens.neg_ids, logit_neg_values=lens.neg_values)
        writer.write_features(hist_counts=hist_counts, hist_edges=edges, **stats, **logit_columns)
        alive = np.flatnonzero(stats["act_count"]).tolist()
        for feature in tqdm(alive, desc="write store", unit="feature", disable=not progress, dynamic_ncols=True):
            writer.write_samples(feature, "top", top.get((feature, 0), []))
            for i in range(n):  # every interval gets its bounds, even when no sample fell into it
                writer.write_samples(feature, f"interval_{i}", intervals.get((feature, i), []),
                                     lower=max_act[feature] * i / n, upper=max_act[feature] * (i + 1) / n)


def tokenizer_json(model: LanguageModel) -> Optional[str]:
    """The model's tokenizer as Hugging Face `tokenizers` JSON (None for a slow tokenizer)."""
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    return None if backend is None else backend.to_str()


def analyze(cfg: AnalysisConfig, *, model: Optional[LanguageModel] = None,
            sae: Optional[SparseAutoencoder] = None) -> Path:
    """Analyze the dictionary at `cfg.dictionary_path`; returns the analysis folder
    `<dictionary_path>/../analysis/<analysis_name>/` (config.json + features.sqlite).

    `model` / `sae` skip loading them (the output folder still follows `cfg.dictionary_path`).
    An existing analysis of the same name is refused unless `cfg.overwrite`; it is replaced only
    once the new store is complete, so an interrupted run never damages it. Under torchrun the ranks
    share the encoding and rank 0 writes one store, the same as one process's (`accumulate_features`).
    """
    cfg.validate()
    if is_foreign(cfg.dictionary_path):
        # An analysis is written inside its dictionary's folder, which here belongs to another tool (or to
        # the Hugging Face cache): the analysis of a foreign dictionary is that of its imported copy.
        raise ConfigError(f"{cfg.dictionary_path} is a dictionary of another library; import it first with "
                          f"core.import_dictionary (a converted copy under results/imported/dictionaries/, analyzed "
                          f"and browsed like a trained one) and analyze that copy. run_analyze_example.py does both.")
    dist = init_distributed(cfg.device)
    dist.check_same("analysis config", cfg.to_dict())
    if sae is None:
        sae = load_dictionary(cfg.dictionary_path)
    folder = analysis_dir(cfg)
    _check_can_write(folder, cfg.overwrite)
    if model is None:
        if cfg.model.name != sae.model_name:  # fail before the (slow) model load
            raise ConfigError(f"The dictionary was trained on model {sae.model_name!r} but the configured model is "
                              f"{cfg.model.name!r}; set model.name to {sae.model_name!r}.")
        model = load_language_model(cfg.model, resolve_device(rank_device(cfg.device, dist)))
    check_model_matches(model, model_name=sae.model_name, hook_name=sae.hook_name, d_in=sae.d_in)
    sae = sae.to(model.device).eval()

    _, token_batches = held_out_and_batches(cfg.dataset, model, batch_size=cfg.model_batch_size)
    records = accumulate_features(model, sae, token_batches, cfg, dist=dist)
    if dist.is_main:  # rank 0 writes the store; the other ranks only encoded their share
        output_hook = sae.hook_out or sae.hook_name  # decoder directions live in a transcoder's out-hook space
        if is_residual_hook(output_hook):
            lens, note = logit_lens(model, sae, cfg.logit_lens_k), None
        else:
            lens, note = None, (f"No logit lens: {output_hook} is not in the residual-stream basis, so the decoder "
                                "directions cannot be read through the unembedding.")
        meta = {"analysis_config": cfg.to_dict(), "dictionary_config": sae.saved_config,
                "metrics": sae.saved_config.get("metrics") or {}, "model_name": sae.model_name,
                "hook_name": sae.hook_name, "hook_out": sae.hook_out, "logit_lens_note": note,
                "analysis_name": cfg.analysis_name}
        folder.mkdir(parents=True, exist_ok=True)
        write_feature_store(folder / STORE_FILENAME, records, vocab=model.token_strings(), meta=meta, lens=lens,
                            overwrite=cfg.overwrite, tokenizer_json=tokenizer_json(model))
        cfg.save_json(folder / ANALYSIS_CONFIG_FILENAME)
        log.info("Wrote the analysis of %d tokens to %s.", records.n_tokens, folder)
    dist.barrier()
    return folder


# ----------------------------------------------------------------------------------------------
# One text


class TextActivations(NamedTuple):
    """The dictionary's features on a user's text (BOS dropped)."""

    token_ids: list[int]
    """Token ids of the text."""
    tokens: list[str]
    """Their display strings (decoded one token at a time, like the feature store's vocabulary)."""
    acts: SparseFeatureActs
    """One sparse row per token (never a dense [n_tokens, d_sae] matrix: a 131k-feature dictionary
    would make that ~270 MB for 512 tokens); rows of BOS / EOS / pad tokens are empty."""

    def feature(self, index: int) -> Tensor:
        """float32 [n_tokens]: feature `index`'s activation on every token."""
        if not 0 <= index < self.acts.d_sae:
            raise IndexError(f"feature {index} does not exist; this dictionary has features 0..{self.acts.d_sae - 1}.")
        out = torch.zeros(self.acts.n_tokens)
        hits = self.acts.features == index
        out[self._token_of_entry()[hits]] = self.acts.values[hits]
        return out

    def top_features(self, k: int) -> list[list[tuple[int, float]]]:
        """Per token, its (at most) k strongest active (> 0) features as (index, activation),
        strongest first."""
        rows = self._token_of_entry()
        # Entries sorted by token, then by activation, strongest first (stable: ties keep their order).
        order = torch.from_numpy(np.lexsort((-self.acts.values.numpy(), rows.numpy())))
        values, features = self.acts.values[order], self.acts.features[order]
        rank = torch.arange(len(order)) - self.acts.row_ptr[rows]  # rows are already in token order
        keep = (rank < k) & (values > 0)
        counts = torch.bincount(rows[keep], minlength=self.acts.n_tokens).tolist()
        pairs = list(zip(features[keep].tolist(), values[keep].tolist()))
        out, start = [], 0
        for count in counts:
            out.append(pairs[start:start + count])
            start += count
        return out

    def _token_of_entry(self) -> Tensor:
        """int64 [nnz]: the token each stored entry belongs to."""
        return torch.repeat_interleave(torch.arange(self.acts.n_tokens), self.acts.row_ptr.diff())


@torch.no_grad()
def encode_text(model: LanguageModel, sae: SparseAutoencoder, text: str, *,
                max_tokens: Optional[int] = None) -> TextActivations:
    """Feature activations on `text`, computed as the analyzer computes them: BOS prepended (as
    in training sequences), the model run up to the hook, `sae.encode_sparse`, special tokens zeroed.
    `max_tokens` caps the number of text tokens (the rest of the text is dropped)."""
    tokens = model.tokenize(text, prepend_bos=True, max_tokens=None if max_tokens is None else max_tokens + 1)
    n_ctx = getattr(model.bridge.cfg, "n_ctx", None)
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise ValueError(f"The text has {tokens.shape[1] - 1} tokens but {model.name!r} reads at most {n_ctx - 1} "
                         "after BOS; shorten it or pass max_tokens.")
    source = ActivationSource(model, sae.hook_name, iter(()))
    acts = sae.encode_sparse(source.activations_of(tokens)[sae.hook_name].to(sae.device), rows=model.token_mask(tokens))
    bos_end = int(acts.row_ptr[1])  # drop the BOS row (empty, as the mask excludes it)
    text_acts = acts._replace(row_ptr=acts.row_ptr[1:] - bos_end, features=acts.features[bos_end:],
                              values=acts.values[bos_end:])
    token_ids = tokens[0, 1:].tolist()
    strings = model.tokenizer.batch_decode([[i] for i in token_ids], clean_up_tokenization_spaces=False)
    return TextActivations(token_ids, strings, text_acts)


__all__ = ["analyze", "analysis_dir", "analyzed_dictionary", "encode_text", "TextActivations", "FeatureRecords", "SampleSlots",
           "accumulate_features", "logit_lens", "LogitLens", "write_feature_store"]
