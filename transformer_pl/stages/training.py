"""The training stages, in run order: pretrain → finetune (evaluate and register follow in
stages/evaluation.py). pretrain trains the objective params.pretrain_objective names for
the dataset's task (word vectors, masked LM or causal LM, or nothing); finetune trains what the
task's recipe says (tasks/<task>/recipe.py).

Each is `stage(params, layout) -> summary` like the data stages. Training stages keep their
working checkpoints under `.checkpoints/<stage>-<input key>/`: re-running an interrupted stage
with the same inputs continues from its last checkpoint (same global step); any change of data or
params gives a new key, so a stale checkpoint is never resumed. On success the scratch folder is
removed and the final checkpoint is kept in the stage's output.

Under torchrun/SLURM every rank trains; only global rank 0 writes outputs and reports.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.base import StageError, StageSpec, write_json
from transformer_pl.stages.code_deps import code_deps
from transformer_pl.stages.layout import Layout
from transformer_pl.stages.runner import is_global_zero, stage_input_key

log = logging.getLogger(__name__)

CHECKPOINTS_ROOT = Path(".checkpoints")
FINAL_CHECKPOINT = "checkpoint.ckpt"
SKIPPED_MARKER = "skipped.json"
# Left in a stage's scratch folder once its outputs are exported: a retry of the stage (its
# tracking failed after training, say) returns the summary instead of training again.
FINISHED_MARKER = "finished.json"
TRAINING_METRICS = "metrics/train"

# The profile overlay can change any section, so DVC must see the profile choice and overlays.
PROFILE_KEYS = ("profile", "profiles")


def _model_config(params: Params, vocab_size: int) -> Any:
    from transformer_pl.model import TransformerConfig

    return TransformerConfig(vocab_size=vocab_size, **params.model.model_dump())


def _encoded_meta(layout: Layout, params: Params) -> dict[str, Any]:
    from transformer_pl.data.datamodules import read_meta

    meta = read_meta(layout / Layout.ENCODED)
    if meta.get("task") != params.dataset_spec.task:
        raise StageError(
            f"{Layout.ENCODED} holds a {meta.get('task')!r} dataset, params say "
            f"'{params.dataset}' (task '{params.dataset_spec.task}'): run encode first"
        )
    return meta


def _scalar_metrics(trainer: Any, prefix: str) -> dict[str, float]:
    return {
        key: round(float(value), 6)
        for key, value in trainer.callback_metrics.items()
        if key.startswith(prefix)
    }


def _fit(
    stage: str,
    params: Params,
    layout: Layout,
    build_module: Callable[[], Any],
    datamodule: Any,
    trainer_options: dict[str, Any],
    out_dir: Path,
    plots_dir: Path,
    export_metadata: dict[str, Any] | None = None,
    extra_summary: dict[str, Any] | None = None,
    completed: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fit (or resume) the module `build_module` makes, export the best weights into `out_dir`
    and the loss curves into `plots_dir`; returns the summary (with `extra_summary`'s fields,
    what the caller did before fitting, and what `completed` adds once the module has
    trained)."""
    import mlflow

    from transformer_pl.lightning.loss_curves import LossCurves
    from transformer_pl.lightning.trainer import (
        CHECKPOINT_DIR,
        LAST_CHECKPOINT,
        build_trainer,
        fit_or_resume,
    )
    from transformer_pl.loss_curve_files import write_loss_curves
    from transformer_pl.tracking import lightning_logger

    scratch = CHECKPOINTS_ROOT / stage_input_key(STAGES_BY_NAME[stage], params, layout.root)
    finished = scratch / FINISHED_MARKER
    if finished.is_file() and (out_dir / FINAL_CHECKPOINT).is_file():
        log.info("%s: trained already with these inputs (%s); not training again", stage, finished)
        return json.loads(finished.read_text(encoding="utf-8"))
    if is_global_zero():  # scratch of earlier inputs: stale, and possibly large
        for stale in CHECKPOINTS_ROOT.glob(f"{stage}-*"):
            if stale != scratch:
                shutil.rmtree(stale, ignore_errors=True)
    active = mlflow.active_run() if is_global_zero() else None
    logger = lightning_logger(active.info.run_id) if active else None
    curves = LossCurves()
    trainer = build_trainer(
        params.trainer,
        output_dir=scratch,
        seed=params.seed,
        logger=logger,
        extra_callbacks=[curves],
        **trainer_options,
    )
    if active:
        mlflow.set_tag("precision", str(trainer.precision))  # "auto" resolves per machine
    started = time.perf_counter()
    resumed_from = fit_or_resume(trainer, build_module(), datamodule, scratch / CHECKPOINT_DIR)
    wall_seconds = time.perf_counter() - started
    best = trainer.checkpoint_callback.best_model_path or str(
        scratch / CHECKPOINT_DIR / LAST_CHECKPOINT
    )
    summary = {
        "dataset": params.dataset,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "world_size": trainer.world_size,  # processes that trained; batch sizes are global
        "precision": str(trainer.precision),
        "resumed": resumed_from is not None,
        "wall_seconds": round(wall_seconds, 1),
        "best_checkpoint_score": (
            None
            if trainer.checkpoint_callback.best_model_score is None
            else round(float(trainer.checkpoint_callback.best_model_score), 6)
        ),
        **_scalar_metrics(trainer, "val/"),
        **_scalar_metrics(trainer, "train/tokens"),
        **(extra_summary or {}),
    }
    if completed is not None:
        summary = completed(summary)
    if trainer.is_global_zero:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        best_module = type(trainer.lightning_module).load_from_checkpoint(
            best, map_location="cpu", weights_only=True
        )
        best_module.export_weights(out_dir, **(export_metadata or {}))
        shutil.copyfile(best, out_dir / FINAL_CHECKPOINT)
        write_json(layout / f"{TRAINING_METRICS}/{stage}.json", summary)
        write_loss_curves(plots_dir, curves.points, f"{stage} loss ({params.dataset})")
        shutil.rmtree(scratch, ignore_errors=True)
        write_json(finished, summary)
    return summary


