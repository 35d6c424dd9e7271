"""The training stages, in run order: pretrain → finetune (evaluate and register follow in
stages/evaluation.py). What they train follows from the dataset's task:

    classify   pretrain: masked-LM encoder,  finetune: classifier on that encoder
                         or word vectors for its token embedding (ppmi_svd)
    lm         pretrain: causal LM           finetune: the causal LM, continued (or from scratch)
    translate  pretrain: skipped             finetune: encoder–decoder translator

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from transformer_pl.config import Params
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
    task: Any,
    datamodule: Any,
    trainer_options: dict[str, Any],
    out_dir: Path,
    export_metadata: dict[str, Any] | None = None,
    extra_summary: dict[str, Any] | None = None,
    completed: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fit (or resume) `task`, export the best weights into `out_dir`; returns the summary
    (with `extra_summary`'s fields, what the caller did before fitting, and what `completed`
    adds once the task has trained)."""
    import mlflow

    from transformer_pl.tracking import lightning_logger
    from transformer_pl.training import (
        CHECKPOINT_DIR,
        LAST_CHECKPOINT,
        build_trainer,
        fit_or_resume,
    )

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
    trainer = build_trainer(
        params.trainer, output_dir=scratch, seed=params.seed, logger=logger, **trainer_options
    )
    if active:
        mlflow.set_tag("precision", str(trainer.precision))  # "auto" resolves per machine
    started = time.perf_counter()
    resumed_from = fit_or_resume(trainer, task(), datamodule, scratch / CHECKPOINT_DIR)
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
        best_task = type(trainer.lightning_module).load_from_checkpoint(
            best, map_location="cpu", weights_only=True
        )
        best_task.export_weights(out_dir, **(export_metadata or {}))
        shutil.copyfile(best, out_dir / FINAL_CHECKPOINT)
        write_json(layout / f"{TRAINING_METRICS}/{stage}.json", summary)
        shutil.rmtree(scratch, ignore_errors=True)
        write_json(finished, summary)
    return summary


def pretrain(params: Params, layout: Layout) -> dict[str, Any]:
    """Self-supervised pretraining with the objective that fits the dataset's task: masked LM
    (the classifier's encoder) or causal LM (the language model finetune continues)."""
    from transformer_pl.data.datamodules import CausalLMDataModule, MaskedLMDataModule
    from transformer_pl.tasks import CausalLMTask, MaskedLMTask

    out_dir = layout / Layout.PRETRAINED
    settings = params.pretrain
    objective = params.pretraining
    if objective is None:
        # Nothing downstream reads the weights: record why instead of training for nothing.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        summary = {"dataset": params.dataset, "skipped": True, "reason": _no_pretraining(params)}
        write_json(out_dir / SKIPPED_MARKER, summary)
        write_json(layout / f"{TRAINING_METRICS}/pretrain.json", summary)
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
        task_class: Any = MaskedLMTask
    else:
        datamodule = CausalLMDataModule(
            layout / Layout.ENCODED,
            settings.batch_size,
            params.seed,
            num_workers=params.trainer.num_workers,
        )
        task_class = CausalLMTask
    start: dict[str, Any] = {"embedding_init": settings.embedding_init}
    embedding = None
    if settings.embedding_init == "ppmi_svd":
        started = time.perf_counter()
        embedding, statistics = _ppmi_svd_embedding(params, layout, meta, config)
        start.update(
            {f"word_vectors_{key}": value for key, value in statistics.items()},
            word_vectors_seconds=round(time.perf_counter() - started, 1),
        )

    def build_task() -> Any:
        task = task_class(config, optim=settings.optim)
        if embedding is not None:
            # In place: a tied LM head shares this tensor. Under DDP rank 0's copy is broadcast.
            task.model.encoder.embedding.weight.data.copy_(embedding)
        return task

    return _fit(
        "pretrain",
        params,
        layout,
        build_task,
        datamodule,
        {
            "max_steps": settings.max_steps,
            "val_check_interval": settings.val_check_interval,
            "limit_val_batches": settings.limit_val_batches,
            "gradient_clip": settings.optim.gradient_clip,
            "accumulate_grad_batches": settings.optim.accumulate_grad_batches,
        },
        out_dir,
        extra_summary=start,
    )


def _word_vectors(
    params: Params, layout: Layout, meta: dict[str, Any], config: Any, out_dir: Path
) -> dict[str, Any]:
    """The ppmi_svd objective: the encoder's token embedding alone (`_ppmi_svd_embedding`);
    finetune reports the other encoder weights as missing and initialises them."""
    from safetensors.torch import save_file

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
    write_json(out_dir / "config.json", {"task": "ppmi_svd", "model": config.to_dict()})
    summary.update(statistics, wall_seconds=round(time.perf_counter() - started, 1))
    write_json(layout / f"{TRAINING_METRICS}/pretrain.json", summary)
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
    from transformer_pl.word_vectors import cooccurrence_counts, positive_pmi, svd_embedding

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


