"""The Trainer factory: one `pl.Trainer` built from params, and resuming an interrupted stage.

Usage from a stage (order matters: `build_trainer` seeds everything, so build the task after it
and weight initialisation is seeded too):

    trainer = build_trainer(params.trainer, output_dir=out, max_steps=..., seed=params.seed, ...)
    task = MaskedLMModule(config, optim=params.pretrain.optim)
    fit_or_resume(trainer, task, datamodule)   # continues from out/checkpoints/last.ckpt
    best = trainer.checkpoint_callback.best_model_path
"""

from __future__ import annotations

import logging
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy

from transformer_pl.atomic import move_aside
from transformer_pl.lightning.throughput import TokenThroughput
from transformer_pl.model import DecoderLayer, EncoderLayer
from transformer_pl.params import TrainerParams
from transformer_pl.precision import has_native_bf16

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best"  # ModelCheckpoint adds ".ckpt"
# What a checkpoint needs to resume from it: the task (checked against the one to train) and
# where training stopped.
RESUME_KEYS = frozenset({"hyper_parameters", "state_dict", "loops", "global_step"})


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Precision "auto" is the fastest one the hardware runs natively: bf16-mixed on a CUDA GPU
    that supports bf16 (16-mixed on older ones) and on a CPU with bf16 instructions, 32-true on
    other CPUs. Results are reproducible on one machine either way; a profile that must match
    across machines names a precision. Stages record the one they trained in."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if has_native_bf16("cuda") else "16-mixed"
    if accelerator in ("auto", "cpu") and has_native_bf16("cpu"):
        return "bf16-mixed"
    return "32-true"


def build_strategy(name: Literal["auto", "ddp", "fsdp"]) -> str | Strategy:
    """Strategy "ddp" runs one process per device and all-reduces gradients; launched under
    `torchrun` it joins torchrun's processes, otherwise Lightning re-runs the command once per
    extra device. "fsdp" (CUDA only) shards parameters, gradients and optimizer state, one unit
    per Transformer layer; its checkpoints are consolidated into one file, so they load like any
    other."""
    if name == "ddp":
        return DDPStrategy(find_unused_parameters=False)
    if name == "fsdp":
        return FSDPStrategy(auto_wrap_policy={EncoderLayer, DecoderLayer}, state_dict_type="full")
    return "auto"


def processes_per_node(trainer_params: TrainerParams) -> int:
    """The processes a run of these params has on each node, as Lightning counts them: `devices`,
    or for "auto" every visible CUDA GPU (one process on CPU and MPS)."""
    if trainer_params.devices != "auto":
        return trainer_params.devices
    if trainer_params.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


