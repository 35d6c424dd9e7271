"""Prefect flows over the pipeline stages: one task per stage, grouped into data, training and
evaluation flows, and `pipeline_flow` running all three inside one MLflow parent run.

The flows only orchestrate: a task runs its stage through `runner.run_stage`, exactly as
`tpl stage <name>` (and so `dvc repro`) does, nested MLflow run included. They run in the current
directory, which must be the DVC workspace.

Caching: a stage's task is skipped (state `Cached`) when the hash of its inputs — the files and
folders it declares as deps, and the values of the params keys it declares — matches a previous
run *and* its outputs on disk are still the ones that run produced. Results and cache records live
in `.prefect-results/` under the project.

DVC agreement: after a stage runs, `dvc commit --force <stage>` records its deps, params and outs in
`dvc.lock`; a skipped stage is committed too when dvc.lock does not already record it as it is. So
`dvc status` is clean after a Prefect run, just as after `dvc repro`.

Multi-process training: when the params give a training stage more than one process, its task
starts `torchrun ... tpl stage <name>` and reads back the summary rank 0 wrote. The flow's own
process never joins a process group, and Lightning never launches DDP inside it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.states import State

from transformer_pl.config import DEFAULT_PARAMS_FILE, ConfigError, Params, load_params
from transformer_pl.stages import STAGES, Layout, StageError, StageSpec
from transformer_pl.stages.runner import path_hashes, run_stage, stage_input_key
from transformer_pl.tracking import configure_tracking, lineage_tags, pipeline_run, tracking_uri

# Which flow runs which stage. Each group runs its stages in STAGES order; a stage not yet
# defined in STAGES is simply not run.
DATA_STAGES = ("ingest", "clean", "validate", "split", "tokenizer", "encode")
TRAINING_STAGES = ("pretrain", "finetune")
EVALUATION_STAGES = ("evaluate", "register")
STAGE_GROUPS = {"data": DATA_STAGES, "training": TRAINING_STAGES, "evaluation": EVALUATION_STAGES}

DVC_PIPELINE_FILE = "dvc.yaml"
DVC_LOCK_FILE = "dvc.lock"
# Task results and cache records (Prefect), relative to the project root.
RESULTS_DIR = Path(".prefect-results")
# Per stage: the input key of its last run and the hashes of the outputs that run left behind.
OUTPUT_RECORDS_DIR = RESULTS_DIR / "outputs"

# Transient failures (a busy DVC lock, a flaky filesystem or tracking server) get retried;
# a stage refusing its input or a bad config fails the flow at once.
STAGE_RETRIES = 2
STAGE_RETRY_DELAYS_SECONDS = [10.0, 60.0]
NOT_RETRIED = (StageError, ConfigError)
LAUNCHER_OUTPUT_TAIL_LINES = 40  # of a failed torchrun launch, quoted in the task's error

MISSING = object()
BASELINE_PREFIX = "baseline_"
SUMMARY_ARTIFACT_KEY = "transformer-pl-summary"
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # `make ui`
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where built
_PROFILE_LINE = re.compile(r"^profile:[ \t]*(?P<value>[^#\n]*?)[ \t]*(?P<comment>#.*)?$", re.M)


# --- cache keys -------------------------------------------------------------------------------


def stage_outputs(spec: StageSpec) -> tuple[str, ...]:
    return spec.outs + spec.metrics + spec.plots


def _output_record_path(spec: StageSpec) -> Path:
    return OUTPUT_RECORDS_DIR / f"{spec.name}.json"


def record_outputs(spec: StageSpec, input_key: str) -> None:
    record = {"input_key": input_key, "outputs": path_hashes(stage_outputs(spec))}
    path = _output_record_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")


def outputs_intact(spec: StageSpec, input_key: str) -> bool:
    """Whether the outputs on disk are exactly what the last run with these inputs produced.

    A cached result is only valid with them: deleted, edited, or overwritten by a run with other
    inputs (`dvc repro`, a Prefect run with other params) means the stage must run again.
    """
    path = _output_record_path(spec)
    if not path.is_file():
        return False
    record = json.loads(path.read_text(encoding="utf-8"))
    return record["input_key"] == input_key and record["outputs"] == path_hashes(
        stage_outputs(spec)
    )


def _input_key_argument(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    return arguments["input_key"]


# --- DVC agreement ----------------------------------------------------------------------------


def record_in_dvc(*stage_names: str) -> None:
    """Write the stages' current deps, params and outs into dvc.lock (and outs into the cache)."""
    # Not --quiet: that silences DVC's error messages too.
    command = [sys.executable, "-m", "dvc", "commit", "--force", *stage_names]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        stages = " ".join(stage_names)
        raise RuntimeError(f"`dvc commit {stages}` failed:\n{result.stderr or result.stdout}")


