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

import json
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .activations import ActivationBuffer, ActivationSource, ShardedActivations, expected_norm_scale
from .cache import CachedActivations, cached_eval_sequences, check_cache_matches, read_manifest
from .config import DictionaryConfig, OptimizerConfig, TrainingConfig, resolve_device, torch_dtype
from .data import TokenBatches, held_out_sequences
from .errors import ConfigError, TrainingInterrupted
from .distributed import SINGLE_PROCESS, Distributed, init_distributed, rank_device
from .evals import EvalResult, FeatureActivityTracker, evaluate_dictionaries, explained_variance
from .files import publish, remove_tree, temp_sibling
from .layout import (CHECKPOINTS_FOLDER, DICTIONARIES_FOLDER, RUN_CONFIG_FILENAME, dictionary_folder,
                     finished_dictionaries)
from .runs import EVAL_KEY, FINAL_EVAL_KEY, MetricsLog
from .lm import LanguageModel, load_language_model
from .sae import SparseAutoencoder

log = logging.getLogger(__name__)

CHECKPOINT_FILES = ("trainer_state.pt", "state.json")
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


class DictionaryTrainer:
    """One dictionary of a run: its SAE (or transcoder), Adam optimizer, schedules and
    feature-activity tracker. `step` takes one optimizer step on a batch of its hooks' activations."""

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
            self.sae = SparseAutoencoder(spec.sae, widths[spec.hook_name], hook_name=spec.hook_name,
                                         model_name=model_name, device=device, dtype=dtype,
                                         **({} if spec.hook_out is None else
                                            {"hook_out": spec.hook_out, "d_out": widths[spec.hook_out]}))
        opt = spec.optimizer
        # fused: one kernel over all parameters (on CPU too, several times faster than the default loop).
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=opt.lr, betas=(opt.adam_beta1, opt.adam_beta2),
                                          fused=True)
        self.autocast_dtype = None if trainer_cfg.autocast_dtype is None else torch_dtype(trainer_cfg.autocast_dtype)
        self.training_forward = torch.compile(self.sae.training_forward) if trainer_cfg.compile \
            else self.sae.training_forward
        self.tracker = FeatureActivityTracker(
            self.sae.d_sae, window_tokens=trainer_cfg.feature_density_window_tokens,
            dead_tokens_threshold=spec.sae.resolve_dead_tokens_threshold(total_training_tokens),
            dense_threshold=trainer_cfg.dense_feature_threshold, device=device)

    @property
    def output_hook(self) -> str:
        return self.spec.hook_out or self.spec.hook_name

    @torch.no_grad()
    def initialize(self, sample: dict[str, torch.Tensor]) -> None:
        """Normalization constant(s) and decoder bias from a sample {hook: [n, d]} of raw activations."""
        x = sample[self.spec.hook_name].float()
        if self.spec.sae.normalize_activations == "expected_average_only_in":
            self.sae.normalization_scale = expected_norm_scale(x)
            if self.spec.hook_out is not None:
                self.sae.output_normalization_scale = expected_norm_scale(sample[self.spec.hook_out].float())
        target = sample[self.output_hook].float() * float(self._output_scale)
        self.sae.initialize_decoder_bias(target)

    @property
    def _output_scale(self) -> torch.Tensor:
        return self.sae.output_normalization_scale  # an SAE's is its normalization_scale

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

    def step(self, batch: dict[str, torch.Tensor], step: int, *, metrics: bool = True) -> Optional[dict]:
        """One optimizer step on raw activations batch {hook: [batch, d]}; returns its metrics when
        asked (reading them waits for the device, so the trainer asks only on logging steps)."""
        sae = self.sae
        x = self._local(batch[self.spec.hook_name]).to(sae.device, sae.dtype) * sae.normalization_scale
        target = None
        if self.spec.hook_out is not None:
            target = self._local(batch[self.spec.hook_out]).to(sae.device, sae.dtype) * self._output_scale
        lr = learning_rate(step, self.total_steps, self.spec.optimizer)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        coefficient = sparsity_coefficient(step, self.spec)
        kwargs = {} if target is None else {"target": target}
        with torch.autocast(sae.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            out = self.training_forward(x, sparsity_coefficient=coefficient, dead_mask=self.tracker.dead_mask, **kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.dist.active:
            self._average_gradients()
        sae.remove_gradient_parallel_to_decoder_directions()
        if self.spec.optimizer.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), self.spec.optimizer.max_grad_norm)
        self.optimizer.step()
        sae.set_decoder_norm_to_unit_norm()
        fire_counts = self.dist.all_reduce_(out.fire_counts.clone())  # over the ranks' slices
        self.tracker.update(fire_counts, len(x) * self.dist.world_size)
        if not metrics:
            return None
        values = torch.tensor([out.loss.item(), out.mse_loss.item(), out.sparsity_loss.item(), out.aux_loss.item(),
                               out.l0.item(), explained_variance(x if target is None else target, out.x_hat.detach())],
                              dtype=torch.float64)
        if self.dist.active:  # the mean over the ranks' slices
            values = self.dist.all_reduce_(values.to(sae.device), "mean").cpu()
        keys = ("loss", "mse_loss", "sparsity_loss", "aux_loss", "l0", "explained_variance")
        return {**dict(zip(keys, values.tolist())), "lr": lr,
                **({"sparsity_coefficient": coefficient} if coefficient is not None else {})}

    def calibrate_threshold(self, sample: dict[str, torch.Tensor], batch_size: int) -> None:
        """batchtopk: set the inference threshold from the final encoder (THRESHOLD_CALIBRATION_BATCHES)."""
        if not getattr(self.sae, "has_inference_threshold", self.spec.sae.architecture == "batchtopk"):
            return
        x = sample[self.spec.hook_name].float() * self.sae.normalization_scale
        threshold = self.sae.calibrate_threshold(x.split(batch_size))
        log.info("%s: inference threshold set to %.4g on %d buffered activations.", self.name, threshold, len(x))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
        self.tracker.load_state_dict(state["tracker"])


