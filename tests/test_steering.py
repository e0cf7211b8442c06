"""Steering (core/steering.py) on the tiny GPT-2 and its dictionary, against independent references:
Hugging Face's own greedy generation for the unsteered row, a plain decoding loop with the
direction added through `run_with_hooks` for the steered one, and the steering loop as it was
before the key/value cache (`full_recompute_steer`, one full forward per new token), on the tiny
GPT-2 and the offline SmolLM2 (Llama)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

import core.steering
from core.sae import load_dictionary
from core.steering import CachedDecoder, steer, steering_hook, stop_token_ids


@pytest.fixture(scope="module")
def sae(tiny_dictionary):
    return load_dictionary(tiny_dictionary).eval()


PROMPT = "The quick brown fox jumps over"


def reference_greedy(model, tokens: torch.Tensor, n: int, hook: str | None = None,
                     vector: torch.Tensor | None = None) -> list[int]:
    """Greedy decoding, one full forward per token, with `vector` added at `hook` on every position."""
    hooks = [] if hook is None else [(hook, lambda act, hook: act + vector.to(act.dtype))]
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")
            token = int(logits[0, -1].argmax())
            out.append(token)
            tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    return out


def test_strength_zero_gives_two_equal_continuations_and_hf_agrees(tiny_model, tiny_gpt2_dir, sae):
    from transformers import GPT2LMHeadModel

    result = steer(tiny_model, sae, 3, PROMPT, strength=0.0, max_new_tokens=12)
    assert result.steered == result.unsteered
    assert result.prompt_token_ids[0] == tiny_model.bos_token_id and "".join(result.prompt_tokens[1:]) == PROMPT
    assert len(result.unsteered.token_ids) == 12 and not result.unsteered.stopped
    assert "".join(result.unsteered.tokens) == result.unsteered.text
    hf = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    ids = torch.tensor([result.prompt_token_ids])
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                           pad_token_id=0, eos_token_id=None)[0, ids.shape[1]:].tolist()
    assert result.unsteered.token_ids == expected


def test_steered_row_adds_the_decoder_direction_at_the_hook(tiny_model, sae):
    feature, strength = 5, 40.0
    result = steer(tiny_model, sae, feature, PROMPT, strength=strength, max_new_tokens=10)
    tokens = torch.tensor([result.prompt_token_ids])
    vector = sae.W_dec[feature].detach().float() * strength
    assert result.hook_name == sae.hook_name
    assert result.direction_norm == pytest.approx(float(vector.norm()), rel=1e-5)
    assert result.steered.token_ids == reference_greedy(tiny_model, tokens, 10, sae.hook_name, vector)
    assert result.unsteered.token_ids == reference_greedy(tiny_model, tokens, 10)
    assert result.steered.token_ids != result.unsteered.token_ids  # a strong direction changes what comes next


def test_sampling_is_seeded(tiny_model, sae):
    a = steer(tiny_model, sae, 5, PROMPT, strength=20.0, max_new_tokens=12, temperature=1.0, seed=1)
    b = steer(tiny_model, sae, 5, PROMPT, strength=20.0, max_new_tokens=12, temperature=1.0, seed=1)
    c = steer(tiny_model, sae, 5, PROMPT, strength=20.0, max_new_tokens=12, temperature=1.0, seed=2)
    assert a == b and a.unsteered != c.unsteered
    same = steer(tiny_model, sae, 5, PROMPT, strength=0.0, max_new_tokens=12, temperature=1.5, seed=4)
    assert same.steered == same.unsteered  # shared noise: without steering the draws coincide


def test_a_transcoder_is_steered_at_its_out_hook(tiny_model, sae, monkeypatch):
    monkeypatch.setattr(sae, "hook_out", "blocks.1.hook_resid_post", raising=False)
    assert steering_hook(sae) == "blocks.1.hook_resid_post"
    result = steer(tiny_model, sae, 2, PROMPT, strength=40.0, max_new_tokens=6)
    vector = sae.W_dec[2].detach().float() * 40.0
    expected = reference_greedy(tiny_model, torch.tensor([result.prompt_token_ids]), 6, "blocks.1.hook_resid_post", vector)
    assert result.hook_name == "blocks.1.hook_resid_post" and result.steered.token_ids == expected


def test_long_prompts_keep_their_end_and_bad_input_is_refused(tiny_model, sae):
    long = " ".join(f"word{i}" for i in range(40))
    result = steer(tiny_model, sae, 1, long, strength=1.0, max_new_tokens=2, max_prompt_tokens=8)
    assert result.prompt_cut and len(result.prompt_token_ids) == 9
    assert "".join(result.prompt_tokens[1:]) == "".join(tiny_model.tokenizer.batch_decode(
        [[i] for i in tiny_model.tokenize(long, prepend_bos=False)[0, -8:].tolist()]))
    with pytest.raises(IndexError, match="0..127"):
        steer(tiny_model, sae, 128, PROMPT, strength=1.0)
    with pytest.raises(ValueError, match="empty"):
        steer(tiny_model, sae, 1, "", strength=1.0)
    with pytest.raises(ValueError, match="finite"):
        steer(tiny_model, sae, 1, PROMPT, strength=float("nan"))


@torch.no_grad()
def full_recompute_steer(model, sae, feature: int, prompt_ids: list[int], *, strength: float, max_new_tokens: int,
                         temperature: float = 0.0, seed: int = 0) -> tuple[list[list[int]], list[bool]]:
    """The steering loop before the key/value cache, kept as the reference (and timed by
    benchmarks/steering_latency.py): both rows through a full forward of the whole sequence per new
    token. Returns the generated ids and stopped flags of [steered, unsteered]."""
    hook = steering_hook(sae)
    direction = (sae.W_dec[feature].detach().float() * strength).reshape(model.hook_shape(hook))

    def add_direction(activations, hook):
        activations[0] += direction.to(activations.dtype)
        return activations

    generator = torch.Generator().manual_seed(seed)
    stops = stop_token_ids(model)
    sequences = torch.tensor([prompt_ids], device=model.device).repeat(2, 1)
    generated: list[list[int]] = [[], []]
    stopped = [False, False]
    with model.bridge.hooks(fwd_hooks=[(hook, add_direction)]):
        for _ in range(max_new_tokens):
            logits = model.bridge(sequences, return_type="logits")[:, -1].float()
            if temperature > 0:
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
    return generated, stopped


def assert_same_as_full_recompute(model, sae, feature, prompt, **kwargs):
    result = steer(model, sae, feature, prompt, **kwargs)
    expected_ids, expected_stopped = full_recompute_steer(model, sae, feature, result.prompt_token_ids, **kwargs)
    assert [result.steered.token_ids, result.unsteered.token_ids] == expected_ids, (prompt, feature, kwargs)
    assert [result.steered.stopped, result.unsteered.stopped] == expected_stopped
    return result


CASES = [  # prompt, feature, strength, temperature, seed
    ("The quick brown fox jumps over", 5, 40.0, 0.0, 0),
    ("Once upon a time, in a small village by the sea,", 17, 8.0, 0.0, 0),
    ("def main():\n    print(", 99, -25.0, 0.0, 0),
    ("The quick brown fox jumps over", 5, 40.0, 1.0, 3),
    ("Paris is the capital of", 64, 40.0, 0.1, 11),
]


@pytest.mark.parametrize("prompt,feature,strength,temperature,seed", CASES)
def test_cached_decoding_equals_full_recompute_on_gpt2(tiny_model, sae, prompt, feature, strength, temperature, seed,
                                                       caplog):
    with caplog.at_level(logging.WARNING, logger="core.steering"):
        result = assert_same_as_full_recompute(tiny_model, sae, feature, prompt, strength=strength, max_new_tokens=12,
                                               temperature=temperature, seed=seed)
    assert not caplog.records  # the key/value cache was used, not the full-recompute fallback
    assert len(result.steered.token_ids) == 12
    # The random tiny model's logits are flat: at temperature 1 the shared noise decides alone.
    assert result.steered != result.unsteered or temperature >= 1


def test_cached_decoder_extends_its_cache_and_matches_a_full_forward(tiny_model):
    sequences = tiny_model.tokenize("The quick brown fox jumps over the lazy dog").repeat(2, 1)
    decoder = CachedDecoder(tiny_model)
    with torch.no_grad(), core.steering._cache_keyword_alias(tiny_model.bridge):
        for length in (5, 6, 7, sequences.shape[1]):  # the prompt, then one position at a time, then three at once
            logits = decoder(sequences[:, :length])
            assert decoder.cache.get_seq_length() == length
            full = tiny_model.bridge(sequences[:, :length], return_type="logits")[:, -1]
            torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-5)


def test_an_attention_that_does_not_fill_the_cache_falls_back_to_full_forwards(tiny_model, sae, monkeypatch, caplog):
    # Without the keyword alias, TransformerLens 4.3's attention never sees transformers 5's cache.
    monkeypatch.setattr(core.steering, "_cache_keyword_alias", lambda bridge: contextlib.nullcontext())
    with caplog.at_level(logging.WARNING, logger="core.steering"):
        assert_same_as_full_recompute(tiny_model, sae, 5, "The quick brown fox jumps over", strength=40.0,
                                      max_new_tokens=8)
    assert "did not fill the key/value cache" in caplog.text


def test_a_stop_token_ends_one_row_while_the_other_goes_on(tiny_model, tiny_dictionary):
    # A feature whose decoder row is the stop token's unembedding, steered hard: the steered row ends at once.
    sae = load_dictionary(tiny_dictionary).eval()
    stop = tiny_model.separator_token_id
    unembed = tiny_model.bridge.unembed.W_U[:, stop].detach()
    with torch.no_grad():
        sae.W_dec[3] = unembed / unembed.norm()
    result = assert_same_as_full_recompute(tiny_model, sae, 3, "The quick brown fox jumps over", strength=500.0,
                                           max_new_tokens=6)
    assert result.steered.stopped and result.steered.token_ids == [stop]
    assert len(result.unsteered.token_ids) == 6 and not result.unsteered.stopped


@pytest.fixture(scope="module")
def smollm2():
    from core import LanguageModelConfig, load_language_model

    return load_language_model(LanguageModelConfig(name="SmolLM2-135M-Instruct"))


@pytest.fixture(scope="module")
def smollm2_sae():
    from core.config import OFFLINE_MODEL_NAME, SAEConfig
    from core.sae import create_dictionary

    torch.manual_seed(0)
    return create_dictionary(SAEConfig(architecture="topk", d_sae=256, k=8), 576, hook_name="blocks.3.hook_resid_post",
                             model_name=OFFLINE_MODEL_NAME).eval()


@pytest.mark.parametrize("prompt,feature,strength,temperature,seed,hook", [
    ("The library reads the configuration file, and then it", 7, 12.0, 0.0, 0, None),
    ("My favourite fruit is", 200, 40.0, 0.0, 0, "blocks.12.hook_mlp_out"),
    ("The library reads the configuration file, and then it", 7, 12.0, 0.9, 5, None),
])
def test_cached_decoding_equals_full_recompute_on_smollm2(smollm2, smollm2_sae, prompt, feature, strength, temperature,
                                                          seed, hook, monkeypatch):
    if hook:  # a transcoder writing to an MLP's output
        monkeypatch.setattr(smollm2_sae, "hook_out", hook, raising=False)
    result = assert_same_as_full_recompute(smollm2, smollm2_sae, feature, prompt, strength=strength,
                                           max_new_tokens=6, temperature=temperature, seed=seed)
    assert result.steered.token_ids != result.unsteered.token_ids
