"""Activation generation stops at the hook's block, drops BOS; the shuffle buffer is bounded."""

import torch

from core import ActivationBuffer, ActivationSource, DatasetConfig, TokenBatches

HOOK = "blocks.0.hook_resid_post"


def _batches(model, n=None, batch_size=4, context_size=32):
    return TokenBatches(DatasetConfig(context_size=context_size), model.tokenizer, bos_token_id=model.bos_token_id,
                        separator_token_id=model.separator_token_id, batch_size=batch_size)


def test_truncated_forward_matches_full_forward_and_drops_bos(tiny_model):
    tokens = next(_batches(tiny_model))
    source = ActivationSource(tiny_model, HOOK, iter([tokens]))
    acts = next(source)
    _, cache = tiny_model.bridge.run_with_cache(tokens, names_filter=[HOOK])
    mask = tiny_model.token_mask(tokens)
    assert acts.shape == (int(mask.sum()), 64)
    assert int(mask.sum()) < tokens.numel()  # BOS / separators were dropped
    torch.testing.assert_close(acts, cache[HOOK][mask])


def test_buffer_is_bounded_serves_every_activation_once(tiny_model):
    chunks = [torch.arange(i * 100, (i + 1) * 100, dtype=torch.float32)[:, None].repeat(1, 3) for i in range(20)]
    buffer = ActivationBuffer(iter(chunks), d_in=3, buffer_tokens=256, batch_size=64, seed=1)
    served = torch.cat([buffer.next_batch() for _ in range(25)])  # 1600 of the 2000 rows
    assert buffer._storage.shape == (256, 3)  # memory is the configured buffer, whatever is served
    values = served[:, 0]
    assert len(values.unique()) == len(values)  # nothing served twice
    assert not torch.equal(values, values.sort().values)  # shuffled
    assert buffer.tokens_generated <= 1600 + 256 + 100


def test_buffer_state_round_trip_reproduces_future_batches(tiny_model):
    def make():
        source = ActivationSource(tiny_model, HOOK, _batches(tiny_model))
        return ActivationBuffer(source, d_in=64, buffer_tokens=512, batch_size=64, seed=3)

    a = make()
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    position = a.source.token_batches.position()
    expected = [a.next_batch() for _ in range(6)]

    b = make()
    b.source.token_batches = TokenBatches(DatasetConfig(context_size=32), tiny_model.tokenizer,
                                          bos_token_id=tiny_model.bos_token_id,
                                          separator_token_id=tiny_model.separator_token_id, batch_size=4,
                                          position=position)
    b.load_state_dict(state)
    for want in expected:
        torch.testing.assert_close(b.next_batch(), want)