@dataclass
class _Recipe:
    """How finetune trains one task's model: the task (built after the trainer has seeded
    everything), its data, the validation metric that picks the best checkpoint, and the
    fields the exported bundle's config.json gets."""

    build_task: Callable[[], Any]
    datamodule: Any
    export_metadata: dict[str, Any]
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    loaded: dict[str, list[str]] = field(default_factory=dict)  # pretrained keys, when loaded
    summary: dict[str, Any] = field(default_factory=dict)  # what was done before fitting


def finetune(params: Params, layout: Layout) -> dict[str, Any]:
    """The dataset task's model — classifier, causal language model or encoder–decoder
    translator — from the pretrained weights or from scratch, per params."""
    settings = params.finetune
    meta = _encoded_meta(layout, params)
    config = _model_config(params, meta["vocab_size"])
    recipes = {"classify": _classifier, "lm": _language_model, "translate": _translator}
    recipe = recipes[params.dataset_spec.task](params, layout, config)
    return _fit(
        "finetune",
        params,
        layout,
        recipe.build_task,
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
        export_metadata=recipe.export_metadata,
        extra_summary=recipe.summary,
        # What loading the pretrained weights found: known once the task was built.
        completed=lambda summary: {
            **summary,
            "from_pretrained": params.pretraining is not None,
            "pretrained_missing_keys": len(recipe.loaded.get("missing", [])),
            "pretrained_unexpected_keys": len(recipe.loaded.get("unexpected", [])),
        },
    )


def _finetune_data(datamodule_class: type, params: Params, layout: Layout) -> Any:
    return datamodule_class(
        layout / Layout.ENCODED,
        params.finetune.batch_size,
        params.seed,
        num_workers=params.trainer.num_workers,
    )


def _pretrained_weights(layout: Layout) -> Path:
    path = layout / Layout.PRETRAINED / "model.safetensors"
    if not path.is_file():
        raise StageError(f"{path} not found: run pretrain (or finetune.from_pretrained: false)")
    return path


def _classifier(params: Params, layout: Layout, config: Any) -> _Recipe:
    from transformer_pl.data.datamodules import ClassificationDataModule
    from transformer_pl.tasks import ClassifierTask

    settings = params.finetune
    config = replace(config, bigram_buckets=settings.bigram_buckets, bigram_dim=settings.bigram_dim)
    label_names = params.dataset_spec.label_names or []
    datamodule = _finetune_data(ClassificationDataModule, params, layout)
    summary: dict[str, Any] = {"teacher": params.teacher or "none"}
    if params.teacher == "nb_logistic":
        datamodule.train_dataset, teacher_summary = _distilled_train(
            params, layout, config.vocab_size, len(label_names)
        )
        summary.update(teacher_summary)
    recipe = _Recipe(
        build_task=lambda: None,
        datamodule=datamodule,
        export_metadata={"max_length": params.encode.max_length},
        monitor="val/accuracy",
        mode="max",
        summary=summary,
    )

    def build_task() -> Any:
        task = ClassifierTask(
            config,
            num_labels=len(label_names),
            label_names=label_names,
            pooling=settings.pooling,
            classifier_dropout=settings.classifier_dropout,
            label_smoothing=settings.label_smoothing,
            freeze_encoder=settings.freeze_encoder,
            layer_lr_decay=settings.layer_lr_decay,
            optim=settings.optim,
        )
        if params.pretraining is not None:
            keys = task.load_pretrained_encoder(_pretrained_weights(layout))
            recipe.loaded.update(missing=list(keys.missing), unexpected=list(keys.unexpected))
        return task

    recipe.build_task = build_task
    return recipe


def fit_distillation_teacher(
    params: Params,
    layout: Layout,
    vocab_size: int,
    num_labels: int,
    other_splits: tuple[str, ...] = (),
) -> tuple[Any, dict[str, list[Any]], dict[str, Any]]:
    """finetune.teacher fitted as finetune fits it (`fit_teacher`: on train, best C and its
    temperature on val, seeded), on whole texts: each split's texts from the split files,
    tokenized without special tokens. Returns the fit, the token ids of train, val and
    `other_splits`, and the labels of those that have them. Only those splits' files are read
    (finetune never names test)."""
    import numpy as np
    from tokenizers import Tokenizer

    from transformer_pl.data import read_frames
    from transformer_pl.ngram_teacher import fit_teacher

    wanted = ("train", "val", *other_splits)
    frames = read_frames(layout / Layout.SPLITS, wanted)
    tokenizer = Tokenizer.from_file(str(layout / Layout.TOKENIZER))
    texts, labels = {}, {}
    for split in wanted:
        if split not in frames:
            raise StageError(f"no {split} split in {Layout.SPLITS}: the teacher needs it")
        encodings = tokenizer.encode_batch_fast(
            frames[split]["text"].tolist(), add_special_tokens=False
        )
        texts[split] = [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]
        if "label" in frames[split]:
            labels[split] = frames[split]["label"].to_numpy()
    fit = fit_teacher(
        (texts["train"], labels["train"]),
        (texts["val"], labels["val"]),
        vocab_size,
        num_labels,
        params.finetune.teacher,
        params.seed,
    )
    return fit, texts, labels


