"""Crash safety of the pipeline's state (issue 37), on real workspaces with the real functions:
a planted pickle where Prefect reads cached results is never executed; output records, the
last-run record and dvc.lock left empty or cut short are reported by name and rebuilt; state
files are replaced atomically; one run per workspace, a stale lock taken over.

A planted checkpoint where training resumes is in test_training.py (beside the resume tests).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from planted_pickle import PlantedPickle
from prefect import flow
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.serializers import PickleSerializer
from prefect.states import State

from pipelines import flows, workspace
from pipelines.workspace_lock import LOCK_FILE, TOKEN_VARIABLE, WorkspaceBusy, workspace_lock
from transformer_pl.atomic import write_text_atomic
from transformer_pl.stages import STAGES
from transformer_pl.stages.runner import stage_input_key

MakeWorkspace = Callable[[str], Path]  # a fixture of conftest.py
PROFILE = "tiny"
# Far above a tiny run's few minutes: only a guard against a hang.
TPL_RUN_TIMEOUT_SECONDS = 1200


@flow(name="ingest-only")
def ingest_flow() -> dict[str, Any]:
    """The first stage through the flows' own task, cache check and DVC commit: the cheapest
    real flow run that can read a cached result."""
    path = workspace.resolve_params_file(None)
    with workspace_lock("ingest-only test flow"):
        params = workspace.prepare_params(PROFILE, path)
        return flows.run_stages(["ingest"], params, path).stages["ingest"]


def _ingest_ran() -> bool:
    """Whether a new run of `ingest_flow` ran the stage (a new MLflow run) rather than taking
    its result from the cache (the MLflow run of the run that produced it)."""
    before = _cached_ingest_run_id()
    state: State = ingest_flow(return_state=True)
    assert state.is_completed(), state.message
    return state.result()["mlflow_run_id"] != before


def _ingest_result_file() -> Path:
    params = workspace.prepare_params(PROFILE, workspace.resolve_params_file(None))
    return (workspace.RESULTS_DIR / stage_input_key(STAGES["ingest"], params)).absolute()


def _cached_ingest_run_id() -> str | None:
    """The MLflow run of the cached ingest result; None where no readable one is cached."""
    try:
        record = json.loads(_ingest_result_file().read_bytes())
        return json.loads(record["result"])["mlflow_run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@pytest.fixture(scope="module")
def project(make_workspace: MakeWorkspace, shared_data: Path) -> Iterator[Path]:
    """A workspace (SST-2 slice; `shared_data` exports TPL_DATA_DIR) whose ingest stage has run
    once, as working directory, with an MLflow store of its own and no lock held."""
    root = make_workspace("crash-safety")
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for inherited in ("TPL_PARAMS", TOKEN_VARIABLE):
            env.delenv(inherited, raising=False)
        ingest_flow()
        yield root


def _planted_record(path: Path, marker: Path) -> bytes:
    """A result record as Prefect writes one, naming the pickle serializer."""
    metadata = ResultRecordMetadata(storage_key=str(path), serializer=PickleSerializer())
    return ResultRecord(metadata=metadata, result=PlantedPickle(marker)).serialize()


# --- no pickle from disk: Prefect's cached results -------------------------------------------


def test_results_are_plain_json(project: Path) -> None:
    record = json.loads(_ingest_result_file().read_bytes())
    assert record["metadata"]["serializer"]["type"] == "json"
    assert record["metadata"]["serializer"]["object_decoder"] is None
    assert json.loads(record["result"])["dataset"] == "sst2"
    assert not _ingest_ran()  # and a cache hit reads it back


@pytest.mark.parametrize("planted", ["pickle record", "raw pickle", "empty"])
def test_planted_result_is_never_deserialized_and_the_stage_reruns(
    project: Path, planted: str, caplog: pytest.LogCaptureFixture
) -> None:
    result_file = _ingest_result_file()
    marker = project.parent / f"planted-result-ran-{planted.replace(' ', '-')}"
    if planted == "pickle record":
        result_file.write_bytes(_planted_record(result_file, marker))
    elif planted == "raw pickle":
        result_file.write_bytes(PickleSerializer().dumps(PlantedPickle(marker)))
    else:
        result_file.write_bytes(b"")

    assert _ingest_ran()  # again, instead of reading the planted result

    assert not marker.exists(), "the planted result was unpickled"
    assert f"{result_file} is unreadable" in caplog.text
    assert list(result_file.parent.glob(f"{result_file.name}.corrupt-*"))
    assert json.loads(result_file.read_bytes())["metadata"]["serializer"]["type"] == "json"
    assert not _ingest_ran()


# --- corrupt state files: output records, dvc.lock -------------------------------------------


@pytest.mark.parametrize("content", ["", '{"input_key": "ingest-'])
def test_corrupt_output_record_reruns_its_stage(
    project: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = project / workspace.OUTPUT_RECORDS_DIR / "ingest.json"
    record.write_text(content)

    assert _ingest_ran()

    assert f"{record} is unreadable" in caplog.text
    assert json.loads(record.read_text())["input_key"].startswith("ingest-")
    assert not _ingest_ran()


def _dvc_status_clean(project: Path, *stages: str) -> bool:
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", *stages],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    return "up to date" in status.stdout


@pytest.mark.parametrize("content", ["", "schema: '2.0'\nstages:\n  ingest:\n    cmd: [tpl"])
def test_corrupt_dvc_lock_is_moved_aside_and_rebuilt(
    project: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    lock = project / workspace.DVC_LOCK_FILE
    lock.write_text(content)

    assert not _ingest_ran()  # the stage's outputs are fine: only dvc.lock is redone

    assert f"{lock} is unreadable" in caplog.text
    assert list(project.glob("dvc.lock.corrupt-*"))
    assert "ingest" in yaml.safe_load(lock.read_text())["stages"]
    assert _dvc_status_clean(project, "ingest")


# --- atomic state writes ---------------------------------------------------------------------


def test_state_file_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("profile: default\n")
    path.chmod(0o640)

    write_text_atomic(path, "profile: tiny\n")
    assert path.read_text() == "profile: tiny\n"
    assert path.stat().st_mode & 0o777 == 0o640  # the file's permissions are kept
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "profile: \ud800\n")  # fails halfway through writing
    assert path.read_text() == "profile: tiny\n"
    assert [file.name for file in tmp_path.iterdir()] == ["params.yaml"]  # no temporary left


# --- one run per workspace -------------------------------------------------------------------

HOLD_SCRIPT = """
import sys, time
from pathlib import Path
from pipelines.workspace_lock import workspace_lock
with workspace_lock("tpl run --profile holder", Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_workspace(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A folder whose lock another process holds (its command: `tpl run --profile holder`)."""
    env = {key: value for key, value in os.environ.items() if key != TOKEN_VARIABLE}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield tmp_path, holder
    finally:
        holder.kill()
        holder.wait()


def _without_token() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != TOKEN_VARIABLE}


def _tpl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tpl ARGS` in the workspace at `root`, as a user runs it (no lock token inherited)."""
    env = _without_token() | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        # The workspace holds copies of some package files (DVC deps): import the package.
        "PYTHONSAFEPATH": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "transformer_pl.cli", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TPL_RUN_TIMEOUT_SECONDS,
    )


def test_second_run_is_refused_naming_the_holder(
    held_workspace: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, holder = held_workspace
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    with pytest.raises(WorkspaceBusy) as refused, workspace_lock("second", root):
        pass
    message = str(refused.value)
    assert f"pid {holder.pid} on {socket.gethostname()}" in message
    assert "tpl run --profile holder" in message and "started 20" in message

    stage = _tpl(root, "stage", "ingest")
    assert stage.returncode == 1
    assert f"stage ingest failed: workspace {root} is in use by pid {holder.pid}" in stage.stderr
    assert "Traceback" not in stage.stderr
    run = _tpl(root, "run", "--profile", PROFILE)
    assert run.returncode == 1
    assert f"pipeline refused: workspace {root} is in use by pid {holder.pid}" in run.stderr


CHILD_SCRIPT = """
import sys
from pathlib import Path
from pipelines.workspace_lock import workspace_lock
with workspace_lock("child", Path(sys.argv[1])):
    pass
"""


def test_processes_the_holder_starts_work_under_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    with workspace_lock("tpl run", tmp_path):
        child = [sys.executable, "-c", CHILD_SCRIPT, str(tmp_path)]
        assert subprocess.run(child, capture_output=True).returncode == 0  # inherits the token
        stranger = subprocess.run(child, env=_without_token(), capture_output=True, text=True)
        assert stranger.returncode != 0 and "WorkspaceBusy" in stranger.stderr
        with workspace_lock("a flow inside tpl run", tmp_path):  # re-entered in the holder
            pass
    assert TOKEN_VARIABLE not in os.environ
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly: nothing to take over


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_holder(root: Path, pid: int) -> None:
    holder = {
        "pid": pid,
        "host": socket.gethostname(),
        "started": "2024-01-01T00:00:00+00:00",
        "command": "tpl run --profile killed",
        "token": "killed-run",
    }
    (root / LOCK_FILE).write_text(json.dumps(holder))


def test_lock_of_a_killed_run_is_taken_over_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    dead = _dead_pid()
    _write_holder(tmp_path, dead)

    with workspace_lock("tpl run --profile tiny", tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "tpl run --profile tiny"

    assert f"taking over the lock of pid {dead} on {socket.gethostname()}" in caplog.text
    assert "tpl run --profile killed" in caplog.text


ORPHAN_SCRIPT = """
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_lock_a_dead_holder_left_with_a_process_it_started_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A killed run's forked worker can outlive it, holding the file it inherited.
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    _write_holder(tmp_path, _dead_pid())
    orphan = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / LOCK_FILE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert orphan.stdout is not None and orphan.stdout.readline() == "held\n"
        with workspace_lock("tpl run", tmp_path):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        orphan.kill()
        orphan.wait()
    assert "has ended; breaking the lock" in caplog.text


# --- the whole pipeline after its state files were damaged -----------------------------------


@pytest.mark.slow  # trains the tiny model
def test_tpl_run_completes_after_its_records_and_dvc_lock_were_cut_short(
    make_workspace: MakeWorkspace, shared_data: Path
) -> None:
    root = make_workspace("crash-safety-pipeline")
    first = _tpl(root, "run", "--profile", PROFILE)
    assert first.returncode == 0, first.stderr[-6000:]
    last_run = root / workspace.LAST_PIPELINE_RUN_FILE
    lock = root / workspace.DVC_LOCK_FILE

    # Killed while writing them: an empty last-run record (the nothing-changed shortcut reads
    # it), then an empty dvc.lock (every DVC commit reads it).
    for damaged in (last_run, lock):
        damaged.write_text("")
        rerun = _tpl(root, "run", "--profile", PROFILE)
        assert rerun.returncode == 0, rerun.stderr[-6000:]
        assert f"{damaged} is unreadable" in rerun.stderr
        assert "Traceback" not in rerun.stderr

    assert json.loads(last_run.read_text())["mlflow_run_id"]
    assert list(root.glob("dvc.lock.corrupt-*"))
    assert _dvc_status_clean(root)
    unchanged = _tpl(root, "run", "--profile", PROFILE)
    assert "Nothing changed since the last run" in unchanged.stderr


@pytest.mark.slow  # trains the tiny model, twice in part
def test_a_run_killed_during_finetune_is_finished_by_the_rerun(
    make_workspace: MakeWorkspace, shared_data: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    root = make_workspace("killed-in-finetune")
    env = _without_token() | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONSAFEPATH": "1",
    }
    log = tmp_path / "killed-run.log"
    with log.open("w") as output:
        killed = subprocess.Popen(
            [sys.executable, "-m", "transformer_pl.cli", "run", "--profile", PROFILE],
            cwd=root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes every child
        )
    # Mid-training: finetune has checkpointed at least once and not finished.
    deadline = time.monotonic() + TPL_RUN_TIMEOUT_SECONDS
    while not list(root.glob(".checkpoints/finetune-*/checkpoints/last.ckpt")):
        assert killed.poll() is None, log.read_text()[-6000:]
        assert time.monotonic() < deadline, "finetune never checkpointed"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    rerun = _tpl(root, "run", "--profile", PROFILE)

    assert rerun.returncode == 0, rerun.stderr[-6000:]
    assert json.loads((root / "metrics" / "train" / "finetune.json").read_text())["resumed"]
    assert _dvc_status_clean(root)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    registration = json.loads((root / "metrics" / "register.json").read_text())
    (version,) = client.search_model_versions(f"name = '{registration['model_name']}'")
    assert version.tags["registration"] == "complete"
    aliases = client.get_registered_model(registration["model_name"]).aliases
    assert aliases == {"champion": version.version, "challenger": version.version}
    # The killed run's MLflow runs were closed, not left RUNNING.
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    assert running == []
    killed_runs = client.search_runs(experiments, filter_string="attributes.status = 'KILLED'")
    assert killed_runs
