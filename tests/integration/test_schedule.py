"""A scheduled deployment on a real Prefect server: `serve_pipeline` serves the data flow (tiny
profile, SST-2 slice) on a 5-second interval, and a run the server scheduled completes.

Everything runs in processes of its own, as in production: the server (`prefect server start`),
the serving process, and the flow run the serving process starts for each scheduled run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipelines.flows import data_flow
from transformer_pl.stages import Layout

MakeWorkspace = Callable[[str], Path]  # a fixture of conftest.py

SERVER_STARTUP_TIMEOUT_SECONDS = 180
SCHEDULED_RUN_TIMEOUT_SECONDS = 300
DEPLOYMENT_NAME = "scheduled-test"
SERVE_SCRIPT = f"""
from pipelines.deployments import serve_pipeline
from pipelines.flows import data_flow

serve_pipeline(interval=5, profile="tiny", name={DEPLOYMENT_NAME!r}, flow=data_flow)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """A process in a session of its own, so that stopping it stops what it started too."""
    with log.open("wb") as output:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on a free local port with its own home; yields the API URL."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "server-home"),
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "prefect", "server", "start"]
    server = _start([*command, "--host", "127.0.0.1", "--port", str(port)], log, tmp_path, env)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_STARTUP_TIMEOUT_SECONDS
        while True:
            assert server.poll() is None, f"the server exited:\n{_tail(log)}"
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the server did not start:\n{_tail(log)}"
            time.sleep(1)
        yield api_url
    finally:
        _stop(server)


def _deployment_runs(api_url: str) -> list[FlowRun]:
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{data_flow.name}/{DEPLOYMENT_NAME}")
        except ObjectNotFound:  # not served yet
            return []
        runs = DeploymentFilter(id={"any_": [deployment.id]})
        return client.read_flow_runs(deployment_filter=runs)


def _wait_for_completed_run(api_url: str, serve: subprocess.Popen, log: Path) -> FlowRun:
    deadline = time.monotonic() + SCHEDULED_RUN_TIMEOUT_SECONDS
    while True:
        finished = [run for run in _deployment_runs(api_url) if run.state and run.state.is_final()]
        if finished:
            run = finished[0]
            assert run.state.is_completed(), f"a scheduled run ended {run.state}:\n{_tail(log)}"
            return run
        assert serve.poll() is None, f"serving stopped:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"no scheduled run finished:\n{_tail(log)}"
        time.sleep(2)


@pytest.mark.slow
def test_served_deployment_runs_on_schedule(
    prefect_server: str, make_workspace: MakeWorkspace, shared_data: Path, tmp_path: Path
) -> None:
    project = make_workspace("scheduled")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        # The workspace holds copies of some package files (DVC deps): import the package itself.
        "PYTHONSAFEPATH": "1",
        "TPL_DATA_DIR": str(shared_data),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    log = tmp_path / "serve.log"
    serve = _start([sys.executable, "-c", SERVE_SCRIPT], log, project, env)
    try:
        run = _wait_for_completed_run(prefect_server, serve, log)
    finally:
        _stop(serve)

    assert run.auto_scheduled, "the run was not created by the schedule"
    assert run.parameters == {"profile": "tiny", "params_file": None}
    assert (project / Layout.ENCODED).is_dir()
    assert "profile: tiny" in (project / "params.yaml").read_text()
