"""What a pipeline workspace records about its last runs: the params file's profile, each stage's
outputs and summary, the last pipeline run's MLflow run, and whether dvc.lock agrees.

Prefect-free (and MLflow-free) on purpose: `tpl run` reads it before importing either, so a run
with nothing changed is answered in a couple of seconds instead of booting Prefect's API server
for a flow run of cached tasks (`unchanged_pipeline`). The flows use the same records for their
cache checks, so the two can never disagree about what "unchanged" means.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from transformer_pl.atomic import move_aside, write_text_atomic
from transformer_pl.params import DEFAULT_PARAMS_FILE, ConfigError, Params, load_params
from transformer_pl.stages import STAGES, StageSpec
from transformer_pl.stages.runner import path_hashes, stage_input_key

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger(__name__)

DVC_PIPELINE_FILE = "dvc.yaml"
DVC_LOCK_FILE = "dvc.lock"
# Task results and cache records (Prefect), relative to the project root.
RESULTS_DIR = Path(".prefect-results")
# Per stage: the input key of its last run, the hashes of the outputs it left, and its summary.
OUTPUT_RECORDS_DIR = RESULTS_DIR / "outputs"
# The MLflow parent run of the last pipeline run.
LAST_PIPELINE_RUN_FILE = RESULTS_DIR / "last-pipeline-run.json"

# What a record must hold to be used (an output record of an older version has no summary).
OUTPUT_RECORD_FIELDS = frozenset({"input_key", "outputs"})
LAST_RUN_FIELDS = frozenset({"mlflow_run_id", "mlflow_run_url"})

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
    write_text_atomic(params_file, text)
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


def _output_record_path(spec: StageSpec) -> Path:
    return OUTPUT_RECORDS_DIR / f"{spec.name}.json"


def record_outputs(spec: StageSpec, input_key: str, summary: Mapping[str, Any]) -> None:
    record = {
        "input_key": input_key,
        "outputs": path_hashes(spec.outputs),
        "summary": summary,
    }
    write_text_atomic(_output_record_path(spec), json.dumps(record, indent=2, default=str))


def _read_record(path: Path, fields: frozenset[str]) -> dict[str, Any] | None:
    """The JSON record at `path`, None without one. A record that does not parse or lacks
    `fields` (a disk full, a hand edit) counts as none, with a warning naming it: the stage
    it describes runs again and writes a new one."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        problem = f"not JSON: {error}"
    else:
        if isinstance(record, dict) and record.keys() >= fields:
            return record
        problem = f"not a record with {sorted(fields)}"
    log.warning(
        "%s is unreadable (%s): ignored, what it records is rebuilt", path.absolute(), problem
    )
    return None


def _output_record(spec: StageSpec) -> dict[str, Any] | None:
    return _read_record(_output_record_path(spec), OUTPUT_RECORD_FIELDS)


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
        and record["outputs"] == path_hashes(spec.outputs)
    )


# --- DVC agreement ----------------------------------------------------------------------------


def _dvc_lock_stages() -> dict[str, Any]:
    """dvc.lock's `stages` ({} without a dvc.lock). One that is not YAML (a write cut short) is
    moved aside: the next DVC commit writes a fresh one."""
    path = Path(DVC_LOCK_FILE)
    if not path.is_file():
        return {}
    try:
        lock = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        move_aside(path, f"not YAML: {str(error).splitlines()[0]}")
        return {}
    stages = lock.get("stages") if isinstance(lock, dict) else None
    return stages if isinstance(stages, dict) else {}


def locked_params(stage: str, params_file: Path) -> dict[str, Any]:
    """The values of `params_file` that dvc.lock records for `stage` ({} when it has none)."""
    entry = _dvc_lock_stages().get(stage)
    recorded = entry.get("params") if isinstance(entry, Mapping) else None
    values = recorded.get(params_file.name) if isinstance(recorded, Mapping) else None
    return dict(values) if isinstance(values, Mapping) else {}


def _set_aside_invalid_dvc_lock(repo: Repo) -> None:
    # DVC refuses to commit over a dvc.lock it cannot parse or validate (an empty one, say).
    from dvc.dvcfile import Lockfile
    from dvc.utils import strictyaml

    path = Path(repo.root_dir) / DVC_LOCK_FILE
    if not path.is_file():
        return
    try:
        strictyaml.load(str(path), Lockfile.SCHEMA, repo.fs)
    except (strictyaml.YAMLSyntaxError, strictyaml.YAMLValidationError) as error:
        move_aside(path, f"DVC cannot read it: {error}")


def record_in_dvc(*stage_names: str) -> None:
    """Write the stages' current deps, params and outs into dvc.lock (and outs into the cache):
    what `dvc commit --force <stages>` does, in one pass.

    The command collects the pipeline and rewrites dvc.lock once per stage named, parsing
    dvc.lock (every stage's params) each time: the cost grows with the square of the stages.
    Here, as in `dvc.repo.commit.commit`, each stage is saved (hashes) and committed (outs into
    the cache), and dvc.lock is rewritten once for all of them. DVC's internal
    API (pinned version); the flow tests check `dvc status` is clean after every run. A dvc.lock
    that DVC cannot read is moved aside first (with a warning naming it); the commit writes a
    new one, which the flows fill with every stage (none of them agrees with a missing one).
    """
    from dvc.repo import Repo

    with Repo() as repo, repo.lock:
        _set_aside_invalid_dvc_lock(repo)
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
    entry = _dvc_lock_stages().get(spec.name)
    if not isinstance(entry, Mapping):
        return False
    raw_params = yaml.load(params_file.read_text(encoding="utf-8"), Loader=YamlLoader) or {}

    def recorded(section: str) -> dict[str, str | None] | None:
        # None where a dvc.lock cut short holds no list of {path, md5}: the commit rewrites it.
        items = entry.get(section) or []
        if not isinstance(items, list) or not all(
            isinstance(item, Mapping) and "path" in item for item in items
        ):
            return None
        return {item["path"]: item.get("md5") for item in items}

    def current(key: str) -> Any:
        value: Any = raw_params
        for part in key.split("."):
            value = value.get(part, MISSING) if isinstance(value, Mapping) else MISSING
        return value

    return (
        recorded("deps") == path_hashes(spec.deps)
        and recorded("outs") == path_hashes(spec.outputs)
        and isinstance(recorded_params := entry.get("params") or {}, Mapping)
        and recorded_params.get(params_file.name) == {key: current(key) for key in spec.params}
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
    run = {"mlflow_run_id": result.mlflow_run_id, "mlflow_run_url": result.mlflow_run_url}
    write_text_atomic(LAST_PIPELINE_RUN_FILE, json.dumps(run, indent=2))


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
    last_run = _read_record(LAST_PIPELINE_RUN_FILE, LAST_RUN_FIELDS)
    if last_run is None:
        return None
    return PipelineResult(summaries, last_run["mlflow_run_id"], last_run["mlflow_run_url"])
