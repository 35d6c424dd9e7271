"""What finetune trains for classification: a classifier over the pretrained encoder (or its
word vectors), on the train split's labels — and, with tasks.classify.teacher, on an n-gram
teacher's class probabilities for every unlabeled text (distillation)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from transformer_pl.model import TransformerConfig
from transformer_pl.params import Params
from transformer_pl.stages.base import StageError
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.inputs import finetune_datamodule, with_pretrained_encoder
from transformer_pl.tasks.protocol import Recipe


def classifier_recipe(params: Params, layout: Layout, config: TransformerConfig) -> Recipe:
    from transformer_pl.data.datamodules import ClassificationDataModule
    from transformer_pl.tasks.classify.module import ClassifierModule

    settings = params.tasks.classify
    config = replace(config, bigram_buckets=settings.bigram_buckets, bigram_dim=settings.bigram_dim)
    label_names = params.dataset_spec.label_names
    datamodule = finetune_datamodule(ClassificationDataModule, params, layout)
    teacher = settings.teacher_for(params.dataset_spec)
    summary: dict[str, Any] = {"teacher": teacher or "none"}
    if teacher == "nb_logistic":
        datamodule.train_dataset, teacher_summary = _distilled_train(
            params, layout, config.vocab_size, len(label_names)
        )
        summary.update(teacher_summary)
    recipe = Recipe(
        build_module=lambda: None,
        datamodule=datamodule,
        export_metadata={"max_length": params.encode.max_length},
        monitor="val/accuracy",
        mode="max",
        summary=summary,
    )

    def build_module() -> Any:
        module = ClassifierModule(
            config,
            num_labels=len(label_names),
            label_names=label_names,
            pooling=settings.pooling,
            classifier_dropout=settings.classifier_dropout,
            label_smoothing=settings.label_smoothing,
            freeze_encoder=settings.freeze_encoder,
            layer_lr_decay=settings.layer_lr_decay,
            optim=params.finetune.optim,
        )
        return with_pretrained_encoder(module, params, layout, recipe)

    recipe.build_module = build_module
    return recipe


def fit_distillation_teacher(
    params: Params,
    layout: Layout,
    vocab_size: int,
    num_labels: int,
    other_splits: tuple[str, ...] = (),
) -> tuple[Any, dict[str, list[Any]], dict[str, Any]]:
    """tasks.classify.teacher fitted as finetune fits it (`fit_teacher`: on train, best C and its
    temperature on val, seeded), on whole texts: each split's texts from the split files,
    tokenized without special tokens. Returns the fit, the token ids of train, val and
    `other_splits`, and the labels of those that have them. Only those splits' files are read
    (finetune never names test)."""
    import numpy as np
    from tokenizers import Tokenizer

    from transformer_pl.data import read_frames
    from transformer_pl.tasks.classify.teacher import fit_teacher

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
        params.tasks.classify.teacher,
        params.seed,
    )
    return fit, texts, labels


def _distilled_train(
    params: Params, layout: Layout, vocab_size: int, num_labels: int
) -> tuple[Any, dict[str, Any]]:
    """The classifier's training rows with tasks.classify.teacher: the train split's texts with
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