class Trainer:
    """Trains every dictionary of a run as configured; `Trainer(cfg).run()` does everything."""

    def __init__(self, cfg: TrainingConfig, model: Optional[LanguageModel] = None):
        self.cfg = cfg.validate()
        self.specs = cfg.dictionary_configs()
        self.run_dir = cfg.run_dir
        self.dist = init_distributed(cfg.device, cfg.distributed.collective_timeout_s)
        self.dist.check_same("training config", cfg.to_dict())
        self.device = resolve_device(rank_device(cfg.device, self.dist))
        self.data_parallel = self.dist.active and cfg.distributed.strategy == "data_parallel"
        if self.data_parallel and cfg.activations.train_batch_size % self.dist.world_size:
            raise ConfigError(f"activations.train_batch_size ({cfg.activations.train_batch_size}) is global and must "
                              f"divide by the {self.dist.world_size} ranks of this torchrun job; make it a multiple "
                              f"of {self.dist.world_size}.")
        self.total_steps = cfg.trainer.total_training_tokens // cfg.activations.train_batch_size
        if self.total_steps < 1:
            raise ConfigError("trainer.total_training_tokens is smaller than one activations.train_batch_size.")
        checkpoint = self._agreed_checkpoint()
        self._seed(cfg.seed)
        self.model = model if model is not None else load_language_model(cfg.model, self.device)
        self.hooks = tuple(dict.fromkeys(h for spec in self.specs for h in spec.hooks))
        widths = {hook: self.model.hook_width(hook) for hook in self.hooks}  # refuses unknown / non-per-token hooks
        state, trainer_state = self._read_checkpoint(checkpoint) if checkpoint else ({}, {})

        act_cfg, m = cfg.activations, self.model
        n_eval = 2 * cfg.trainer.eval_batches * act_cfg.model_batch_size
        if act_cfg.cache_path is None:
            # The evaluation sequences are the dataset's first documents; training starts after them.
            held_out = held_out_sequences(cfg.dataset, m.tokenizer, bos_token_id=m.bos_token_id,
                                          separator_token_id=m.separator_token_id, cache_dir=cfg.model.cache_dir,
                                          n_sequences=n_eval)
            eval_sequences = torch.tensor(held_out.sequences, dtype=torch.long)
            self.first_training_document = held_out.n_documents
            self.token_batches = TokenBatches(cfg.dataset, m.tokenizer, bos_token_id=m.bos_token_id,
                                              separator_token_id=m.separator_token_id,
                                              batch_size=act_cfg.model_batch_size, cache_dir=cfg.model.cache_dir,
                                              first_document=held_out.n_documents, seed=cfg.seed,
                                              position=trainer_state.get("data"))
            self.source = ActivationSource(self.model, self.hooks, self.token_batches)
        else:
            # Activations from a cache; its held-out sequences (never cached) are the evaluation's.
            manifest = read_manifest(act_cfg.cache_path)
            check_cache_matches(manifest, Path(act_cfg.cache_path), model_name=cfg.model.name, widths=widths,
                                store_dtype=act_cfg.store_dtype)
            eval_sequences = cached_eval_sequences(act_cfg.cache_path)
            if len(eval_sequences) < n_eval:
                raise ConfigError(f"The activation cache at {act_cfg.cache_path} keeps {len(eval_sequences)} held-out "
                                  f"sequences, fewer than the {n_eval} the evaluations need; lower "
                                  f"trainer.eval_batches or activations.model_batch_size.")
            eval_sequences = eval_sequences[:n_eval]
            self.first_training_document = manifest["first_document"]
            self.source = CachedActivations(act_cfg.cache_path, self.hooks, shuffle_shards=act_cfg.cache_shuffle_shards,
                                            seed=cfg.seed, position=trainer_state.get("data"))
        if self.dist.active:  # each rank runs every world_size-th batch; all ranks hold every row
            self.source = ShardedActivations(self.source, self.dist)
        self.eval_batches = list(eval_sequences.split(act_cfg.model_batch_size))
        self.buffer = ActivationBuffer(self.source, widths=widths, buffer_tokens=act_cfg.buffer_tokens,
                                       batch_size=act_cfg.train_batch_size, dtype=torch_dtype(act_cfg.store_dtype),
                                       device=self.device, seed=cfg.seed)
        self.widths = widths
        self.dictionaries = [self._dictionary_trainer(spec) for spec in self._local_specs()]
        self.step = 0
        self.tokens_seen = 0
        if checkpoint:
            self._restore(checkpoint, state, trainer_state)
        else:
            sample = {h: t.float() for h, t in self.buffer.peek(max(s.sae.decoder_bias_init_samples
                                                                    for s in self.specs)).items()}
            for d in self.dictionaries:
                d.initialize({h: t[:d.spec.sae.decoder_bias_init_samples] for h, t in sample.items()})
        self.wandb_run = None
        log.info("Training %d dictionar%s on %s (buffer: %.0f MB).", len(self.dictionaries),
                 "y" if len(self.dictionaries) == 1 else "ies", ", ".join(self.hooks), self.buffer.memory_bytes / 1e6)

    def _local_specs(self) -> list[DictionaryConfig]:
        """The dictionaries this rank trains: all of them, or (spread over ranks) every world_size-th."""
        if self.dist.active and not self.data_parallel:
            return self.specs[self.dist.rank::self.dist.world_size]
        return self.specs

    def _dictionary_trainer(self, spec: DictionaryConfig) -> DictionaryTrainer:
        cfg = self.cfg
        return DictionaryTrainer(spec, widths=self.widths, model_name=cfg.model.name, total_steps=self.total_steps,
                                 total_training_tokens=cfg.trainer.total_training_tokens, trainer_cfg=cfg.trainer,
                                 device=self.device, dtype=torch_dtype(cfg.dtype), seed=cfg.seed,
                                 dist=self.dist if self.data_parallel else SINGLE_PROCESS)

    @property
    def sae(self) -> SparseAutoencoder:
        """The SAE of a run's only dictionary."""
        if len(self.dictionaries) != 1:
            raise ValueError("This run trains several dictionaries; use trainer.dictionaries.")
        return self.dictionaries[0].sae

    # ------------------------------------------------------------------ setup

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _agreed_checkpoint(self) -> Optional[Path]:
        """Rank 0 prepares the run folder (`_prepare_run_dir`); every rank gets its answer: the
        checkpoint to resume from, or the same ConfigError."""
        outcome = None
        if self.dist.is_main:
            try:
                checkpoint = self._prepare_run_dir()
                outcome = ("resume", str(checkpoint) if checkpoint else None)
            except ConfigError as e:
                outcome = ("error", str(e))
        outcome = self.dist.broadcast_object(outcome)
        if outcome[0] == "error":
            raise ConfigError(outcome[1])
        return Path(outcome[1]) if outcome[1] else None

    def _prepare_run_dir(self) -> Optional[Path]:
        """Check what is on disk already; return the checkpoint to resume from, if any. Never
        overwrites a finished dictionary or the checkpoints of another configuration."""
        run_dir = self.run_dir
        checkpoint = latest_checkpoint(run_dir)
        if finished_dictionaries(run_dir):
            raise ConfigError(f"{run_dir} already holds trained dictionaries; choose a new exp_name or move that "
                              f"folder away.")
        saved_config = run_dir / RUN_CONFIG_FILENAME
        if checkpoint is not None:
            if not self.cfg.resume:
                raise ConfigError(f"{run_dir} has checkpoints ({checkpoint.name}) and resume=False; set resume=True to "
                                  f"continue that run, or choose a new exp_name.")
            previous = TrainingConfig.load_json(saved_config) if saved_config.is_file() else None
            if previous is not None:
                for part in ("model", "dataset", "activations"):
                    if getattr(previous, part) != getattr(self.cfg, part):
                        raise ConfigError(f"Cannot resume {run_dir}: its `{part}` config differs from this run's; "
                                          f"restore it or choose a new exp_name.")
                _check_same_dictionaries(run_dir, previous.dictionary_configs(), self.specs)
            log.info("Resuming %s from %s.", run_dir, checkpoint)
        # Checkpoints a killed run was still writing (hidden temporary folders) are thrown away.
        for leftover in (run_dir / CHECKPOINTS_FOLDER).glob(".step_*.tmp") if (run_dir / CHECKPOINTS_FOLDER).is_dir() else ():
            remove_tree(leftover)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save_json(saved_config)
        # Lines logged after the checkpoint (all of them without one) are logged again by this run.
        MetricsLog.of_run(run_dir).truncate_after(int(checkpoint.name[len("step_"):]) if checkpoint else 0)
        return checkpoint

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
        """Write a resumable checkpoint durably (a hidden temporary folder, synced, then renamed)
        and prune the oldest ones beyond `keep_checkpoints`. Rank 0 writes; every rank returns
        once it is written."""
        target = self.run_dir / CHECKPOINTS_FOLDER / f"step_{self.step}"
        states = self._on_main([(d.name, {k: v.detach().cpu() for k, v in d.sae.state_dict().items()},
                                 d.state_dict()) for d in self.dictionaries])
        if self.dist.is_main:
            self._write_checkpoint(target, states)
        self.dist.barrier()
        return target

    def _write_checkpoint(self, target: Path, states: list) -> None:
        tmp = temp_sibling(target, folder=True)
        try:
            for name, sae_state, trainer_state in states:
                folder = tmp / DICTIONARIES_FOLDER / name
                folder.mkdir(parents=True)
                save_file({k: v.contiguous() for k, v in sae_state.items()}, folder / "sae.safetensors")
                torch.save(trainer_state, folder / "optimizer.pt")
            position = self.source.position()
            torch.save({"buffer": self.buffer.state_dict(), "torch_rng": torch.get_rng_state(), "data": position},
                       tmp / "trainer_state.pt")
            state = {"step": self.step, "tokens_seen": self.tokens_seen,
                     **{k: v for k, v in position.items() if type(v) is int},  # epoch, sequences served, ...
                     "first_training_document": self.first_training_document,
                     "buffer_tokens_generated": self.buffer.tokens_generated,
                     "dictionaries": [name for name, _, _ in states], "world_size": self.dist.world_size}
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
            publish(tmp, target)
        finally:
            if tmp.exists():
                remove_tree(tmp)
        for old in list_checkpoints(self.run_dir)[:-self.cfg.trainer.keep_checkpoints]:
            remove_tree(old)

    @staticmethod
    def _read_checkpoint(checkpoint: Path) -> tuple[dict, dict]:
        """(state.json, trainer_state.pt) of a checkpoint; everything is loaded on the CPU (generator
        states must stay there) and moved where it belongs by `_restore`."""
        try:
            state = json.loads((checkpoint / "state.json").read_text())
            # weights_only: tensors and plain containers only, never arbitrary pickled objects.
            trainer_state = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"Checkpoint {checkpoint} is unreadable ({type(e).__name__}: {str(e)[:200]}); delete "
                              f"that folder to resume from an earlier one.") from e
        if "data" not in trainer_state or "dictionaries" not in state:
            raise ConfigError(f"Checkpoint {checkpoint} was written by an older version of the trainer (it has no "
                              f"epoch-aware data position or dictionary list) and cannot be resumed exactly; start a "
                              f"new exp_name.")
        return state, trainer_state

    def _restore(self, checkpoint: Path, state: dict, trainer_state: dict) -> None:
        for d in self.dictionaries:
            folder = checkpoint / DICTIONARIES_FOLDER / d.name
            try:
                d.sae.load_state_dict(load_file(folder / "sae.safetensors", device="cpu"))
                d.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
            except Exception as e:
                raise ConfigError(f"Checkpoint {checkpoint} is unreadable for dictionary {d.name!r} "
                                  f"({type(e).__name__}: {str(e)[:200]}); delete that folder to resume from an "
                                  f"earlier one.") from e
        self.buffer.load_state_dict(trainer_state["buffer"])
        torch.set_rng_state(trainer_state["torch_rng"])
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])

    # ------------------------------------------------------------------ logging

    def _log(self, records: Optional[list[dict]]) -> None:
        """Append records (one per dictionary, each with its name) to metrics.jsonl and wandb (rank 0)."""
        if not self.dist.is_main or not records:
            return
        records = [{"step": self.step, "tokens": self.tokens_seen, **r} for r in records]
        MetricsLog.of_run(self.run_dir).append(records)
        if self.wandb_run is not None:
            flat = {}
            for r in records:
                prefix = f"{r['dictionary']}/" if "dictionary" in r else ""
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
        """(name, evaluation) of every dictionary on the held-out sequences (twice as many at the
        end), on rank 0 (None on other ranks; data-parallel ranks wait while rank 0 evaluates)."""
        batches = self.eval_batches if final else self.eval_batches[: self.cfg.trainer.eval_batches]
        local = []
        if self.dist.is_main or not self.data_parallel:
            results = evaluate_dictionaries(self.model, [d.sae for d in self.dictionaries], batches,
                                            dense_threshold=self.cfg.trainer.dense_feature_threshold)
            local = [(d.name, r) for d, r in zip(self.dictionaries, results)]
        return self._on_main(local)

    def train_step(self, batch: dict[str, torch.Tensor], *, metrics: bool = True) -> Optional[list[dict]]:
        """One optimizer step of every dictionary on raw activations {hook: [batch, d]}; their
        metrics when asked."""
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
                sae = self._dictionary_trainer(spec).sae
                sae.load_state_dict(state)
            final = results[name]
            sae.save(paths[name], metrics=final.to_dict(), extra={
                "name": name, "exp_name": cfg.exp_name, "model": cfg.model.to_dict(), "dataset": cfg.dataset.path,
                "context_size": cfg.dataset.context_size, "optimizer": spec.optimizer.to_dict(),
                "training_tokens": self.tokens_seen, "training_steps": self.step})
            log.info("Saved %s: L0 %.1f, explained variance %.3f, CE loss recovered %.3f.",
                     paths[name], final.l0, final.explained_variance, final.ce_loss_recovered)
        return paths

    def run(self) -> TrainingResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._start_wandb()
        progress = tqdm(total=self.total_steps, initial=self.step, unit="step", desc=cfg.exp_name, dynamic_ncols=True,
                        disable=not cfg.logging.progress_bar or not self.dist.is_main)
        started, start_tokens = time.perf_counter(), self.tokens_seen
        for d in self.dictionaries:
            d.sae.train()
        with StopSignals() as stop:
            try:
                stopping = False
                while self.step < self.total_steps and not stopping:
                    logging_step = (self.step + 1) % cfg.logging.log_every_steps == 0 \
                        or self.step + 1 == self.total_steps
                    metrics = self.train_step(self.buffer.next_batch(), metrics=logging_step)
                    progress.update(1)
                    if logging_step:
                        tokens_per_s = (self.tokens_seen - start_tokens) / max(time.perf_counter() - started, 1e-9)
                        records = self._on_main([(d.name, {"dictionary": d.name, **m, **d.tracker.stats(),
                                                           "tokens_per_s": tokens_per_s})
                                                 for d, m in zip(self.dictionaries, metrics)])
                        if records:
                            self._log([record for _, record in records])
                            first = records[0][1]
                            progress.set_postfix(tok_s=f"{tokens_per_s:,.0f}", L0=f"{first['l0']:.1f}",
                                                 EV=f"{first['explained_variance']:.3f}", refresh=False)
                    if self.step % cfg.trainer.eval_every_steps == 0 and self.step < self.total_steps:
                        results = self.evaluate()
                        self._log(results and [{"dictionary": name, EVAL_KEY: r.scalars()} for name, r in results])
                    if cfg.trainer.checkpoint_every_steps and self.step % cfg.trainer.checkpoint_every_steps == 0 \
                            and self.step < self.total_steps:
                        self.save_checkpoint()
                    stopping = self._stop_requested(stop, logging_step)
            finally:
                progress.close()
            if stopping:
                checkpoint = self.save_checkpoint()
                if self.wandb_run is not None:
                    self.wandb_run.finish()
                raise TrainingInterrupted(stop.received or "SIGTERM", self.step, checkpoint)
            sample = self.buffer.peek(THRESHOLD_CALIBRATION_BATCHES * cfg.activations.train_batch_size)
            for d in self.dictionaries:
                d.calibrate_threshold(sample, cfg.activations.train_batch_size)
            finals = self.evaluate(final=True)
            self._log(finals and [{"dictionary": name, FINAL_EVAL_KEY: r.scalars()} for name, r in finals])
            paths = self._saved_dictionaries(finals)
        if self.wandb_run is not None:
            self.wandb_run.summary.update({f"{name}/final/{k}": v for name, r in finals
                                           for k, v in r.scalars().items()})
            self.wandb_run.finish()
        final_metrics = self.dist.broadcast_object(finals and {name: r.to_dict() for name, r in finals})
        self.dist.barrier()  # every rank returns once the dictionaries are on disk
        return TrainingResult(paths, final_metrics, self.step, self.tokens_seen)


def _check_same_dictionaries(run_dir: Path, saved: list[DictionaryConfig], now: list[DictionaryConfig]) -> None:
    """ConfigError unless a resumed run has the same dictionaries (names, hooks, `sae` configs) as
    the one that wrote the checkpoint; optimizer settings may change, as a run's `trainer` may."""
    names = [d.name for d in saved]
    if names != [d.name for d in now]:
        raise ConfigError(f"Cannot resume {run_dir}: its dictionaries are {names}, this run's are "
                          f"{[d.name for d in now]}; restore the config or choose a new exp_name.")
    for a, b in zip(saved, now):
        for part in ("hook_name", "hook_out", "sae"):
            if getattr(a, part) != getattr(b, part):
                raise ConfigError(f"Cannot resume {run_dir}: dictionary {a.name!r} has a different `{part}` config "
                                  f"than this run's; restore it or choose a new exp_name.")


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS_FOLDER
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()
             and all((p / f).is_file() for f in CHECKPOINT_FILES)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def train(cfg: TrainingConfig, model: Optional[LanguageModel] = None) -> TrainingResult:
    """Train every dictionary of `cfg` and return where each was saved with its final metrics."""
    return Trainer(cfg, model=model).run()
