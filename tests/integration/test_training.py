"""Tasks + Trainer factory end to end on tiny synthetic data, on CPU: every task learns, weights
export and reload, pretrained encoders load by name, resume continues, runs are reproducible."""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from planted_pickle import PlantedPickle
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader

from transformer_pl import precision
from transformer_pl.lightning.module import TransformerModule
from transformer_pl.lightning.trainer import (
    CompileModel,
    build_strategy,
    build_trainer,
    fit_or_resume,
    resolve_precision,
)
from transformer_pl.model import TransformerConfig
from transformer_pl.params import TrainerParams
from transformer_pl.pretraining.masked_lm import MaskedLMModule
from transformer_pl.stage_sections import OptimParams
from transformer_pl.tasks.classify.module import ClassifierModule
from transformer_pl.tasks.lm.module import CausalLMModule
from transformer_pl.tasks.translate.module import TranslatorModule

VOCAB = 24
PAD, BOS_OR_MASK, EOS = 0, 1, 2  # BOS for seq2seq targets, [MASK] for masked-LM inputs
FIRST_WORD = 3
SEQ_LEN = 12
OPTIM = OptimParams(learning_rate=1e-2, warmup_fraction=0.1, weight_decay=0.01)
TRAINER = TrainerParams(accelerator="cpu", devices=1, log_every_n_steps=1)


@pytest.fixture(autouse=True)
def one_cpu_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine waiting
    OpenMP threads make each step ~25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides: Any) -> TransformerConfig:
    fields: dict[str, Any] = dict(
        vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=32, dropout=0.0
    )
    return TransformerConfig(**{**fields, **overrides})


# --- synthetic data: patterns a tiny model learns in a few dozen steps --------------------------


def counting_sequence(generator: torch.Generator, length: int) -> Tensor:
    """w, w+1, w+2, … cycling through the word ids: each token follows from its predecessor."""
    n_words = VOCAB - FIRST_WORD
    start = int(torch.randint(n_words, (1,), generator=generator))
    return FIRST_WORD + (start + torch.arange(length)) % n_words


def repeated_word(generator: torch.Generator, length: int) -> Tensor:
    """w, w, …, w: a masked token is any visible one."""
    return torch.randint(FIRST_WORD, VOCAB, (1,), generator=generator).expand(length)


def right_padded(tokens: Tensor) -> tuple[Tensor, Tensor]:
    ids = torch.full((SEQ_LEN,), PAD)
    ids[: len(tokens)] = tokens
    return ids, (ids != PAD).long()


