"""Analysis of a trained dictionary: what does each feature respond to?

`analyze(cfg)` streams `total_analyzing_tokens` text tokens (the same packed sequences as
training, BOS / EOS / pad positions excluded) through the model and the dictionary, keeps running
per-feature records, and writes them to a feature store (`core/store.py`):

    <dictionary_path>/../analysis/<analysis_name>/config.json       the AnalysisConfig
    <dictionary_path>/../analysis/<analysis_name>/features.sqlite   the feature store

Per feature it keeps, whatever the number of tokens (memory is d_sae x samples kept):

- act_count, density (act_count / tokens analyzed), max and mean of the non-zero activations;
- a histogram of the non-zero activations on log-spaced edges shared by all features;
- the top `top_k` contexts (highest activations);
- `samples_per_interval` contexts in each of `n_intervals` equal intervals of (0, max], drawn
  by reservoir sampling;
- the logit lens of its decoder direction (residual-stream hooks only).

A context is the window [pos - context_left, pos + context_right] around the activating token,
clipped to its sequence: token ids plus this feature's activation on every token of the window
(0 on BOS / EOS / pad positions, which are not analyzed).

Everything per batch is vectorized over features: the batch's non-zero activations become one
flat list of (position, feature, value) entries, and statistics are `bincount` / `scatter_reduce`
over it. Top-k contexts and interval samples share one mechanism, `ContextSlots`: every feature
owns a few groups of slots, each candidate has a sort key (top-k: minus the activation; interval
samples: a uniform random number), and a merge keeps in every group the entries with the
smallest keys, by one sort by (group, key) over the kept entries and the new candidates. Context
windows are cut out of the batch only for candidates that enter a slot.

Interval sampling. Keeping the `samples_per_interval` smallest of i.i.d. uniform keys among the
occurrences of a group is a uniform sample without replacement of that group (reservoir sampling
with random keys). The intervals depend on the feature's running maximum: when it grows, the
kept entries are re-bucketed by their activation values under the new intervals. So sampling is
exactly uniform over occurrences seen after the feature's final maximum was reached, and only
approximately uniform before (an occurrence dropped from its old interval cannot come back when
the interval boundaries move).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from .activations import ActivationSource
from .config import AnalysisConfig, ConfigError, resolve_device
from .data import TokenBatches
from .lm import LanguageModel, check_model_matches, is_residual_hook, load_language_model
from .sae import SparseAutoencoder, load_dictionary
from .store import STORE_FILENAME, FeatureStoreWriter, SampleArrays

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.json"

HISTOGRAM_RANGE = (1e-4, 1e4)
"""Activation range of the shared histogram grid; values outside fall into the first / last bin."""
HISTOGRAM_OVERSAMPLING = 8
"""The running histogram has `histogram_bins * HISTOGRAM_OVERSAMPLING` bins over HISTOGRAM_RANGE;
the stored one has `histogram_bins` bins over the part of the range activations actually used."""
LOGIT_LENS_CHUNK = 256
"""Decoder rows multiplied by the unembedding at once ([chunk, vocab] logits in memory)."""


def analysis_dir(cfg: AnalysisConfig) -> Path:
    """`<dictionary_path>/../analysis/<analysis_name>`: where the analysis of `cfg` is written."""
    return Path(cfg.dictionary_path).expanduser().resolve().parent / "analysis" / cfg.analysis_name


# ----------------------------------------------------------------------------------------------
# Kept sample contexts


class ContextSlots:
    """Per feature, `n_groups` groups of at most `capacity` sample contexts each.

    Every feature owns `n_groups * capacity` slots; a slot holds a sort key (the smaller the better;
    +inf marks an empty slot), the group of its entry, the activation the context was chosen for,
    and its window: `token_ids` [window] (-1 after the window's end), `acts` [window] (the
    feature's activation on each token) and `max_pos` (the activating token's index). An entry
    never moves once written (only its group label may change), so a merge writes windows only
    for the candidates that enter.
    """

    def __init__(self, d_sae: int, *, n_groups: int, capacity: int, window: int, device: torch.device):
        self.d_sae, self.n_groups, self.capacity, self.window = d_sae, n_groups, capacity, window
        n_slots = n_groups * capacity
        self.key = torch.full((d_sae, n_slots), math.inf, device=device)
        self.group = torch.zeros(d_sae, n_slots, dtype=torch.long, device=device)
        self.value = torch.zeros(d_sae, n_slots, device=device)
        self.token_ids = torch.full((d_sae, n_slots, window), -1, dtype=torch.int32, device=device)
        self.acts = torch.zeros(d_sae, n_slots, window, device=device)
        self.max_pos = torch.zeros(d_sae, n_slots, dtype=torch.int32, device=device)

    def occupied(self) -> Tensor:
        """[d_sae, n_slots] True where a slot holds a context."""
        return torch.isfinite(self.key)

    def _group_thresholds(self) -> Tensor:
        """[d_sae, n_groups] key a candidate must beat to enter a group: the largest kept key of
        a full group, +inf while the group has room."""
        occupied = self.occupied()
        group = torch.where(occupied, self.group, self.n_groups)  # empty slots count in a spare column
        size = torch.zeros(self.d_sae, self.n_groups + 1, dtype=torch.long, device=self.key.device)
        size.scatter_add_(1, group, torch.ones_like(group))
        largest = torch.full((self.d_sae, self.n_groups + 1), -math.inf, device=self.key.device)
        largest.scatter_reduce_(1, group, torch.where(occupied, self.key, -math.inf), reduce="amax")
        full = size[:, :-1] >= self.capacity
        return torch.where(full, largest[:, :-1], math.inf)

    @torch.no_grad()
    def merge(self, feature: Tensor, group: Tensor, key: Tensor, value: Tensor,
              cut_windows: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
              *, regroup: Optional[Tensor] = None,
              group_of: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> None:
        """Merge candidates (1-D tensors of equal length) into the slots.

        Afterwards every (feature, group) holds the `capacity` entries with the smallest keys among
        its previous entries and the candidates. `cut_windows(candidate_indices)` returns the
        windows (token_ids [m, window], acts [m, window], max_pos [m]) of the candidates that
        entered. Features marked in `regroup` [d_sae] (bool) first have their kept entries moved to
        the group `group_of(feature, value)` now gives them.
        """
        device = self.key.device
        regroup = regroup if regroup is not None and bool(regroup.any()) else None
        # A candidate can only enter a group whose threshold it beats; this cheap filter drops
        # almost all candidates once the slots are full. It is checked before regrouping, so
        # regrouped features (whose groups may now be over capacity) take all their candidates.
        passes = key < self._group_thresholds()[feature, group]
        if regroup is not None:
            passes |= regroup[feature]
            kept_feature, kept_slot = (self.occupied() & regroup[:, None]).nonzero(as_tuple=True)
            self.group[kept_feature, kept_slot] = group_of(kept_feature, self.value[kept_feature, kept_slot])
        candidates = passes.nonzero().squeeze(1)
        if len(candidates) == 0 and regroup is None:
            return
        feature, group, key, value = feature[candidates], group[candidates], key[candidates], value[candidates]

        # Competing kept entries: those in a group that receives a candidate or was regrouped.
        touched = torch.zeros(self.d_sae, self.n_groups, dtype=torch.bool, device=device)
        touched[feature, group] = True
        if regroup is not None:
            touched |= regroup[:, None]
        occupied = self.occupied()
        kept_feature, kept_slot = (occupied & touched.gather(1, self.group)).nonzero(as_tuple=True)

        # The pool: kept entries, then candidates; sorted by (feature, group, key) in one sort.
        n_kept = len(kept_feature)
        pool_feature = torch.cat([kept_feature, feature])
        pool_group = torch.cat([self.group[kept_feature, kept_slot], group])
        pool_key = torch.cat([self.key[kept_feature, kept_slot], key])
        group_id = pool_feature * self.n_groups + pool_group
        order = torch.sort((group_id << 32) | _sortable_bits(pool_key)).indices
        sorted_group_id = group_id[order]
        group_size = torch.bincount(sorted_group_id, minlength=self.d_sae * self.n_groups)
        rank = torch.arange(len(order), device=device) - (group_size.cumsum(0) - group_size)[sorted_group_id]
        survives = torch.empty_like(rank, dtype=torch.bool)
        survives[order] = rank < self.capacity

        # Evicted kept entries free their slots; entering candidates take free slots of their feature.
        evicted = ~survives[:n_kept]
        self.key[kept_feature[evicted], kept_slot[evicted]] = math.inf
        entering = survives[n_kept:].nonzero().squeeze(1)
        if len(entering) == 0:
            return
        entering = entering[torch.sort(feature[entering], stable=True).indices]  # grouped by feature
        new_feature = feature[entering]
        per_feature = torch.bincount(new_feature, minlength=self.d_sae)
        nth_new = torch.arange(len(new_feature), device=device) - (per_feature.cumsum(0) - per_feature)[new_feature]
        free_slots_first = torch.argsort(self.occupied().to(torch.int8), dim=1, stable=True)  # [d_sae, n_slots]
        new_slot = free_slots_first[new_feature, nth_new]
        token_ids, acts, max_pos = cut_windows(candidates[entering])
        self.key[new_feature, new_slot] = key[entering]
        self.group[new_feature, new_slot] = group[entering]
        self.value[new_feature, new_slot] = value[entering]
        self.token_ids[new_feature, new_slot] = token_ids.to(torch.int32)
        self.acts[new_feature, new_slot] = acts.to(self.acts.dtype)
        self.max_pos[new_feature, new_slot] = max_pos.to(torch.int32)

    def samples(self) -> dict[tuple[int, int], list[SampleArrays]]:
        """Every kept context by (feature, group), highest activation first (for the store)."""
        key, group, value = self.key.cpu().numpy(), self.group.cpu().numpy(), self.value.cpu().numpy()
        token_ids, acts, max_pos = self.token_ids.cpu().numpy(), self.acts.cpu().numpy(), self.max_pos.cpu().numpy()
        lengths = (token_ids >= 0).sum(-1)
        feature, slot = np.nonzero(np.isfinite(key))
        order = np.lexsort((-value[feature, slot], group[feature, slot], feature))
        out: dict[tuple[int, int], list[SampleArrays]] = {}
        for f, s in zip(feature[order].tolist(), slot[order].tolist()):
            n = lengths[f, s]
            out.setdefault((f, int(group[f, s])), []).append(
                SampleArrays(token_ids[f, s, :n], acts[f, s, :n], int(max_pos[f, s])))
        return out


def _sortable_bits(key: Tensor) -> Tensor:
    """Non-negative int64 codes of float32 keys with the same order (for one-pass composite sorts):
    the float's bits, with the bits of negative numbers flipped so they sort in reverse."""
    bits = key.float().contiguous().view(torch.int32).long()
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) + 2 ** 31