def pretrain(params: Params, layout: Layout) -> dict[str, Any]:
    """Self-supervised pretraining with the objective that fits the dataset's task: masked LM
    (the classifier's encoder) or causal LM (the language model finetune continues)."""
    from transformer_pl.data.datamodules import CausalLMDataModule, MaskedLMDataModule
    from transformer_pl.loss_curve_files import write_loss_curves
    from transformer_pl.pretraining.masked_lm import MaskedLMModule
    from transformer_pl.tasks.lm.module import CausalLMModule

    out_dir = layout / Layout.PRETRAINED
    settings = params.pretrain
    objective = params.pretrain_objective
    if objective is None:
        # Nothing downstream reads the weights: record why instead of training for nothing.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        summary = {"dataset": params.dataset, "skipped": True, "reason": _no_pretraining(params)}
        write_json(out_dir / SKIPPED_MARKER, summary)
        write_json(layout / f"{TRAINING_METRICS}/pretrain.json", summary)
        write_loss_curves(layout / Layout.PRETRAIN_PLOTS, {}, "pretrain: nothing trained")
        return summary
    meta = _encoded_meta(layout, params)
    config = _model_config(params, meta["vocab_size"])
    if objective == "ppmi_svd":
        return _word_vectors(params, layout, meta, config, out_dir)
    if objective == "mlm":
        datamodule: Any = MaskedLMDataModule(
            layout / Layout.ENCODED,
            settings.batch_size,
            params.seed,
            mask_probability=settings.mask_probability,
            num_workers=params.trainer.num_workers,
        )
        module_class: Any = MaskedLMModule
    else:
        datamodule = CausalLMDataModule(
            layout / Layout.ENCODED,
            settings.batch_size,
            params.seed,
            num_workers=params.trainer.num_workers,
        )
        module_class = CausalLMModule
    start: dict[str, Any] = {"embedding_init": settings.embedding_init}
    embedding = None
    if settings.embedding_init == "ppmi_svd":
        started = time.perf_counter()
        embedding, statistics = _ppmi_svd_embedding(params, layout, meta, config)
        start.update(
            {f"word_vectors_{key}": value for key, value in statistics.items()},
            word_vectors_seconds=round(time.perf_counter() - started, 1),
        )

    def build_module() -> Any:
        module = module_class(config, optim=settings.optim)
        if embedding is not None:
            # In place: a tied LM head shares this tensor. Under DDP rank 0's copy is broadcast.
            module.model.encoder.embedding.weight.data.copy_(embedding)
        return module

    return _fit(
        "pretrain",
        params,
        layout,
        build_module,
        datamodule,
        {
            "max_steps": settings.max_steps,
            "val_check_interval": settings.val_check_interval,
            "limit_val_batches": settings.limit_val_batches,
            "gradient_clip": settings.optim.gradient_clip,
            "accumulate_grad_batches": settings.optim.accumulate_grad_batches,
        },
        out_dir,
        layout / Layout.PRETRAIN_PLOTS,
        extra_summary=start,
    )


def _word_vectors(
    params: Params, layout: Layout, meta: dict[str, Any], config: Any, out_dir: Path
) -> dict[str, Any]:
    """The ppmi_svd objective: the encoder's token embedding alone (`_ppmi_svd_embedding`);
    finetune reports the other encoder weights as missing and initialises them."""
    from safetensors.torch import save_file

    from transformer_pl.loss_curve_files import write_loss_curves

    # Never resumed: it has no steps to resume, and reruns whole in minutes.
    summary: dict[str, Any] = {"dataset": params.dataset, "objective": "ppmi_svd", "resumed": False}
    if not is_global_zero():
        return summary  # a closed form on one CPU: other processes of a launch have no share
    started = time.perf_counter()
    embedding, statistics = _ppmi_svd_embedding(params, layout, meta, config)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    save_file({"encoder.embedding.weight": embedding.contiguous()}, out_dir / "model.safetensors")
    write_json(out_dir / "config.json", {"objective": "ppmi_svd", "model": config.to_dict()})
    summary.update(statistics, wall_seconds=round(time.perf_counter() - started, 1))
    write_json(layout / f"{TRAINING_METRICS}/pretrain.json", summary)
    write_loss_curves(layout / Layout.PRETRAIN_PLOTS, {}, "pretrain: word vectors, no steps")
    return summary


