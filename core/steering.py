"""Steering: continue a prompt with a feature's decoder direction added to the model's activations.

`steer` runs the prompt twice side by side (one batch of two rows): row 0 with `strength` times
the feature's decoder row added at the dictionary's hook (a transcoder's out-hook, where its
decoder writes) at every position, BOS and generated tokens included, and row 1 unchanged. The
decoder row is in raw activation space (normalization is folded in when a dictionary is saved), so
`strength` is in the feature's own activation units: strength 10 adds what the feature firing at
10 adds to the reconstruction.

Decoding is greedy (`temperature` 0) or sampled at `temperature` from a `torch.Generator` seeded
with `seed`, so a seed gives the same continuations every time. Both rows use the same random
numbers at each step (Gumbel-max sampling with shared noise), so where steering changes nothing
the two continuations are identical and every difference is the feature's doing. A continuation
stops at the model's document-boundary / end-of-sequence token or after `max_new_tokens`.

Decoding keeps a key/value cache: the prompt is run once, then one position per new token, with
the direction added to each position as it is computed. That is the computation of a full forward
of the whole sequence per token, summed in another order (logits agree to float rounding; the
tests find the same tokens, greedy and sampled), without its cost growing with prompt length x new
tokens. What remains per token is one pass over the weights, as in Hugging Face's `generate`. The cache is Hugging Face's own (`DynamicCache`), handed to
`TransformerBridge.forward`, which runs the HF model whose layers are the bridge's components, so
the steering hook fires on every new position like any TransformerLens hook. One mismatch is
bridged here: TransformerLens 4.3's attention components read the cache from the keyword
`past_key_values` (or `layer_past`), while transformers 5 passes it to each attention layer as
`cache`; left alone they never fill it and each new position attends only to itself (why
`TransformerBridge.generate` with its KV cache continues wrongly with this transformers).
`_cache_keyword_alias` adds, for the duration of one call, a forward pre-hook to each attention
component that also hands the cache over under the name it reads. After every forward the cache's
length is checked against the sequence; with a model whose attention still does not fill it
(another architecture or version) decoding falls back to a full forward of the whole sequence per
token: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from typing import Iterator, NamedTuple, Optional

import torch

from .lm import LanguageModel
from .sae import SparseAutoencoder

log = logging.getLogger(__name__)


class Continuation(NamedTuple):
    token_ids: list[int]
    """The generated tokens (the stop token included when one ended it)."""
    tokens: list[str]
    """Their display strings, decoded one token at a time."""
    text: str
    """The generated text, decoded as a whole."""
    stopped: bool
    """It ended with a stop token (else it reached max_new_tokens)."""


class SteeringResult(NamedTuple):
    prompt_token_ids: list[int]
    """The prompt as the model read it, BOS first (its last max_prompt_tokens tokens when it was cut)."""
    prompt_tokens: list[str]
    prompt_cut: bool
    """The prompt had more than max_prompt_tokens tokens and its beginning was dropped."""
    steered: Continuation
    unsteered: Continuation
    hook_name: str
    """Where the direction was added."""
    direction_norm: float
    """L2 norm of the added vector (strength x the decoder row's norm)."""


def steering_hook(sae: SparseAutoencoder) -> str:
    """The hook a dictionary's decoder writes to: a transcoder's out-hook, else its hook."""
    return getattr(sae, "hook_out", None) or sae.hook_name


def stop_token_ids(model: LanguageModel) -> set[int]:
    tok = model.tokenizer
    return {i for i in (model.separator_token_id, model.document_boundary_token_id, tok.eos_token_id) if i is not None}


@torch.no_grad()
def steer(model: LanguageModel, sae: SparseAutoencoder, feature: int, prompt: str, *, strength: float,
          max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0,
          max_prompt_tokens: Optional[int] = None) -> SteeringResult:
    """Continuations of `prompt` with and without feature `feature` steered at `strength` (see the
    module docstring). IndexError for a feature the dictionary does not have, ValueError for an
    empty prompt or a non-finite strength / temperature."""
    if not 0 <= feature < sae.d_sae:
        raise IndexError(f"feature {feature} does not exist; this dictionary has features 0..{sae.d_sae - 1}.")
    if not prompt:
        raise ValueError("The prompt is empty; type the text the model should continue.")
    if not (math.isfinite(strength) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"strength ({strength}) must be finite and temperature ({temperature}) finite and >= 0.")
    hook = steering_hook(sae)
    shape = model.hook_shape(hook)
    direction = (sae.W_dec[feature].detach().float().to(model.device) * strength).reshape(shape)

    tokens = model.tokenize(prompt, prepend_bos=True)
    cut = max_prompt_tokens is not None and tokens.shape[1] - 1 > max_prompt_tokens
    if cut:
        tokens = torch.cat([tokens[:, :1], tokens[:, tokens.shape[1] - max_prompt_tokens:]], dim=1)
    n_ctx = getattr(model.bridge.cfg, "n_ctx", None)
    if n_ctx:
        max_new_tokens = max(0, min(max_new_tokens, int(n_ctx) - tokens.shape[1]))

    def add_direction(activations: torch.Tensor, hook) -> torch.Tensor:
        activations[0] += direction.to(activations.dtype)  # row 0 only: row 1 is the unsteered run
        return activations

    generator = torch.Generator().manual_seed(seed)
    stops = stop_token_ids(model)
    sequences = tokens.repeat(2, 1)  # [2, seq]: row 0 steered, row 1 not
    generated: list[list[int]] = [[], []]
    stopped = [False, False]
    with model.bridge.hooks(fwd_hooks=[(hook, add_direction)]), _cache_keyword_alias(model.bridge):
        next_logits = CachedDecoder(model)
        for _ in range(max_new_tokens):
            logits = next_logits(sequences)  # [2, vocab]
            if temperature > 0:
                # Gumbel-max with one noise vector for both rows: the same draw wherever their logits agree.
                uniform = torch.rand(logits.shape[-1], generator=generator).clamp_(1e-12, 1 - 1e-7)
                logits = logits / temperature - torch.log(-torch.log(uniform)).to(logits.device)
            next_tokens = logits.argmax(-1)
            sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
            for row, token in enumerate(next_tokens.tolist()):
                if not stopped[row]:
                    generated[row].append(token)
                    stopped[row] = token in stops
            if all(stopped):
                break

    def continuation(row: int) -> Continuation:
        ids = generated[row]
        return Continuation(ids, _token_strings(model, ids),
                            model.tokenizer.decode(ids, clean_up_tokenization_spaces=False), stopped[row])

    prompt_ids = tokens[0].tolist()
    return SteeringResult(prompt_ids, _token_strings(model, prompt_ids), cut, continuation(0), continuation(1), hook,
                          float(direction.norm()))


def _token_strings(model: LanguageModel, ids: list[int]) -> list[str]:
    return model.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)