class CompileModel(Callback):
    """torch.compile the task's inner model at setup. `nn.Module.compile` compiles in place, so
    state-dict names (checkpoints, exported weights) do not change. Meant for GPUs: on small
    CPU models the compile time outweighs what it saves."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.model.compile()


def progress_bar(refresh_rate: int) -> Callback:
    """Rich in a terminal; in logs (CI, orchestrators) a plain bar that redraws only every
    `refresh_rate` steps instead of flooding the log."""
    if sys.stdout.isatty():
        return RichProgressBar()
    return TQDMProgressBar(refresh_rate=refresh_rate)


def build_trainer(
    trainer_params: TrainerParams,
    *,
    output_dir: str | Path,
    seed: int,
    max_steps: int = -1,
    max_epochs: int | None = None,
    val_check_interval: int | float | None = None,
    limit_val_batches: int | float | None = None,
    gradient_clip: float | None = None,
    accumulate_grad_batches: int = 1,
    logger: Logger | None = None,
    monitor: str | None = "val/loss",
    mode: Literal["min", "max"] = "min",
    early_stopping_patience: int | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> pl.Trainer:
    """A Trainer configured from `trainer_params` (and the stage's run length), writing into
    `output_dir`: checkpoints/{best,last}.ckpt and, without a logger (e.g. an MLFlowLogger),
    CSV logs under logs/.

    val_check_interval: an int validates every that many training batches, counted across
    epoch boundaries (suits max_steps runs); a float is a fraction of an epoch; None: once per
    epoch. The best checkpoint is the one with the best `monitor` value; with
    `early_stopping_patience`, training stops after that many validations without improvement.

    Data loaders are used as given: under DDP each rank's loader must yield that rank's shard,
    as the project's datamodules do.
    """
    pl.seed_everything(seed, workers=True)
    output_dir = Path(output_dir)
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=output_dir / CHECKPOINT_DIR,
            filename=BEST_CHECKPOINT,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            # Without a monitor it saves at every validation, and last.ckpt with it.
            save_last=monitor is None,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # a rerun overwrites best.ckpt, never best-v1.ckpt
        ),
        LearningRateMonitor(logging_interval="step"),
        TokenThroughput(),
        progress_bar(trainer_params.log_every_n_steps),
    ]
    if monitor is not None:
        # Lightning's save_last writes last.ckpt only when the monitored value improves, so a
        # crash after a worse validation would resume from an earlier one: this one writes it
        # at every validation, whatever the score.
        callbacks.append(
            ModelCheckpoint(
                dirpath=output_dir / CHECKPOINT_DIR,
                filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                monitor=None,
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    if early_stopping_patience is not None and monitor is not None:
        callbacks.append(
            EarlyStopping(monitor=monitor, mode=mode, patience=early_stopping_patience)
        )
    if trainer_params.compile:
        callbacks.append(CompileModel())
    callbacks += extra_callbacks
    if logger is None:
        logger = CSVLogger(output_dir, name="logs")
    step_interval = isinstance(val_check_interval, int)
    return pl.Trainer(
        accelerator=trainer_params.accelerator,
        devices=trainer_params.devices,
        num_nodes=trainer_params.num_nodes,
        strategy=build_strategy(trainer_params.strategy),
        precision=resolve_precision(trainer_params.precision, trainer_params.accelerator),
        deterministic=trainer_params.deterministic,
        max_steps=max_steps,
        max_epochs=max_epochs,
        val_check_interval=val_check_interval,
        check_val_every_n_epoch=None if step_interval else 1,
        limit_val_batches=limit_val_batches,
        gradient_clip_val=gradient_clip,
        gradient_clip_algorithm="norm",
        accumulate_grad_batches=accumulate_grad_batches,
        log_every_n_steps=trainer_params.log_every_n_steps,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=output_dir,
        # The datamodules shard their global batches across ranks themselves
        # (transformer_pl.data.datamodules); Lightning's DistributedSampler would re-shard them.
        use_distributed_sampler=False,
    )


def _checkpoint_dir(trainer: pl.Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
        raise ValueError("the trainer has no ModelCheckpoint with a dirpath: pass checkpoint_dir")
    return Path(callback.dirpath)


def _load_resumable(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the checkpoint at `path`, None), or (None, why it cannot be resumed from). It is
    unpickled with `weights_only=True` (tensors, containers and primitive values only), so a
    planted pickle is refused, never run."""
    try:
        # mmap: only the hyper-parameters are read here, not the weights and optimizer state.
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"WeightsUnpickler error: ([^.]*)", str(error))
        return None, f"refused by the weights-only unpickler: {refused[1] if refused else error}"
    except Exception as error:  # torch raises whatever its zip reader met in a damaged file
        return None, f"not a loadable checkpoint: {str(error).splitlines()[0].split('. ')[0]}"
    if (
        not isinstance(saved, dict)
        or not saved.keys() >= RESUME_KEYS
        or not isinstance(saved["hyper_parameters"], dict)
    ):
        return None, f"not a Lightning checkpoint: {sorted(RESUME_KEYS)} expected"
    return saved, None


def fit_or_resume(
    trainer: pl.Trainer,
    task: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    checkpoint_dir: str | Path | None = None,
) -> Path | None:
    """`trainer.fit`, continuing from `<checkpoint_dir>/last.ckpt` when a previous run of the same
    task left one: weights, optimizer and scheduler state, global step and epoch are restored, so
    the run ends at the same max_steps/max_epochs as an uninterrupted one. A checkpoint saved with
    other task hyper-parameters is ignored (the run starts over); one that does not load is moved
    aside with a warning naming it (the run starts over, instead of failing at every retry).
    Checkpoints load with `weights_only=True` only: what resume needs is tensors and plain values.
    Returns the checkpoint resumed from, or None.

    checkpoint_dir: defaults to the trainer's ModelCheckpoint directory.

    Resumption is exact at an epoch boundary. Mid-epoch, a dataloader without `state_dict`
    restarts the epoch (Lightning warns), and RNG states are not checkpointed, so the data order
    and dropout masks after resuming differ from an uninterrupted run.
    """
    last = Path(checkpoint_dir or _checkpoint_dir(trainer)) / LAST_CHECKPOINT
    resume_from: Path | None = None
    saved, problem = _load_resumable(last) if last.is_file() else (None, None)
    if problem and trainer.is_global_zero:  # other ranks write nothing; they start over too
        move_aside(last, problem)
    elif problem:
        log.warning("not resuming from %s: %s", last, problem)
    elif saved is not None:
        if saved["hyper_parameters"] == dict(task.hparams):
            resume_from = last
            log.info("resuming from %s", last)
        else:
            log.warning("ignoring %s: saved with other task hyper-parameters", last)
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    return resume_from
