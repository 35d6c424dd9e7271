"""Model quality beside its baselines, over seeds: val for choosing, test read once per run.

For each dataset and seed: the data stages (the seed decides the val split), then each arm in
the same scratch workspace — `pretrained` (pretrain → finetune → evaluate, as `tpl run` does)
and `scratch` (finetune from random weights → evaluate) — each stage in a fresh process, as
`dvc repro` runs them. evaluate fits the baselines (TF-IDF + LR and NBSVM for classification,
unigram frequencies for a language model, the untranslated source for translation, the CoNLL
shared-task phrase lookup for NER, the sliding window for QA) on the same
splits and writes the paired 95% interval of model minus baseline, so every line compares
numbers from the same run. MLflow tracking and registration are left out (see "Pipeline
overhead").

    .venv/bin/python bench/quality.py [--datasets imdb sst2] [--profile NAME] [--seeds 42 7 13]
        [--set finetune.max_epochs=2 ...] [--arms pretrained scratch]

`--set` overlays dotted params on the profile (values parsed as YAML). Prints a Markdown section
for bench/RESULTS.md: per system, mean ± sd over the seeds of val and test, and per seed the
test difference from the model with its paired interval.

Language modelling and translation: `--sequence PROFILE ...` runs the whole path of each
profile (its dataset, trained from scratch) under each seed and reports the same table:

    .venv/bin/python bench/quality.py --sequence lm translate [--seeds 42 7]

NER and QA: their datasets with their bench profiles, e.g.

    .venv/bin/python bench/quality.py --datasets conll2003 --profile ner --arms pretrained
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml
from data_stages import PROJECT_ROOT, RUN_STAGE, cpu_name, offline_env, run_child

from transformer_pl.params import deep_merge

DATA_STAGES = ("ingest", "clean", "validate", "split", "tokenizer", "encode")
ARM_STAGES = {
    "pretrained": ("pretrain", "finetune", "evaluate"),
    "scratch": ("finetune", "evaluate"),
}
BENCH_PROFILE = "quality-bench"  # the overlay this script writes into the scratch params.yaml


def dotted_overlay(assignments: list[str]) -> dict[str, Any]:
    """{"a": {"b": 2}} from ["a.b=2"]; values are YAML (numbers, booleans, lists)."""
    overlay: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise SystemExit(f"--set expects key=value, got {assignment!r}")
        *parents, leaf = key.split(".")
        node = overlay
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overlay


def write_params(
    workdir: Path,
    dataset: str,
    profile: str | None,
    overlay: dict[str, Any],
    arm: str,
    seed: int,
) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    base = params["profiles"].get(profile, {}) if profile else {}
    if profile and profile not in params["profiles"]:
        raise SystemExit(f"no profile {profile!r}; params.yaml has {sorted(params['profiles'])}")
    arm_overlay = {"finetune": {"from_pretrained": arm == "pretrained"}}
    params["profiles"][BENCH_PROFILE] = deep_merge(deep_merge(base, overlay), arm_overlay)
    params.update(dataset=dataset, profile=BENCH_PROFILE, seed=seed)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stages(stages: tuple[str, ...], workdir: Path, env: dict[str, str]) -> dict[str, float]:
    walls = {}
    for stage in stages:
        wall, cpu, _ = run_child(RUN_STAGE, [stage], workdir, env)
        walls[stage] = wall
        print(f"  {stage}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return walls


def bench_seed(
    dataset: str,
    profile: str | None,
    overlay: dict[str, Any],
    arms: list[str],
    seed: int,
    env: dict,
) -> dict[str, Any]:
    """One seed of a dataset: its data stages, then each arm; the evaluate metrics of each."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tpl-bench-quality-{dataset}-{seed}-"))
    try:
        print(f"{dataset} seed {seed}: data stages", flush=True)
        write_params(workdir, dataset, profile, overlay, arms[0], seed)
        data_seconds = sum(run_stages(DATA_STAGES, workdir, env).values())
        results: dict[str, Any] = {"data_seconds": data_seconds, "arms": {}}
        for arm in arms:
            print(f"{dataset} seed {seed}: {arm}", flush=True)
            write_params(workdir, dataset, profile, overlay, arm, seed)
            walls = run_stages(ARM_STAGES[arm], workdir, env)
            metrics = json.loads((workdir / "metrics" / "evaluate.json").read_text())
            results["arms"][arm] = {"walls": walls, "metrics": metrics}
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_dataset(
    dataset: str,
    profile: str | None,
    overlay: dict[str, Any],
    arms: list[str],
    seeds: list[int],
    env: dict,
) -> dict[int, dict[str, Any]]:
    return {seed: bench_seed(dataset, profile, overlay, arms, seed, env) for seed in seeds}


def section_header(
    title: str, arguments: str, options: argparse.Namespace, load: float
) -> list[str]:
    """A results section's title, date, machine and the command that reproduces it."""
    return [
        f"## {title}",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}; load average before the run {load:.1f}",
        f"- Command: `.venv/bin/python bench/quality.py {arguments}"
        + "".join(f" --set {item}" for item in options.set)
        + "`",
        "",
    ]


# Per task: the headline metric (val_<m>, test_<m>), the baselines evaluate writes it for, and
# whether lower is better.
TASK_METRICS = {
    "classify": ("accuracy", ("baseline", "nbsvm"), False),
    "lm": ("perplexity", ("baseline",), True),
    "translate": ("bleu", ("baseline",), False),
    "tag": ("f1", ("baseline",), False),
    "qa": ("f1", ("baseline",), False),
}
SYSTEM_NAMES = {"model": "model", "baseline": "baseline", "nbsvm": "NBSVM"}