def _ppmi_svd_embedding(
    params: Params, layout: Layout, meta: dict[str, Any], config: Any
) -> tuple[Any, dict[str, Any]]:
    """Token embedding (vocab_size, d_model) from co-occurrence statistics of the pretraining
    text (transformer_pl/word_vectors.py), and their statistics. Deterministic for a seed, so
    every process of a launch computes the same one."""
    import datasets
    import numpy as np
    import torch

    from transformer_pl.data.encode import flat_token_ids
    from transformer_pl.model.transformer import Encoder
    from transformer_pl.pretraining.word_vectors import (
        cooccurrence_counts,
        positive_pmi,
        svd_embedding,
    )

    pretraining = datasets.load_from_disk(str(layout / Layout.ENCODED / "pretrain"))
    token_ids, row_starts = flat_token_ids(pretraining.data.column("input_ids").combine_chunks())
    counts = cooccurrence_counts(
        token_ids,
        row_starts,
        config.vocab_size,
        params.pretrain.cooccurrence_window,
        ignore_ids=meta["special_tokens"].values(),
    )
    try:
        ppmi = positive_pmi(counts)
    except ValueError as error:  # an empty pretraining split
        raise StageError(f"pretrain (ppmi_svd): {error}") from error
    # Tokens the text never shows keep the random initialisation the model would give them.
    torch.manual_seed(params.seed)
    embedding = Encoder(config).embedding.weight.detach().clone()
    seen = torch.from_numpy(np.asarray(counts.sum(axis=1)).ravel() > 0)
    vectors = svd_embedding(ppmi, config.d_model, params.seed, float(embedding.std()))
    embedding[seen] = torch.from_numpy(vectors)[seen]
    statistics = {
        "tokens": len(token_ids),
        "vocabulary_seen": round(float(seen.float().mean()), 6),
        "ppmi_nonzero": int(ppmi.nnz),
    }
    return embedding, statistics


def _no_pretraining(params: Params) -> str:
    if not params.pretrain.enabled:
        return "pretrain.enabled is false"
    if not params.finetune.from_pretrained:
        return "finetune from scratch"
    return f"task '{params.dataset_spec.task}' has no pretraining objective: finetune trains it"


def finetune(params: Params, layout: Layout) -> dict[str, Any]:
    """The dataset task's model — classifier, causal language model or encoder–decoder
    translator — from the pretrained weights or from scratch, per params."""
    from transformer_pl.tasks.catalog import task_named

    settings = params.finetune
    meta = _encoded_meta(layout, params)
    config = _model_config(params, meta["vocab_size"])
    recipe = task_named(params.dataset_spec.task).finetune_recipe(params, layout, config)
    return _fit(
        "finetune",
        params,
        layout,
        recipe.build_module,
        recipe.datamodule,
        {
            "max_epochs": settings.max_epochs,
            "max_steps": settings.max_steps,
            "gradient_clip": settings.optim.gradient_clip,
            "accumulate_grad_batches": settings.optim.accumulate_grad_batches,
            "monitor": recipe.monitor,
            "mode": recipe.mode,
            "early_stopping_patience": settings.early_stopping_patience,
        },
        layout / Layout.FINETUNED,
        layout / Layout.FINETUNE_PLOTS,
        export_metadata=recipe.export_metadata,
        extra_summary=recipe.summary,
        # What loading the pretrained weights found: known once the module was built.
        completed=lambda summary: {
            **summary,
            "from_pretrained": params.pretrain_objective is not None,
            "pretrained_missing_keys": len(recipe.loaded.get("missing", [])),
            "pretrained_unexpected_keys": len(recipe.loaded.get("unexpected", [])),
        },
    )


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="pretrain",
        run=pretrain,
        deps=(Layout.ENCODED, *code_deps(pretrain)),
        params=(
            "dataset",
            "datasets",
            *PROFILE_KEYS,
            "seed",
            "model",
            "trainer",
            "pretrain",
            "finetune.from_pretrained",
        ),
        outs=(Layout.PRETRAINED,),
        metrics=(f"{TRAINING_METRICS}/pretrain.json",),
        plots=(Layout.PRETRAIN_PLOTS,),
        trains=True,
    ),
    StageSpec(
        name="finetune",
        run=finetune,
        deps=(
            Layout.SPLITS,
            Layout.TOKENIZER,
            Layout.ENCODED,
            Layout.PRETRAINED,
            *code_deps(finetune),
        ),
        params=(
            "dataset",
            "datasets",
            *PROFILE_KEYS,
            "seed",
            "model",
            "trainer",
            "pretrain.enabled",
            "finetune",
            "tasks",
            "encode.max_length",
            "encode.block_size",
        ),
        outs=(Layout.FINETUNED,),
        metrics=(f"{TRAINING_METRICS}/finetune.json",),
        plots=(Layout.FINETUNE_PLOTS,),
        trains=True,
    ),
)
STAGES_BY_NAME = {spec.name: spec for spec in STAGES}
