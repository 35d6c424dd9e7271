"""Prefect flows over the pipeline stages: one task per stage, grouped into data, training and
evaluation flows, and `pipeline_flow` running all three inside one MLflow parent run.

The flows only orchestrate: a task runs its stage through `runner.run_stage`, exactly as
`tpl stage <name>` (and so `dvc repro`) does, nested MLflow run included. They run in the current
directory, which must be the DVC workspace.

Caching: a stage's task is skipped (state `Cached`) when the hash of its inputs — the files and
folders it declares as deps, and the values of the params keys it declares — matches a previous
run *and* its outputs on disk are still the ones that run produced. Results and cache records live
in `.prefect-results/` under the project, as plain JSON; a record there that is anything else (a
planted pickle, a damaged file) is moved aside before Prefect could read it, and the stage runs.

One run per workspace: each flow holds the workspace lock (`pipelines.workspace_lock`) while it
works, so a scheduled run that starts while `tpl run` or `dvc repro` works is refused.

DVC agreement: when a flow ends (or fails), one DVC commit (`record_in_dvc`) records in `dvc.lock`
the deps, params and outs of the stages it ran, and of any skipped stage that dvc.lock does not
already record as it is; the pipeline flow commits once for its three groups. So `dvc status` is
clean after a Prefect run, just as after `dvc repro`.

Multi-process training: when the params give a training stage more than one process, its task
starts `torchrun ... tpl stage <name>` and reads back the summary rank 0 wrote. The flow's own
process never joins a process group, and Lightning never launches DDP inside it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Task, flow, get_client, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.serializers import JSONSerializer
from prefect.states import State

from pipelines.report import summary_markdown
from pipelines.workspace import (
    RESULTS_DIR,
    PipelineResult,
    dvc_lock_agrees,
    outputs_intact,
    prepare_params,
    record_in_dvc,
    record_outputs,
    record_pipeline_run,
    resolve_params_file,
)
from pipelines.workspace_lock import workspace_lock
from transformer_pl.atomic import move_aside
from transformer_pl.params import ConfigError, Params
from transformer_pl.stages import STAGES, Layout, StageError, StageSpec
from transformer_pl.stages.runner import run_stage, stage_input_key
from transformer_pl.tracking import (
    configure_tracking,
    git_commit,
    lineage_tags,
    log_headline,
    log_split_inputs,
    pipeline_run,
    tracking_uri,
)

# Which flow runs which stage. Each group runs its stages in STAGES order; a stage not yet
# defined in STAGES is simply not run.
DATA_STAGES = ("ingest", "clean", "validate", "split", "tokenizer", "encode")
TRAINING_STAGES = ("pretrain", "finetune")
EVALUATION_STAGES = ("evaluate", "register")
STAGE_GROUPS = {"data": DATA_STAGES, "training": TRAINING_STAGES, "evaluation": EVALUATION_STAGES}

# Transient failures (a busy DVC lock, a flaky filesystem or tracking server) get retried;
# a stage refusing its input or a bad config fails the flow at once.
STAGE_RETRIES = 2
STAGE_RETRY_DELAYS_SECONDS = [10.0, 60.0]
DVC_COMMIT_RETRY_DELAYS_SECONDS = [2.0, 10.0]
NOT_RETRIED = (StageError, ConfigError)
LAUNCHER_OUTPUT_TAIL_LINES = 40  # of a failed torchrun launch, quoted in the task's error

# Task results as plain JSON: no pickle, and no decoder that builds classes named in the file.
RESULT_SERIALIZER = JSONSerializer(object_encoder=None, object_decoder=None)

SUMMARY_ARTIFACT_KEY = "transformer-pl-summary"
MLFLOW_RUN_ARTIFACT_KEY, DATA_DOCS_ARTIFACT_KEY = "mlflow-run", "data-docs"
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # `make ui`


def _input_key_argument(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    return arguments["input_key"]


# --- multi-process training -------------------------------------------------------------------


def training_processes(params: Params) -> int:
    """How many processes a training stage of these params runs with, on all nodes."""
    from transformer_pl.lightning.trainer import (
        processes_per_node,  # imports Lightning: only when asked
    )

    return processes_per_node(params.trainer) * params.trainer.num_nodes


def launch_stage(spec: StageSpec, params: Params, params_file: Path) -> dict[str, Any]:
    """Run `spec` as `torchrun --standalone --nproc-per-node N tpl stage <name>` on this machine,
    its output forwarded to the task's log, and return the summary that rank 0 wrote.

    The stage's MLflow run nests under the pipeline's run (`TPL_PARENT_RUN_ID` is inherited) and
    is tagged with this flow run (`PREFECT__FLOW_RUN_ID`, as a Prefect worker sets it).
    """
    if params.trainer.num_nodes > 1:
        raise ConfigError(
            f"trainer.num_nodes is {params.trainer.num_nodes}: a flow starts one machine's "
            f"processes only. Launch `tpl stage {spec.name}` on every node (torchrun, srun or a "
            "Kubernetes Job, infra/README.md), or set trainer.num_nodes to 1"
        )
    logger = get_run_logger()
    with tempfile.TemporaryDirectory(prefix=f"tpl-{spec.name}-") as scratch:
        summary_file = Path(scratch) / "summary.json"
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone", f"--nproc-per-node={training_processes(params)}",
            "-m", "transformer_pl.cli", "stage", spec.name,
            "--params", str(params_file.resolve()), "--profile", params.profile,
            "--summary-file", str(summary_file),
        ]  # fmt: skip
        # PYTHONSAFEPATH: import the installed package, not a same-named folder in the workspace.
        env = {**os.environ, "PYTHONSAFEPATH": "1"}
        if flow_run_id := flow_run.get_id():
            env["PREFECT__FLOW_RUN_ID"] = flow_run_id
        logger.info("launching %s", shlex.join(command))
        tail: deque[str] = deque(maxlen=LAUNCHER_OUTPUT_TAIL_LINES)
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            for line in process.stdout or ():
                tail.append(line)
                logger.info(line.rstrip())
        if process.returncode != 0:
            raise RuntimeError(
                f"torchrun for stage {spec.name} failed (exit {process.returncode}):\n"
                + "".join(tail)
            )
        return json.loads(summary_file.read_text(encoding="utf-8"))


# --- tasks ------------------------------------------------------------------------------------


def set_aside_foreign_result(input_key: str) -> None:
    """Move aside the result stored under `input_key` unless it is plain JSON written with
    `RESULT_SERIALIZER`. Prefect deserializes a stored result with whatever serializer its record
    names (pickle included, or a JSON decoder that builds any class by name): a planted or
    damaged record must never reach it. Without a record the stage simply runs."""
    path = RESULTS_DIR / input_key
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_bytes())
        serializer = record["metadata"]["serializer"]
        summary = json.loads(record["result"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as error:
        move_aside(path, f"not a JSON result record: {type(error).__name__}: {error}")
        return
    # Exactly ours: a Prefect upgrade that changes the dump costs one re-run, never a decoder.
    if serializer != RESULT_SERIALIZER.model_dump(mode="json") or not isinstance(summary, dict):
        move_aside(path, f"a result not written by this pipeline (serializer {serializer})")


def _retry_unless_refused(stage_task: Task, task_run: TaskRun, state: State) -> bool:
    return not isinstance(state.result(raise_on_failure=False), NOT_RETRIED)


def _stage_task(spec: StageSpec) -> Task[..., dict[str, Any]]:
    def run_and_record(params: Params, input_key: str, params_file: Path) -> dict[str, Any]:
        # `input_key` is the cache key (computed by the caller, see `stage_input_key`).
        # Either way the stage runs in a nested MLflow run, as `tpl stage` runs it.
        if spec.trains and training_processes(params) > 1:
            summary = launch_stage(spec, params, params_file)
        else:
            summary = run_stage(spec, params, Layout())
        record_outputs(spec, input_key, summary)
        # What a cache hit reads back: the same values, persisted as plain JSON.
        return json.loads(json.dumps(summary, default=str))

    return task(
        run_and_record,
        name=spec.name,
        description=f"Run stage '{spec.name}' and record the outputs it left.",
        cache_key_fn=_input_key_argument,
        persist_result=True,
        result_storage=RESULTS_DIR,
        result_serializer=RESULT_SERIALIZER,
        retries=STAGE_RETRIES,
        retry_delay_seconds=STAGE_RETRY_DELAYS_SECONDS,
        retry_jitter_factor=0.2,
        retry_condition_fn=_retry_unless_refused,
    )


STAGE_TASKS: dict[str, Task[..., dict[str, Any]]] = {
    name: _stage_task(spec) for name, spec in STAGES.items()
}
DVC_COMMIT_TASK = task(
    record_in_dvc,
    name="dvc-commit",
    description="Record the stages' deps, params and outs in dvc.lock (`dvc commit --force`).",
    retries=len(DVC_COMMIT_RETRY_DELAYS_SECONDS),
    retry_delay_seconds=DVC_COMMIT_RETRY_DELAYS_SECONDS,
)


def group_stages(group: str) -> list[str]:
    """The defined stages of a group, in run order."""
    return [name for name in STAGES if name in STAGE_GROUPS[group]]


def run_stages(
    names: Sequence[str], params: Params, params_file: Path, defer_dvc_commit: bool = False
) -> PipelineResult:
    """Run the stages' tasks in order, then record in dvc.lock what changed (or, deferred, leave
    that to the caller: the result lists the stages). The first failure fails the calling flow,
    after the stages that did run are recorded."""
    logger = get_run_logger()
    summaries: dict[str, dict[str, Any]] = {}
    to_commit: list[str] = []
    try:
        for name in names:
            spec = STAGES[name]
            input_key = stage_input_key(spec, params)
            stage_task = STAGE_TASKS[name]
            set_aside_foreign_result(input_key)
            if not outputs_intact(spec, input_key):
                # Any result cached for these inputs describes outputs that are gone: overwrite.
                stage_task = stage_task.with_options(refresh_cache=True)
            state = stage_task(params, input_key, params_file, return_state=True)
            summaries[name] = state.result()  # raises the stage's exception when it failed
            if state.name != "Cached":
                to_commit.append(name)
                continue
            logger.info("%s: skipped (cached)", name)
            # Its outputs are what its inputs produce, but dvc.lock may say otherwise where DVC
            # tracks params the stage does not read (another profile's overlay, say).
            if not dvc_lock_agrees(spec, params_file):
                to_commit.append(name)
    except BaseException:
        if to_commit:
            DVC_COMMIT_TASK(*to_commit)
        raise
    if to_commit and not defer_dvc_commit:
        DVC_COMMIT_TASK(*to_commit)
        to_commit = []
    return PipelineResult(stages=summaries, uncommitted_in_dvc=tuple(to_commit))


# --- summary artifact -------------------------------------------------------------------------


def publish_summary(result: PipelineResult, params: Params) -> None:
    """For the outermost flow run (subflows leave it to their parent): a markdown artifact of
    the stage summaries, and links to the run's MLflow run and to the Data Docs it validated
    with."""
    if flow_run.parent_flow_run_id is not None:
        return
    create_markdown_artifact(
        summary_markdown(result, params.profile, params.dataset),
        key=SUMMARY_ARTIFACT_KEY,
        description="Stage summaries of this pipeline run",
    )
    if result.mlflow_run_url:
        create_link_artifact(
            result.mlflow_run_url,
            link_text="the pipeline's MLflow run",
            key=MLFLOW_RUN_ARTIFACT_KEY,
            description="Its params, metrics, datasets and model, nested stage runs",
        )
    if data_docs := (result.stages.get("validate") or {}).get("data_docs"):
        create_link_artifact(
            Path(data_docs).resolve().as_uri(),
            link_text="Great Expectations Data Docs",
            key=DATA_DOCS_ARTIFACT_KEY,
            description="The validation of the data this run trained on",
        )


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    uri = tracking_uri()
    ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_MLFLOW_UI
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"


# --- flows ------------------------------------------------------------------------------------


def _flow_run_command() -> str:
    """What holds the workspace, for the message a refused run gets."""
    return (
        f"Prefect flow run {flow_run.get_flow_name()}/{flow_run.get_name()} ({flow_run.get_id()})"
    )


def label_flow_run(name: str, params: Params) -> None:
    """Name this flow run and tag it with its dataset, profile and commit (added to the tags it
    has), so the Prefect UI tells runs apart and filters them; outside a flow run, nothing."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    tags = {
        *flow_run.get_tags(),
        f"dataset:{params.dataset}",
        f"profile:{params.profile}",
        f"git:{git_commit()[:12]}",
    }
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), name=name, tags=sorted(tags))


