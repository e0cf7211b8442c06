"""`attribute`: the attribution graph of a prompt through a replacement model.

The algorithm is circuit-tracer 0.5's `attribute` (`attribution/attribute.py`), with the same
choices, so that the same settings give the same graph:

1. Capture the local replacement model (`local_model.py`) and the active features; error vectors.
2. **Logit targets**: the most probable next tokens at the last position until their probabilities
   add up to `desired_logit_prob` (0.95), at most `max_n_logits` (10); or the tokens named. A logit
   target reads its unembedding column minus the mean column (the logit minus the mean logit).
3. **Rows of the logits**, then of the features: each batch of `batch_size` targets is one
   transposed pass. With `max_feature_nodes` below the number of active features, the features are
   visited in order of their influence on the logits through the rows computed so far
   (`RowInfluence`), re-ranked every `update_interval` batches; the ranking sees exactly the rows
   circuit-tracer's would. Within one re-ranking's queue the targets are sorted by layer and
   position, which changes no row but lets each pass start at its batch's highest layer and stop at
   its last position.
4. **The graph**: the rows of the visited features and the logits, restricted to the columns of the
   visited features, error nodes and tokens (`AttributionGraph`).

Memory: the rows held while attributing are (max_feature_nodes + logits) x (active features +
error nodes + tokens) floats, the graph (max_feature_nodes + error nodes + tokens + logits)^2: with a
fixed cap on feature nodes, they grow linearly with the number of active features, never with its
square. Both are estimated before any work; past `max_edge_bytes` the prompt is refused with a
sentence saying what to lower. Prompts longer than `max_prompt_tokens` are refused likewise.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, ContextManager, Optional, Sequence

import torch
from torch import Tensor

from ..config import LanguageModelConfig
from ..errors import AttributionError, ConfigError
from ..lm import LanguageModel, check_model_matches, load_language_model
from ..sae import CrossLayerTranscoder, SparseAutoencoder, TranscoderSet, load_dictionary
from .graph import AttributionGraph, LogitTarget
from .local_model import ActiveFeatures, LocalReplacementModel, SourceVectors, error_vectors

MAX_FEATURE_NODES = 8192
MAX_PROMPT_TOKENS = 256
"""Tokens a prompt may have (BOS not counted) unless `max_prompt_tokens` says otherwise."""
MAX_EDGE_BYTES = 4 * 2**30
"""Memory the edges of one graph may take (see the module doc) unless `max_edge_bytes` says otherwise."""
BYTES_PER_EDGE = 4
ASSEMBLY_CHUNK_ROWS = 1024
PRUNING_COPIES = 6
MAX_SERIES_TERMS = 1000
"""The graph's depth bounds the influence series; this only guards against rows that are not a DAG."""
"""Square matrices of the graph's size that pruning and the scores hold at once."""

Progress = Callable[[int, int], None]
"""progress(rows done, rows in all): called after each batch."""


def as_replacement_model(dictionary) -> CrossLayerTranscoder | TranscoderSet:
    """A replacement model from a folder or a loaded dictionary; a transcoder (one MLP) becomes a
    one-layer `TranscoderSet`. AttributionError for a dictionary that is none of these."""
    if isinstance(dictionary, (str, Path)):
        dictionary = load_dictionary(dictionary)
    if isinstance(dictionary, (CrossLayerTranscoder, TranscoderSet)):
        return dictionary
    if isinstance(dictionary, SparseAutoencoder):
        if dictionary.is_transcoder:
            try:
                return TranscoderSet([dictionary])
            except ValueError as e:
                raise AttributionError(f"This transcoder cannot stand in for an MLP ({e}).") from e
        raise AttributionError(f"This dictionary is a sparse autoencoder of {dictionary.hook_name}, not a replacement "
                               "model; attribution graphs need a transcoder set or a cross-layer transcoder that "
                               "replaces MLPs.")
    raise AttributionError(f"{type(dictionary).__name__} is not a replacement model; pass a transcoder set, a "
                           "cross-layer transcoder or the folder of one.")


