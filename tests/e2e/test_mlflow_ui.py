"""What a user sees in the MLflow UI after two pipeline runs (`make ui`, then the experiment's
runs page), in headless Chromium: both parent runs, by name, and the figures `tpl run` logs on
its parent run, each in a column of its own with each run's value, so that runs compare without
opening them.

The experiment is the one the parent runs are in (found through MLflow, not by name), and the
metric keys are those both parent runs carry in MLflow. MLflow 3.17 shows no metric column by
default (Run Name, Created, Dataset, Duration, Source, Models): the test adds the missing ones
with the table's "Columns" selector, as a user does, and prints which columns were there before.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from headless_chromium import Page, find_chromium, headless_chromium
from mlflow import MlflowClient
from mlflow.entities import Run

from transformer_pl.params import load_params

MakeE2eWorkspace = Callable[..., Any]  # conftest.py: e2e_workspace(name, dataset_path=None)
PipelineRun = Any  # conftest.PipelineRun
Workspace = Any  # conftest.Workspace

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on PATH (chromium, chromium-browser or google-chrome); on Debian: "
        "apt-get install -y --no-install-recommends chromium",
    ),
]

PROFILE = "tiny"
MLFLOW = Path(sys.executable).parent / "mlflow"  # the one `make ui` runs
UI_START_TIMEOUT_SECONDS = 120
PAGE_TIMEOUT_SECONDS = 60
SELECTOR_TIMEOUT_SECONDS = 10
# A changed evaluation setting (half the bootstrap resamples): the rerun evaluates again, so it
# makes a parent run of its own whose intervals differ, while the rest of the pipeline, training
# above all, comes from the cache: about a minute, where a changed seed retrains (4 minutes).
CHANGED_EVALUATION = re.compile(r"(?m)^(  bootstrap_resamples: )(\d+)")

# The runs table (an ag-Grid) renders only the columns in view: scroll across it a viewport at a
# time and collect, by column id, each header's text, and each row's cells and links by run id.
READ_RUNS_TABLE = """(async () => {
  const viewport = document.querySelector('.ag-body-horizontal-scroll-viewport');
  const headers = {}, cells = {}, links = {};
  const step = viewport ? viewport.clientWidth : 0;
  for (let left = 0; ; left += step) {
    if (viewport) viewport.scrollLeft = left;
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const header of document.querySelectorAll('[role=columnheader][col-id]')) {
      headers[header.getAttribute('col-id')] = header.textContent.trim();
    }
    for (const row of document.querySelectorAll('[role=row][row-id]')) {
      const run = row.getAttribute('row-id');
      for (const cell of row.querySelectorAll('[role=gridcell][col-id]')) {
        (cells[run] ??= {})[cell.getAttribute('col-id')] = cell.textContent.trim();
      }
      for (const link of row.querySelectorAll('a[href]')) {
        (links[run] ??= {})[link.getAttribute('href')] = link.textContent.trim();
      }
    }
    if (!viewport || step === 0 || left + step >= viewport.scrollWidth) break;
  }
  if (viewport) viewport.scrollLeft = 0;
  return {headers, cells, links};
})()"""
# The run ids of the rows the table shows (a row may be split into pinned and scrolled parts).
ROW_IDS = """[...new Set(
  [...document.querySelectorAll('[role=row][row-id]')].map((row) => row.getAttribute('row-id'))
)]"""
TOGGLE_COLUMN_SELECTOR = """(() => {
  const button = [...document.querySelectorAll('button')]
    .find((candidate) => candidate.textContent.trim() === 'Columns');
  button?.click();
  return Boolean(button);
})()"""
COLUMN_SEARCH = "[role=dialog] input[placeholder='Search columns']"
FOCUS_COLUMN_SEARCH = f"""(() => {{
  const input = document.querySelector("{COLUMN_SEARCH}");
  input?.focus();
  input?.select();
  return Boolean(input);
}})()"""
# Tick the selector's entry for one metric key (under "Metrics (n)", the same key may also be a
# param or a tag); true once ticked.
TICK_METRIC = """((key) => {
  let group = '';
  const tree = document.querySelectorAll('[role=dialog] [class*="-tree-treenode"]');
  for (const node of tree) {
    const title = node.querySelector('[class*="-tree-title"]')?.textContent ?? '';
    if (node.querySelector('[class*="-tree-switcher_open"], [class*="-tree-switcher_close"]')) {
      group = title;
    } else if (group.startsWith('Metrics') && title === key) {
      node.querySelector('[class*="-tree-checkbox"]').click();
      return true;
    }
  }
  return false;
})"""


@dataclass(frozen=True)
class RunsTable:
    """The runs table as rendered: header text by column id; cell text by run id and column id;
    link text by run id and href."""

    headers: dict[str, str]
    cells: dict[str, dict[str, str]]
    links: dict[str, dict[str, str]]


def _metric_column(key: str) -> str:
    return f"metrics.`{key}`"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _mlflow_ui(workspace: Workspace, log: Path) -> Iterator[str]:
    """`mlflow ui` on the workspace's store, as `make ui` starts it; yields its URL once it
    answers /health, and stops it (the whole process group) on exit."""
    port = _free_port()
    command = [
        str(MLFLOW),
        "ui",
        "--backend-store-uri",
        workspace.tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # One worker and no GenAI job runners (seven huey consumers, which ignore SIGTERM for a
        # while) serve one browser, and start in half the time on 2 cores.
        "--workers",
        "1",
    ]
    env = {**workspace.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=workspace.root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=0,  # uvicorn's worker goes with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + UI_START_TIMEOUT_SECONDS
        while not _answers(f"{url}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow ui did not answer /health (exit status {process.poll()}):\n"
                    f"{log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _read_runs_table(page: Page) -> RunsTable:
    table = page.evaluate(READ_RUNS_TABLE)
    return RunsTable(table["headers"], table["cells"], table["links"])


def _show_metric_columns(page: Page, keys: list[str]) -> None:
    """Tick each key in the table's "Columns" selector (searched by name, as a user finds one
    among a few hundred metrics, params and tags), then close it."""
    assert page.evaluate(TOGGLE_COLUMN_SELECTOR), "the runs table has no 'Columns' button"
    column_search = f"Boolean(document.querySelector({json.dumps(COLUMN_SEARCH)}))"
    assert page.poll(column_search, SELECTOR_TIMEOUT_SECONDS), "the column selector did not open"
    for key in keys:
        assert page.evaluate(FOCUS_COLUMN_SEARCH), "the column selector closed"
        page.insert_text(key)  # replaces the previous search, which focusing selected
        ticked = page.poll(f"{TICK_METRIC}({json.dumps(key)})", SELECTOR_TIMEOUT_SECONDS)
        assert ticked, f"the column selector offers no metric '{key}'"
    page.evaluate(TOGGLE_COLUMN_SELECTOR)


def _number(text: str) -> float | None:
    """A number as the table prints it (MLflow 3.17: JavaScript's String(value); later versions
    group digits with spaces and may write a minus as '−')."""
    try:
        return float(re.sub(r"\s", "", text).replace("−", "-"))
    except ValueError:
        return None


# --- two pipeline runs in one workspace -------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(e2e_workspace: MakeE2eWorkspace) -> tuple[PipelineRun, PipelineRun]:
    """`tpl run`, then `tpl run` again after a changed evaluation setting, committed as a user
    would: two parent runs of one dataset in one experiment."""
    workspace = e2e_workspace("mlflow-ui")
    first = workspace.run_pipeline(PROFILE)
    params = workspace.root / "params.yaml"
    text, changed = CHANGED_EVALUATION.subn(
        lambda match: f"{match[1]}{int(match[2]) // 2}", params.read_text(encoding="utf-8")
    )
    assert changed == 1, "params.yaml no longer has `evaluate.bootstrap_resamples`"
    params.write_text(text, encoding="utf-8")
    workspace.git("commit", "--quiet", "-am", "half the bootstrap resamples")
    return first, workspace.run_pipeline(PROFILE)


def test_runs_page_shows_both_pipeline_runs_with_their_metrics(
    two_runs: tuple[PipelineRun, PipelineRun], tmp_path: Path
) -> None:
    workspace = two_runs[0].workspace
    client = MlflowClient(workspace.tracking_uri)
    parents: list[Run] = [client.get_run(run.mlflow_run_id) for run in two_runs]
    run_ids = [parent.info.run_id for parent in parents]
    assert len(set(run_ids)) == 2, "the second `tpl run` made no parent run of its own"
    experiment_id = parents[0].info.experiment_id
    assert parents[1].info.experiment_id == experiment_id
    keys = sorted(set(parents[0].data.metrics) & set(parents[1].data.metrics))
    # The metric that decides promotion is among them: the headline figure of the run.
    decision_metric, _ = load_params(workspace.root / "params.yaml", PROFILE).registration_metric
    assert decision_metric in keys, f"the parent runs carry no {decision_metric}: {keys}"

    assert CHROMIUM is not None  # (skipped otherwise)
    started = time.perf_counter()
    with (
        _mlflow_ui(workspace, tmp_path / "mlflow-ui.log") as url,
        headless_chromium(CHROMIUM, tmp_path / "chromium.log") as page,
    ):
        page.navigate(f"{url}/#/experiments/{experiment_id}/runs")
        shown_rows = page.poll(
            f"(() => {{ const rows = {ROW_IDS}; "
            f"return {json.dumps(run_ids)}.every((id) => rows.includes(id)) && rows; }})()",
            PAGE_TIMEOUT_SECONDS,
        )
        assert shown_rows, (
            f"the runs page of experiment {experiment_id} shows rows "
            f"{page.evaluate(ROW_IDS)}, not both pipeline runs {run_ids}"
        )
        by_default = _read_runs_table(page)
        missing = [key for key in keys if _metric_column(key) not in by_default.headers]
        if missing:
            _show_metric_columns(page, missing)
        table = _read_runs_table(page)
    print(
        f"runs page, columns by default: {[text for text in by_default.headers.values() if text]}"
        f"; {len(keys) - len(missing)} of the parent runs' {len(keys)} metrics among them;"
        f" browser check {time.perf_counter() - started:.0f} s"
    )

    for parent in parents:
        links = table.links.get(parent.info.run_id, {})
        run_link = f"#/experiments/{experiment_id}/runs/{parent.info.run_id}"
        assert links.get(run_link) == parent.info.run_name, (
            f"run {parent.info.run_id} is not shown by its name {parent.info.run_name!r}: {links}"
        )
    unshown_columns = [key for key in keys if key not in table.headers.get(_metric_column(key), "")]
    unshown_values = []
    for key in keys:
        values = [parent.data.metrics[key] for parent in parents]
        # A unit in the 4th significant figure of the larger value: MLflow versions that round
        # print at least 4 (3.17 prints all digits).
        tolerance = 1e-3 * max(abs(value) for value in values)
        for parent, value in zip(parents, values, strict=True):
            text = table.cells.get(parent.info.run_id, {}).get(_metric_column(key), "")
            shown = _number(text)
            if shown is None or not math.isclose(shown, value, rel_tol=0, abs_tol=tolerance):
                unshown_values.append(f"{parent.info.run_id} {key}: {value} shown as {text!r}")
    assert not unshown_columns, f"metric columns missing from the runs table: {unshown_columns}"
    assert not unshown_values, "the runs table does not show these metric values:\n" + "\n".join(
        unshown_values
    )
