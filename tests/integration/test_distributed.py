"""Multi-process training on CPU (gloo): the tiny pretrain stage launched as

    torchrun --standalone --nproc-per-node 2 -m transformer_pl.cli stage pretrain

beside the same stage in one process, in copies of one workspace whose data stages ran once; and
the training flow, which must run a multi-process stage as one task that starts torchrun rather
than train in its own process.

Both ranks train, only rank 0 tracks and writes: one MLflow run, one set of outputs, and nothing
written by rank 1 (an audit hook in rank 1, see write_audit/sitecustomize.py, records every write
under the workspace). `pretrain.batch_size` is the global batch, so the two-process run trains on
the same examples per step, masked alike, as the one-process run and reaches its validation loss
within the rounding of averaging two half-batch losses.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch.distributed
import yaml
from mlflow import MlflowClient

from transformer_pl.data.datamodules import read_meta
from transformer_pl.params import deep_merge, load_params
from transformer_pl.stages import STAGES, Layout
from transformer_pl.stages.training import FINISHED_MARKER, TRAINING_METRICS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MakeWorkspace = Callable[[str], Path]  # conftest.py
UpdateParams = Callable[..., dict[str, Any]]  # conftest.py

VENV_BIN = Path(sys.executable).parent
AUDIT_HOOK_DIR = Path(__file__).parent / "write_audit"
COMMAND_TIMEOUT_SECONDS = 600  # far above the ~1 min a run takes: a guard against a hang
DATA_STAGES = ("ingest", "clean", "validate", "split", "tokenizer", "encode")
# The tiny profile on CPU, once in one process and once in two with DDP: same global batch.
# Dropout off: its masks are drawn per process, the one randomness that depends on the layout
# (the data order and the masked-LM masks do not).
ONE_PROCESS, TWO_PROCESSES = "tiny-1proc", "tiny-2proc"
OVERLAYS = {
    ONE_PROCESS: {"trainer": {"accelerator": "cpu", "devices": 1, "strategy": "auto"}},
    TWO_PROCESSES: {"trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}},
}
# Masked-LM pretraining: the objective that trains in every process (ppmi_svd, the default, is a
# closed form computed once), with the settings the figures below were measured with.
ALL_RUNS = {
    "model": {"dropout": 0.0},
    "pretrain": {
        "objective": "mlm",
        "embedding_init": "random",
        "mask_probability": 0.15,
        "optim": {"learning_rate": 7e-4},
    },
}
# Measured after the tiny profile's 30 steps (val/loss ≈ 7.0, from ≈ 7.25 after one step):
# |Δ| = 0.0007-0.0016, as DDP averages the ranks' mean losses where one process takes the mean
# over all masked tokens (fp32 alike); with both ranks training on rank 0's half of each batch,
# Δ ≈ 0.056; another seed, up to 0.1.
LOSS_TOLERANCE = 0.01
PRETRAINED_FILES = {"model.safetensors", "config.json", "checkpoint.ckpt"}
CALLER_SETTINGS = ("TPL_PROFILE", "TPL_PARAMS", "TPL_PARENT_RUN_ID")  # not for these runs
RUN_ID_DIR = re.compile(r"^(mlartifacts/[^/]+/)[0-9a-f]{32}/")
SCRATCH_KEY_DIR = re.compile(r"^(\.checkpoints/pretrain-)[0-9a-f]{64}/")  # the inputs' hash


@pytest.fixture(scope="module")
def data_workspace(make_workspace: MakeWorkspace, update_params: UpdateParams) -> Path:
    """A workspace (SST-2 slice) with the two profiles, the data stages' outputs and an empty
    MLflow store (created once: its schema migrations take seconds). Each run gets a copy, so
    runs see neither each other's outputs nor each other's MLflow runs."""
    root = make_workspace("distributed")

    def two_profiles(params: dict[str, Any]) -> dict[str, Any]:
        tiny = params["profiles"]["tiny"]
        return {
            "profiles": {
                name: deep_merge(tiny, deep_merge(overlay, ALL_RUNS))
                for name, overlay in OVERLAYS.items()
            }
        }

    update_params(root, two_profiles)
    params = load_params(root / "params.yaml", ONE_PROCESS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name in DATA_STAGES:
            STAGES[name].run(params, Layout(root))
    MlflowClient(tracking_uri(root)).search_experiments()
    return root


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def copy_workspace(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    return {
        path.relative_to(root).as_posix(): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in root.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


def run_environment(root: Path, audit_log: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CALLER_SETTINGS}
    return env | {
        "MLFLOW_TRACKING_URI": tracking_uri(root),
        # The workspace holds copies of some package files (DVC deps): import the package.
        "PYTHONSAFEPATH": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(AUDIT_HOOK_DIR), env.get("PYTHONPATH")])),
        "TPL_AUDIT_ROOT": str(root),
        "TPL_AUDIT_LOG": str(audit_log),
    }


@dataclass(frozen=True)
class StageRun:
    root: Path
    stdout: str
    written: set[str]  # files created or changed, run ids and scratch keys in paths replaced
    summary: dict
    wall_seconds: float
    rank1_writes: list[str] | None  # None: no rank 1 (one process)


def run_pretrain(root: Path, profile: str, launcher: list[str], **env: str) -> StageRun:
    audit_log = root.parent / f"{root.name}-writes"
    before = file_states(root)
    started = time.perf_counter()
    result = subprocess.run(
        [*launcher, "-m", "transformer_pl.cli", "stage", "pretrain", "--profile", profile],
        cwd=root,
        env=run_environment(root, audit_log) | env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )
    wall_seconds = time.perf_counter() - started
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    after = file_states(root)
    written = {
        SCRATCH_KEY_DIR.sub(r"\1<key>/", RUN_ID_DIR.sub(r"\1<run>/", path))
        for path, state in after.items()
        if before.get(path) != state
    }
    rank1_log = audit_log.with_name(f"{audit_log.name}.1")
    summary = json.loads((root / f"{TRAINING_METRICS}/pretrain.json").read_text())
    return StageRun(
        root=root,
        stdout=result.stdout,
        written=written,
        summary=summary,
        wall_seconds=wall_seconds,
        rank1_writes=rank1_log.read_text().splitlines() if rank1_log.exists() else None,
    )


@pytest.fixture(scope="module")
def one_process(data_workspace: Path) -> StageRun:
    root = copy_workspace(data_workspace, data_workspace.parent / "one-process")
    # One thread, as torchrun gives each of its processes: 1 core against 2.
    return run_pretrain(root, ONE_PROCESS, [sys.executable], OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def two_processes(data_workspace: Path) -> StageRun:
    root = copy_workspace(data_workspace, data_workspace.parent / "two-processes")
    torchrun = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    return run_pretrain(root, TWO_PROCESSES, torchrun)


def test_two_processes_reach_the_loss_of_one_at_the_same_global_batch(
    one_process: StageRun, two_processes: StageRun
) -> None:
    single, ddp = one_process.summary, two_processes.summary
    print(
        f"val/loss: 1 process {single['val/loss']} ({one_process.wall_seconds:.1f} s), "
        f"2 processes {ddp['val/loss']} ({two_processes.wall_seconds:.1f} s)"
    )
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    tiny = load_params(two_processes.root / "params.yaml", TWO_PROCESSES)
    assert single["global_step"] == ddp["global_step"] == tiny.pretrain.max_steps
    # As many tokens in all (rank 0's count × 2, so about): each rank took half of each batch.
    assert ddp["train/tokens"] == pytest.approx(single["train/tokens"], rel=0.05)
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], abs=LOSS_TOLERANCE)
    vocab_size = read_meta(two_processes.root / Layout.ENCODED)["vocab_size"]
    assert single["val/loss"] < math.log(vocab_size) - 0.1  # learned: below a uniform guess


def test_only_rank_zero_tracks_one_mlflow_run(two_processes: StageRun) -> None:
    client = MlflowClient(tracking_uri(two_processes.root))
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "pretrain"
    assert run.data.params["trainer.devices"] == "2"
    assert run.data.metrics["world_size"] == 2
    # Lightning's logger (rank 0) wrote the step-wise training curve into the stage's run.
    curve = client.get_metric_history(run.info.run_id, "train/loss")
    assert max(point.step for point in curve) >= two_processes.summary["global_step"] - 10


def test_only_rank_zero_writes(one_process: StageRun, two_processes: StageRun) -> None:
    assert two_processes.rank1_writes == [], "rank 1 wrote into the workspace"
    assert two_processes.written == one_process.written
    pretrained = two_processes.root / Layout.PRETRAINED
    assert {path.name for path in pretrained.iterdir()} == PRETRAINED_FILES
    # Training scratch is gone; only the marker that the stage finished stays (for a retry).
    scratch_files = [
        path for path in (two_processes.root / ".checkpoints").rglob("*") if path.is_file()
    ]
    assert [path.name for path in scratch_files] == [FINISHED_MARKER]
    assert two_processes.stdout.count('"global_step"') == 1  # one summary printed, by rank 0


def test_flow_runs_multi_process_stages_as_torchrun_tasks(
    data_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import flows

    root = copy_workspace(data_workspace, data_workspace.parent / "flow")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri(root))
    for name in CALLER_SETTINGS:
        monkeypatch.delenv(name, raising=False)

    state = flows.training_flow(profile=TWO_PROCESSES, return_state=True)

    assert state.is_completed(), state.message
    stages = state.result().stages
    assert {name: summary["world_size"] for name, summary in stages.items()} == {
        "pretrain": 2,
        "finetune": 2,
    }
    assert not torch.distributed.is_initialized()  # this process (the flow's) never joined
    for name, summary in stages.items():  # what rank 0 of the launch reported, read back
        written = json.loads((root / f"{TRAINING_METRICS}/{name}.json").read_text())
        assert written.items() <= summary.items()
    client = MlflowClient(tracking_uri(root))
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()]
    )
    assert {run.info.run_id: run.data.tags["stage"] for run in runs} == {
        summary["mlflow_run_id"]: name for name, summary in stages.items()
    }
    flow_run_id = str(state.state_details.flow_run_id)
    assert {run.data.tags["prefect.flow_run_id"] for run in runs} == {flow_run_id}
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    assert {"pretrain", "finetune"} <= set(lock["stages"])  # recorded after each launch