def prompt_tokens(model: LanguageModel, prompt: str | Sequence[int], max_prompt_tokens: int) -> Tensor:
    """The prompt's token ids [P], BOS first (ids given are used as they are: position 0 is taken
    for the BOS). AttributionError when it is empty or too long."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise AttributionError("The prompt is empty; type the text whose next token the graph should explain.")
        tokens = model.tokenize(prompt, prepend_bos=True)[0]
    else:
        tokens = torch.as_tensor(list(prompt), dtype=torch.long, device=model.device)
        if tokens.ndim != 1 or len(tokens) < 2:
            raise AttributionError("The prompt needs at least two token ids (the BOS and one token).")
        if bool((tokens < 0).any()) or bool((tokens >= model.d_vocab).any()):
            raise AttributionError(f"The prompt's token ids must lie in 0..{model.d_vocab - 1}.")
    if len(tokens) - 1 > max_prompt_tokens:
        raise AttributionError(f"The prompt has {len(tokens) - 1} tokens; attribution graphs take at most "
                               f"{max_prompt_tokens} (max_prompt_tokens). Shorten the prompt.")
    if len(tokens) < 2:
        raise AttributionError("The prompt has no tokens; type the text whose next token the graph should explain.")
    return tokens


def logit_targets(model: LanguageModel, logits: Tensor, W_U: Tensor, *, tokens: Optional[Sequence[str | int]],
                  max_n_logits: int, desired_logit_prob: float) -> tuple[list[LogitTarget], Tensor]:
    """The logit targets at the last position and their vectors [n, d] (unembedding columns minus
    their mean). `tokens`: ids or single-token strings; None: the most probable (module doc)."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    if tokens is None:
        top_p, top_ids = torch.topk(probabilities, min(max_n_logits, len(probabilities)))
        cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), torch.tensor(desired_logit_prob))) + 1
        ids = top_ids[:cutoff].tolist()
    else:
        if not tokens:
            raise AttributionError("No output tokens were named; name at least one, or none for the most probable.")
        ids = []
        for token in tokens:
            if isinstance(token, str):
                encoded = model.tokenizer.encode(token, add_special_tokens=False)
                if len(encoded) != 1:
                    raise AttributionError(f"The output token {token!r} is {len(encoded)} tokens of this model; name "
                                           "single tokens (e.g. ' Paris' with its leading space).")
                token = encoded[0]
            if not 0 <= int(token) < len(probabilities):
                raise AttributionError(f"The output token id {token} is not in the vocabulary (0..{len(probabilities) - 1}).")
            ids.append(int(token))
    strings = model.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    targets = [LogitTarget(i, s, float(probabilities[i])) for i, s in zip(ids, strings)]
    vectors = W_U[:, ids].T - W_U.mean(dim=1)[None]
    return targets, vectors


def edge_memory(n_active: int, max_feature_nodes: Optional[int], n_layers: int, n_pos: int, n_logits: int) -> int:
    """Bytes the edges of one graph take at their peak (module doc): the rows and, with a cap below the
    active features, the ranking's block while attributing; the rows and the graph while assembling it;
    pruning's copies of the graph."""
    cap = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    n_cols = n_active + (n_layers + 1) * n_pos
    n_nodes = cap + (n_layers + 1) * n_pos + n_logits
    rows = (cap + n_logits) * (n_cols + 1)
    ranking = (cap + n_logits) * cap if cap < n_active else 0
    return BYTES_PER_EDGE * max(rows + ranking, rows + n_nodes ** 2, PRUNING_COPIES * n_nodes ** 2)


