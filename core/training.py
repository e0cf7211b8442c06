"""The trainer: activations in, trained and evaluated dictionaries out — many from one model pass.

A run trains every dictionary of `TrainingConfig.dictionary_configs()` (one by default; a list, a
sweep grid, transcoders) on the same token stream: each batch of tokens is run through the model
once, stopped after the deepest block any dictionary needs, with every needed hook captured; one
shuffle buffer keeps every hook's activations for the same tokens (`core.activations`), and each
dictionary takes an optimizer step on its hook's (or its in/out hooks') slice of each batch. With
the same seed and data, a dictionary trained in a run of many ends with the same weights as in a
run of its own.

Layout of a run folder `results/<exp_name>/`:

    config.json                   the full TrainingConfig
    metrics.jsonl                 one JSON object per dictionary per logged step / evaluation,
                                  with its name under "dictionary"
    checkpoints/step_<n>/         state.json, trainer_state.pt (buffer, data position, RNG), and
                                  dictionaries/<name>/{sae.safetensors, optimizer.pt}
    dictionaries/<name>/          each final dictionary (config.json + sae.safetensors, metrics inside)

Runs written before multi-dictionary training have a single `dictionary/` folder instead; the
analyzer and the server read both layouts.

Resumption is exact: a checkpoint holds every dictionary's weights, Adam moments and activity
tracker, the step and tokens seen, the shuffle buffer's contents and generator, the RNG, and the
data position (epoch, the dataset's shard and offset, the tokens carried over; see
`core.data.PackedSequences`), so a stopped run continues to the same weights as an uninterrupted
one, however many times the data wrapped, without re-reading what came before.

The evaluation sequences are cut from the first documents of the dataset, and every epoch of
training starts after them (`core.data.held_out_sequences`), so evaluations are on held-out text.

SIGINT and SIGTERM stop the run at the end of the current step: a checkpoint is written, and
`TrainingInterrupted` says where; starting the same run again resumes from it. Checkpoints are
written through `core.files.publish` (every file and folder synced before the rename) and older
ones are pruned only after the new one is durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .activations import ActivationBuffer, ActivationSource, ActivationStream, ShardedActivations, expected_norm_scale
from .cache import CachedActivations, cached_eval_sequences, check_cache_matches, read_manifest
from .config import DictionaryConfig, OptimizerConfig, TrainingConfig, resolve_device, torch_dtype
from .data import held_out_and_batches
from .distributed import SINGLE_PROCESS, Distributed, init_distributed, rank_device
from .errors import ConfigError, TrainingInterrupted
from .evals import EvalResult, Evaluator, FeatureActivityTracker, HeldOutEvaluation, explained_variance
from .layout import DICTIONARIES_FOLDER, DICTIONARY_CONFIG_FILENAME, dictionary_folder
from .lm import LanguageModel, load_language_model
from .runs import CHECKPOINT_STATE, DICTIONARY_KEY, EVAL_KEY, FINAL_EVAL_KEY, TRAINER_STATE, RunFolder
from .sae import CrossLayerTranscoder, SparseAutoencoder, TranscoderSet, create_dictionary

log = logging.getLogger(__name__)

THRESHOLD_CALIBRATION_BATCHES = 8
"""Training batches (from the shuffle buffer, not consumed) on which a batchtopk dictionary's
inference threshold is set from the final encoder before it is saved."""


class TrainingResult(NamedTuple):
    dictionary_paths: dict[str, Path]
    """Each dictionary's folder by name (load one with `load_dictionary`)."""
    final_metrics: dict[str, dict]
    """Each dictionary's final evaluation (also saved in its config.json)."""
    steps: int
    """Optimizer steps taken in total (every dictionary takes one per batch)."""
    tokens: int
    """Training tokens seen in total."""
    started_at_step: int = 0
    """The step this process started training at: 0 for a new run, the checkpoint's step for a resumed
    one, `steps` for a run that was already finished (nothing trained again)."""
    finished_before: bool = False
    """True when the run was already finished with the same configuration and this call only read it."""
    seconds: dict = {}
    """Where this process's time went, by phase: `model` (loading it), `data` (held-out text, the
    activation stream), `initialization` (the buffer's first fill, normalization and decoder biases, or
    the checkpoint restored), `training` (the steps, the buffer's refills, logging, periodic evaluations
    and checkpoints), `calibration`, `final_evaluation`, `saving`."""

    def _only(self) -> str:
        if len(self.dictionary_paths) != 1:
            raise ValueError(f"This run trained {len(self.dictionary_paths)} dictionaries "
                             f"({', '.join(self.dictionary_paths)}); use dictionary_paths / final_metrics by name.")
        return next(iter(self.dictionary_paths))

    @property
    def dictionary_path(self) -> Path:
        """The folder of a run's only dictionary."""
        return self.dictionary_paths[self._only()]

    @property
    def metrics(self) -> dict:
        """The final evaluation of a run's only dictionary."""
        return self.final_metrics[self._only()]