def _run_group(
    group: str, profile: str | None, params_file: str | None, defer_dvc_commit: bool
) -> PipelineResult:
    with workspace_lock(_flow_run_command()):
        path = resolve_params_file(params_file)
        params = prepare_params(profile, path)
        label_flow_run(f"{params.dataset}-{params.profile}-{group}", params)
        result = run_stages(group_stages(group), params, path, defer_dvc_commit)
    publish_summary(result, params)
    return result


# `defer_dvc_commit`: leave the DVC commit of the stages that ran to the caller, which lists them
# in `uncommitted_in_dvc` (the pipeline flow commits once for all groups). A failed flow commits
# what it ran itself.


@flow(name="data")
def data_flow(
    profile: str | None = None, params_file: str | None = None, defer_dvc_commit: bool = False
) -> PipelineResult:
    """ingest → clean → validate → split → tokenizer → encode."""
    return _run_group("data", profile, params_file, defer_dvc_commit)


@flow(name="training")
def training_flow(
    profile: str | None = None, params_file: str | None = None, defer_dvc_commit: bool = False
) -> PipelineResult:
    """pretrain → finetune."""
    return _run_group("training", profile, params_file, defer_dvc_commit)


@flow(name="evaluation")
def evaluation_flow(
    profile: str | None = None, params_file: str | None = None, defer_dvc_commit: bool = False
) -> PipelineResult:
    """evaluate (model vs baseline) → register (MLflow Model Registry)."""
    return _run_group("evaluation", profile, params_file, defer_dvc_commit)