def attribute(prompt: str | Sequence[int], replacement, model: Optional[LanguageModel] = None, *,
              logit_tokens: Optional[Sequence[str | int]] = None, max_n_logits: int = 10,
              desired_logit_prob: float = 0.95, max_feature_nodes: Optional[int] = MAX_FEATURE_NODES,
              batch_size: int = 256, update_interval: int = 4, max_prompt_tokens: int = MAX_PROMPT_TOKENS,
              max_edge_bytes: int = MAX_EDGE_BYTES, progress: Optional[Progress] = None,
              model_lock: ContextManager = contextlib.nullcontext()) -> AttributionGraph:
    """The attribution graph of `prompt` (text, or token ids BOS first) through `replacement` (a
    `TranscoderSet`, a `CrossLayerTranscoder`, a transcoder, or the folder of one) on `model` (loaded
    from the replacement model's `model_name` when None). See the module doc; errors a user can cause
    are `AttributionError` / `ConfigError` with one sentence. `model_lock` is held while the model
    runs (its one forward), e.g. a server's lock on a model that other requests share."""
    started = time.perf_counter()
    dictionary = str(Path(replacement).expanduser().resolve()) if isinstance(replacement, (str, Path)) else None
    replacement = as_replacement_model(replacement)
    if model is None:
        model = load_language_model(LanguageModelConfig(name=replacement.model_name),
                                    device=str(next(replacement.parameters()).device))
    check_settings(max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob,
                   max_feature_nodes=max_feature_nodes, batch_size=batch_size, update_interval=update_interval)
    check_replacement_matches(model, replacement)
    replacement = replacement.to(model.device).eval()
    tokens = prompt_tokens(model, prompt, max_prompt_tokens)

    with model_lock:
        local = LocalReplacementModel.capture(model, replacement, tokens)
    active = ActiveFeatures.encode(local, replacement)
    targets, logit_vectors = logit_targets(model, local.logits[-1], local.W_U, tokens=logit_tokens,
                                           max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob)
    n_active, n_logits, P = len(active), len(targets), local.n_pos
    needed = edge_memory(n_active, max_feature_nodes, local.n_layers, P, n_logits)
    if needed > max_edge_bytes:
        raise AttributionError(f"This graph's edges would take {needed / 2**30:.1f} GiB ({n_active} active features "
                               f"over {P} positions); the limit is {max_edge_bytes / 2**30:.1f} GiB (max_edge_bytes). "
                               "Lower max_feature_nodes or shorten the prompt.")
    sources = SourceVectors(local, replacement, active, error_vectors(local, replacement, active))
    encoders = active.encoder_vectors(replacement)
    setup_seconds = time.perf_counter() - started

    cap = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    n_cols = sources.n_cols
    rows = torch.zeros(n_logits + cap, n_cols + 1)  # on CPU; the last column catches padded entries
    row_nodes = torch.empty(n_logits + cap, dtype=torch.long)  # node of each row: features 0.., logits n_cols..
    n_batches = 0

    def compute(layers: Tensor, positions: Tensor, vectors: Tensor, start: int) -> None:
        nonlocal n_batches
        n = len(layers)
        on_cpu = local.device.type == "cpu"
        out = rows[start:start + n] if on_cpu else torch.zeros(n, n_cols + 1, device=local.device)
        local.edge_rows(layers.to(local.device), positions.to(local.device), vectors, sources, out)
        if not on_cpu:
            rows[start:start + n] = out.cpu()
        n_batches += 1
        if progress is not None:
            progress(start + n, n_logits + cap)

    with torch.no_grad():
        for i in range(0, n_logits, batch_size):
            j = min(i + batch_size, n_logits)
            compute(torch.full((j - i,), local.n_layers), torch.full((j - i,), P - 1), logit_vectors[i:j], i)
            row_nodes[i:j] = torch.arange(i, j) + n_cols

        weights = torch.zeros(n_cols + n_logits)
        weights[n_cols:] = torch.tensor([t.probability for t in targets])
        influence = RowInfluence(rows, row_nodes, n_cols, n_logits, weights) if cap < n_active else None
        layers_cpu, positions_cpu = active.layers.cpu(), active.positions.cpu()
        visited = torch.zeros(n_active, dtype=torch.bool)
        done = n_logits
        while done - n_logits < cap:
            if influence is None:
                pending = torch.arange(n_active)  # everything, in (layer, position, feature) order
            else:
                influence.add(influence.done, done)
                order = torch.argsort(influence.features(n_active), descending=True)
                pending = order[~visited[order]][:min(update_interval * batch_size, cap - (done - n_logits))]
                key = layers_cpu[pending] * P + positions_cpu[pending]
                pending = pending[torch.argsort(key, stable=True)]
            for i in range(0, len(pending), batch_size):
                batch = pending[i:i + batch_size]
                row_nodes[done:done + len(batch)] = batch
                compute(layers_cpu[batch], positions_cpu[batch], encoders[batch.to(encoders.device)], done)
                visited[batch] = True
                done += len(batch)
        del influence
    attribution_seconds = time.perf_counter() - started - setup_seconds

    selected = visited.nonzero().squeeze(1)
    columns = torch.cat([selected, torch.arange(n_active, n_cols)])
    n_nodes = cap + (n_cols - n_active) + n_logits
    adjacency = torch.zeros(n_nodes, n_nodes)
    by_feature = n_logits + torch.argsort(row_nodes[n_logits:])  # rows in the order of `selected`
    for i in range(0, cap, ASSEMBLY_CHUNK_ROWS):  # in chunks: no second copy of the rows at once
        chunk = rows.index_select(0, by_feature[i:i + ASSEMBLY_CHUNK_ROWS])
        adjacency[i:i + len(chunk), :len(columns)] = chunk[:, :n_cols] if cap == n_active else chunk[:, columns]
    adjacency[n_nodes - n_logits:, :len(columns)] = rows[:n_logits][:, columns]
    del rows

    features = torch.stack([active.layers, active.positions, active.features], dim=1).cpu()[selected]
    ids = tokens.tolist()
    return AttributionGraph(
        prompt=prompt if isinstance(prompt, str) else model.tokenizer.decode(ids[1:]),
        tokens=ids, token_strings=model.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False),
        model_name=model.name, n_layers=local.n_layers, replacement_layers=tuple(replacement.layers),
        replacement_kind=replacement.kind, d_sae=replacement.d_sae, features=features,
        activations=active.activations.cpu()[selected], logit_targets=targets, adjacency=adjacency,
        n_active_features=n_active, dictionary=dictionary,
        settings=dict(max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob, batch_size=batch_size,
                      max_feature_nodes=max_feature_nodes, update_interval=update_interval),
        stats=dict(setup_seconds=setup_seconds, attribution_seconds=attribution_seconds,
                   seconds=time.perf_counter() - started, backward_passes=n_batches, feature_nodes=cap,
                   active_features=n_active, edge_bytes=needed))


