"""Steering (core/steering.py) on the tiny GPT-2 and its dictionary, against independent references:
Hugging Face's own greedy generation for the unsteered row, and a plain decoding loop with the
direction added through `run_with_hooks` for the steered one."""

from __future__ import annotations

import pytest
import torch

from core.sae import load_dictionary
from core.steering import steer, steering_hook


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
