"""End-to-end workspaces: the shared `make_workspace` (tests/conftest.py: git + DVC, the project's
params.yaml with dataset imdb from $TPL_DATA_DIR, dvc.yaml, the code the stages depend on),
committed like a user's checkout, with `tpl` and `dvc` run in it as a user runs them: a process
each, the workspace as working directory, its own MLflow store.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

# One subprocess may train the tiny model; far above its few minutes, only a guard against a hang.
COMMAND_TIMEOUT_SECONDS = 1200
VENV_BIN = Path(sys.executable).parent  # where `tpl` and `dvc` are installed
MLFLOW_RUN_ID = re.compile(r"MLflow run: \S*/runs/(\w+)")


@dataclass(frozen=True)
class PipelineRun:
    """A finished `tpl run` in a workspace: what it printed and the MLflow parent run it made."""

    workspace: Workspace
    profile: str
    stdout: str
    stderr: str
    wall_seconds: float
    mlflow_run_id: str

    def json(self, relative: str) -> dict[str, Any]:
        return json.loads((self.workspace.root / relative).read_text(encoding="utf-8"))

    @contextmanager
    def tracking(self) -> Iterator[MlflowClient]:
        """MLflow pointed at the workspace's store for the duration (models:/ URIs resolve)."""
        mlflow.set_tracking_uri(self.workspace.tracking_uri)
        try:
            yield MlflowClient(self.workspace.tracking_uri)
        finally:
            mlflow.set_tracking_uri(None)


@dataclass(frozen=True)
class Workspace:
    root: Path
    env: dict[str, str]

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )

    def start(self, *command: str, log: Path) -> subprocess.Popen[bytes]:
        """`command` in the background, its output in `log`, in a process group of its own so
        that stopping it stops what it started too (`dvc repro` runs a `tpl stage` per stage).
        Not a session of its own: the kernel's autogroup scheduling would then share the CPU
        between sessions as equals, whatever the command's `nice`."""
        with log.open("wb") as output:
            return subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

    def tpl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(VENV_BIN / "tpl"), *args)

    def run_pipeline(self, profile: str, *options: str) -> PipelineRun:
        """`tpl run --profile PROFILE [OPTIONS]`, which must succeed and name its MLflow run."""
        started = time.perf_counter()
        result = self.tpl("run", "--profile", profile, *options)
        wall_seconds = time.perf_counter() - started
        assert result.returncode == 0, f"tpl run failed:\n{result.stdout}\n{result.stderr[-6000:]}"
        run_id = MLFLOW_RUN_ID.search(result.stdout)
        assert run_id, f"tpl run printed no MLflow run:\n{result.stdout}"
        print(f"tpl run --profile {profile}: {wall_seconds:.0f} s")
        return PipelineRun(self, profile, result.stdout, result.stderr, wall_seconds, run_id[1])

    def dvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "dvc", *args)

    def git(self, *args: str) -> str:
        command = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", *args]
        return subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, check=True
        ).stdout.strip()


MakeE2eWorkspace = Callable[..., Workspace]


@pytest.fixture(scope="session")
def e2e_workspace(make_workspace: Callable[..., Path], shared_data: Path) -> MakeE2eWorkspace:
    """`e2e_workspace(name, dataset_path=None, profile=None)`: a committed workspace (so lineage
    tags name a real commit), its params.yaml's `profile:` set to `profile` when given, and the
    environment to run commands in it."""

    def make(name: str, dataset_path: Path | None = None, profile: str | None = None) -> Workspace:
        root = make_workspace(name, dataset_path=dataset_path)
        if profile is not None:
            params = root / "params.yaml"
            text, chosen = re.subn(r"(?m)^profile: .*$", f"profile: {profile}", params.read_text())
            assert chosen == 1, "params.yaml has no top-level `profile:` line"
            params.write_text(text)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"TPL_PROFILE", "TPL_PARAMS", "TPL_PARENT_RUN_ID"}
        }
        env |= {
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "TPL_DATA_DIR": str(shared_data),
            # The workspace holds copies of some package files (DVC deps): import the package.
            "PYTHONSAFEPATH": "1",
            # `dvc repro` runs `tpl stage <name>` through the shell.
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
        workspace = Workspace(root, env)
        workspace.git("add", "--all")
        workspace.git("commit", "--quiet", "-m", "workspace")
        return workspace

    return make