# ----------------------------------------------------------------------------------------------
# Running per-feature records


class FeatureRecords:
    """Running records of every feature over the tokens analyzed so far (see the module docstring).

    Feed it with `update(tokens, feature_acts, mask)` batch by batch; read the finished statistics with
    `statistics()`, `histogram()` and the two `ContextSlots`: `top` (one group of `top_k` slots
    per feature, key = -activation) and `intervals` (`n_intervals` groups of
    `samples_per_interval` slots, key = uniform random number).
    """

    def __init__(self, d_sae: int, cfg: AnalysisConfig, device: torch.device | str):
        device = torch.device(device)
        self.d_sae = d_sae
        self.context_left, self.context_right = cfg.context_left, cfg.context_right
        self.n_intervals = cfg.n_intervals
        self.histogram_bins = cfg.histogram_bins
        self.n_tokens = 0
        # MPS has no float64; elsewhere sums of many activations keep their precision.
        sum_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.act_count = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.act_sum = torch.zeros(d_sae, dtype=sum_dtype, device=device)
        self.max_act = torch.zeros(d_sae, device=device)
        self.fine_bins = cfg.histogram_bins * HISTOGRAM_OVERSAMPLING
        self.fine_hist = torch.zeros(d_sae, self.fine_bins, dtype=torch.int32, device=device)
        window = cfg.context_left + cfg.context_right + 1
        self.top = ContextSlots(d_sae, n_groups=1, capacity=cfg.top_k, window=window, device=device)
        self.intervals = ContextSlots(d_sae, n_groups=cfg.n_intervals, capacity=cfg.samples_per_interval,
                                      window=window, device=device)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)

    def interval_of(self, feature: Tensor, value: Tensor) -> Tensor:
        """Interval index of activations under the current maxima: interval i is
        (i * max / n, (i + 1) * max / n]."""
        scaled = value * self.n_intervals / self.max_act[feature]
        return (torch.ceil(scaled).long() - 1).clamp(0, self.n_intervals - 1)

    def _fine_bin(self, value: Tensor) -> Tensor:
        low, high = (math.log10(x) for x in HISTOGRAM_RANGE)
        position = (value.log10() - low) / (high - low) * self.fine_bins
        return position.floor().long().clamp(0, self.fine_bins - 1)

    @torch.no_grad()
    def update(self, tokens: Tensor, feature_acts: Tensor, mask: Tensor) -> None:
        """Add one batch: tokens [batch, seq], feature_acts [batch, seq, d_sae], mask [batch, seq]
        (True on the positions analyzed; activations elsewhere are ignored and shown as 0)."""
        seq_len = tokens.shape[1]
        self.n_tokens += int(mask.sum())
        flat_acts = feature_acts.reshape(-1, self.d_sae)  # [batch * seq, d_sae]
        position, feature = flat_acts.nonzero(as_tuple=True)  # one entry per non-zero activation
        value = flat_acts[position, feature].float()
        analyzed = (value > 0) & mask.flatten()[position]
        position, feature, value = position[analyzed], feature[analyzed], value[analyzed]

        self.act_count += torch.bincount(feature, minlength=self.d_sae)
        self.act_sum.index_add_(0, feature, value.to(self.act_sum.dtype))
        bins = feature * self.fine_bins + self._fine_bin(value)
        self.fine_hist.view(-1).index_add_(0, bins, torch.ones_like(bins, dtype=torch.int32))
        new_max = self.max_act.scatter_reduce(0, feature, value, reduce="amax")
        max_grew = new_max > self.max_act
        self.max_act = new_max

        def cut_windows(entries: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            row, pos = position[entries] // seq_len, position[entries] % seq_len
            start = (pos - self.context_left).clamp_min(0)
            end = (pos + self.context_right + 1).clamp_max(seq_len)
            window_pos = start[:, None] + torch.arange(self.top.window, device=start.device)  # [m, window]
            inside = window_pos < end[:, None]
            window_pos = window_pos.clamp_max(seq_len - 1)
            ids = tokens[row[:, None], window_pos].masked_fill(~inside, -1)
            acts = feature_acts[row[:, None], window_pos, feature[entries][:, None]]
            acts = (acts * mask[row[:, None], window_pos]).masked_fill(~inside, 0.0)
            return ids, acts, pos - start

        self.top.merge(feature, torch.zeros_like(feature), -value, value, cut_windows)
        random_key = torch.rand(len(value), generator=self.generator, device=value.device)
        self.intervals.merge(feature, self.interval_of(feature, value), random_key, value, cut_windows,
                             regroup=max_grew, group_of=self.interval_of)

    def statistics(self) -> dict[str, np.ndarray]:
        """act_count, density, max_act, mean_act as numpy arrays [d_sae]."""
        count = self.act_count.cpu().numpy()
        mean = (self.act_sum.double().cpu() / self.act_count.clamp_min(1).double().cpu()).numpy()
        return {"act_count": count, "density": count / max(self.n_tokens, 1),
                "max_act": self.max_act.double().cpu().numpy(), "mean_act": mean}

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(edges [n+1], counts [d_sae, n]) with n = histogram_bins: the running histogram merged
        onto the stretch of the log grid the activations used (bins stay log-spaced)."""
        fine = self.fine_hist.cpu().numpy().astype(np.int64)
        low, high = (math.log10(x) for x in HISTOGRAM_RANGE)
        fine_edges = np.logspace(low, high, self.fine_bins + 1)
        used = np.flatnonzero(fine.sum(0))
        first, last = (used[0], used[-1]) if len(used) else (0, self.fine_bins - 1)
        n_used = last - first + 1
        merge = math.ceil(n_used / self.histogram_bins)  # fine bins per stored bin
        span = merge * self.histogram_bins
        start = min(max(first - (span - n_used) // 2, 0), self.fine_bins - span)
        counts = fine[:, start:start + span].reshape(self.d_sae, self.histogram_bins, merge).sum(-1)
        assert counts.sum() == fine.sum(), "the span covers every used bin, so no activation is lost"
        return fine_edges[start:start + span + 1:merge], counts


# ----------------------------------------------------------------------------------------------
# Streaming


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the per-feature bookkeeping on one CPU thread. It is a few hundred small tensor ops per
    batch: thread-parallel regions save little on them, and on a busy machine every region stalls
    until its slowest thread is scheduled: on 2 busy shared cores, two threads made the bookkeeping
    about 10x slower than one (and 70% of the forward's time instead of ~1%). GPUs are unaffected."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _first_tokens(mask: Tensor, n: int) -> Tensor:
    """`mask` [batch, seq] restricted to its first `n` True positions (row-major order)."""
    flat = mask.flatten()
    return (flat & (flat.cumsum(0) <= n)).view_as(mask)


@torch.no_grad()
def accumulate_features(model: LanguageModel, sae: SparseAutoencoder, token_batches: Iterable[Tensor],
                        cfg: AnalysisConfig, *, progress: bool = True) -> FeatureRecords:
    """Run `token_batches` ([batch, seq], BOS first) through the model and `sae` until
    `cfg.total_analyzing_tokens` text tokens are analyzed (or the batches run out)."""
    from tqdm.auto import tqdm

    device = model.device
    source = ActivationSource(model, sae.hook_name, iter(()))
    records = FeatureRecords(sae.d_sae, cfg, device)
    total = cfg.total_analyzing_tokens
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc=f"analyze {cfg.analysis_name}",
               disable=not progress, dynamic_ncols=True)
    try:
        for tokens in token_batches:
            tokens = tokens.to(device)
            mask = _first_tokens(model.token_mask(tokens), total - records.n_tokens)
            feature_acts = sae.encode(source.activations_of(tokens).to(sae.device))  # [batch, seq, d_sae]
            n_before = records.n_tokens
            with _one_cpu_thread(feature_acts.device):
                records.update(tokens.to(feature_acts.device), feature_acts, mask.to(feature_acts.device))
            n_new = records.n_tokens - n_before
            bar.update(n_new)
            if records.n_tokens >= total:
                break
    finally:
        bar.close()
    if records.n_tokens < total:
        log.warning("The token batches ran out after %d of %d tokens.", records.n_tokens, total)
    return records


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
                        lens: Optional[LogitLens], overwrite: bool, progress: bool = True) -> None:
    """Write `records` as a complete feature store at `path` (atomically, see FeatureStoreWriter)."""
    from tqdm.auto import tqdm

    stats = records.statistics()
    edges, hist_counts = records.histogram()
    top, intervals = records.top.samples(), records.intervals.samples()
    max_act = stats["max_act"]
    n = records.n_intervals
    with FeatureStoreWriter(path, overwrite=overwrite) as writer:
        for key, value in meta.items():
            writer.set_meta(key, value)
        writer.set_meta("n_tokens", records.n_tokens)
        writer.set_meta("histogram_edges", edges)
        writer.set_meta("n_dead", int((stats["act_count"] == 0).sum()))
        writer.write_vocab(vocab)
        logit_columns = {} if lens is None else dict(
            logit_pos_ids=lens.pos_ids, logit_pos_values=lens.pos_values,
            logit_neg_ids=lens.neg_ids, logit_neg_values=lens.neg_values)
        writer.write_features(hist_counts=hist_counts, **stats, **logit_columns)
        alive = np.flatnonzero(stats["act_count"]).tolist()
        for feature in tqdm(alive, desc="write store", unit="feature", disable=not progress, dynamic_ncols=True):
            writer.write_samples(feature, "top", top.get((feature, 0), []))
            for i in range(n):  # every interval gets its bounds, even when no sample fell into it
                writer.write_samples(feature, f"interval_{i}", intervals.get((feature, i), []),
                                     lower=max_act[feature] * i / n, upper=max_act[feature] * (i + 1) / n)


def analyze(cfg: AnalysisConfig, *, model: Optional[LanguageModel] = None,
            sae: Optional[SparseAutoencoder] = None) -> Path:
    """Analyze the dictionary at `cfg.dictionary_path`; returns the analysis folder
    `<dictionary_path>/../analysis/<analysis_name>/` (config.json + features.sqlite).

    `model` / `sae` skip loading them (the output folder still follows `cfg.dictionary_path`).
    An existing analysis of the same name is refused unless `cfg.overwrite`; it is replaced only
    once the new store is complete, so an interrupted run never damages it.
    """
    cfg.validate()
    if sae is None:
        sae = load_dictionary(cfg.dictionary_path)
    folder = analysis_dir(cfg)
    _check_can_write(folder, cfg.overwrite)
    if model is None:
        if cfg.model.name != sae.model_name:  # fail before the (slow) model load
            raise ConfigError(f"The dictionary was trained on model {sae.model_name!r} but the configured model is "
                              f"{cfg.model.name!r}; set model.name to {sae.model_name!r}.")
        model = load_language_model(cfg.model, resolve_device(cfg.device))
    check_model_matches(model, model_name=sae.model_name, hook_name=sae.hook_name, d_in=sae.d_in)
    sae = sae.to(model.device).eval()

    token_batches = TokenBatches(cfg.dataset, model.tokenizer, bos_token_id=model.bos_token_id,
                                 separator_token_id=model.separator_token_id, batch_size=cfg.model_batch_size,
                                 cache_dir=cfg.model.cache_dir)
    records = accumulate_features(model, sae, token_batches, cfg)

    if is_residual_hook(sae.hook_name):
        lens, note = logit_lens(model, sae, cfg.logit_lens_k), None
    else:
        lens, note = None, (f"No logit lens: {sae.hook_name} is not in the residual-stream basis, so its decoder "
                            "directions cannot be read through the unembedding.")
    meta = {"analysis_config": cfg.to_dict(), "dictionary_config": sae.saved_config,
            "metrics": sae.saved_config.get("metrics") or {}, "model_name": sae.model_name,
            "hook_name": sae.hook_name, "logit_lens_note": note, "analysis_name": cfg.analysis_name}
    folder.mkdir(parents=True, exist_ok=True)
    write_feature_store(folder / STORE_FILENAME, records, vocab=model.token_strings(), meta=meta, lens=lens,
                        overwrite=cfg.overwrite)
    cfg.save_json(folder / CONFIG_FILENAME)
    log.info("Wrote the analysis of %d tokens to %s.", records.n_tokens, folder)
    return folder


# ----------------------------------------------------------------------------------------------
# One text


class TextActivations(NamedTuple):
    """The dictionary's features on a user's text (BOS dropped)."""

    token_ids: list[int]
    """Token ids of the text."""
    tokens: list[str]
    """Their display strings (decoded one token at a time, like the feature store's vocabulary)."""
    acts: Tensor
    """[n_tokens, d_sae] float32 feature activations on CPU; 0 on BOS / EOS / pad tokens."""


@torch.no_grad()
def encode_text(model: LanguageModel, sae: SparseAutoencoder, text: str, *,
                max_tokens: Optional[int] = None) -> TextActivations:
    """Feature activations on `text`, computed as the analyzer computes them: BOS prepended (as
    in training sequences), the model run up to the hook, `sae.encode`, special tokens zeroed.
    `max_tokens` caps the number of text tokens (the rest of the text is dropped)."""
    tokens = model.tokenize(text, prepend_bos=True, max_tokens=None if max_tokens is None else max_tokens + 1)
    n_ctx = getattr(model.bridge.cfg, "n_ctx", None)
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise ValueError(f"The text has {tokens.shape[1] - 1} tokens but {model.name!r} reads at most {n_ctx - 1} "
                         "after BOS; shorten it or pass max_tokens.")
    source = ActivationSource(model, sae.hook_name, iter(()))
    feature_acts = sae.encode(source.activations_of(tokens).to(sae.device))[0]  # [1 + n, d_sae]
    feature_acts = feature_acts.masked_fill(~model.token_mask(tokens)[0].to(feature_acts.device)[:, None], 0.0)
    token_ids = tokens[0, 1:].tolist()
    strings = model.tokenizer.batch_decode([[i] for i in token_ids], clean_up_tokenization_spaces=False)
    return TextActivations(token_ids, strings, feature_acts[1:].float().cpu())


__all__ = ["analyze", "analysis_dir", "encode_text", "TextActivations", "FeatureRecords", "ContextSlots",
           "accumulate_features", "logit_lens", "LogitLens", "write_feature_store"]
