"""Masked-LM throughput: our `MaskedLanguageModel` against Hugging Face `BertForMaskedLM`.

Both models: vocabulary 16,000, d_model 256, 4 layers, 4 heads, FFN 1,024, GELU, fp32 on CPU,
hidden dropout 0.1 and attention dropout 0 (so both can use SDPA's fused kernel), random token
ids with 15% of the positions replaced by a [MASK] id and labelled, no padding (an all-ones
attention mask is passed to both).

- train: one step = forward + loss + backward + AdamW step. Ours projects only the masked
  positions to the vocabulary; BertForMaskedLM projects every position and ignores the
  unlabelled ones in the loss (-100).
- infer: `torch.inference_mode()`, eval mode, full (B, T, V) logits from both: the encoder
  forward plus the vocabulary projection at every position (plus BERT's MLM transform).

Tokens/s counts every position of the batch (B × T), masked or not. Each (model, phase) runs in
a fresh process, `--rounds` times alternating ours and Hugging Face so a change in machine load
hits both; the figure is the median step time over all timed steps of all rounds. Memory is the
process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and its growth
over the RSS just before the first step (model and optimizer already built, batch made): the
growth is the activations, gradients and optimizer state of the steps.

Usage: python bench/model_throughput.py [--steps 10] [--batch 32] [--seq 128] [--threads 2]
       [--positional sinusoidal|learned|rope]
Needs the bench extra: pip install -c requirements.lock transformers==5.24.0
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import time
from typing import Any, get_args

from transformer_pl.model.config import Positional

VOCAB, D_MODEL, LAYERS, HEADS, D_FF, MAX_LEN = 16_000, 256, 4, 4, 1024, 512
MASK_ID, FIRST_REGULAR_ID = 4, 5


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _build(impl: str, positional: str):
    if impl == "ours":
        from transformer_pl.model import MaskedLanguageModel, TransformerConfig

        config = TransformerConfig(
            vocab_size=VOCAB,
            d_model=D_MODEL,
            n_heads=HEADS,
            n_layers=LAYERS,
            d_ff=D_FF,
            max_len=MAX_LEN,
            dropout=0.1,
            attention_dropout=0.0,
            positional=positional,
        )
        return MaskedLanguageModel(config)
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=D_FF,
        max_position_embeddings=MAX_LEN,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
    )
    return BertForMaskedLM._from_config(config, attn_implementation="sdpa")


def _measure(impl: str, phase: str, args: argparse.Namespace, queue: Any) -> None:
    """Runs in a child process; puts {'times': [...], 'peak_mib', 'growth_mib', 'params'}."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _build(impl, args.positional)
    batch = args.batch if phase == "train" else args.infer_batch
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(FIRST_REGULAR_ID, VOCAB, (batch, args.seq), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    masked = torch.rand(input_ids.shape, generator=gen) < args.mask_prob
    labels = input_ids.masked_fill(~masked, -100)
    input_ids = input_ids.masked_fill(masked, MASK_ID)

    if phase == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            loss.backward()
            optimizer.step()

    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(input_ids=input_ids, attention_mask=attention_mask).logits.sum()

    steps = args.steps if phase == "train" else args.infer_steps
    base = _rss_mib()
    times = []
    for i in range(args.warmup + steps):
        start = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    params = sum(p.numel() for p in model.parameters())
    queue.put({"times": times, "peak_mib": peak, "growth_mib": peak - base, "params": params})


def _run(impl: str, phase: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure, args=(impl, phase, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--infer-steps", type=int, default=5, help="timed inference steps")
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of ours and HF")
    parser.add_argument("--phases", nargs="+", default=["train", "infer"])
    parser.add_argument(
        "--positional",
        choices=get_args(Positional),
        default="sinusoidal",
        help="our model's positions (BERT's are learned); compare two runs by their ratios to HF",
    )
    args = parser.parse_args()

    import torch
    import transformers

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next(
        (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "?"
    )
    print(
        f"# {datetime.date.today()} | {model_name} | {mp.cpu_count()} CPUs | "
        f"torch {torch.__version__} | transformers {transformers.__version__} | "
        f"python {platform.python_version()} | threads {args.threads} | "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    rows = []
    for phase in args.phases:
        batch = args.batch if phase == "train" else args.infer_batch
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "hf": []}
        for _ in range(args.rounds):
            for impl in ("ours", "hf"):
                results[impl].append(_run(impl, phase, args))
        summary = {}
        for impl, runs in results.items():
            times = [t for run in runs for t in run["times"]]
            median = statistics.median(times)
            summary[impl] = {
                "tokens_per_s": batch * args.seq / median,
                "step_s": median,
                "peak_mib": max(run["peak_mib"] for run in runs),
                "growth_mib": max(run["growth_mib"] for run in runs),
                "params": runs[0]["params"],
            }
        ratio = summary["ours"]["tokens_per_s"] / summary["hf"]["tokens_per_s"]
        ours = f"ours (MaskedLanguageModel, {args.positional})"
        for impl, label in (("ours", ours), ("hf", "HF BertForMaskedLM")):
            s = summary[impl]
            rows.append(
                f"| {phase} {batch}×{args.seq} | {label} | {s['params'] / 1e6:.2f} M | "
                f"{s['tokens_per_s']:,.0f} | {s['step_s'] * 1000:,.0f} ms | "
                f"{s['peak_mib']:,.0f} MiB (+{s['growth_mib']:,.0f}) | "
                + (f"**{ratio:.2f}×** |" if impl == "ours" else "1.00× |")
            )
        print(f"{phase}: ours/HF = {ratio:.2f}x", flush=True)
    print("| phase | model | params | tokens/s | median step | peak RSS (growth) | vs HF |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