def learning_rate(step: int, total_steps: int, cfg: OptimizerConfig) -> float:
    """Learning rate at `step`: linear warmup, then constant / cosine / linear decay."""
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    decay_steps = cfg.lr_decay_steps if cfg.lr_decay_steps is not None else total_steps - cfg.lr_warmup_steps
    decay_start = total_steps - decay_steps
    if decay_steps <= 0 or step < decay_start:
        return cfg.lr
    progress = min(1.0, (step - decay_start) / decay_steps)
    end = cfg.lr * cfg.lr_end_factor
    if cfg.lr_schedule == "cosine":
        return end + (cfg.lr - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr + (end - cfg.lr) * progress


def sparsity_coefficient(step: int, spec: DictionaryConfig) -> Optional[float]:
    """The L1 (relu) / L0 (jumprelu) coefficient of dictionary `spec` at `step`, ramped over its
    optimizer's sparsity_warmup_steps; None for architectures without one."""
    base = {"relu": spec.sae.l1_coefficient, "jumprelu": spec.sae.l0_coefficient}.get(spec.sae.architecture)
    if base is None:
        return None
    warmup = spec.optimizer.sparsity_warmup_steps
    return base * min(1.0, (step + 1) / warmup) if warmup else base


class StopSignals:
    """While active (a `with` block in the main thread), SIGINT and SIGTERM only set `received`;
    the trainer checks it between steps. A second signal stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without a checkpoint")
        self.received = signal.Signals(signum).name
        log.warning("%s received: stopping after this step and writing a checkpoint (send it again to stop at "
                    "once).", self.received)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def create_from_spec(spec: DictionaryConfig, widths: dict[str, int], *, model_name: str,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The untrained dictionary of `spec`: an SAE or transcoder (`create_dictionary`), a `TranscoderSet`
    of one transcoder per covered layer, or a `CrossLayerTranscoder` over the covered layers."""
    if spec.kind == "clt":
        d_in, d_out = widths[spec.input_hooks[0]], widths[spec.output_hooks[0]]
        _check_widths(spec, widths, d_in, d_out)
        return CrossLayerTranscoder(spec.sae, d_in, layers=spec.layer_list, model_name=model_name, d_out=d_out,
                                    input_hook=spec.hook_name, output_hook=spec.hook_out, device=device, dtype=dtype)
    if spec.kind == "transcoder_set":
        _check_widths(spec, widths, widths[spec.input_hooks[0]], widths[spec.output_hooks[0]])
        return TranscoderSet({layer: create_dictionary(spec.sae, widths[h_in], hook_name=h_in, hook_out=h_out,
                                                       d_out=widths[h_out], model_name=model_name, device=device,
                                                       dtype=dtype)
                              for layer, h_in, h_out in zip(spec.layer_list, spec.input_hooks, spec.output_hooks)})
    return create_dictionary(spec.sae, widths[spec.hook_name], hook_name=spec.hook_name, model_name=model_name,
                             device=device, dtype=dtype,
                             **({} if spec.hook_out is None else {"hook_out": spec.hook_out,
                                                                  "d_out": widths[spec.hook_out]}))


def _check_widths(spec: DictionaryConfig, widths: dict[str, int], d_in: int, d_out: int) -> None:
    odd = [h for h in spec.input_hooks if widths[h] != d_in] + [h for h in spec.output_hooks if widths[h] != d_out]
    if odd:
        raise ConfigError(f"dictionary {spec.name!r}: the covered layers' hooks differ in width ({', '.join(odd)}); a "
                          f"{spec.kind} needs one width for its inputs and one for its outputs.")


class DictionaryTrainer:
    """One dictionary of a run: its SAE, transcoder or replacement model (a transcoder set or a CLT),
    Adam optimizer, schedules and feature-activity tracker. `step` takes one optimizer step on a batch
    of its hooks' activations (a replacement model: every covered layer's input and output, stacked)."""

    def __init__(self, spec: DictionaryConfig, *, widths: dict[str, int], model_name: str, total_steps: int,
                 total_training_tokens: int, trainer_cfg, device: str, dtype: torch.dtype, seed: int,
                 dist: Distributed = SINGLE_PROCESS):
        self.spec = spec
        self.name = spec.name
        self.total_steps = total_steps
        self.dist = dist
        """Data parallel: this rank trains on its slice of each global batch and gradients are averaged."""
        # Every dictionary starts from the seed alone, as it would in a run of its own.
        with torch.random.fork_rng(devices=[device] if str(device).startswith("cuda") else []):
            torch.manual_seed(seed)
            self.sae = create_from_spec(spec, widths, model_name=model_name, device=device, dtype=dtype)
        self.replacement = spec.is_replacement
        opt = spec.optimizer
        # fused: one kernel over all parameters (on CPU too, several times faster than the default loop).
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=opt.lr, betas=(opt.adam_beta1, opt.adam_beta2),
                                          fused=True)
        self.autocast_dtype = None if trainer_cfg.autocast_dtype is None else torch_dtype(trainer_cfg.autocast_dtype)
        self.training_forward = torch.compile(self.sae.training_forward) if trainer_cfg.compile \
            else self.sae.training_forward
        n_features = self.sae.d_sae * (len(spec.layer_list) if self.replacement else 1)
        self.tracker = FeatureActivityTracker(
            n_features, window_tokens=trainer_cfg.feature_density_window_tokens,
            dead_tokens_threshold=spec.sae.resolve_dead_tokens_threshold(total_training_tokens),
            dense_threshold=trainer_cfg.dense_feature_threshold, device=device)

    @property
    def output_hook(self) -> str:
        return self.spec.hook_out or self.spec.hook_name

    def _raw(self, batch: dict[str, torch.Tensor], hooks: tuple[str, ...]) -> torch.Tensor:
        """A dictionary's activations of one hook [n, d], or a replacement model's of every covered
        layer, stacked [n, L, d]."""
        return torch.stack([batch[h] for h in hooks], dim=1) if self.replacement else batch[hooks[0]]

    def _normalized(self, raw: torch.Tensor, *, target: bool) -> torch.Tensor:
        sae = self.sae
        raw = raw.to(sae.device, sae.dtype)
        if self.replacement:
            return sae.normalize_targets(raw) if target else sae.normalize_inputs(raw)
        return sae.normalization.normalize_target(raw) if target else sae.normalization.normalize_input(raw)

    @torch.no_grad()
    def initialize(self, sample: dict[str, torch.Tensor]) -> None:
        """Normalization constant(s) and decoder bias from a sample {hook: [n, d]} of raw activations."""
        spec = self.spec
        if self.replacement:
            if spec.sae.normalize_activations == "expected_average_only_in":
                self.sae.set_normalization_scales([expected_norm_scale(sample[h].float()) for h in spec.input_hooks],
                                                  [expected_norm_scale(sample[h].float()) for h in spec.output_hooks])
            self.sae.initialize_decoder_bias(self._normalized(self._raw(sample, spec.output_hooks).float(), target=True))
            return
        x = sample[spec.hook_name].float()
        normalization = self.sae.normalization
        if spec.sae.normalize_activations == "expected_average_only_in":
            normalization.set_scales(expected_norm_scale(x), None if spec.hook_out is None else
                                     expected_norm_scale(sample[spec.hook_out].float()))
        self.sae.initialize_decoder_bias(normalization.normalize_target(sample[self.output_hook].float()))

    def _local(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (all of it in a single process)."""
        if not self.dist.active:
            return t
        n = len(t) // self.dist.world_size
        return t[self.dist.rank * n:(self.dist.rank + 1) * n]

    def _average_gradients(self) -> None:
        """Data parallel: every parameter's gradient averaged over the ranks, in one collective."""
        grads = [p.grad for p in self.sae.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce_(flat, "mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _clip_gradients(self, max_norm: float) -> None:
        """Gradient-norm clipping: a transcoder set clips each member on its own (its members train as
        their own runs would); everything else over all its parameters."""
        groups = list(self.sae) if isinstance(self.sae, TranscoderSet) else [self.sae]
        for group in groups:
            torch.nn.utils.clip_grad_norm_(group.parameters(), max_norm)

    def step(self, batch: dict[str, torch.Tensor], step: int, *, metrics: bool = True) -> Optional[dict]:
        """One optimizer step on raw activations batch {hook: [batch, d]}; returns its metrics when
        asked (reading them waits for the device, so the trainer asks only on logging steps)."""
        sae, spec = self.sae, self.spec
        x = self._normalized(self._local(self._raw(batch, spec.input_hooks)), target=False)
        target = None
        if self.replacement or spec.hook_out is not None:
            target = self._normalized(self._local(self._raw(batch, spec.output_hooks)), target=True)
        lr = learning_rate(step, self.total_steps, spec.optimizer)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        coefficient = sparsity_coefficient(step, spec)
        kwargs = {} if target is None else {"target": target}
        if self.dist.active and not isinstance(sae, CrossLayerTranscoder):
            # AuxK's normalization over the global batch (a CLT's AuxK stays per slice; see its docs)
            kwargs["batch_sum"] = lambda t: self.dist.all_reduce_(t.clone(), "sum")
        with torch.autocast(sae.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            out = self.training_forward(x, sparsity_coefficient=coefficient, dead_mask=self.tracker.dead_mask, **kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.dist.active:
            self._average_gradients()
        sae.remove_gradient_parallel_to_decoder_directions()
        if spec.optimizer.max_grad_norm is not None:
            self._clip_gradients(spec.optimizer.max_grad_norm)
        self.optimizer.step()
        sae.set_decoder_norm_to_unit_norm()
        fire_counts = self.dist.all_reduce_(out.fire_counts.clone())  # over the ranks' slices
        self.tracker.update(fire_counts, len(x) * self.dist.world_size)
        if not metrics:
            return None
        reference = x if target is None else target
        values = [out.loss.item(), out.mse_loss.item(), out.sparsity_loss.item(), out.aux_loss.item(), out.l0.item(),
                  explained_variance(reference.flatten(1), out.x_hat.detach().flatten(1))]
        if self.replacement:
            values += out.layer_l0.tolist() + [explained_variance(reference[:, i], out.x_hat.detach()[:, i])
                                               for i in range(reference.shape[1])]
        values = torch.tensor(values, dtype=torch.float64)
        if self.dist.active:  # the mean over the ranks' slices
            values = self.dist.all_reduce_(values.to(sae.device), "mean").cpu()
        keys = ("loss", "mse_loss", "sparsity_loss", "aux_loss", "l0", "explained_variance")
        record = {**dict(zip(keys, values[:6].tolist())), "lr": lr,
                  **({"sparsity_coefficient": coefficient} if coefficient is not None else {})}
        if self.replacement:
            L = len(spec.layer_list)
            record["layers"] = {"layer": list(spec.layer_list), "l0": values[6:6 + L].tolist(),
                                "explained_variance": values[6 + L:].tolist()}
        return record

    def calibrate_threshold(self, sample: dict[str, torch.Tensor], batch_size: int) -> None:
        """batchtopk: set the inference threshold(s) from the final encoder (THRESHOLD_CALIBRATION_BATCHES)."""
        if self.spec.sae.architecture not in ("batchtopk", "matryoshka_batchtopk"):
            return
        x = self._normalized(self._raw(sample, self.spec.input_hooks).float(), target=False)
        threshold = self.sae.calibrate_threshold(x.split(batch_size))
        log.info("%s: inference threshold(s) set to %s on %d buffered activations.", self.name, threshold, len(x))

    def tracker_stats(self) -> dict:
        """The activity tracker's counts, and a replacement model's dead features per covered layer."""
        stats = self.tracker.stats()
        if self.replacement:
            dead = (self.tracker.tokens_since_fired >= self.tracker.dead_tokens_threshold).view(len(self.spec.layer_list), -1)
            stats["layer_dead_features"] = dead.sum(1).tolist()
        return stats

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
        self.tracker.load_state_dict(state["tracker"])


class TrainingProgress:
    """Progress of a run in tokens: tokens/s and ETA averaged over the whole run (this process's part
    of it), so that they move smoothly although steps come in bursts (each refill of the shuffle
    buffer runs the model for many batches at once). `clock` is injectable for tests."""

    def __init__(self, total_tokens: int, start_tokens: int, *, clock=time.perf_counter):
        self.total_tokens, self.start_tokens = total_tokens, start_tokens
        self.clock = clock
        self.started = clock()
        self.tokens = start_tokens

    def update(self, tokens: int) -> None:
        self.tokens = tokens

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - self.start_tokens) / max(self.clock() - self.started, 1e-9)

    @property
    def eta_s(self) -> Optional[float]:
        """Seconds left at the run's average rate; None before the first step."""
        rate = self.tokens_per_s
        return None if rate <= 0 else max(self.total_tokens - self.tokens, 0) / rate

    def describe(self) -> str:
        eta = self.eta_s
        eta_text = "?" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        return f"{self.tokens:,}/{self.total_tokens:,} tok, {self.tokens_per_s:,.0f} tok/s, ETA {eta_text}"


class Trainer:
    """Trains dictionaries on the batches it is handed: each step, every dictionary takes one
    optimizer step on the next batch; periodic evaluations, metrics, checkpoints; at the end the
    calibration of inference thresholds, the final evaluation and the saved dictionaries.

    It is handed its parts and knows nothing of where activations come from (the language model, an
    activation cache, synthetic data) or how many processes share the work: `build_trainer` assembles
    them from a `TrainingConfig`. Constructing it touches no file; `run()` starts writing to the run
    folder (rank 0 only)."""

    def __init__(self, cfg: TrainingConfig, *, dictionaries: list[DictionaryTrainer], batches: ActivationBuffer,
                 evaluator: Evaluator, run: RunFolder, dist: Distributed = SINGLE_PROCESS,
                 specs: Optional[list[DictionaryConfig]] = None,
                 make_dictionary: Optional[Callable[[DictionaryConfig], DictionaryTrainer]] = None,
                 data_position: Callable[[], dict] = dict, first_training_document: int = 0,
                 saved_extra: Optional[dict] = None):
        """`cfg` gives the schedule (lengths, cadences, logging) and what the saved dictionaries record;
        `dictionaries` are the ones this process trains (all of them, or in a torchrun job spreading
        dictionaries over ranks, this rank's), `specs` every dictionary of the run in order (default:
        those of `dictionaries`), `make_dictionary` builds one from its spec (rank 0 uses it to save the
        dictionaries other ranks trained), `data_position` says where the batches' source is (saved
        in checkpoints), `first_training_document` where training text starts (recorded), `saved_extra`
        what else the saved dictionaries' config.json record (e.g. a synthetic run's features)."""
        self.cfg = cfg
        self.dictionaries = dictionaries
        self.buffer = batches
        self.evaluator = evaluator
        self.run_folder = run
        self.dist = dist
        self.specs = specs if specs is not None else [d.spec for d in dictionaries]
        self.make_dictionary = make_dictionary
        self.data_position = data_position
        self.first_training_document = first_training_document
        self.saved_extra = dict(saved_extra or {})
        self.data_parallel = dist.active and cfg.distributed.strategy == "data_parallel"
        self.total_steps = cfg.trainer.total_training_tokens // cfg.activations.train_batch_size
        self.step = 0
        self.tokens_seen = 0
        self.started_at_step = 0
        self.initialized = False
        """Whether the dictionaries' normalization and decoder bias were set (from data, or a checkpoint)."""
        self.begun = False
        """Whether `begin` prepared the run folder."""
        self.seconds: dict[str, float] = {}
        """Seconds spent by phase (`TrainingResult.seconds`); `build_trainer` records its own."""
        self.wandb_run = None

    @property
    def run_dir(self) -> Path:
        return self.run_folder.path

    @property
    def device(self) -> torch.device:
        """Where the batches (and the dictionaries) are."""
        return self.buffer.device

    @property
    def sae(self) -> SparseAutoencoder:
        """The SAE of a run's only dictionary."""
        if len(self.dictionaries) != 1:
            raise ValueError("This run trains several dictionaries; use trainer.dictionaries.")
        return self.dictionaries[0].sae

    # ------------------------------------------------------------------ starting

    def initialize(self) -> None:
        """Normalization constants and decoder biases of new dictionaries, from a sample of the buffer."""
        sample = {h: t.float() for h, t in self.buffer.peek(max(s.sae.decoder_bias_init_samples
                                                               for s in self.specs)).items()}
        for d in self.dictionaries:
            d.initialize({h: t[:d.spec.sae.decoder_bias_init_samples] for h, t in sample.items()})
        self.initialized = True

    def restore(self, checkpoint: Path) -> None:
        """Continue from `checkpoint` (its data position was given to the batches' source already):
        every dictionary's weights, Adam moments and activity tracker, the buffer, the RNG, the step."""
        state = self.run_folder.checkpoint_state(checkpoint)
        # weights_only: tensors and plain containers only, never arbitrary pickled objects; on the CPU
        # (generator states must stay there), moved where they belong below.
        trainer_state = load_trainer_state(self.run_folder, checkpoint)
        for d in self.dictionaries:
            folder = checkpoint / DICTIONARIES_FOLDER / d.name
            what = f" for dictionary {d.name!r}"
            d.sae.load_state_dict(self.run_folder.read_checkpoint_file(
                folder, "sae.safetensors", lambda p: load_file(p, device="cpu"), what=what))
            d.load_state_dict(self.run_folder.read_checkpoint_file(
                folder, "optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True), what=what))
        self.buffer.load_state_dict(trainer_state["buffer"])
        torch.set_rng_state(trainer_state["torch_rng"])
        self.step = self.started_at_step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.initialized = True

    # ------------------------------------------------------------------ checkpoints

    def _on_main(self, local: list) -> Optional[list]:
        """Items every rank holds about its own dictionaries, all of them on rank 0 in the config's
        order (None on other ranks). Data-parallel ranks hold identical copies: rank 0's are used."""
        if not self.dist.active or self.data_parallel:
            return local if self.dist.is_main else None
        gathered = self.dist.gather_objects(local)
        if not self.dist.is_main:
            return None
        by_name = {item[0]: item for part in gathered for item in part}
        return [by_name[spec.name] for spec in self.specs]

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint durably and prune the oldest ones beyond `keep_checkpoints`
        (`RunFolder.write_checkpoint`). Rank 0 writes; every rank returns once it is written."""
        self.begin()
        states = self._on_main([(d.name, {k: v.detach().cpu() for k, v in d.sae.state_dict().items()},
                                 d.state_dict()) for d in self.dictionaries])
        target = self.run_folder.checkpoints_folder / f"step_{self.step}"
        if self.dist.is_main:
            target = self.run_folder.write_checkpoint(self.step, lambda folder: self._fill_checkpoint(folder, states),
                                                      keep=self.cfg.trainer.keep_checkpoints)
        self.dist.barrier()
        return target

    def _fill_checkpoint(self, folder: Path, states: list) -> None:
        for name, sae_state, trainer_state in states:
            inner = folder / DICTIONARIES_FOLDER / name
            inner.mkdir(parents=True)
            save_file({k: v.contiguous() for k, v in sae_state.items()}, inner / "sae.safetensors")
            torch.save(trainer_state, inner / "optimizer.pt")
        position = self.data_position()
        torch.save({"buffer": self.buffer.state_dict(), "torch_rng": torch.get_rng_state(), "data": position},
                   folder / TRAINER_STATE)
        state = {"step": self.step, "tokens_seen": self.tokens_seen,
                 **{k: v for k, v in position.items() if type(v) is int},  # epoch, sequences served, ...
                 "first_training_document": self.first_training_document,
                 "buffer_tokens_generated": self.buffer.tokens_generated,
                 "dictionaries": [name for name, _, _ in states], "world_size": self.dist.world_size}
        (folder / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2) + "\n")

    # ------------------------------------------------------------------ logging

    def _log(self, records: Optional[list[dict]]) -> None:
        """Append records (one per dictionary, each with its name) to metrics.jsonl and wandb (rank 0)."""
        if not self.dist.is_main or not records:
            return
        records = [{"step": self.step, "tokens": self.tokens_seen, **r} for r in records]
        self.run_folder.metrics.append(records)
        if self.wandb_run is not None:
            flat = {}
            for r in records:
                prefix = f"{r[DICTIONARY_KEY]}/" if DICTIONARY_KEY in r else ""
                for key, value in r.items():
                    if isinstance(value, dict):
                        flat.update({f"{prefix}{key}/{k}": v for k, v in value.items() if isinstance(v, (int, float))})
                    elif isinstance(value, (int, float)) and key not in ("step",):
                        flat[f"{prefix}{key}"] = value
            self.wandb_run.log(flat, step=self.step)

    def _start_wandb(self) -> None:
        lc = self.cfg.logging
        if lc.wandb_mode == "off" or not self.dist.is_main:
            return
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("logging.wandb_mode needs the wandb package: `pip install wandb`.") from e
        self.wandb_run = wandb.init(project=lc.wandb_project, entity=lc.wandb_entity, name=self.cfg.exp_name,
                                    mode=lc.wandb_mode, dir=str(self.run_dir), config=self.cfg.to_dict(),
                                    resume="allow", id=self.cfg.exp_name.replace("/", "_"))

    # ------------------------------------------------------------------ training

    def evaluate(self, final: bool = False) -> Optional[list[tuple[str, EvalResult]]]:
        """(name, evaluation) of every dictionary (the final evaluation on more data), on rank 0 (None
        on other ranks; data-parallel ranks wait while rank 0 evaluates)."""
        local = []
        if self.dist.is_main or not self.data_parallel:
            results = self.evaluator([d.sae for d in self.dictionaries], final=final)
            local = [(d.name, r) for d, r in zip(self.dictionaries, results)]
        return self._on_main(local)

    def train_step(self, batch: dict[str, torch.Tensor], *, metrics: bool = True) -> Optional[list[dict]]:
        """One optimizer step of every dictionary on raw activations {hook: [batch, d]}; their
        metrics when asked."""
        if not self.initialized:
            raise ValueError("The dictionaries are not initialized: call initialize() (or restore() a checkpoint) "
                             "before the first train_step; build_trainer and run() do.")
        out = [d.step(batch, self.step, metrics=metrics) for d in self.dictionaries]
        self.step += 1
        self.tokens_seen += len(next(iter(batch.values())))
        return out if metrics else None

    def _stop_requested(self, stop: StopSignals, step_check: bool) -> bool:
        """Whether to stop now: a signal reached this process (or, in a torchrun job, any rank; the
        ranks agree at logging steps, so they stop after the same step)."""
        if not self.dist.active:
            return stop.received is not None
        return step_check and self.dist.any(stop.received is not None)

    def _saved_dictionaries(self, finals: list[tuple[str, EvalResult]]) -> dict[str, Path]:
        """Save every dictionary with its final metrics (rank 0: dictionaries spread over other ranks
        come to it as state dicts); returns their folders."""
        cfg = self.cfg
        states = self._on_main([(d.name, {k: v.detach().cpu() for k, v in d.sae.state_dict().items()})
                                for d in self.dictionaries])
        paths = {spec.name: dictionary_folder(self.run_dir, spec.name) for spec in self.specs}
        if not self.dist.is_main:
            return paths
        local = {d.name: d.sae for d in self.dictionaries}
        results = dict(finals)
        for (name, state), spec in zip(states, self.specs):
            sae = local.get(name)
            if sae is None:  # trained on another rank
                sae = self.make_dictionary(spec).sae
                sae.load_state_dict(state)
            final = results[name]
            member_metrics = {}
            if isinstance(sae, TranscoderSet) and getattr(final, "layers", None):  # each member's own numbers
                per_layer = final.layers
                member_metrics = {"member_metrics": {layer: {key: values[i] for key, values in per_layer.items()
                                                             if key != "layer"}
                                                     for i, layer in enumerate(per_layer["layer"])}}
            sae.save(paths[name], metrics=final.to_dict(), **member_metrics, extra={
                "name": name, "exp_name": cfg.exp_name, "model": cfg.model.to_dict(), "dataset": cfg.dataset.path,
                "context_size": cfg.dataset.context_size, "optimizer": spec.optimizer.to_dict(),
                "training_tokens": self.tokens_seen, "training_steps": self.step, **self.saved_extra})
            log.info("Saved %s: L0 %.1f, explained variance %.3f, CE loss recovered %.3f.",
                     paths[name], final.l0, final.explained_variance, final.ce_loss_recovered)
        return paths

    def begin(self) -> None:
        """Prepare the run folder (rank 0): the config saved, checkpoints a killed run was writing
        thrown away, the metrics logged after the resumed checkpoint dropped. `run` calls it first."""
        if not self.begun:
            if self.dist.is_main:
                self.run_folder.begin(self.cfg, self.step if self.started_at_step else None)
            self.dist.barrier()
            self.begun = True

    def run(self) -> TrainingResult:
        """Train to the end (or to a stop signal), evaluate, save; rank 0 writes the run folder."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.begin()
        self._start_wandb()
        if not self.initialized:
            with self._timed("initialization"):
                self.initialize()
        total_tokens = self.total_steps * cfg.activations.train_batch_size
        progress = TrainingProgress(total_tokens, self.tokens_seen)
        # Our own tokens/s and ETA (averaged over the run), not tqdm's moving rate: in the description.
        bar = tqdm(total=total_tokens, initial=self.tokens_seen, desc=cfg.exp_name, dynamic_ncols=True,
                   bar_format="{percentage:3.0f}%|{bar}| {desc}",
                   disable=not cfg.logging.progress_bar or not self.dist.is_main)
        metrics_postfix = ""
        for d in self.dictionaries:
            d.sae.train()
        loop_started = time.perf_counter()
        with StopSignals() as stop:
            try:
                stopping = False
                while self.step < self.total_steps and not stopping:
                    logging_step = (self.step + 1) % cfg.logging.log_every_steps == 0 \
                        or self.step + 1 == self.total_steps
                    before = self.tokens_seen
                    metrics = self.train_step(self.buffer.next_batch(), metrics=logging_step)
                    progress.update(self.tokens_seen)
                    bar.update(self.tokens_seen - before)
                    if logging_step:
                        tokens_per_s = progress.tokens_per_s
                        records = self._on_main([(d.name, {DICTIONARY_KEY: d.name, **m, **d.tracker_stats(),
                                                           "tokens_per_s": tokens_per_s})
                                                 for d, m in zip(self.dictionaries, metrics)])
                        if records:
                            self._log([record for _, record in records])
                            first = records[0][1]
                            metrics_postfix = f", L0 {first['l0']:.1f}, EV {first['explained_variance']:.3f}"
                        bar.set_description_str(f"{cfg.exp_name}: {progress.describe()}{metrics_postfix}", refresh=False)
                    if self.step % cfg.trainer.eval_every_steps == 0 and self.step < self.total_steps:
                        results = self.evaluate()
                        self._log(results and [{DICTIONARY_KEY: name, EVAL_KEY: r.scalars()} for name, r in results])
                    if cfg.trainer.checkpoint_every_steps and self.step % cfg.trainer.checkpoint_every_steps == 0 \
                            and self.step < self.total_steps:
                        self.save_checkpoint()
                    stopping = self._stop_requested(stop, logging_step)
            finally:
                bar.close()
                self.seconds["training"] = self.seconds.get("training", 0.0) + time.perf_counter() - loop_started
            if stopping:
                checkpoint = self.save_checkpoint()
                if self.wandb_run is not None:
                    self.wandb_run.finish()
                raise TrainingInterrupted(stop.received or "SIGTERM", self.step, checkpoint)
            with self._timed("calibration"):
                sample = self.buffer.peek(THRESHOLD_CALIBRATION_BATCHES * cfg.activations.train_batch_size)
                for d in self.dictionaries:
                    d.calibrate_threshold(sample, cfg.activations.train_batch_size)
            with self._timed("final_evaluation"):
                finals = self.evaluate(final=True)
            self._log(finals and [{DICTIONARY_KEY: name, FINAL_EVAL_KEY: r.scalars()} for name, r in finals])
            with self._timed("saving"):
                paths = self._saved_dictionaries(finals)
        if self.wandb_run is not None:
            self.wandb_run.summary.update({f"{name}/final/{k}": v for name, r in finals
                                           for k, v in r.scalars().items()})
            self.wandb_run.finish()
        final_metrics = self.dist.broadcast_object(finals and {name: r.to_dict() for name, r in finals})
        self.dist.barrier()  # every rank returns once the dictionaries are on disk
        return TrainingResult(paths, final_metrics, self.step, self.tokens_seen, started_at_step=self.started_at_step,
                              seconds=dict(self.seconds))

    @contextlib.contextmanager
    def _timed(self, phase: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


def load_trainer_state(run: RunFolder, checkpoint: Path) -> dict:
    """A checkpoint's buffer, RNG and data position (on the CPU); ConfigError for a damaged or too old one."""
    state = run.read_checkpoint_file(checkpoint, TRAINER_STATE,
                                     lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if "data" not in state or "dictionaries" not in run.checkpoint_state(checkpoint):
        raise ConfigError(f"Checkpoint {checkpoint} was written by an older version of the trainer (it has no "
                          f"epoch-aware data position or dictionary list) and cannot be resumed exactly; start a "
                          f"new exp_name.")
    return state


# ---------------------------------------------------------------------- assembling a trainer


def comparable_config(cfg: TrainingConfig) -> dict:
    """What must be equal for two runs to be the same run: everything but where and how it runs
    (`resume`, `device`, `logging`, the collective timeout)."""
    data = cfg.to_dict()
    for key in ("resume", "device", "logging"):
        data.pop(key, None)
    data.get("distributed", {}).pop("collective_timeout_s", None)
    return json.loads(json.dumps(data))


def finished_run(cfg: TrainingConfig) -> Optional[TrainingResult]:
    """The result of run `cfg.exp_name` when it already finished with this configuration (a rerun of
    a finished job is then a no-op); None when it has not finished. A finished run of another
    configuration is a ConfigError: finished dictionaries are never overwritten."""
    run = RunFolder(cfg.run_dir)
    folders = run.finished_dictionaries()
    if not folders:
        return None
    saved = run.saved_config()
    specs = cfg.dictionary_configs()
    names = {spec.name: dictionary_folder(run.path, spec.name) for spec in specs}
    if saved is None or comparable_config(saved) != comparable_config(cfg) \
            or sorted(map(str, folders)) != sorted(str(p) for p in names.values()):
        raise ConfigError(f"{run.path} already holds trained dictionaries; choose a new exp_name or move that "
                          f"folder away.")
    configs = {name: json.loads((folder / DICTIONARY_CONFIG_FILENAME).read_text()) for name, folder in names.items()}
    first = next(iter(configs.values()))
    steps = int(first.get("training_steps", 0))
    return TrainingResult(names, {name: c.get("metrics") or {} for name, c in configs.items()}, steps,
                          int(first.get("training_tokens", 0)), started_at_step=steps, finished_before=True)


def _check_same_dictionaries(run_dir: Path, saved: list[DictionaryConfig], now: list[DictionaryConfig]) -> None:
    """ConfigError unless a resumed run has the same dictionaries (names, hooks, `sae` configs) as
    the one that wrote the checkpoint; optimizer settings may change, as a run's `trainer` may."""
    names = [d.name for d in saved]
    if names != [d.name for d in now]:
        raise ConfigError(f"Cannot resume {run_dir}: its dictionaries are {names}, this run's are "
                          f"{[d.name for d in now]}; restore the config or choose a new exp_name.")
    for a, b in zip(saved, now):
        for part in ("kind", "layers", "hook_name", "hook_out", "sae"):
            if getattr(a, part) != getattr(b, part):
                raise ConfigError(f"Cannot resume {run_dir}: dictionary {a.name!r} has a different `{part}` config "
                                  f"than this run's; restore it or choose a new exp_name.")


def checkpoint_to_resume(run: RunFolder, cfg: TrainingConfig) -> Optional[Path]:
    """The checkpoint a run of `cfg` continues from (None: a new run), after checking what is on
    disk: a finished run or the checkpoints of another configuration are refused. Reads only."""
    if run.finished_dictionaries():
        raise ConfigError(f"{run.path} already holds trained dictionaries; choose a new exp_name or move that "
                          f"folder away.")
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        return None
    if not cfg.resume:
        raise ConfigError(f"{run.path} has checkpoints ({checkpoint.name}) and resume=False; set resume=True to "
                          f"continue that run, or choose a new exp_name.")
    previous = run.saved_config()
    if previous is not None:
        for part in ("model", "dataset", "activations"):
            if getattr(previous, part) != getattr(cfg, part):
                raise ConfigError(f"Cannot resume {run.path}: its `{part}` config differs from this run's; "
                                  f"restore it or choose a new exp_name.")
        _check_same_dictionaries(run.path, previous.dictionary_configs(), cfg.dictionary_configs())
    log.info("Resuming %s from %s.", run.path, checkpoint)
    return checkpoint


def _agreed(dist: Distributed, decide: Callable[[], Optional[Path]]) -> Optional[Path]:
    """Rank 0's answer of `decide()` on every rank: a path, None, or the same ConfigError."""
    outcome = None
    if dist.is_main:
        try:
            found = decide()
            outcome = ("ok", str(found) if found else None)
        except ConfigError as e:
            outcome = ("error", str(e))
    outcome = dist.broadcast_object(outcome)
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    return Path(outcome[1]) if outcome[1] else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def activation_stream(cfg: TrainingConfig, model: LanguageModel, hooks: tuple[str, ...], widths: dict[str, int],
                      position: Optional[dict]) -> tuple[ActivationStream, torch.Tensor, int]:
    """(the training activations, the held-out evaluation sequences [n, context_size], the first
    training document) of `cfg`: the model run on the dataset after its held-out start, or an
    activation cache (with the held-out sequences it keeps), continuing from `position`."""
    act_cfg = cfg.activations
    n_eval = 2 * cfg.trainer.eval_batches * act_cfg.model_batch_size
    if act_cfg.cache_path is None:
        held, token_batches = held_out_and_batches(cfg.dataset, model, batch_size=act_cfg.model_batch_size,
                                                   held_out=n_eval, seed=cfg.seed, position=position)
        return (ActivationSource(model, hooks, token_batches), torch.tensor(held.sequences, dtype=torch.long),
                held.n_documents)
    # Activations from a cache; its held-out sequences (never cached) are the evaluation's.
    manifest = read_manifest(act_cfg.cache_path)
    check_cache_matches(manifest, Path(act_cfg.cache_path), model_name=cfg.model.name, widths=widths,
                        store_dtype=act_cfg.store_dtype)
    eval_sequences = cached_eval_sequences(act_cfg.cache_path)
    if len(eval_sequences) < n_eval:
        raise ConfigError(f"The activation cache at {act_cfg.cache_path} keeps {len(eval_sequences)} held-out "
                          f"sequences, fewer than the {n_eval} the evaluations need; lower "
                          f"trainer.eval_batches or activations.model_batch_size.")
    source = CachedActivations(act_cfg.cache_path, hooks, shuffle_shards=act_cfg.cache_shuffle_shards, seed=cfg.seed,
                               position=position)
    return source, eval_sequences[:n_eval], manifest["first_document"]


def build_trainer(cfg: TrainingConfig, model: Optional[LanguageModel] = None) -> Trainer:
    """Assemble the trainer of `cfg`: the distributed context, the run folder and the checkpoint to
    resume from, the language model, the activation stream (model or cache) sharded over ranks and
    its shuffle buffer, the held-out evaluation, and the dictionaries this rank trains. Reads files,
    writes none; ConfigError for a finished run or checkpoints of another configuration."""
    cfg = cfg.validate()
    specs = cfg.dictionary_configs()
    dist = init_distributed(cfg.device, cfg.distributed.collective_timeout_s)
    dist.check_same("training config", cfg.to_dict())
    device = resolve_device(rank_device(cfg.device, dist))
    data_parallel = dist.active and cfg.distributed.strategy == "data_parallel"
    if data_parallel and cfg.activations.train_batch_size % dist.world_size:
        raise ConfigError(f"activations.train_batch_size ({cfg.activations.train_batch_size}) is global and must "
                          f"divide by the {dist.world_size} ranks of this torchrun job; make it a multiple "
                          f"of {dist.world_size}.")
    total_steps = cfg.trainer.total_training_tokens // cfg.activations.train_batch_size
    if total_steps < 1:
        raise ConfigError("trainer.total_training_tokens is smaller than one activations.train_batch_size.")
    run = RunFolder(cfg.run_dir)
    checkpoint = _agreed(dist, lambda: checkpoint_to_resume(run, cfg))
    seed_everything(cfg.seed)
    started = time.perf_counter()
    model = model if model is not None else load_language_model(cfg.model, device)
    seconds = {"model": time.perf_counter() - started}
    hooks = tuple(dict.fromkeys(h for spec in specs for h in spec.hooks))
    widths = {hook: model.hook_width(hook) for hook in hooks}  # refuses unknown / non-per-token hooks
    position = load_trainer_state(run, checkpoint)["data"] if checkpoint else None
    started = time.perf_counter()
    source, eval_sequences, first_document = activation_stream(cfg, model, hooks, widths, position)
    if dist.active:  # each rank runs every world_size-th batch; all ranks hold every row
        source = ShardedActivations(source, dist)
    act_cfg = cfg.activations
    # The rows the run will need: its batches, and the calibration sample of batch-level top-k
    # dictionaries (peeked at after the last batch); the buffer computes no more.
    calibrates = any(spec.sae.architecture in ("batchtopk", "matryoshka_batchtopk") for spec in specs)
    needed = total_steps * act_cfg.train_batch_size + (THRESHOLD_CALIBRATION_BATCHES * act_cfg.train_batch_size
                                                       if calibrates else 0)
    buffer = ActivationBuffer(source, widths=widths, buffer_tokens=act_cfg.buffer_tokens,
                              batch_size=act_cfg.train_batch_size, dtype=torch_dtype(act_cfg.store_dtype),
                              device=device, seed=cfg.seed, total_tokens=needed)
    evaluator = HeldOutEvaluation(model, eval_sequences.split(act_cfg.model_batch_size),
                                  periodic_batches=cfg.trainer.eval_batches,
                                  dense_threshold=cfg.trainer.dense_feature_threshold)

    def make_dictionary(spec: DictionaryConfig) -> DictionaryTrainer:
        return DictionaryTrainer(spec, widths=widths, model_name=cfg.model.name, total_steps=total_steps,
                                 total_training_tokens=cfg.trainer.total_training_tokens, trainer_cfg=cfg.trainer,
                                 device=device, dtype=torch_dtype(cfg.dtype), seed=cfg.seed,
                                 dist=dist if data_parallel else SINGLE_PROCESS)

    # Spread over the ranks of a torchrun job, a rank trains every world_size-th dictionary.
    local = specs[dist.rank::dist.world_size] if dist.active and not data_parallel else specs
    trainer = Trainer(cfg, dictionaries=[make_dictionary(spec) for spec in local], batches=buffer,
                      evaluator=evaluator, run=run, dist=dist, specs=specs, make_dictionary=make_dictionary,
                      data_position=source.position, first_training_document=first_document)
    seconds["data"] = time.perf_counter() - started
    started = time.perf_counter()
    if checkpoint:
        trainer.restore(checkpoint)
    else:  # before the first batch is taken, as a run of its own would
        trainer.initialize()
    trainer.seconds = {**seconds, "initialization": time.perf_counter() - started}
    log.info("Training %d dictionar%s on %s (buffer: %.0f MB).", len(trainer.dictionaries),
             "y" if len(trainer.dictionaries) == 1 else "ies", ", ".join(hooks), buffer.memory_bytes / 1e6)
    return trainer


def train(cfg: TrainingConfig, model: Optional[LanguageModel] = None) -> TrainingResult:
    """Train every dictionary of `cfg` and return where each was saved with its final metrics. Run
    again after it finished, with the same configuration, it trains nothing and returns the same."""
    cfg = cfg.validate()
    dist = init_distributed(cfg.device, cfg.distributed.collective_timeout_s)
    done = dist.broadcast_object(_finished_or_error(cfg) if dist.is_main else None)
    if done is not None:
        if isinstance(done, str):
            raise ConfigError(done)
        return done
    return build_trainer(cfg, model=model).run()


def _finished_or_error(cfg: TrainingConfig):
    """`finished_run(cfg)`, or its ConfigError's message (a value every rank can receive)."""
    try:
        return finished_run(cfg)
    except ConfigError as e:
        return str(e)
