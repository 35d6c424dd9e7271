"""What orchestration costs: the tiny pipeline through Prefect + MLflow + DVC (`tpl run`) against
the same stage functions called one after another in one plain Python process, in the same
session on the same machine; then `tpl run` again with nothing changed (answered without Prefect),
and `tpl run --force-flow` with nothing changed (a Prefect flow run of cached stages).

Each arm runs in a fresh process in its own scratch workspace (a copy of params.yaml, dvc.yaml
and the code files the stages depend on; git + DVC initialised; its own MLflow store), so both
pay their imports. The arms share one Prefect home, whose database the first flow ever run there
creates (timed once, before the arms), as a user's ~/.prefect is created by their first run.
`tpl run` starts Prefect's temporary API server unless one is configured: it is measured both
ways, the second against a server already running (as for scheduled runs, `make prefect-server`).
The time a bare flow takes to start a temporary server is measured on its own.

    .venv/bin/python bench/pipeline_overhead.py [--profile tiny] [--dataset imdb] [--repeats 2]
        [--write]

Prints a "Pipeline overhead" section; `--write` puts it into bench/RESULTS.md (replacing that
section only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "bench" / "RESULTS.md"
SECTION_TITLE = "## Pipeline overhead"
ARMS = (
    "first_use",
    "direct",
    "bare_flow",
    "tpl_run",
    "tpl_run_unchanged",
    "tpl_run_forced",
    "tpl_run_served",
)

DIRECT = """
import sys
from transformer_pl.params import load_params
from transformer_pl.stages import STAGES, Layout

params = load_params("params.yaml", sys.argv[1])
for spec in STAGES.values():
    spec.run(params, Layout())
"""
BARE_FLOW = """
from prefect import flow

