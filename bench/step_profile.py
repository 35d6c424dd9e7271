"""Where a classifier training step's time goes on this machine, by operator.

The default profile's classifier (vocabulary 16,000, d_model 256, 2 layers, 4 heads, FFN 1,024,
mean pooling), one step = forward under bf16 autocast where the CPU runs bf16 natively (as
`precision: auto` trains) + cross-entropy + backward + AdamW step, on random token ids with no
padding. First the median step time with the model's dropout at `--dropout` and at 0, alternated
in one process so that a change in machine load hits both; then `torch.profiler`'s table of the
operators' own CPU time over `--profile-steps` steps at `--dropout`.

Usage: python bench/step_profile.py [--batch 32] [--seq 420] [--dropout 0.1] [--steps 5]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from data_stages import cpu_name
from torch.profiler import ProfilerActivity, profile

from transformer_pl.model import TransformerConfig
from transformer_pl.precision import native_bf16_autocast
from transformer_pl.tasks.classify.module import ClassifierModule

VOCAB_SIZE = 16_000


def build(dropout: float, seed: int) -> tuple[ClassifierModule, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    config = TransformerConfig(
        vocab_size=VOCAB_SIZE, d_model=256, n_heads=4, n_layers=2, d_ff=1024, max_len=512,
        dropout=dropout,
    )  # fmt: skip
    task = ClassifierModule(config, num_labels=2, classifier_dropout=dropout).train()
    return task, torch.optim.AdamW(task.parameters(), lr=1e-4)


def train_step(task: ClassifierModule, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    with native_bf16_autocast(batch["input_ids"].device):
        logits = task(batch["input_ids"], batch["attention_mask"]).logits
    F.cross_entropy(logits.float(), batch["labels"]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=420, help="tokens per row (IMDB mean ~300)")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20, help="operators shown")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, VOCAB_SIZE, (args.batch, args.seq), generator=generator),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
        "labels": torch.randint(0, 2, (args.batch,), generator=generator),
    }
    settings = {f"dropout {args.dropout}": args.dropout, "dropout 0": 0.0}
    models = {name: build(dropout, seed=0) for name, dropout in settings.items()}
    times: dict[str, list[float]] = {name: [] for name in settings}
    for task, optimizer in models.values():
        for _ in range(2):  # warm-up
            train_step(task, optimizer, batch)
    for _ in range(args.rounds):
        for name, (task, optimizer) in models.items():
            for _ in range(args.steps):
                started = time.perf_counter()
                train_step(task, optimizer, batch)
                times[name].append(time.perf_counter() - started)

    print(f"# {datetime.date.today()}, {cpu_name()}, torch {torch.__version__}, "
          f"Python {platform.python_version()}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"batch {args.batch} x {args.seq} tokens, median of {args.rounds}x{args.steps} steps")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        tokens = args.batch * args.seq / median
        print(f"{name}: {median * 1000:.0f} ms/step, {tokens:,.0f} tokens/s")
    first, second = medians.values()
    print(f"dropout's share of the step: {1 - second / first:.1%}")

    task, optimizer = models[f"dropout {args.dropout}"]
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.profile_steps):
            train_step(task, optimizer, batch)
    print(f"\nown CPU time by operator over {args.profile_steps} steps, dropout {args.dropout}:")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
