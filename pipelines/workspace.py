"""What a pipeline workspace records about its last runs: the params file's profile, each stage's
outputs and summary, the last pipeline run's MLflow run, and whether dvc.lock agrees.

Prefect-free (and MLflow-free) on purpose: `tpl run` reads it before importing either, so a run
with nothing changed is answered in a couple of seconds instead of booting Prefect's API server
for a flow run of cached tasks (`unchanged_pipeline`). The flows use the same records for their
cache checks, so the two can never disagree about what "unchanged" means.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transformer_pl.config import DEFAULT_PARAMS_FILE, ConfigError, Params, load_params
from transformer_pl.stages import STAGES, StageSpec
from transformer_pl.stages.runner import path_hashes, stage_input_key

DVC_PIPELINE_FILE = "dvc.yaml"
DVC_LOCK_FILE = "dvc.lock"
# Task results and cache records (Prefect), relative to the project root.
RESULTS_DIR = Path(".prefect-results")
# Per stage: the input key of its last run, the hashes of the outputs it left, and its summary.
OUTPUT_RECORDS_DIR = RESULTS_DIR / "outputs"
# The MLflow parent run of the last pipeline run.
LAST_PIPELINE_RUN_FILE = RESULTS_DIR / "last-pipeline-run.json"

MISSING = object()
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where built
_PROFILE_LINE = re.compile(r"^profile:[ \t]*(?P<value>[^#\n]*?)[ \t]*(?P<comment>#.*)?$", re.M)


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


# --- what each stage last produced ------------------------------------------------------------


def stage_outputs(spec: StageSpec) -> tuple[str, ...]:
    return spec.outs + spec.metrics + spec.plots


def _output_record_path(spec: StageSpec) -> Path:
    return OUTPUT_RECORDS_DIR / f"{spec.name}.json"


def record_outputs(spec: StageSpec, input_key: str, summary: Mapping[str, Any]) -> None:
    record = {
        "input_key": input_key,
        "outputs": path_hashes(stage_outputs(spec)),
        "summary": summary,
    }
    path = _output_record_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


def _output_record(spec: StageSpec) -> dict[str, Any] | None:
    path = _output_record_path(spec)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def outputs_intact(spec: StageSpec, input_key: str) -> bool:
    """Whether the outputs on disk are exactly what the last run with these inputs produced.

    A cached result is only valid with them: deleted, edited, or overwritten by a run with other
    inputs (`dvc repro`, a Prefect run with other params) means the stage must run again.
    """
    return _record_matches(spec, _output_record(spec), input_key)


def _record_matches(spec: StageSpec, record: Mapping[str, Any] | None, input_key: str) -> bool:
    return (
        record is not None
        and record["input_key"] == input_key
        and record["outputs"] == path_hashes(stage_outputs(spec))
    )


# --- DVC agreement ----------------------------------------------------------------------------


def record_in_dvc(*stage_names: str) -> None:
    """Write the stages' current deps, params and outs into dvc.lock (and outs into the cache):
    what `dvc commit --force <stages>` does, in one pass.

    The command collects the pipeline and rewrites dvc.lock once per stage named, and parsing
    dvc.lock (every stage's params) takes most of a second each time: ten stages cost ~30 s
    on 2 cores. Here, as in `dvc.repo.commit.commit`, each stage is saved (hashes) and committed
    (outs into the cache), and dvc.lock is rewritten once for all of them (~3 s). DVC's internal
    API (pinned version); the flow tests check `dvc status` is clean after every run.
    """
    from dvc.repo import Repo

    with Repo() as repo, repo.lock:
        by_address = {stage.addressing: stage for stage in repo.index.stages}
        unknown = [name for name in stage_names if name not in by_address]
        if unknown:
            raise ConfigError(f"stages {unknown} are not in {DVC_PIPELINE_FILE}")
        stages = [by_address[name] for name in stage_names]
        for stage in stages:
            stage.save()
            stage.commit()
        if stages:
            stages[0].dvcfile.dump_stages(stages, update_pipeline=False)


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


# --- the last pipeline run --------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineResult:
    stages: dict[str, dict[str, Any]]  # stage name -> the summary its function returned
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    # Stages that ran (or that dvc.lock misrecords) whose DVC commit the caller took over.
    uncommitted_in_dvc: tuple[str, ...] = ()


def record_pipeline_run(result: PipelineResult) -> None:
    LAST_PIPELINE_RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
    run = {"mlflow_run_id": result.mlflow_run_id, "mlflow_run_url": result.mlflow_run_url}
    LAST_PIPELINE_RUN_FILE.write_text(json.dumps(run, indent=2), encoding="utf-8")


def unchanged_pipeline(profile: str | None, params_file: Path) -> PipelineResult | None:
    """The last run's result when running the pipeline now would change nothing, else None.

    Nothing changes when every stage's outputs are what its current inputs (deps and params)
    produced, and dvc.lock records every stage as it is: exactly when a flow run would take
    every stage from the cache and commit nothing. The result names the last pipeline run's
    MLflow run, where those outputs were tracked.
    """
    params = prepare_params(profile, params_file)
    summaries: dict[str, dict[str, Any]] = {}
    for spec in STAGES.values():
        record = _output_record(spec)
        if (
            record is None
            or "summary" not in record  # written before summaries were recorded
            or not _record_matches(spec, record, stage_input_key(spec, params))
            or not dvc_lock_agrees(spec, params_file)
        ):
            return None
        summaries[spec.name] = record["summary"]
    if not LAST_PIPELINE_RUN_FILE.is_file():
        return None
    last_run = json.loads(LAST_PIPELINE_RUN_FILE.read_text(encoding="utf-8"))
    return PipelineResult(summaries, last_run["mlflow_run_id"], last_run["mlflow_run_url"])
