"""Model quality against the TF-IDF + logistic-regression baseline, with and without pretraining.

For each dataset: the data stages once, then two arms in the same scratch workspace —
`pretrained` (pretrain → finetune → evaluate, as `tpl run` does) and `scratch` (finetune from
random weights → evaluate) — each stage in a fresh process, as `dvc repro` runs them. The
evaluate stage fits the baseline on the same splits, so every line compares numbers from the
same run. MLflow tracking and registration are left out (see "Pipeline overhead").

    .venv/bin/python bench/quality.py [--datasets imdb sst2] [--profile NAME]
        [--set finetune.max_epochs=2 ...] [--arms pretrained scratch]

`--set` overlays dotted params on the profile (values parsed as YAML). Prints a Markdown section
for bench/RESULTS.md.

Language modelling and translation (a section of its own): `--sequence PROFILE ...` runs the
whole path of each profile (its dataset, trained from scratch) and reports its headline test
metric beside its baseline and a published anchor, with wall times:

    .venv/bin/python bench/quality.py --sequence lm translate [--set decode.beam_size=5 ...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from data_stages import PROJECT_ROOT, RUN_STAGE, cpu_name, offline_env, run_child

from transformer_pl.config import deep_merge

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
    workdir: Path, dataset: str, profile: str | None, overlay: dict[str, Any], arm: str
) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    base = params["profiles"].get(profile, {}) if profile else {}
    if profile and profile not in params["profiles"]:
        raise SystemExit(f"no profile {profile!r}; params.yaml has {sorted(params['profiles'])}")
    arm_overlay = {"finetune": {"from_pretrained": arm == "pretrained"}}
    params["profiles"][BENCH_PROFILE] = deep_merge(deep_merge(base, overlay), arm_overlay)
    params.update(dataset=dataset, profile=BENCH_PROFILE)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stages(stages: tuple[str, ...], workdir: Path, env: dict[str, str]) -> dict[str, float]:
    walls = {}
    for stage in stages:
        wall, cpu, _ = run_child(RUN_STAGE, [stage], workdir, env)
        walls[stage] = wall
        print(f"  {stage}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return walls


def bench_dataset(
    dataset: str, profile: str | None, overlay: dict[str, Any], arms: list[str], env: dict
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"tpl-bench-quality-{dataset}-"))
    try:
        print(f"{dataset}: data stages", flush=True)
        write_params(workdir, dataset, profile, overlay, arms[0])
        data_seconds = sum(run_stages(DATA_STAGES, workdir, env).values())
        results: dict[str, Any] = {"data_seconds": data_seconds, "arms": {}}
        for arm in arms:
            print(f"{dataset}: {arm}", flush=True)
            write_params(workdir, dataset, profile, overlay, arm)
            walls = run_stages(ARM_STAGES[arm], workdir, env)
            metrics = json.loads((workdir / "metrics" / "evaluate.json").read_text())
            results["arms"][arm] = {"walls": walls, "metrics": metrics}
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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


def report(options: argparse.Namespace, results: dict[str, Any], load: float) -> str:
    arguments = (
        f"--datasets {' '.join(options.datasets)}"
        + (f" --profile {options.profile}" if options.profile else "")
        + f" --arms {' '.join(options.arms)}"
    )
    lines = [
        *section_header("Model quality", arguments, options, load),
        "| dataset | arm | test accuracy | baseline (TF-IDF + LR) | model − baseline | "
        "train + eval wall (s) | data wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    breakdowns = []
    for dataset, result in results.items():
        for arm, outcome in result["arms"].items():
            metrics = outcome["metrics"]
            model, baseline = metrics["test_accuracy"], metrics["baseline_test_accuracy"]
            lines.append(
                f"| {dataset} | {arm} | {model:.4f} | {baseline:.4f} | {model - baseline:+.4f} | "
                f"{sum(outcome['walls'].values()):.0f} | {result['data_seconds']:.0f} |"
            )
            breakdowns.append(f"- {dataset} {arm}: {evaluate_breakdown(outcome)}")
    return "\n".join([*lines, "", *breakdowns])


def evaluate_breakdown(outcome: dict[str, Any]) -> str:
    """Where the evaluate stage's wall went: the model's test predictions, the baseline's fit,
    and the rest (loading, the baseline's predictions, latency, plots, process start)."""
    metrics, wall = outcome["metrics"], outcome["walls"]["evaluate"]
    predict, fit = metrics["test_predict_seconds"], metrics["baseline_fit_seconds"]
    return (
        f"evaluate {wall:.0f} s = test prediction {predict:.0f} s + baseline fit {fit:.0f} s "
        f"+ the rest {wall - predict - fit:.0f} s; stage walls "
        + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in outcome["walls"].items())
    )