class RowInfluence:
    """The influence of every node on the logits through the rows computed so far, for ranking the
    features still to visit (circuit-tracer's `compute_partial_influences`: the power series
    w Â + w Â² + ... over the computed rows, Â their absolute values each divided by its row's sum).

    Only nodes with a row pass influence on, so the series runs on the block of Â between the rows
    and the nodes that have rows (kept up to date as rows arrive: each entry is written once), and
    the influence on every node is then one product of its sum with the rows, read in chunks:
    rows x nodes-with-rows memory instead of another copy of all the rows, and one pass over them
    per ranking instead of one per term of the series."""

    CHUNK_ROWS = 1024

    def __init__(self, rows: Tensor, row_nodes: Tensor, n_cols: int, n_logits: int, weights: Tensor):
        self.rows, self.row_nodes, self.n_cols, self.n_logits, self.weights = rows, row_nodes, n_cols, n_logits, weights
        capacity = rows.shape[0]
        self.row_sums = torch.zeros(capacity)
        self.block = torch.zeros(capacity, capacity - n_logits)  # Â[row, node of feature row j]
        self.done = 0

    def add(self, start: int, end: int) -> None:
        """Rows start..end (their nodes in row_nodes) were computed."""
        new = self.rows[start:end, :self.n_cols]
        self.row_sums[start:end] = new.abs().sum(dim=1).clamp(min=1e-8)
        f_end = max(end - self.n_logits, 0)
        features = self.row_nodes[self.n_logits:end]
        self.block[start:end, :f_end] = new[:, features].abs() / self.row_sums[start:end, None]
        f_start = max(start - self.n_logits, 0)
        if start and f_end > f_start:  # earlier rows, on the nodes of the new rows
            self.block[:start, f_start:f_end] = (self.rows[:start, self.row_nodes[self.n_logits + f_start:end]].abs()
                                                 / self.row_sums[:start, None])
        self.done = end

    def features(self, n_features: int) -> Tensor:
        """[n_features] the influence of each feature node through the rows so far."""
        r, f = self.done, self.done - self.n_logits
        through = self.weights[self.row_nodes[:r]].clone()  # influence reaching each row's node
        total = through.clone()
        for _ in range(MAX_SERIES_TERMS):
            reached = through @ self.block[:r, :f]  # on the nodes of the feature rows
            if not bool(reached.any()):
                break
            through = torch.cat([torch.zeros(self.n_logits), reached])
            total += through
        else:
            raise RuntimeError("the influence series did not end: the rows have a cycle.")
        influence = torch.zeros(self.n_cols)
        for i in range(0, r, self.CHUNK_ROWS):
            j = min(i + self.CHUNK_ROWS, r)
            influence += (total[i:j] / self.row_sums[i:j]) @ self.rows[i:j, :self.n_cols].abs()
        return influence[:n_features]


def check_settings(*, max_n_logits: int, desired_logit_prob: float, max_feature_nodes: Optional[int], batch_size: int,
                   update_interval: int) -> None:
    for name, value in (("max_n_logits", max_n_logits), ("batch_size", batch_size), ("update_interval", update_interval),
                        ("max_feature_nodes", 1 if max_feature_nodes is None else max_feature_nodes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} is {value!r}; it must be a whole number >= 1.")
    if not (isinstance(desired_logit_prob, (int, float)) and 0 < desired_logit_prob <= 1):
        raise ConfigError(f"desired_logit_prob is {desired_logit_prob!r}; it must be in (0, 1].")


def check_replacement_matches(model: LanguageModel, replacement) -> None:
    """ConfigError when the replacement model was trained on another model (name, widths, layers)."""
    check_model_matches(model, model_name=replacement.model_name, hook_name=replacement.hook_names[0],
                        d_in=replacement.d_in)
    if replacement.layers[-1] >= model.n_layers:
        raise ConfigError(f"The replacement model covers layers {list(replacement.layers)} but {model.name!r} has "
                          f"{model.n_layers}; it belongs to another model.")
    if replacement.d_out != model.d_model:
        raise ConfigError(f"The replacement model writes {replacement.d_out} values per token but {model.name!r}'s MLPs "
                          f"write {model.d_model}; it belongs to another model.")


__all__ = ["MAX_EDGE_BYTES", "MAX_FEATURE_NODES", "MAX_PROMPT_TOKENS", "as_replacement_model", "attribute",
           "check_replacement_matches", "edge_memory", "logit_targets", "prompt_tokens"]
