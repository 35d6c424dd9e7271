"""Running one stage the same way for every runner: tracked in MLflow, keyed by its inputs.

`tpl stage` (what `dvc repro` calls) and the Prefect tasks both call `run_stage`, so a stage's
nested MLflow run, its params, lineage tags and metrics look the same whichever runner ran it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from transformer_pl.params import ConfigError, Params
from transformer_pl.stages.base import StageSpec
from transformer_pl.stages.layout import Layout
from transformer_pl.tracking_store import tracking_uri

PROFILE_OVERLAYS_KEY = "profiles"  # params.yaml's overlays, already applied by `load_params`
_MISSING = object()
_METRIC_NAME_UNSAFE = re.compile(r"[^\w\-. :/]")  # characters MLflow refuses in metric names
# The ranks launchers give a process: torchrun (RANK), srun (SLURM_PROCID), and Lightning's own
# launcher, which re-runs the command once per extra device with only LOCAL_RANK and NODE_RANK.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def is_global_zero() -> bool:
    """False on the non-zero ranks of a multi-process launch: those neither track nor write."""
    return all(os.environ.get(variable, "0") == "0" for variable in RANK_VARIABLES)


def _dotted(values: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(values, Mapping) or part not in values:
            return _MISSING
        values = values[part]
    return values


def params_subset(params: Params, keys: Iterable[str]) -> dict[str, Any]:
    """The effective values (profile applied) of the given sections or dotted keys.

    `profiles` is left out: the overlays are applied already, so their effect on what a stage
    reads shows in the values of its other keys.
    """
    values = params.model_dump(mode="json", by_alias=True)
    subset: dict[str, Any] = {}
    for key in keys:
        if key == PROFILE_OVERLAYS_KEY:
            continue
        subset[key] = _dotted(values, key)
        if subset[key] is _MISSING:
            raise ConfigError(f"params have no key '{key}'")
    return subset


def path_hashes(paths: Iterable[str], root: Path = Path(".")) -> dict[str, str | None]:
    """{path: DVC md5} of files and folders; None for a path that does not exist (yet)."""
    from transformer_pl.content_hash import dvc_md5

    return {path: dvc_md5(root / path) if (root / path).exists() else None for path in paths}


def stage_input_key(spec: StageSpec, params: Params, root: Path = Path(".")) -> str:
    """A hash of everything the stage reads: its deps' contents and its params' values, and for
    a stage that writes to the registry, which registry (a new tracking server re-runs it)."""
    inputs: dict[str, Any] = {
        "deps": path_hashes(spec.deps, root),
        "params": params_subset(params, spec.params),
    }
    if spec.registry:
        inputs["registry"] = tracking_uri(root)
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return f"{spec.name}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def _numeric_leaves(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    leaves: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            leaves.update(_numeric_leaves(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            leaves[_METRIC_NAME_UNSAFE.sub("_", name)] = float(value)
    return leaves


def run_stage(spec: StageSpec, params: Params, layout: Layout | None = None) -> dict[str, Any]:
    """Run `spec` inside its own MLflow run (nested under the pipeline's run when there is one).

    The run gets the stage's params, lineage tags (git commit, DVC hashes of its inputs, dataset,
    profile, Prefect flow-run id), the summary's numbers as metrics, and its metrics and plots
    files as artifacts. The summary gains `mlflow_run_id`.
    """
    import mlflow

    from transformer_pl.tracking import configure_tracking, lineage_tags, stage_run

    layout = layout or Layout()
    if not is_global_zero():
        return spec.run(params, layout)
    configure_tracking(params.experiment_name)
    hashes = {path: md5 for path, md5 in path_hashes(spec.deps, layout.root).items() if md5}
    tags = lineage_tags(
        dataset=params.dataset, profile=params.profile, stage=spec.name, dvc_hashes=hashes
    )
    with stage_run(
        spec.name, params_subset(params, spec.params), tags, system_metrics=spec.trains
    ) as run:
        summary = spec.run(params, layout)
        mlflow.log_metrics(_numeric_leaves(summary))
        for relative in spec.metrics + spec.plots + spec.reports:
            path = layout / relative
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=relative)
            elif path.is_file():
                mlflow.log_artifact(str(path), artifact_path=str(Path(relative).parent))
    return {**summary, "mlflow_run_id": run.info.run_id}