def make_examples(kind: str, n: int, seed: int) -> list[dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        length = int(torch.randint(SEQ_LEN - 4, SEQ_LEN + 1, (1,), generator=generator))
        if kind == "mlm":
            ids, mask = right_padded(repeated_word(generator, length))
            masked = (torch.rand(SEQ_LEN, generator=generator) < 0.25) & mask.bool()
            masked[0] = True  # at least one predicted token per row
            labels = torch.where(masked, ids, -100)
            examples.append(
                {
                    "input_ids": torch.where(masked, BOS_OR_MASK, ids),
                    "attention_mask": mask,
                    "labels": labels,
                }
            )
        elif kind == "causal":
            ids, mask = right_padded(counting_sequence(generator, length))
            labels = torch.where(mask.bool(), ids, -100)
            examples.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
        elif kind == "classifier":
            # class 1 contains the word FIRST_WORD somewhere, class 0 never does
            label = int(torch.randint(2, (1,), generator=generator))
            tokens = torch.randint(FIRST_WORD + 1, VOCAB, (length,), generator=generator)
            if label:
                tokens[int(torch.randint(length, (1,), generator=generator))] = FIRST_WORD
            ids, mask = right_padded(tokens)
            examples.append(
                {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(label)}
            )
        else:  # seq2seq: copy the source
            source = counting_sequence(generator, length - 1)
            source_ids, source_mask = right_padded(source)
            target_ids, target_mask = right_padded(torch.cat((torch.tensor([BOS_OR_MASK]), source)))
            labels, _ = right_padded(torch.cat((source, torch.tensor([EOS]))))
            labels = torch.where(target_mask.bool(), labels, -100)
            examples.append(
                {
                    "source_ids": source_ids,
                    "source_mask": source_mask,
                    "target_ids": target_ids,
                    "target_mask": target_mask,
                    "labels": labels,
                }
            )
    return examples


class SyntheticDataModule(pl.LightningDataModule):
    """Dict batches shaped like transformer_pl.data.datamodules'; a fixed order (no shuffling)
    so that resumed and uninterrupted runs see the same batches."""

    def __init__(self, kind: str, n_train: int = 64, n_val: int = 32, batch_size: int = 16) -> None:
        super().__init__()
        self.train_examples = make_examples(kind, n_train, seed=0)
        self.val_examples = make_examples(kind, n_val, seed=1)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_examples, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_examples, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


TASKS: dict[str, Callable[[], TransformerModule]] = {
    "mlm": lambda: MaskedLMModule(tiny_config(positional="rope"), optim=OPTIM),
    "causal": lambda: CausalLMModule(tiny_config(positional="rope"), optim=OPTIM),
    "classifier": lambda: ClassifierModule(
        tiny_config(), num_labels=2, label_names=["absent", "present"], optim=OPTIM
    ),
    "seq2seq": lambda: TranslatorModule(tiny_config(), label_smoothing=0.1, optim=OPTIM),
}


def logged_metrics(output_dir: Path) -> list[dict[str, str]]:
    """Rows of the CSV log of the latest run into output_dir."""
    versions = sorted((output_dir / "logs").glob("version_*"), key=lambda p: int(p.name[8:]))
    with (versions[-1] / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def series(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


class CrashAtStep(pl.Callback):
    """A run killed as it starts the batch after `step` (after that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


class Run(NamedTuple):
    trainer: pl.Trainer
    task: TransformerModule
    resumed_from: Path | None


def train(
    kind: str,
    output_dir: Path,
    max_steps: int,
    seed: int = 7,
    val_check_interval: int = 4,
    crash_at_step: int | None = None,
) -> Run:
    trainer = build_trainer(
        TRAINER,
        output_dir=output_dir,
        seed=seed,
        max_steps=max_steps,
        val_check_interval=val_check_interval,
        gradient_clip=1.0,
    )
    if crash_at_step is not None:
        trainer.callbacks.append(CrashAtStep(crash_at_step))
    task = TASKS[kind]()  # after build_trainer, which seeds: initialisation is seeded too
    resumed_from = fit_or_resume(trainer, task, SyntheticDataModule(kind))
    return Run(trainer, task, resumed_from)


# --- every task learns, logs its metrics, exports and reloads -----------------------------------

EPOCH_METRICS = {
    "mlm": ["loss", "perplexity", "accuracy"],
    "causal": ["loss", "perplexity", "accuracy"],
    "seq2seq": ["loss", "perplexity", "accuracy"],
    "classifier": ["loss", "accuracy", "f1_macro"],
}


@pytest.mark.parametrize("kind", list(TASKS))
def test_task_learns_logs_and_exports(kind: str, tmp_path: Path) -> None:
    trainer, task, _ = train(kind, tmp_path, max_steps=32, val_check_interval=16)
    rows = logged_metrics(tmp_path)

    val_loss = series(rows, "val/loss")
    assert len(val_loss) == 2
    train_loss = series(rows, "train/loss")
    assert sum(train_loss[-4:]) / 4 < 0.7 * sum(train_loss[:4]) / 4, train_loss
    for name in EPOCH_METRICS[kind]:
        assert series(rows, f"val/{name}"), f"val/{name} not logged"
    if kind != "classifier":
        assert val_loss[-1] < 0.7 * torch.log(torch.tensor(VOCAB)).item()  # far below chance
        ppl = series(rows, "val/perplexity")[-1]
        assert ppl == pytest.approx(torch.tensor(val_loss[-1]).exp().item(), rel=1e-4)
    assert series(rows, "train/tokens_per_sec")[-1] > 0
    assert series(rows, "lr-AdamW/decay") and series(rows, "lr-AdamW/no_decay")

    checkpoints = tmp_path / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"best.ckpt", "last.ckpt"}
    (tested,) = trainer.test(task, datamodule=SyntheticDataModule(kind), verbose=False)
    assert set(tested) == {f"test/{name}" for name in EPOCH_METRICS[kind]}

    task.eval()
    weights = task.export_weights(tmp_path / "export")
    assert weights == tmp_path / "export" / "model.safetensors"
    exported = copy.deepcopy(task.model)
    for parameter in exported.parameters():
        parameter.data.zero_()
    exported.load_state_dict(load_file(weights))  # strict: every name is in the file
    batch = next(iter(SyntheticDataModule(kind).val_dataloader()))
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, task.model(**inputs).logits)


def test_classifier_export_is_a_registry_bundle(tmp_path: Path) -> None:
    from transformer_pl.tasks.classify.bundle import read_classifier_config

    task = ClassifierModule(tiny_config(), num_labels=2, label_names=["no", "yes"], pooling="cls")
    task.export_weights(tmp_path, max_length=16)

    bundle = read_classifier_config(tmp_path)
    assert (bundle.task, bundle.label_names, bundle.pooling, bundle.max_length) == (
        "classify",
        ("no", "yes"),
        "cls",
        16,
    )
    assert bundle.model == task.config


def test_classifier_checkpoint_reloads_with_its_options(tmp_path: Path) -> None:
    trainer, task, _ = train("classifier", tmp_path, max_steps=4)
    reloaded = ClassifierModule.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert reloaded.label_names == ["absent", "present"]
    assert reloaded.optim == OPTIM
    assert reloaded.config == task.config
    for name, tensor in task.model.state_dict().items():
        torch.testing.assert_close(reloaded.model.state_dict()[name], tensor, msg=name)


# --- pretrained encoder, freezing -----------------------------------------------------------------


def test_classifier_loads_mlm_encoder_by_name(tmp_path: Path) -> None:
    mlm = MaskedLMModule(tiny_config())
    weights = mlm.export_weights(tmp_path / "mlm")
    classifier = ClassifierModule(tiny_config(), num_labels=2)

    keys = classifier.load_pretrained_encoder(weights)

    assert keys.missing == [] and keys.unexpected == []
    for name, tensor in mlm.model.encoder.state_dict().items():
        torch.testing.assert_close(classifier.model.encoder.state_dict()[name], tensor)


def test_classifier_reports_missing_and_unexpected_encoder_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = load_file(MaskedLMModule(tiny_config()).export_weights(tmp_path / "mlm"))
    del state["encoder.layers.1.ffn.w_2.bias"]
    state["encoder.adapter.weight"] = torch.zeros(2, 2)
    save_file(state, tmp_path / "edited.safetensors")
    classifier = ClassifierModule(tiny_config(), num_labels=2)

    keys = classifier.load_pretrained_encoder(tmp_path / "edited.safetensors")

    assert keys.missing == ["encoder.layers.1.ffn.w_2.bias"]
    assert keys.unexpected == ["encoder.adapter.weight"]
    assert "encoder.layers.1.ffn.w_2.bias" in caplog.text
    assert "encoder.adapter.weight" in caplog.text


def test_classifier_summarises_an_embedding_only_file_per_layer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Word vectors (ppmi_svd) export the embedding alone: the warning names one group per
    layer with its count, not every tensor."""
    classifier = ClassifierModule(tiny_config(), num_labels=2)
    embedding = classifier.model.encoder.embedding.weight.detach().clone()
    save_file({"encoder.embedding.weight": embedding}, tmp_path / "vectors.safetensors")

    keys = classifier.load_pretrained_encoder(tmp_path / "vectors.safetensors")

    per_layer = {
        f"encoder.layers.{index}": sum(
            name.startswith(f"encoder.layers.{index}.") for name in keys.missing
        )
        for index in range(tiny_config().n_layers)
    }
    assert all(per_layer.values())
    warning = next(
        record.getMessage() for record in caplog.records if "missing" in record.getMessage()
    )
    assert f"{len(keys.missing)} encoder tensors missing" in warning
    for prefix, count in per_layer.items():
        assert f"{prefix}.* ({count})" in warning
    assert not any(name in warning for name in keys.missing if name.startswith("encoder.layers."))


def test_classifier_rejects_weights_without_an_encoder(tmp_path: Path) -> None:
    causal = CausalLMModule(tiny_config())
    weights = causal.export_weights(tmp_path / "causal")  # decoder.*, no encoder.*
    with pytest.raises(ValueError, match="no 'encoder"):
        ClassifierModule(tiny_config(), num_labels=2).load_pretrained_encoder(weights)


def test_frozen_encoder_stays_fixed_while_the_head_trains(tmp_path: Path) -> None:
    trainer = build_trainer(TRAINER, output_dir=tmp_path, seed=0, max_steps=4, monitor=None)
    task = ClassifierModule(
        tiny_config(dropout=0.1), num_labels=2, freeze_encoder=True, optim=OPTIM
    )
    encoder_before = {k: v.clone() for k, v in task.model.encoder.state_dict().items()}
    head_before = task.model.head.weight.clone()

    trainer.fit(task, datamodule=SyntheticDataModule("classifier"))

    assert not any(p.requires_grad for p in task.model.encoder.parameters())
    task.train()
    assert task.model.head.training and not task.model.encoder.training  # no encoder dropout
    for name, tensor in task.model.encoder.state_dict().items():
        torch.testing.assert_close(tensor, encoder_before[name], msg=name)
    assert not torch.equal(task.model.head.weight, head_before)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in task.model.head.parameters()}


def test_layer_lr_decay_reaches_the_optimizer(tmp_path: Path) -> None:
    trainer = build_trainer(TRAINER, output_dir=tmp_path, seed=0, max_steps=1, monitor=None)
    task = ClassifierModule(tiny_config(), num_labels=2, layer_lr_decay=0.5, optim=OPTIM)
    trainer.fit(task, datamodule=SyntheticDataModule("classifier"))
    scales = {group["lr_scale"] for group in trainer.optimizers[0].param_groups}
    assert scales == {1.0, 0.5, 0.25, 0.125}  # head/final norm, layer 1, layer 0, embeddings


# --- resume, determinism, precision ------------------------------------------------------------


def test_crashed_run_resumes_at_its_step_and_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    # 64 examples / batch 16 = 4 steps per epoch: the crash comes at the epoch boundary after
    # step 8, where the data order of a resumed run is the same (see fit_or_resume).
    straight = train("mlm", tmp_path / "straight", max_steps=12)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train("mlm", tmp_path / "resumed", max_steps=12, crash_at_step=8)

    resumed = train("mlm", tmp_path / "resumed", max_steps=12)

    assert resumed.resumed_from == tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert series(logged_metrics(tmp_path / "resumed"), "step")[0] >= 8  # steps 9-12 only
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    for name, tensor in straight.task.model.state_dict().items():
        torch.testing.assert_close(resumed.task.model.state_dict()[name], tensor, msg=name)


def test_last_checkpoint_is_the_latest_validation_even_when_not_the_best(tmp_path: Path) -> None:
    train("classifier", tmp_path, max_steps=6, val_check_interval=2)

    def step(name: str) -> int:
        checkpoint = torch.load(tmp_path / "checkpoints" / name, weights_only=True, mmap=True)
        return checkpoint["global_step"]

    assert step("best.ckpt") == 2  # the later validations scored worse: the case at stake
    assert step("last.ckpt") == 6


def test_checkpoint_of_another_task_configuration_is_not_resumed(tmp_path: Path) -> None:
    train("mlm", tmp_path, max_steps=4)
    trainer = build_trainer(TRAINER, output_dir=tmp_path, seed=7, max_steps=4)
    other = MaskedLMModule(tiny_config(), optim=OPTIM.model_copy(update={"learning_rate": 1e-3}))
    assert fit_or_resume(trainer, other, SyntheticDataModule("mlm")) is None
    assert trainer.global_step == 4


def plant_checkpoint(last: Path, kind: str, marker: Path) -> None:
    """Replace `last` (a real checkpoint) with what a crash or an attacker leaves there."""
    if kind == "malicious pickle":
        torch.save({"hyper_parameters": PlantedPickle(marker), "state_dict": {}}, last)
    elif kind == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif kind == "empty":
        last.write_bytes(b"")
    else:  # loads, but is no Lightning checkpoint
        torch.save(7, last)


@pytest.mark.parametrize("kind", ["malicious pickle", "truncated", "empty", "not a checkpoint"])
def test_unloadable_last_checkpoint_is_moved_aside_and_training_starts_over(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        train("mlm", tmp_path, max_steps=8, crash_at_step=4)
    last = tmp_path / "checkpoints" / "last.ckpt"
    marker = tmp_path / "planted-pickle-ran"
    plant_checkpoint(last, kind, marker)

    rerun = train("mlm", tmp_path, max_steps=8)

    assert not marker.exists(), "the planted pickle was executed"
    assert rerun.resumed_from is None
    assert rerun.trainer.global_step == 8
    assert series(logged_metrics(tmp_path), "step")[0] < 4  # from scratch: steps 1-8
    (aside,) = last.parent.glob("last.ckpt.corrupt-*")
    assert f"{last} is unreadable" in caplog.text and aside.name in caplog.text
    assert torch.load(last, weights_only=True)["global_step"] == 8  # a fresh one replaced it


def test_same_seed_gives_identical_runs(tmp_path: Path) -> None:
    losses = []
    for run in ("a", "b"):
        train("classifier", tmp_path / run, max_steps=6)
        losses.append(series(logged_metrics(tmp_path / run), "train/loss"))
    assert losses[0] == losses[1]
    train("classifier", tmp_path / "c", max_steps=6, seed=8)
    assert series(logged_metrics(tmp_path / "c"), "train/loss") != losses[0]


def test_compile_option_compiles_the_inner_model_in_place(tmp_path: Path) -> None:
    trainer = build_trainer(
        TRAINER.model_copy(update={"compile": True}), output_dir=tmp_path, seed=0
    )
    (compile_callback,) = [c for c in trainer.callbacks if isinstance(c, CompileModel)]
    task = TASKS["classifier"]()
    names = list(task.model.state_dict())

    compile_callback.setup(trainer, task, stage="fit")  # compiling itself waits for the 1st call

    assert task.model._compiled_call_impl is not None
    assert list(task.model.state_dict()) == names  # checkpoints and exports keep their names


def test_strategies_map_to_lightning_objects() -> None:
    assert build_strategy("auto") == "auto"
    assert isinstance(build_strategy("ddp"), DDPStrategy)
    fsdp = build_strategy("fsdp")
    assert isinstance(fsdp, FSDPStrategy)
    assert fsdp._state_dict_type == "full"  # one consolidated checkpoint file


def test_precision_auto_is_bf16_only_on_cpus_with_bf16_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # a profile may opt in
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    assert resolve_precision("32-true", "cpu") == "32-true"
    monkeypatch.undo()
    native = "bf16-mixed" if precision.cpu_has_native_bf16() else "32-true"
    trainer = build_trainer(TRAINER, output_dir=tmp_path, seed=0)
    assert trainer.precision == native
