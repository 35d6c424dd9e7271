"""How far the distilled classifier is from its n-gram teacher, and where.

For a workspace whose finetune stage distilled `tasks.classify.teacher` (a folder `tpl run` or
`dvc repro` ran in: params.yaml, data/processed, models/finetune), this refits the teacher as
finetune did (same params, seed, splits and tokenizer) and reads the val split with both (never
test: a diagnostic that guides choices reads val, DESIGN.md "Evaluation protocol"): the
classifier as evaluate reads it (`classify_texts`: long texts in windows), the teacher whole.
It prints each one's val accuracy and their agreement, then both per band of the teacher's
confidence and per text length (fits the classifier's window or not), then the agreement on a
sample of the classifier's own distillation rows, read as it trained on them (the encoded
unlabeled rows). Agreement on its own rows no higher than on val says the classifier underfits
the teacher rather than overfitting it. The teacher's C and temperature were chosen on val, so
its val accuracy is slightly optimistic.

    .venv/bin/python bench/distillation_gap.py WORKSPACE [--profile NAME] [--sample 4000]

Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import datasets
import numpy as np
import torch
from data_stages import cpu_name

from transformer_pl.data import read_frames
from transformer_pl.params import load_params
from transformer_pl.precision import native_bf16_autocast
from transformer_pl.stages import Layout
from transformer_pl.tasks.classify.bundle import load_classifier_bundle
from transformer_pl.tasks.classify.predict import PROBABILITY_PREFIX, classify_texts
from transformer_pl.tasks.classify.recipe import fit_distillation_teacher
from transformer_pl.tasks.sequence import pad_right, token_ids

CONFIDENCE_BANDS = (0.7, 0.9, 0.99)  # the teacher's top probability: edges between bands
BATCH_SIZE = 64


@torch.no_grad()
def row_probabilities(model: torch.nn.Module, rows: list[list[int]], pad_id: int) -> np.ndarray:
    """Class probabilities of encoded rows (`[CLS] ids [SEP]`, as finetune fed them)."""
    probabilities = np.empty((len(rows), model.head.out_features))
    for start in range(0, len(rows), BATCH_SIZE):
        input_ids = pad_right(
            [torch.tensor(row) for row in rows[start : start + BATCH_SIZE]], value=pad_id
        )
        with native_bf16_autocast(input_ids.device):
            logits = model(input_ids, (input_ids != pad_id).long()).logits
        probabilities[start : start + len(input_ids)] = logits.float().softmax(-1).numpy()
    return probabilities


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--sample", type=int, default=4000, help="distillation rows compared")
    args = parser.parse_args()

    params = load_params(args.workspace / "params.yaml", args.profile)
    if params.tasks.classify.teacher_for(params.dataset_spec) is None:
        raise SystemExit(
            f"{args.workspace}: finetune distils no teacher (tasks.classify.teacher.kind)"
        )
    layout = Layout(args.workspace)
    model, tokenizer, config = load_classifier_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    fit, ids, labels = fit_distillation_teacher(
        params, layout, config.model.vocab_size, config.num_labels
    )
    frames = read_frames(layout / Layout.SPLITS, ("val", "unlabeled"))

    teacher = fit.teacher.probabilities(ids["val"])
    answers = classify_texts(model, tokenizer, config, frames["val"]["text"].tolist())
    student = answers[[f"{PROBABILITY_PREFIX}{name}" for name in config.label_names]].to_numpy()
    truth = labels["val"]
    teacher_right = teacher.argmax(1) == truth
    student_right = student.argmax(1) == truth
    agree = teacher.argmax(1) == student.argmax(1)

    unlabeled = datasets.load_from_disk(str(layout / Layout.ENCODED / "unlabeled"))
    sample = np.random.default_rng(params.seed).choice(
        len(unlabeled), min(args.sample, len(unlabeled)), replace=False
    )
    rows = unlabeled.select(sample)["input_ids"]
    unlabeled_texts = frames["unlabeled"]["text"].iloc[sample].tolist()
    own_teacher = fit.teacher.probabilities(
        [np.asarray(row) for row in token_ids(tokenizer, unlabeled_texts)]
    )
    own_student = row_probabilities(model, rows, config.model.pad_token_id)
    own_agree = own_teacher.argmax(1) == own_student.argmax(1)
    own_kl = float(
        (own_teacher * (np.log(own_teacher + 1e-12) - np.log(own_student + 1e-12))).sum(1).mean()
    )

    print(f"### Distillation gap: {params.dataset}, {args.workspace}\n")
    machine = f"{cpu_name()}, Python {platform.python_version()}"
    print(f"- Date: {datetime.date.today()}; machine: {machine}")
    print(f"- Command: `.venv/bin/python bench/distillation_gap.py {args.workspace}`")
    temperature = fit.teacher.temperature
    print(f"- Teacher: C = {fit.c}, T = {temperature:.3f}, val {percent(fit.val_accuracy)}")
    print(
        f"\nVal ({len(truth):,} texts): teacher {percent(teacher_right.mean())}, classifier "
        f"{percent(student_right.mean())}, agreement {percent(agree.mean())}; only the teacher "
        f"right {percent((teacher_right & ~student_right).mean())}, only the classifier "
        f"{percent((student_right & ~teacher_right).mean())}.\n"
    )
    print("| on val | texts | teacher | classifier | agreement |")
    print("|---|---:|---:|---:|---:|")
    band = np.digitize(teacher.max(1), CONFIDENCE_BANDS)
    edges = ("", *map(str, CONFIDENCE_BANDS), "")
    groups = [
        (f"teacher confidence {edges[i]}–{edges[i + 1]}", band == i)
        for i in range(len(CONFIDENCE_BANDS) + 1)
    ]
    fits_window = np.array([len(text) <= config.max_length - 2 for text in ids["val"]])
    groups += [
        (f"fits {config.max_length - 2} tokens", fits_window),
        ("longer (read in windows)", ~fits_window),
    ]
    for name, members in groups:
        print(
            f"| {name} | {members.sum():,} | {percent(teacher_right[members].mean())} | "
            f"{percent(student_right[members].mean())} | {percent(agree[members].mean())} |"
        )
    print(
        f"\nOwn distillation rows ({len(rows):,} of the unlabeled split, first "
        f"{config.max_length - 2} tokens): agreement {percent(own_agree.mean())}, "
        f"KL(teacher ‖ classifier) {own_kl:.3f} nats."
    )


if __name__ == "__main__":
    main()