flow(name="bare")(lambda: None)()
"""
OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # as the Makefile sets it
}


def make_workspace(root: Path, dataset: str | None) -> Path:
    """A scratch project: params.yaml, dvc.yaml and the stages' code deps, under git and DVC."""
    from transformer_pl.stages import STAGES

    produced = {out for spec in STAGES.values() for out in (*spec.outs, *spec.metrics, *spec.plots)}
    for dep in sorted({dep for spec in STAGES.values() for dep in spec.deps} - produced):
        (root / dep).parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT_ROOT / dep).is_dir():
            shutil.copytree(
                PROJECT_ROOT / dep, root / dep, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(PROJECT_ROOT / dep, root / dep)
    shutil.copy(PROJECT_ROOT / "dvc.yaml", root / "dvc.yaml")
    params = (PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8")
    if dataset:
        params = re.sub(r"(?m)^dataset: .*$", f"dataset: {dataset}", params, count=1)
    (root / "params.yaml").write_text(params, encoding="utf-8")
    subprocess.run(["git", "init", "--quiet"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=root, check=True)
    return root


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(f"{seconds:7.1f} s  {' '.join(command)[:80]!r}", file=sys.stderr)
    if result.returncode != 0:
        sys.exit(
            f"{' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return seconds


def environment(workspace: Path, prefect_home: Path) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("PREFECT_API_URL", None)  # Prefect's temporary server, as `make run` without a server
    env["PREFECT_HOME"] = str(prefect_home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace / 'mlflow.db'}"
    # The workspace holds copies of some package files (DVC deps): import the package itself.
    env["PYTHONSAFEPATH"] = "1"
    if "TPL_DATA_DIR" not in env and (PROJECT_ROOT.parent / "shared" / "data").is_dir():
        env["TPL_DATA_DIR"] = str(PROJECT_ROOT.parent / "shared" / "data")
    return env


def measure(profile: str, dataset: str | None, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each arm, `repeats` times, the arms interleaved so load drifts hit all."""
    from pipelines.temporary_server import TemporaryServer

    tpl = str(Path(sys.executable).parent / "tpl")
    run = [tpl, "run", "--profile", profile]
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="tpl-overhead-") as scratch:
        # One Prefect home for every arm, as ~/.prefect is: its database is created once, by the
        # first flow ever run there (timed on its own), not by every pipeline run.
        prefect_home = Path(scratch) / "prefect-home"
        env = environment(Path(scratch), prefect_home)
        seconds["first_use"].append(timed([sys.executable, "-c", BARE_FLOW], Path(scratch), env))
        os.environ.update({**OFFLINE_ENV, "PREFECT_HOME": str(prefect_home)})
        running_server = TemporaryServer()  # the same API `prefect server start` serves
        try:
            running_server.wait_until_ready()
            for repeat in range(repeats):
                direct = make_workspace(Path(scratch) / f"direct-{repeat}", dataset)
                env = environment(direct, prefect_home)
                seconds["direct"].append(
                    timed([sys.executable, "-c", DIRECT, profile], direct, env)
                )
                seconds["bare_flow"].append(timed([sys.executable, "-c", BARE_FLOW], direct, env))
                orchestrated = make_workspace(Path(scratch) / f"orchestrated-{repeat}", dataset)
                env = environment(orchestrated, prefect_home)
                seconds["tpl_run"].append(timed(run, orchestrated, env))
                seconds["tpl_run_unchanged"].append(timed(run, orchestrated, env))
                seconds["tpl_run_forced"].append(timed([*run, "--force-flow"], orchestrated, env))
                served = make_workspace(Path(scratch) / f"served-{repeat}", dataset)
                env = environment(served, prefect_home)
                env["PREFECT_API_URL"] = running_server.api_url
                seconds["tpl_run_served"].append(timed(run, served, env))
        finally:
            running_server.stop()
    return seconds


def section(seconds: dict[str, list[float]], profile: str, dataset: str | None) -> str:
    best = {arm: min(values) for arm, values in seconds.items()}
    spread = {arm: f"{min(values):.1f}–{max(values):.1f}" for arm, values in seconds.items()}
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    command = f"bench/pipeline_overhead.py --profile {profile}" + (
        f" --dataset {dataset}" if dataset else ""
    )

    def overhead(arm: str) -> str:
        extra = best[arm] - best["direct"]
        return f"**{extra:.1f}** ({best[arm] / best['direct']:.2f}×)"

    rows = [
        ("stage functions called directly, one process", "direct"),
        ("`tpl run` (Prefect's temporary server + MLflow + DVC)", "tpl_run"),
        ("`tpl run` against a running Prefect server", "tpl_run_served"),
        ("`tpl run` again, nothing changed (answered without Prefect)", "tpl_run_unchanged"),
        ("`tpl run --force-flow`, nothing changed (a flow run of cached stages)", "tpl_run_forced"),
        ("for scale: an empty flow (starts Prefect's temporary server)", "bare_flow"),
        (
            "for scale: the first flow in a new Prefect home (creates its database), once",
            "first_use",
        ),
    ]
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            f"`{command}`, {datetime.date.today()}, {os.cpu_count()} CPUs "
            f"({platform.machine()}), load average {load} at the end. Each arm is a fresh process "
            f"in its own workspace (one Prefect home, its database created before the arms); "
            f"best of {len(seconds['direct'])} interleaved runs (range).",
            "",
            "| run | wall seconds | range |",
            "|---|---:|---:|",
            *(f"| {label} | {best[arm]:.1f} | {spread[arm]} |" for label, arm in rows),
            f"| **orchestration overhead**, temporary server | {overhead('tpl_run')} | |",
            f"| **orchestration overhead**, running server | {overhead('tpl_run_served')} | |",
            "",
            "The overhead is Prefect's API server (a temporary one boots in ~8 s, overlapping "
            "the imports) and its bookkeeping of three subflows and ten tasks, a nested MLflow run "
            "per stage (params, metrics, artifacts) and the MLflow store's creation on a "
            "workspace's first run, hashing each stage's inputs and outputs for the cache key, "
            "and one DVC commit per pipeline run (dvc.lock rewritten once for all stages). A run "
            "with nothing changed checks every stage's input hash, output record and dvc.lock "
            "entry and stops there; `--force-flow` makes the Prefect flow run anyway.",
            "",
        ]
    )


def write_section(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md (or append it), leaving the rest."""
    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"(?ms)^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)")
    if pattern.search(existing):
        updated = pattern.sub(lambda _: text + "\n", existing)
    else:
        updated = existing.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--dataset", default=None, help="default: params.yaml's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    seconds = measure(args.profile, args.dataset, args.repeats)
    text = section(seconds, args.profile, args.dataset)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
