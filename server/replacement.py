"""Replacement models in the viewer (transcoder sets and cross-layer transcoders, `core.sae.replacement`):
their per-layer evaluation, and where each feature sits and writes.

A replacement model is one dictionary of the viewer: its analyses hold every covered layer's features
with a flat index (feature i is feature `i % d_sae` of layer `layers[i // d_sae]`), and its labels use
that index too. A transcoder set's member folders (`layer_<N>/`) are ordinary transcoders that
`load_dictionary` opens alone, but the viewer does not list them as dictionaries of their own: the set
is what was trained, evaluated (every MLP replaced at once) and analyzed, and its page shows each
member's figures per layer.

Decoder norms: a feature of layer l of a CLT writes to layer l and every later covered layer; the norm
of its decoder vector into each says where it writes (a set's feature writes to its own layer only).
They are computed once per dictionary from its weights (`decoder_vectors(layer, features)`, raw
activation units) and cached like the nearest-feature decoders (`server/weights.py`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import torch

from core.sae import load_dictionary

from .results import DictionaryInfo
from .weights import WeightsCache

DEFAULT_CACHE_BYTES = 256 << 20
_CHUNK = 4096
"""Features whose decoder vectors are materialized at once (a CLT's first layer: chunk x L x d_out floats)."""
LAYER_METRIC_KEYS = ("normalized_mse", "explained_variance", "l0", "unfired_features")


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def layer_metrics(info: DictionaryInfo) -> list[dict[str, Any]] | None:
    """A replacement model's final evaluation per covered layer (config.json `metrics.layers`, columns of
    lists) as one record per layer; None for an SAE or transcoder, or a model saved without it."""
    layers = (info.config.get("metrics") or {}).get("layers") if info.layers else None
    if not isinstance(layers, dict) or not isinstance(layers.get("layer"), list):
        return None
    rows = []
    for i, layer in enumerate(layers["layer"]):
        row: dict[str, Any] = {"layer": layer}
        for key in LAYER_METRIC_KEYS:
            column = layers.get(key)
            row[key] = _number(column[i]) if isinstance(column, list) and i < len(column) else None
        rows.append(row)
    return rows


def feature_layer(info: DictionaryInfo, index: int) -> tuple[int, int]:
    """(layer, index within the layer) of a replacement model's feature `index` (the analyses' flat index)."""
    position, layer_index = divmod(index, info.d_sae)
    return info.layers[position], layer_index


def layer_features(info: DictionaryInfo, layer: int) -> range:
    """The flat indices of a replacement model's features of `layer` (ValueError for a layer it does not cover)."""
    if layer not in info.layers:
        raise ValueError(f"Dictionary {info.name!r} covers layers {info.layers}, not layer {layer}.")
    position = info.layers.index(layer)
    return range(position * info.d_sae, (position + 1) * info.d_sae)


class FeaturePlace(NamedTuple):
    layer: int
    """The block whose input the feature reads."""
    layer_index: int
    """Its index among that layer's d_sae features."""
    target_layers: list[int]
    """The layers it writes to (a CLT: its own and every later covered one; a set: its own)."""
    decoder_norms: list[float]
    """The L2 norm of its decoder vector into each target layer (raw activation units)."""


def _decoder_norms(info: DictionaryInfo) -> list[tuple[list[int], torch.Tensor]]:
    """Per covered layer: (its target layers, its features' decoder norms into each [d_sae, targets])."""
    model = load_dictionary(info.folder, device="cpu")
    with torch.no_grad():
        return [(list(model.target_layers(layer)), torch.cat([
            model.decoder_vectors(layer, torch.arange(s, min(s + _CHUNK, model.d_sae))).float().norm(dim=-1)
            for s in range(0, model.d_sae, _CHUNK)])) for layer in model.layers]


class DecoderNorms:
    """Per replacement model and covered layer: the layers its features write to, and their decoder norms
    [d_sae, len(target_layers)], computed once per dictionary (server/weights.py)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._cache = WeightsCache(_decoder_norms, lambda per_layer: sum(n.numel() * n.element_size()
                                                                         for _, n in per_layer), max_bytes)

    def place(self, info: DictionaryInfo, index: int) -> FeaturePlace:
        """Where feature `index` (the analyses' flat index, < info.n_features) of a replacement model sits
        and writes."""
        layer, layer_index = feature_layer(info, index)
        targets, norms = self._cache.get(info)[info.layers.index(layer)]
        return FeaturePlace(layer, layer_index, targets, norms[layer_index].tolist())