def dvc_lock_agrees(spec: StageSpec, params_file: Path) -> bool:
    """Whether dvc.lock already records the stage's deps, outs and params as they are now.

    A cheap stand-in for `dvc status <stage>` (whose YAML parsing takes seconds): a False only
    costs a needless `dvc commit`.
    """
    lock_path = Path(DVC_LOCK_FILE)
    if not lock_path.is_file():
        return False
    lock = yaml.load(lock_path.read_text(encoding="utf-8"), Loader=YamlLoader) or {}
    entry = (lock.get("stages") or {}).get(spec.name)
    if not entry:
        return False
    raw_params = yaml.load(params_file.read_text(encoding="utf-8"), Loader=YamlLoader) or {}

    def recorded(section: str) -> dict[str, str | None]:
        return {item["path"]: item.get("md5") for item in entry.get(section) or []}

    def current(key: str) -> Any:
        value: Any = raw_params
        for part in key.split("."):
            value = value.get(part, MISSING) if isinstance(value, Mapping) else MISSING
        return value

    return (
        recorded("deps") == path_hashes(spec.deps)
        and recorded("outs") == path_hashes(stage_outputs(spec))
        and (entry.get("params") or {}).get(params_file.name)
        == {key: current(key) for key in spec.params}
    )


# --- multi-process training -------------------------------------------------------------------


def training_processes(params: Params) -> int:
    """How many processes a training stage of these params runs with, on all nodes."""
    from transformer_pl.training import processes_per_node  # imports Lightning: only when asked

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


def _retry_unless_refused(stage_task: Task, task_run: TaskRun, state: State) -> bool:
    return not isinstance(state.result(raise_on_failure=False), NOT_RETRIED)


def _stage_task(spec: StageSpec) -> Task[..., dict[str, Any]]:
    def run_and_record(params: Params, input_key: str, params_file: Path) -> dict[str, Any]:
        # `input_key` is the cache key (computed by the caller, see `stage_input_key`).
        # Either way the stage runs in a nested MLflow run, as `tpl stage` runs it.
        if spec.name in TRAINING_STAGES and training_processes(params) > 1:
            summary = launch_stage(spec, params, params_file)
        else:
            summary = run_stage(spec, params, Layout())
        record_in_dvc(spec.name)
        record_outputs(spec, input_key)
        return summary

    return task(
        run_and_record,
        name=spec.name,
        description=f"Run stage '{spec.name}' and record it in dvc.lock.",
        cache_key_fn=_input_key_argument,
        persist_result=True,
        result_storage=RESULTS_DIR,
        retries=STAGE_RETRIES,
        retry_delay_seconds=STAGE_RETRY_DELAYS_SECONDS,
        retry_jitter_factor=0.2,
        retry_condition_fn=_retry_unless_refused,
    )


STAGE_TASKS: dict[str, Task[..., dict[str, Any]]] = {
    name: _stage_task(spec) for name, spec in STAGES.items()
}


def group_stages(group: str) -> list[str]:
    """The defined stages of a group, in run order."""
    return [name for name in STAGES if name in STAGE_GROUPS[group]]


def run_stages(
    names: Sequence[str], params: Params, params_file: Path
) -> dict[str, dict[str, Any]]:
    """Run the stages' tasks in order; the first failure fails the calling flow."""
    logger = get_run_logger()
    summaries: dict[str, dict[str, Any]] = {}
    stale_in_dvc: list[str] = []
    for name in names:
        spec = STAGES[name]
        input_key = stage_input_key(spec, params)
        stage_task = STAGE_TASKS[name]
        if not outputs_intact(spec, input_key):
            # Any result cached for these inputs describes outputs that are gone: overwrite it.
            stage_task = stage_task.with_options(refresh_cache=True)
        state = stage_task(params, input_key, params_file, return_state=True)
        summaries[name] = state.result()  # raises the stage's exception when it failed
        if state.name == "Cached":
            logger.info("%s: skipped (cached)", name)
            # Its outputs are what its inputs produce, but dvc.lock may say otherwise where DVC
            # tracks params the stage does not read (another profile's overlay, say).
            if not dvc_lock_agrees(spec, params_file):
                stale_in_dvc.append(name)
    if stale_in_dvc:
        record_in_dvc(*stale_in_dvc)
    return summaries


# --- params and profile -----------------------------------------------------------------------


def record_profile(params_file: Path, profile: str) -> bool:
    """Set the top-level `profile:` line of params.yaml, as `dvc exp run -S profile=...` would,
    so DVC's params check sees what ran. Comments and layout are kept; True if it changed."""
    text = params_file.read_text(encoding="utf-8")
    match = _PROFILE_LINE.search(text)
    if match and match["value"].strip("'\"") == profile:
        return False
    if match:
        comment = f"  {match['comment']}" if match["comment"] else ""
        text = f"{text[: match.start()]}profile: {profile}{comment}{text[match.end() :]}"
    else:
        text = f"{text.rstrip()}\nprofile: {profile}\n"
    params_file.write_text(text, encoding="utf-8")
    return True


def resolve_params_file(params_file: str | None) -> Path:
    return Path(params_file or os.environ.get("TPL_PARAMS") or DEFAULT_PARAMS_FILE)


def prepare_params(profile: str | None, params_file: Path) -> Params:
    """Load the effective params and record their profile in the params file."""
    if not Path(DVC_PIPELINE_FILE).is_file():
        raise ConfigError(
            f"no {DVC_PIPELINE_FILE} in {Path.cwd()}: run the pipeline from the project root"
        )
    params = load_params(params_file, profile)
    record_profile(params_file, params.profile)
    return params