# Published figures to read a CPU run of the default-size profiles against.
SEQUENCE_ANCHORS = {
    "lm": "65.8 (AWD-LSTM, Merity et al. 2017; word-level test perplexity)",
    "translate": "~36 (small Transformer, public PyTorch tutorials, GPU)",
}
# The headline numbers of each task in metrics/evaluate.json: (label, key, baseline key).
SEQUENCE_METRICS = {
    "lm": [
        ("test word perplexity", "test_word_perplexity", "baseline_test_word_perplexity"),
        ("test token perplexity", "test_perplexity", "baseline_test_perplexity"),
    ],
    "translate": [
        ("test BLEU (beam)", "test_bleu", "baseline_test_bleu"),
        ("test BLEU (greedy)", "test_bleu_greedy", "baseline_test_bleu"),
        ("test chrF (beam)", "test_chrf", "baseline_test_chrf"),
    ],
}


def bench_sequence_profile(profile: str, overlay: dict[str, Any], env: dict) -> dict[str, Any]:
    """The profile's whole path from scratch, each stage in a fresh process."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    dataset = deep_merge(raw["profiles"][profile], overlay).get("dataset", raw["dataset"])
    return bench_dataset(dataset, profile, overlay, ["scratch"], env)


def sequence_report(options: argparse.Namespace, results: dict[str, Any], load: float) -> str:
    title = "Language modelling and translation quality"
    lines = [
        *section_header(title, f"--sequence {' '.join(options.sequence)}", options, load),
        "| profile | dataset | metric | model | baseline | published | train (s) | "
        "evaluate (s) | data (s) |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for profile, result in results.items():
        outcome = result["arms"]["scratch"]
        metrics, walls = outcome["metrics"], outcome["walls"]
        task = "lm" if "test_perplexity" in metrics else "translate"
        for label, key, baseline in SEQUENCE_METRICS[task]:
            anchor = (
                SEQUENCE_ANCHORS.get(profile, "") if key == SEQUENCE_METRICS[task][0][1] else ""
            )
            lines.append(
                f"| {profile} | {metrics['dataset']} | {label} | {metrics[key]:.2f} | "
                f"{metrics[baseline]:.2f} | {anchor} | {walls['finetune']:.0f} | "
                f"{walls['evaluate']:.0f} | {result['data_seconds']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["imdb", "sst2"])
    parser.add_argument("--profile", default=None, help="a params.yaml profile (default: none)")
    parser.add_argument("--set", nargs="*", default=[], help="dotted key=value overlays")
    parser.add_argument("--arms", nargs="+", default=list(ARM_STAGES), choices=list(ARM_STAGES))
    parser.add_argument(
        "--sequence", nargs="+", default=[], help="lm/translate profiles: their own section"
    )
    options = parser.parse_args()

    env = offline_env()
    load = os.getloadavg()[0]
    overlay = dotted_overlay(options.set)
    if options.sequence:
        sequence = {
            profile: bench_sequence_profile(profile, overlay, env) for profile in options.sequence
        }
        print("\n" + sequence_report(options, sequence, load))
        return
    results = {
        dataset: bench_dataset(dataset, options.profile, overlay, options.arms, env)
        for dataset in options.datasets
    }
    print("\n" + report(options, results, load))


if __name__ == "__main__":
    main()
