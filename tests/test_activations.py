"""Activation generation stops at the deepest hook's block, drops BOS, captures every hook at once;
the shuffle buffer is bounded, keeps hooks paired, and its state round-trips."""

import torch

from core import ActivationBuffer, ActivationSource, DatasetConfig, TokenBatches

HOOK = "blocks.0.hook_resid_post"
HOOKS = (HOOK, "blocks.1.mlp.hook_post", "blocks.1.attn.hook_z")


def _batches(model, n=None, batch_size=4, context_size=32):
    return TokenBatches(DatasetConfig(context_size=context_size), model.tokenizer, bos_token_id=model.bos_token_id,
                        separator_token_id=model.separator_token_id, batch_size=batch_size)


def test_truncated_forward_matches_full_forward_and_drops_bos(tiny_model):
    tokens = next(_batches(tiny_model))
    source = ActivationSource(tiny_model, HOOKS, iter([tokens]))
    assert source.stop_at_layer == 2
    acts = next(source)
    _, cache = tiny_model.bridge.run_with_cache(tokens, names_filter=list(HOOKS))
    mask = tiny_model.token_mask(tokens)
    assert int(mask.sum()) < tokens.numel()  # BOS / separators were dropped
    assert {hook: a.shape for hook, a in acts.items()} == {HOOK: (int(mask.sum()), 64),
                                                          HOOKS[1]: (int(mask.sum()), 256),
                                                          HOOKS[2]: (int(mask.sum()), 64)}
    for hook in HOOKS:
        torch.testing.assert_close(acts[hook], cache[hook][mask].flatten(1))
    assert ActivationSource(tiny_model, HOOK, iter(())).stop_at_layer == 1


def test_buffer_is_bounded_serves_every_activation_once_and_keeps_hooks_paired(tiny_model):
    chunks = [{"a": torch.arange(i * 100, (i + 1) * 100, dtype=torch.float32)[:, None].repeat(1, 3),
               "b": -torch.arange(i * 100, (i + 1) * 100, dtype=torch.float32)[:, None].repeat(1, 5)}
              for i in range(20)]
    buffer = ActivationBuffer(iter(chunks), widths={"a": 3, "b": 5}, buffer_tokens=256, batch_size=64, seed=1)
    assert buffer.memory_bytes == 256 * (3 + 5) * 4  # the configured buffer, whatever is served
    batches = [buffer.next_batch() for _ in range(25)]  # 1600 of the 2000 rows
    values = torch.cat([b["a"] for b in batches])[:, 0]
    assert len(values.unique()) == len(values)  # nothing served twice
    assert not torch.equal(values, values.sort().values)  # shuffled
    for b in batches:  # the same token in the same row of every hook
        assert torch.equal(b["b"][:, 0], -b["a"][:, 0])
    assert buffer.tokens_generated <= 1600 + 256 + 100


def test_buffer_contents_depend_on_the_row_order_only(tiny_model):
    rows = torch.randn(3000, 4)
    big = ActivationBuffer(iter([{"x": c} for c in rows.split(700)]), widths={"x": 4}, buffer_tokens=512,
                           batch_size=64, seed=2)
    small = ActivationBuffer(iter([{"x": c} for c in rows.split(37)]), widths={"x": 4}, buffer_tokens=512,
                             batch_size=64, seed=2)
    for _ in range(30):
        assert torch.equal(big.next_batch()["x"], small.next_batch()["x"])


def test_buffer_state_round_trip_reproduces_future_batches(tiny_model):
    def make():
        source = ActivationSource(tiny_model, HOOKS[:2], _batches(tiny_model))
        return ActivationBuffer(source, widths={HOOK: 64, HOOKS[1]: 256}, buffer_tokens=512, batch_size=64, seed=3)

    a = make()
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    position = a.source.position()
    expected = [a.next_batch() for _ in range(6)]

    b = make()
    b.source.token_batches = TokenBatches(DatasetConfig(context_size=32), tiny_model.tokenizer,
                                          bos_token_id=tiny_model.bos_token_id,
                                          separator_token_id=tiny_model.separator_token_id, batch_size=4,
                                          position=position)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        for hook in want:
            torch.testing.assert_close(got[hook], want[hook])