# --- summary artifact -------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineResult:
    stages: dict[str, dict[str, Any]]  # stage name -> the summary its function returned
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None


def _flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline(stages: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The facts a reader looks for first, from whichever stage summaries have them."""
    split, clean = stages.get("split", {}), stages.get("clean", {})
    validation, evaluation = stages.get("validate", {}), stages.get("evaluate", {})
    registration = stages.get("register", {})
    rows: list[tuple[str, str]] = []
    if isinstance(split.get("rows"), Mapping):
        rows.append(("rows", ", ".join(f"{name} {count}" for name, count in split["rows"].items())))
    if "rows_quarantined" in clean:
        rows.append(("quarantined", f"{clean['rows_quarantined']} of {clean.get('rows_in')} rows"))
    if "success" in validation:
        outcome = "passed" if validation["success"] else "failed"
        rows.append(("validation", f"{outcome} ({validation.get('expectations', '?')} checks)"))
    for key, baseline in evaluation.items():
        # evaluate reports `test_<metric>` beside the TF-IDF baseline's `baseline_test_<metric>`.
        metric = key.removeprefix(BASELINE_PREFIX)
        if key.startswith(BASELINE_PREFIX) and metric in evaluation:
            rows.append((metric, f"{_number(evaluation[metric])} (baseline {_number(baseline)})"))
    if "model_name" in registration:
        alias = "champion" if registration.get("promoted") else "challenger"
        decision = f"{registration['model_name']} version {registration.get('version')} @{alias}"
        rows.append(("registry", f"{decision}: {registration.get('reason', '')}"))
    return rows


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # counts: 24799, not 2.48e+04
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_markdown(result: PipelineResult, profile: str, dataset: str) -> str:
    """A headline table, then one table per stage that ran listing what its summary reports."""
    lines = [f"# transformer-pl: `{dataset}`, profile `{profile}`", ""]
    if result.mlflow_run_id:
        lines += [f"MLflow run: [`{result.mlflow_run_id}`]({result.mlflow_run_url})", ""]
    if facts := headline(result.stages):
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {_cell(value, limit=300)} |" for key, value in facts]
        lines.append("")
    for name, summary in result.stages.items():
        lines += [f"## {name}", "", "| key | value |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in _flatten(summary or {}).items()]
        lines.append("")
    return "\n".join(lines)


def publish_summary(result: PipelineResult, params: Params) -> None:
    """A markdown artifact for the outermost flow run; subflows leave it to their parent."""
    if flow_run.parent_flow_run_id is None:
        create_markdown_artifact(
            summary_markdown(result, params.profile, params.dataset),
            key=SUMMARY_ARTIFACT_KEY,
            description="Stage summaries of this pipeline run",
        )


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    uri = tracking_uri()
    ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_MLFLOW_UI
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"


# --- flows ------------------------------------------------------------------------------------


def _run_group(group: str, profile: str | None, params_file: str | None) -> PipelineResult:
    path = resolve_params_file(params_file)
    params = prepare_params(profile, path)
    result = PipelineResult(stages=run_stages(group_stages(group), params, path))
    publish_summary(result, params)
    return result


@flow(name="data")
def data_flow(profile: str | None = None, params_file: str | None = None) -> PipelineResult:
    """ingest → clean → validate → split → tokenizer → encode."""
    return _run_group("data", profile, params_file)


@flow(name="training")
def training_flow(profile: str | None = None, params_file: str | None = None) -> PipelineResult:
    """pretrain → finetune."""
    return _run_group("training", profile, params_file)


@flow(name="evaluation")
def evaluation_flow(profile: str | None = None, params_file: str | None = None) -> PipelineResult:
    """evaluate (model vs baseline) → register (MLflow Model Registry)."""
    return _run_group("evaluation", profile, params_file)


GROUP_FLOWS = {"data": data_flow, "training": training_flow, "evaluation": evaluation_flow}


@flow(name="pipeline")
def pipeline_flow(profile: str | None = None, params_file: str | None = None) -> PipelineResult:
    """The whole pipeline: data, training and evaluation flows inside one MLflow parent run."""
    params = prepare_params(profile, resolve_params_file(params_file))
    experiment_id = configure_tracking(params.tracking.experiment_name)
    logged = params.model_dump(mode="json", by_alias=True)
    logged["datasets"] = {params.dataset: logged["datasets"][params.dataset]}
    tags = lineage_tags(
        dataset=params.dataset, profile=params.profile, stage="pipeline", dvc_hashes={}
    )
    stages: dict[str, dict[str, Any]] = {}
    with pipeline_run(f"{params.dataset}-{params.profile}", logged, tags) as run:
        for group, group_flow in GROUP_FLOWS.items():
            if group_stages(group):
                stages |= group_flow(profile=params.profile, params_file=params_file).stages
    run_id = run.info.run_id
    result = PipelineResult(stages, run_id, mlflow_run_url(experiment_id, run_id))
    publish_summary(result, params)
    return result
