"""Crash safety of the pipeline's state (issue 37), on real workspaces with the real functions:
a planted pickle where Prefect reads cached results is never executed; output records, the
last-run record and dvc.lock left empty or cut short are reported by name and rebuilt; state
files are replaced atomically; one run per workspace, a stale lock taken over.

A planted checkpoint where training resumes is in test_training.py (beside the resume tests).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
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
    # DVC itself (`dvc repro`, `dvc status`) refuses it, naming the file.
    refused = subprocess.run(
        [sys.executable, "-m", "dvc", "status"], cwd=project, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "'./dvc.lock'" in refused.stderr, refused.stderr

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


# --- the whole pipeline: damaged state files, and SIGKILL anywhere ----------------------------

DATA_STAGES = ("ingest", "clean", "validate", "split", "tokenizer", "encode")
# Data that two workspaces must agree on: ingest's record names the workspace's own source
# folder and the Data Docs carry their run's time, so those two stages' outputs differ anyway.
COMPARED_DATA_STAGES = ("clean", "split", "tokenizer", "encode")


def _data_outputs(root: Path) -> dict[str, Any]:
    """What dvc.lock records of the data stages' outputs (paths and md5s)."""
    stages = yaml.safe_load((root / workspace.DVC_LOCK_FILE).read_text())["stages"]
    return {name: stages[name]["outs"] for name in COMPARED_DATA_STAGES}


@pytest.fixture(scope="module")
def uninterrupted_run(make_workspace: MakeWorkspace, shared_data: Path) -> tuple[Path, dict]:
    """A workspace after one `tpl run` of the tiny profile, and its data outputs as recorded
    then (the workspace itself is damaged by the test that uses it)."""
    root = make_workspace("crash-safety-pipeline")
    first = _tpl(root, "run", "--profile", PROFILE)
    assert first.returncode == 0, first.stderr[-6000:]
    return root, _data_outputs(root)


@pytest.mark.slow  # trains the tiny model
def test_tpl_run_completes_after_its_records_and_dvc_lock_were_cut_short(
    uninterrupted_run: tuple[Path, dict],
) -> None:
    root, _ = uninterrupted_run
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


def _record_written(stage: str) -> Callable[[Path], bool]:
    return lambda root: (root / workspace.OUTPUT_RECORDS_DIR / f"{stage}.json").is_file()


def _in_registry(root: Path, query: str, *arguments: str) -> bool:
    """Whether `query` finds a row in the workspace's MLflow store (read-only; a store that is
    being written or not yet created counts as no row)."""
    try:
        with closing(sqlite3.connect(f"file:{root / 'mlflow.db'}?mode=ro", uri=True)) as db:
            return db.execute(query, arguments).fetchone() is not None
    except sqlite3.Error:
        return False


def _stage_running(stage: str) -> Callable[[Path], bool]:
    query = (
        "SELECT 1 FROM runs JOIN tags USING (run_uuid)"
        " WHERE tags.key = 'stage' AND tags.value = ? AND runs.status = 'RUNNING'"
    )
    return lambda root: _in_registry(root, query, stage)


def _model_version_created(root: Path) -> bool:
    return _in_registry(root, "SELECT 1 FROM model_versions")


def _finetune_checkpointed(root: Path) -> bool:
    return bool(list(root.glob(".checkpoints/finetune-*/checkpoints/last.ckpt")))


def _dvc_commit_holds_its_lock(root: Path) -> bool:
    """Whether a process holds DVC's repository lock (zc.lockfile: an flock on .dvc/tmp/lock);
    in a `tpl run`, only the DVC commit takes it."""
    try:
        descriptor = os.open(root / ".dvc" / "tmp" / "lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


# Where each successive `tpl run` is killed, in pipeline order: every stage boundary (the
# stage's output record written), inside the training stages, after the model version was
# created, and while the DVC commit holds its lock.
KILL_POINTS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    *((f"after {stage}", _record_written(stage)) for stage in DATA_STAGES),
    ("inside pretrain", _stage_running("pretrain")),
    ("after pretrain", _record_written("pretrain")),
    ("inside finetune (checkpointed)", _finetune_checkpointed),
    ("after finetune", _record_written("finetune")),
    ("after evaluate", _record_written("evaluate")),
    ("inside register (version created)", _model_version_created),
    ("inside the DVC commit", _dvc_commit_holds_its_lock),
)


def _kill_when(root: Path, reached: Callable[[Path], bool], log: Path) -> None:
    """Start `tpl run` in its own process group and SIGKILL the whole group once `reached`."""
    env = _without_token() | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONSAFEPATH": "1",
    }
    with log.open("w") as output:
        run = subprocess.Popen(
            [sys.executable, "-m", "transformer_pl.cli", "run", "--profile", PROFILE],
            cwd=root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes every child
        )
    deadline = time.monotonic() + TPL_RUN_TIMEOUT_SECONDS
    try:
        while not reached(root):
            assert run.poll() is None, f"ended before {log.stem}:\n{log.read_text()[-6000:]}"
            assert time.monotonic() < deadline, f"never reached {log.stem}"
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.slow  # trains the tiny model, killed at every point of KILL_POINTS in turn
def test_a_run_killed_anywhere_is_finished_by_the_rerun(
    make_workspace: MakeWorkspace, uninterrupted_run: tuple[Path, dict], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    root = make_workspace("killed-everywhere")
    for where, reached in KILL_POINTS:
        _kill_when(root, reached, tmp_path / f"{where}.log")

    rerun = _tpl(root, "run", "--profile", PROFILE)

    assert rerun.returncode == 0, rerun.stderr[-6000:]
    assert json.loads((root / "metrics" / "train" / "finetune.json").read_text())["resumed"]
    assert _dvc_status_clean(root)
    assert _data_outputs(root) == uninterrupted_run[1]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    registration = json.loads((root / "metrics" / "register.json").read_text())
    (version,) = client.search_model_versions(f"name = '{registration['model_name']}'")
    assert version.tags["registration"] == "complete"
    aliases = client.get_registered_model(registration["model_name"]).aliases
    assert aliases == {"champion": version.version, "challenger": version.version}
    # The killed runs' MLflow runs were closed, not left RUNNING.
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    assert running == []
    killed_runs = client.search_runs(experiments, filter_string="attributes.status = 'KILLED'")
    assert {run.data.tags["stage"] for run in killed_runs} >= {"pretrain", "finetune"}