def task_of(metrics: dict[str, Any]) -> str:
    """The task whose evaluate wrote `metrics`, by a key only it writes."""
    for task, key in (
        ("classify", "test_accuracy"),
        ("lm", "test_perplexity"),
        ("translate", "test_bleu"),
        ("tag", "baseline_phrases"),
        ("qa", "test_exact_match"),
    ):
        if key in metrics:
            return task
    raise ValueError(f"no task's metrics: {sorted(metrics)[:10]}")


def system_value(metrics: dict[str, Any], system: str, split: str, metric: str) -> float:
    """A system's metric on a split, whatever way evaluate names it (`baseline_test_bleu`,
    `nbsvm_test_accuracy`)."""
    key = f"{split}_{metric}" if system == "model" else f"{system}_{split}_{metric}"
    return float(metrics[key])


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def quality_rows(name: str, arm: str, seeds: dict[int, dict[str, Any]]) -> list[str]:
    """Table rows of one dataset/profile and arm: the model and each baseline."""
    outcomes = {seed: result["arms"][arm] for seed, result in seeds.items()}
    first = next(iter(outcomes.values()))["metrics"]
    metric, baselines, _ = TASK_METRICS[task_of(first)]
    rows = []
    for system in ("model", *baselines):
        val = [system_value(o["metrics"], system, "val", metric) for o in outcomes.values()]
        test = [system_value(o["metrics"], system, "test", metric) for o in outcomes.values()]
        if system == "model":
            intervals = "–"
            walls = [sum(o["walls"].values()) for o in outcomes.values()]
            wall = f"{statistics.mean(walls):.0f}"
        else:
            prefix = f"test_{metric}_minus_{system}"
            intervals = "; ".join(
                f"{o['metrics'][prefix]:+.4f} [{o['metrics'][f'{prefix}_ci95_low']:+.4f}, "
                f"{o['metrics'][f'{prefix}_ci95_high']:+.4f}]"
                for o in outcomes.values()
            )
            wall = ""
        rows.append(
            f"| {name} | {arm} | {SYSTEM_NAMES[system]} | {mean_sd(val)} | {mean_sd(test)} | "
            f"{intervals} | {wall} |"
        )
    return rows


def report(
    title: str, arguments: str, options: argparse.Namespace, results: dict, load: float
) -> str:
    lines = [
        *section_header(title, arguments, options, load),
        f"Seeds: {', '.join(map(str, options.seeds))}. Mean ± sd over the seeds; per seed, the "
        "model minus the baseline on test with its paired-bootstrap 95% interval.",
        "",
        "| dataset | arm | system | val | test | model − system on test, per seed [95% CI] | "
        "train + eval wall (s) |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    breakdowns = []
    for name, seeds in results.items():
        arms = next(iter(seeds.values()))["arms"]
        for arm in arms:
            lines += quality_rows(name, arm, seeds)
            for seed, result in seeds.items():
                breakdowns.append(f"- {name} {arm} seed {seed}: {evaluate_breakdown(result, arm)}")
    return "\n".join([*lines, "", *breakdowns])


def evaluate_breakdown(result: dict[str, Any], arm: str) -> str:
    outcome = result["arms"][arm]
    return f"data {result['data_seconds']:.0f} s; stage walls " + ", ".join(
        f"{stage} {seconds:.0f} s" for stage, seconds in outcome["walls"].items()
    )


def bench_sequence_profile(
    profile: str, overlay: dict[str, Any], seeds: list[int], env: dict
) -> dict[int, dict[str, Any]]:
    """The profile's whole path from scratch, each stage in a fresh process, under each seed."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    dataset = deep_merge(raw["profiles"][profile], overlay).get("dataset", raw["dataset"])
    return bench_dataset(dataset, profile, overlay, ["scratch"], seeds, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["imdb", "sst2"])
    parser.add_argument("--profile", default=None, help="a params.yaml profile (default: none)")
    parser.add_argument("--set", nargs="*", default=[], help="dotted key=value overlays")
    parser.add_argument("--arms", nargs="+", default=list(ARM_STAGES), choices=list(ARM_STAGES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 7, 13])
    parser.add_argument(
        "--sequence", nargs="+", default=[], help="lm/translate profiles: their own section"
    )
    options = parser.parse_args()

    env = offline_env()
    load = os.getloadavg()[0]
    overlay = dotted_overlay(options.set)
    if options.sequence:
        results = {
            profile: bench_sequence_profile(profile, overlay, options.seeds, env)
            for profile in options.sequence
        }
        arguments = f"--sequence {' '.join(options.sequence)}"
        title = "Language modelling and translation quality"
    else:
        results = {
            dataset: bench_dataset(
                dataset, options.profile, overlay, options.arms, options.seeds, env
            )
            for dataset in options.datasets
        }
        arguments = (
            f"--datasets {' '.join(options.datasets)}"
            + (f" --profile {options.profile}" if options.profile else "")
            + f" --arms {' '.join(options.arms)}"
        )
        title = "Model quality"
    arguments += f" --seeds {' '.join(map(str, options.seeds))}"
    print("\n" + report(title, arguments, options, results, load))


if __name__ == "__main__":
    main()
