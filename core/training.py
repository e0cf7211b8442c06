"""The trainer: activations in, a trained and evaluated dictionary out.

Layout of a run folder `results/<exp_name>/`:

    config.json              the full TrainingConfig
    metrics.jsonl            one JSON object per logged step / evaluation
    checkpoints/step_<n>/    resumable state (sae.safetensors, trainer_state.pt, state.json)
    dictionary/              the final dictionary (config.json + sae.safetensors, metrics inside)

Resumption is exact: a checkpoint holds the SAE, Adam's moments, the step and tokens seen, the
shuffle buffer's contents and generator, the feature-activity tracker, the RNG, and the data
position (epoch, the dataset's shard and offset, the tokens carried over; see
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

from .activations import ActivationBuffer, ActivationSource, expected_norm_scale
from .config import ConfigError, TrainingConfig, resolve_device, torch_dtype
from .data import TokenBatches, held_out_sequences
from .evals import EvalResult, FeatureActivityTracker, evaluate, explained_variance
from .files import atomic_write, publish, remove_tree, temp_sibling
from .lm import LanguageModel, load_language_model
from .sae import SparseAutoencoder

log = logging.getLogger(__name__)

CHECKPOINT_FILES = ("sae.safetensors", "trainer_state.pt", "state.json")
THRESHOLD_CALIBRATION_BATCHES = 8
"""Training batches (from the shuffle buffer, not consumed) on which a batchtopk dictionary's
inference threshold is set from the final encoder before it is saved."""


class TrainingResult(NamedTuple):
    dictionary_path: Path
    """Folder of the final dictionary (load it with `load_dictionary`)."""
    metrics: dict
    """Final evaluation metrics (also saved in the dictionary's config.json)."""
    steps: int
    """Optimizer steps taken in total."""
    tokens: int
    """Training tokens seen in total."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a checkpoint; start the same run again to resume."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(f"{signal_name} received: stopped at step {step} and saved {checkpoint}; run the same "
                         f"command again to resume from there.")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


def learning_rate(step: int, total_steps: int, cfg) -> float:
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


def sparsity_coefficient(step: int, cfg: TrainingConfig) -> Optional[float]:
    """The L1 (relu) / L0 (jumprelu) coefficient at `step`, ramped over sparsity_warmup_steps."""
    base = {"relu": cfg.sae.l1_coefficient, "jumprelu": cfg.sae.l0_coefficient}.get(cfg.sae.architecture)
    if base is None:
        return None
    warmup = cfg.trainer.sparsity_warmup_steps
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


class Trainer:
    """Trains one dictionary as configured; `Trainer(cfg).run()` does everything."""

    def __init__(self, cfg: TrainingConfig, model: Optional[LanguageModel] = None):
        self.cfg = cfg.validate()
        self.run_dir = cfg.run_dir
        self.device = resolve_device(cfg.device)
        self.total_steps = cfg.trainer.total_training_tokens // cfg.activations.train_batch_size
        if self.total_steps < 1:
            raise ConfigError("trainer.total_training_tokens is smaller than one activations.train_batch_size.")
        checkpoint = self._prepare_run_dir()
        self._seed(cfg.seed)
        self.model = model if model is not None else load_language_model(cfg.model, self.device)
        act_cfg = cfg.activations
        self.d_in = self.model.hook_width(act_cfg.hook_name)  # also refuses unknown / non-per-token hooks
        state, trainer_state = self._read_checkpoint(checkpoint) if checkpoint else ({}, {})

        # The evaluation sequences are the dataset's first documents; training starts after them.
        m = self.model
        held_out = held_out_sequences(cfg.dataset, m.tokenizer, bos_token_id=m.bos_token_id,
                                      separator_token_id=m.separator_token_id, cache_dir=cfg.model.cache_dir,
                                      n_sequences=2 * cfg.trainer.eval_batches * act_cfg.model_batch_size)
        self.eval_batches = list(torch.tensor(held_out.sequences, dtype=torch.long).split(act_cfg.model_batch_size))
        self.token_batches = TokenBatches(cfg.dataset, m.tokenizer, bos_token_id=m.bos_token_id,
                                          separator_token_id=m.separator_token_id,
                                          batch_size=act_cfg.model_batch_size, cache_dir=cfg.model.cache_dir,
                                          first_document=held_out.n_documents, seed=cfg.seed,
                                          position=trainer_state.get("data"))
        self.source = ActivationSource(self.model, act_cfg.hook_name, self.token_batches)
        self.buffer = ActivationBuffer(self.source, d_in=self.d_in, buffer_tokens=act_cfg.buffer_tokens,
                                       batch_size=act_cfg.train_batch_size, dtype=torch_dtype(act_cfg.store_dtype),
                                       device=self.device, seed=cfg.seed)
        self.sae = SparseAutoencoder(cfg.sae, self.d_in, hook_name=act_cfg.hook_name,
                                     model_name=cfg.model.name, device=self.device, dtype=torch_dtype(cfg.dtype))
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=cfg.trainer.lr,
                                          betas=(cfg.trainer.adam_beta1, cfg.trainer.adam_beta2))
        dead_threshold = cfg.sae.resolve_dead_tokens_threshold(cfg.trainer.total_training_tokens)
        self.tracker = FeatureActivityTracker(self.sae.d_sae, window_tokens=cfg.trainer.feature_density_window_tokens,
                                              dead_tokens_threshold=dead_threshold,
                                              dense_threshold=cfg.trainer.dense_feature_threshold, device=self.device)
        self.step = 0
        self.tokens_seen = 0
        if checkpoint:
            self._restore(checkpoint, state, trainer_state)
        else:
            self._initialize_sae()
        self.wandb_run = None

    # ------------------------------------------------------------------ setup

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _prepare_run_dir(self) -> Optional[Path]:
        """Check what is on disk already; return the checkpoint to resume from, if any. Never
        overwrites a finished dictionary or the checkpoints of another configuration."""
        run_dir = self.run_dir
        checkpoint = latest_checkpoint(run_dir)
        if (run_dir / "dictionary" / "config.json").is_file():
            raise ConfigError(f"{run_dir} already holds a trained dictionary; choose a new exp_name or move that "
                              f"folder away.")
        saved_config = run_dir / "config.json"
        if checkpoint is not None:
            if not self.cfg.resume:
                raise ConfigError(f"{run_dir} has checkpoints ({checkpoint.name}) and resume=False; set resume=True to "
                                  f"continue that run, or choose a new exp_name.")
            previous = TrainingConfig.load_json(saved_config) if saved_config.is_file() else None
            if previous is not None:
                for part in ("model", "dataset", "activations", "sae"):
                    if getattr(previous, part) != getattr(self.cfg, part):
                        raise ConfigError(f"Cannot resume {run_dir}: its `{part}` config differs from this run's; "
                                          f"restore it or choose a new exp_name.")
            log.info("Resuming %s from %s.", run_dir, checkpoint)
        # Checkpoints a killed run was still writing (hidden temporary folders) are thrown away.
        for leftover in (run_dir / "checkpoints").glob(".step_*.tmp") if (run_dir / "checkpoints").is_dir() else ():
            remove_tree(leftover)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save_json(saved_config)
        # Lines logged after the checkpoint (all of them without one) are logged again by this run.
        _truncate_metrics(run_dir / "metrics.jsonl", int(checkpoint.name[len("step_"):]) if checkpoint else 0)
        return checkpoint

    @torch.no_grad()
    def _initialize_sae(self) -> None:
        """Normalization constant and decoder bias from a sample of training activations."""
        n = self.cfg.sae.decoder_bias_init_samples
        sample = self.buffer.peek(n).float()
        if self.cfg.sae.normalize_activations == "expected_average_only_in":
            self.sae.normalization_scale.fill_(expected_norm_scale(sample))
        self.sae.initialize_decoder_bias(sample * float(self.sae.normalization_scale))

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint durably (a hidden temporary folder, synced, then renamed)
        and prune the oldest ones beyond `keep_checkpoints`."""
        target = self.run_dir / "checkpoints" / f"step_{self.step}"
        tmp = temp_sibling(target, folder=True)
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.sae.state_dict().items()},
                      tmp / "sae.safetensors")
            torch.save({"optimizer": self.optimizer.state_dict(), "buffer": self.buffer.state_dict(),
                        "tracker": self.tracker.state_dict(), "torch_rng": torch.get_rng_state(),
                        "data": self.token_batches.position()}, tmp / "trainer_state.pt")
            state = {"step": self.step, "tokens_seen": self.tokens_seen, "epoch": self.token_batches.epoch,
                     "sequences_served": self.token_batches.sequences_served,
                     "first_training_document": self.token_batches.sequences.first_document,
                     "buffer_tokens_generated": self.buffer.tokens_generated}
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
            publish(tmp, target)
        finally:
            if tmp.exists():
                remove_tree(tmp)
        for old in list_checkpoints(self.run_dir)[:-self.cfg.trainer.keep_checkpoints]:
            remove_tree(old)
        return target

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
        return state, trainer_state

    def _restore(self, checkpoint: Path, state: dict, trainer_state: dict) -> None:
        try:
            self.sae.load_state_dict(load_file(checkpoint / "sae.safetensors", device="cpu"))
        except Exception as e:
            raise ConfigError(f"Checkpoint {checkpoint} is unreadable ({type(e).__name__}: {str(e)[:200]}); delete "
                              f"that folder to resume from an earlier one.") from e
        self.optimizer.load_state_dict(trainer_state["optimizer"])  # moves the moments to the parameters' device
        self.buffer.load_state_dict(trainer_state["buffer"])
        self.tracker.load_state_dict(trainer_state["tracker"])
        torch.set_rng_state(trainer_state["torch_rng"])
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])

    # ------------------------------------------------------------------ logging

    def _log(self, record: dict) -> None:
        record = {"step": self.step, "tokens": self.tokens_seen, **record}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=self.step)

    def _start_wandb(self) -> None:
        lc = self.cfg.logging
        if lc.wandb_mode == "off":
            return
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("logging.wandb_mode needs the wandb package: `pip install wandb`.") from e
        self.wandb_run = wandb.init(project=lc.wandb_project, entity=lc.wandb_entity, name=self.cfg.exp_name,
                                    mode=lc.wandb_mode, dir=str(self.run_dir), config=self.cfg.to_dict(),
                                    resume="allow", id=self.cfg.exp_name.replace("/", "_"))

    # ------------------------------------------------------------------ training

    def evaluate(self, final: bool = False) -> EvalResult:
        batches = self.eval_batches if final else self.eval_batches[: self.cfg.trainer.eval_batches]
        return evaluate(self.model, self.sae, batches, dense_threshold=self.cfg.trainer.dense_feature_threshold)

    def train_step(self, x: torch.Tensor) -> dict:
        """One optimizer step on raw activations x [batch, d_in]."""
        x = x.to(self.device, self.sae.W_dec.dtype) * self.sae.normalization_scale
        lr = learning_rate(self.step, self.total_steps, self.cfg.trainer)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        coefficient = sparsity_coefficient(self.step, self.cfg)
        out = self.sae.training_forward(x, sparsity_coefficient=coefficient, dead_mask=self.tracker.dead_mask)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.sae.remove_gradient_parallel_to_decoder_directions()
        if self.cfg.trainer.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.cfg.trainer.max_grad_norm)
        self.optimizer.step()
        self.sae.set_decoder_norm_to_unit_norm()
        self.tracker.update(out.fire_counts, len(x))
        self.step += 1
        self.tokens_seen += len(x)
        return {"loss": out.loss.item(), "mse_loss": out.mse_loss.item(), "sparsity_loss": out.sparsity_loss.item(),
                "aux_loss": out.aux_loss.item(), "l0": out.l0.item(),
                "explained_variance": explained_variance(x, out.x_hat.detach()), "lr": lr,
                **({"sparsity_coefficient": coefficient} if coefficient is not None else {})}

    def _calibrate_threshold(self) -> None:
        """batchtopk: set the inference threshold from the final encoder (see THRESHOLD_CALIBRATION_BATCHES)."""
        if self.cfg.sae.architecture != "batchtopk":
            return
        batch = self.cfg.activations.train_batch_size
        held = self.buffer.peek(THRESHOLD_CALIBRATION_BATCHES * batch).float() * self.sae.normalization_scale
        threshold = self.sae.calibrate_threshold(held.split(batch))
        log.info("batchtopk inference threshold set to %.4g on %d buffered activations.", threshold, len(held))

    def run(self) -> TrainingResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._start_wandb()
        progress = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=not cfg.logging.progress_bar,
                        desc=cfg.exp_name, dynamic_ncols=True)
        started, start_tokens = time.perf_counter(), self.tokens_seen
        self.sae.train()
        with StopSignals() as stop:
            try:
                while self.step < self.total_steps and stop.received is None:
                    metrics = self.train_step(self.buffer.next_batch())
                    progress.update(1)
                    if self.step % cfg.logging.log_every_steps == 0 or self.step == self.total_steps:
                        elapsed = time.perf_counter() - started
                        tokens_per_s = (self.tokens_seen - start_tokens) / max(elapsed, 1e-9)
                        record = {**metrics, **self.tracker.stats(), "tokens_per_s": tokens_per_s}
                        self._log(record)
                        progress.set_postfix(tok_s=f"{tokens_per_s:,.0f}", L0=f"{metrics['l0']:.1f}",
                                             EV=f"{metrics['explained_variance']:.3f}", refresh=False)
                    if self.step % cfg.trainer.eval_every_steps == 0 and self.step < self.total_steps:
                        self._log({"eval": self.evaluate().scalars()})
                    if cfg.trainer.checkpoint_every_steps and self.step % cfg.trainer.checkpoint_every_steps == 0 \
                            and self.step < self.total_steps:
                        self.save_checkpoint()
            finally:
                progress.close()
            if stop.received is not None:
                checkpoint = self.save_checkpoint()
                if self.wandb_run is not None:
                    self.wandb_run.finish()
                raise TrainingInterrupted(stop.received, self.step, checkpoint)
            self._calibrate_threshold()
            final = self.evaluate(final=True)
            self._log({"final_eval": final.scalars()})
            path = self.sae.save(self.run_dir / "dictionary", metrics=final.to_dict(), extra={
                "exp_name": cfg.exp_name, "model": cfg.model.to_dict(), "dataset": cfg.dataset.path,
                "context_size": cfg.dataset.context_size, "training_tokens": self.tokens_seen,
                "training_steps": self.step})
        if self.wandb_run is not None:
            self.wandb_run.summary.update(final.scalars())
            self.wandb_run.finish()
        log.info("Saved the dictionary to %s: L0 %.1f, explained variance %.3f, CE loss recovered %.3f.",
                 path, final.l0, final.explained_variance, final.ce_loss_recovered)
        return TrainingResult(path, final.to_dict(), self.step, self.tokens_seen)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()
             and all((p / f).is_file() for f in CHECKPOINT_FILES)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after `step` (the resumed run logs them again), and a last line
    torn by a kill, in one atomic rewrite."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    atomic_write(path, "".join(line + "\n" for line in kept))


def train(cfg: TrainingConfig, model: Optional[LanguageModel] = None) -> TrainingResult:
    """Train a dictionary as configured and return where it was saved with its final metrics."""
    return Trainer(cfg, model=model).run()
