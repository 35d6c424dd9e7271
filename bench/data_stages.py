"""Benchmark the data path: ingest → clean → validate → split → tokenizer → encode.

Each stage runs in its own process, as `dvc repro` runs them (imports included; the MLflow
tracking around `tpl stage` is left out), on a copy of params.yaml in a scratch folder, with the
profile's data params (default: the full dataset). Reports wall time and peak resident memory
per stage, then tokenizer throughput on training reviews: `encode_batch`, `encode_batch_fast`
(no offsets), the encode stage's `datasets.Dataset.map(batched=True)` over `encode_batch_fast`,
and one `encode` call per text, with the Rust thread pool
on and off (TOKENIZERS_PARALLELISM).

    .venv/bin/python bench/data_stages.py [--dataset imdb] [--profile default] [--texts 5000]

Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean", "validate", "split", "tokenizer", "encode")

RUN_STAGE = """
import sys
from transformer_pl.params import load_params
from transformer_pl.stages import STAGES, Layout
STAGES[sys.argv[1]].run(load_params("params.yaml"), Layout())
"""

THROUGHPUT = """
import json, sys, time
import pandas as pd
from datasets import Dataset
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file("data/processed/tokenizer.json")
train = pd.read_parquet("data/processed/splits/train.parquet")
texts = train["text"].head(int(sys.argv[1])).tolist()

def timed(encode, repeats=3):
    # The best of `repeats` timings: other processes only ever add time.
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = encode()
        seconds.append(time.perf_counter() - start)
    return tokens, min(seconds)

def batched():
    return sum(len(e.ids) for i in range(0, len(texts), 1000)
               for e in tokenizer.encode_batch(texts[i : i + 1000]))

def batched_fast():
    # No offsets or token strings: what the encode stage uses.
    return sum(len(e.ids) for i in range(0, len(texts), 1000)
               for e in tokenizer.encode_batch_fast(texts[i : i + 1000]))

def one_at_a_time():
    return sum(len(tokenizer.encode(text).ids) for text in texts)

def dataset_map():
    mapped = Dataset.from_dict({"text": texts}).map(
        lambda batch: {"input_ids": [e.ids for e in tokenizer.encode_batch_fast(batch["text"])]},
        batched=True, batch_size=1000, remove_columns=["text"])
    return sum(len(ids) for ids in mapped["input_ids"])

results = {}
for name, encode in (("encode_batch", batched), ("encode_batch_fast", batched_fast),
                     ("datasets.map(batched=True), encode_batch_fast", dataset_map),
                     ("encode, one text at a time", one_at_a_time)):
    tokens, seconds = timed(encode)
    results[name] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
print(json.dumps(results))
"""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def offline_env() -> dict[str, str]:
    """The environment for stage processes: no Hub or telemetry look-ups, the local data copies."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
    }
    if not env.get("TPL_DATA_DIR") and (PROJECT_ROOT.parent / "shared" / "data").is_dir():
        env["TPL_DATA_DIR"] = str((PROJECT_ROOT.parent / "shared" / "data").resolve())
    return env


def run_child(
    code: str, args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of a Python child process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[0] if args else 'child'} failed")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imdb")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--texts", type=int, default=5000, help="texts for the throughput test")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tpl-bench-data-"))
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params.update(dataset=options.dataset, profile=options.profile)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = offline_env()
    load_before = os.getloadavg()

    stages = {}
    for stage in STAGES:
        stages[stage] = run_child(RUN_STAGE, [stage], workdir, env)
        wall, cpu, memory = stages[stage]
        print(f"{stage}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {memory:.0f} MiB", flush=True)
    reports = workdir / "data" / "reports"
    clean = json.loads((reports / "clean.json").read_text())
    encode = json.loads((reports / "encode.json").read_text())

    throughput = {}
    for parallel in ("false", "true"):
        output = subprocess.run(
            [sys.executable, "-c", THROUGHPUT, str(options.texts)],
            cwd=workdir,
            check=True,
            env={**env, "TOKENIZERS_PARALLELISM": parallel},
            capture_output=True,
            text=True,
        ).stdout
        throughput[parallel] = json.loads(output.strip().splitlines()[-1])

    wall, cpu, memory = (list(column) for column in zip(*stages.values(), strict=True))
    lines = [
        "## Data stages",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}; load average before the run "
        f"{load_before[0]:.1f} (a shared machine: other processes compete for the cores)",
        f"- Command: `.venv/bin/python bench/data_stages.py --dataset {options.dataset} "
        f"--profile {options.profile} --texts {options.texts}`",
        f"- Data: {options.dataset}, profile `{options.profile}`: {clean['rows_in']:,} rows in, "
        f"{clean['rows_kept']:,} kept, {clean['rows_quarantined']:,} quarantined; "
        f"{sum(split['tokens'] for split in encode['splits'].values()):,} tokens encoded",
        "",
        "| stage | wall (s) | CPU user+sys (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
        *(f"| {stage} | {w:.1f} | {c:.1f} | {m:.0f} |" for stage, (w, c, m) in stages.items()),
        f"| **ingest → encode** | **{sum(wall):.1f}** | **{sum(cpu):.1f}** | "
        f"**{max(memory):.0f}** |",
        "",
        f"Tokenizer throughput on {options.texts:,} training texts (tokens/s, best of 3):",
        "",
        "| method | TOKENIZERS_PARALLELISM=false | true |",
        "|---|---:|---:|",
    ]
    for method in throughput["false"]:
        off, on = throughput["false"][method], throughput["true"][method]
        lines.append(f"| {method} | {off['tokens_per_s']:,.0f} | {on['tokens_per_s']:,.0f} |")
    lines.append("")
    for parallel in ("false", "true"):
        naive = throughput[parallel]["encode, one text at a time"]["tokens_per_s"]
        for method in ("encode_batch", "encode_batch_fast"):
            ratio = throughput[parallel][method]["tokens_per_s"] / naive
            lines.append(f"- {method} / one at a time, parallelism {parallel}: {ratio:.1f}×")
    print("\n" + "\n".join(lines))
    if options.keep:
        print(f"\nscratch folder: {workdir}")
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