class CachedDecoder:
    """Float logits [batch, vocab] at the last position of a growing batch of sequences: the first
    call runs the whole batch, each later one only the positions added since, through a key/value
    cache (see the module docstring). Hooks active on the bridge fire on the positions computed."""

    def __init__(self, model: LanguageModel):
        from transformers import DynamicCache

        self.model = model
        hf_model = model.bridge.original_model
        self.cache: Optional[DynamicCache] = DynamicCache(config=hf_model.config)
        # transformers 5 renamed the forward's `past_key_values` to `cache` (the old name warns, then goes).
        self.cache_keyword = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"
        self.cached_positions = 0

    def __call__(self, sequences: torch.Tensor) -> torch.Tensor:
        bridge = self.model.bridge
        if self.cache is not None:
            logits = bridge(sequences[:, self.cached_positions:], return_type="logits", use_cache=True,
                            logits_to_keep=1, **{self.cache_keyword: self.cache})
            if self.cache.get_seq_length() == sequences.shape[1]:
                self.cached_positions = sequences.shape[1]
                return logits[:, -1].float()
            log.warning("%s: the model's attention did not fill the key/value cache; steering recomputes the whole "
                        "sequence for each new token instead (slower, same result).", self.model.name)
            self.cache = None
        return bridge(sequences, return_type="logits", logits_to_keep=1)[:, -1].float()


@contextlib.contextmanager
def _cache_keyword_alias(bridge) -> Iterator[None]:
    """Within the block, each attention component of `bridge` also receives the cache transformers
    5 passes it as `cache` under the keyword TransformerLens 4.3 reads (`past_key_values`)."""
    from transformer_lens.model_bridge.generalized_components import AttentionBridge

    def alias(module, args, kwargs):
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None:
            kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs

    handles = [m.register_forward_pre_hook(alias, with_kwargs=True) for m in bridge.modules()
               if isinstance(m, AttentionBridge)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["steer", "SteeringResult", "Continuation", "steering_hook"]