def _distilled_train(
    params: Params, layout: Layout, vocab_size: int, num_labels: int
) -> tuple[Any, dict[str, Any]]:
    """The classifier's training rows with finetune.teacher: the train split's texts with
    one-hot targets, then the unlabeled split's with the class probabilities of an n-gram
    teacher (`fit_distillation_teacher`); `label` is each row's most probable
    class, for the training accuracy. The teacher reads whole texts: the classifier reads a
    long text's first max_length tokens in training but all of it, in windows, at test time,
    so a whole text's probabilities are the target it is read against. Every process of a
    launch fits the same teacher (seeded) rather than waiting for rank 0's. Returns the rows
    and the teacher's figures."""
    import datasets
    import numpy as np
    import pyarrow as pa
    from datasets.table import InMemoryTable

    splits = ("train", "unlabeled")
    encoded = {
        split: datasets.load_from_disk(str(layout / Layout.ENCODED / split)) for split in splits
    }
    fit, texts, labels = fit_distillation_teacher(
        params, layout, vocab_size, num_labels, other_splits=("unlabeled",)
    )
    for split in splits:
        if len(texts[split]) != len(encoded[split]):
            raise StageError(
                f"{split}: {len(texts[split])} texts in {Layout.SPLITS} but "
                f"{len(encoded[split])} encoded rows: re-run encode"
            )
    id_lists = {split: encoded[split].data.column("input_ids").combine_chunks() for split in splits}
    soft = fit.teacher.probabilities(texts["unlabeled"]).astype(np.float32)
    targets = np.concatenate([np.eye(num_labels, dtype=np.float32)[labels["train"]], soft])
    rows = pa.table(
        {
            "input_ids": pa.concat_arrays([id_lists["train"], id_lists["unlabeled"]]),
            "label": pa.array(np.concatenate([labels["train"], soft.argmax(axis=1)]), pa.int64()),
            "targets": pa.FixedSizeListArray.from_arrays(pa.array(targets.ravel()), num_labels),
        }
    )
    summary = {
        "teacher_c": fit.c,
        "teacher_temperature": round(fit.teacher.temperature, 4),
        "teacher_val_accuracy": round(fit.val_accuracy, 6),
        "teacher_train_accuracy": round(fit.train_accuracy, 6),
        "teacher_seconds": round(fit.seconds, 1),
        "teacher_mean_confidence": round(float(soft.max(axis=1).mean()), 6),
        "distilled_rows": len(soft),
    }
    return datasets.Dataset(InMemoryTable(rows)), summary


def _language_model(params: Params, layout: Layout, config: Any) -> _Recipe:
    from safetensors.torch import load_file

    from transformer_pl.data.datamodules import CausalLMDataModule
    from transformer_pl.tasks import CausalLMTask

    def build_task() -> Any:
        task = CausalLMTask(config, optim=params.finetune.optim)
        if params.pretraining is not None:
            # The same model pretrained: every weight carries over (strict).
            task.model.load_state_dict(load_file(_pretrained_weights(layout)))
        return task

    return _Recipe(
        build_task=build_task,
        datamodule=_finetune_data(CausalLMDataModule, params, layout),
        # Evaluation scores text in windows of the block size the model was trained on.
        export_metadata={"max_length": params.encode.block_size},
    )


def _translator(params: Params, layout: Layout, config: Any) -> _Recipe:
    from transformer_pl.data.datamodules import Seq2SeqDataModule
    from transformer_pl.tasks import Seq2SeqTask

    spec = params.dataset_spec
    return _Recipe(
        build_task=lambda: Seq2SeqTask(
            config, label_smoothing=params.finetune.label_smoothing, optim=params.finetune.optim
        ),
        datamodule=_finetune_data(Seq2SeqDataModule, params, layout),
        export_metadata={
            "max_length": params.encode.max_length,
            "source_language": spec.source_language,
            "target_language": spec.target_language,
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
            "encode.max_length",
            "encode.block_size",
        ),
        outs=(Layout.FINETUNED,),
        metrics=(f"{TRAINING_METRICS}/finetune.json",),
    ),
)
STAGES_BY_NAME = {spec.name: spec for spec in STAGES}
