"""Hook names: which block a TransformerLens hook belongs to and what it holds, from its name alone.

A leaf module (it imports nothing of the project), so that dictionaries, the trainer and the
analyzer can reason about hooks without loading a model.
"""

from __future__ import annotations

import re
from typing import Optional


def hook_layer(hook_name: str) -> Optional[int]:
    """Index of the block a hook belongs to (`blocks.6.hook_resid_post` -> 6); -1 for embedding
    hooks; None for hooks after the last block (final norm, unembedding)."""
    m = re.match(r"^blocks\.(\d+)\.", hook_name)
    if m:
        return int(m.group(1))
    if hook_name.startswith(("hook_embed", "hook_pos_embed", "embed.", "pos_embed.")):
        return -1
    return None


def stop_layer_for(hook_name: str) -> Optional[int]:
    """The `stop_at_layer` that still runs `hook_name`: blocks after it are never computed."""
    layer = hook_layer(hook_name)
    if layer is None:
        return None
    return layer + 1 if layer >= 0 else 1


def is_residual_hook(hook_name: str) -> bool:
    """Hooks whose activations live in the residual stream basis (logit lens makes sense there)."""
    return bool(re.search(r"(hook_resid_(pre|mid|post)|hook_(attn|mlp)_out|^blocks\.\d+\.hook_(in|out)$|"
                          r"attn\.hook_out$|mlp\.hook_out$|hook_embed$)", hook_name))