GROUP_FLOWS = {"data": data_flow, "training": training_flow, "evaluation": evaluation_flow}


@flow(name="pipeline")
def pipeline_flow(profile: str | None = None, params_file: str | None = None) -> PipelineResult:
    """The whole pipeline: data, training and evaluation flows inside one MLflow parent run,
    holding the workspace (a scheduled run started while another run works is refused)."""
    with workspace_lock(_flow_run_command()):
        return _run_pipeline(profile, params_file)


def _run_pipeline(profile: str | None, params_file: str | None) -> PipelineResult:
    params = prepare_params(profile, resolve_params_file(params_file))
    label_flow_run(f"{params.dataset}-{params.profile}", params)
    experiment_id = configure_tracking(params.experiment_name)
    logged = params.model_dump(mode="json", by_alias=True)
    logged["datasets"] = {params.dataset: logged["datasets"][params.dataset]}
    tags = lineage_tags(
        dataset=params.dataset, profile=params.profile, stage="pipeline", dvc_hashes={}
    )
    stages: dict[str, dict[str, Any]] = {}
    uncommitted: list[str] = []  # one DVC commit for all groups: each costs a collect and a dump
    try:
        with pipeline_run(f"{params.dataset}-{params.profile}", logged, tags) as run:
            for group, group_flow in GROUP_FLOWS.items():
                if not group_stages(group):
                    continue
                group_result = group_flow(
                    profile=params.profile, params_file=params_file, defer_dvc_commit=True
                )
                stages |= group_result.stages
                uncommitted += group_result.uncommitted_in_dvc
            log_headline(stages)
            log_split_inputs(params.dataset, stages["split"].get("digests", {}), Path("."))
    finally:
        if uncommitted:
            DVC_COMMIT_TASK(*uncommitted)
    run_id = run.info.run_id
    result = PipelineResult(stages, run_id, mlflow_run_url(experiment_id, run_id))
    publish_summary(result, params)
    record_pipeline_run(result)
    return result
