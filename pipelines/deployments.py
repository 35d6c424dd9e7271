"""Scheduled runs of the pipeline: a Prefect deployment served from this process.

Schedules live on a Prefect server (`prefect server start`, or one from `infra/`) reached through
`PREFECT_API_URL`; the served process runs each scheduled run in a subprocess in the current
directory, which must be the project root (the DVC workspace).
"""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.deployments.runner import EntrypointType
from prefect.settings import get_current_settings

from pipelines.flows import pipeline_flow
from transformer_pl.params import ConfigError, load_params

DEFAULT_DEPLOYMENT_NAME = "transformer-pl"


def serve_pipeline(
    cron: str | None = None,
    interval: float | None = None,
    profile: str | None = None,
    name: str = DEFAULT_DEPLOYMENT_NAME,
    params_file: str | None = None,
    flow: Flow[..., Any] = pipeline_flow,
) -> None:
    """Create (or update) the deployment and run its scheduled runs until interrupted.

    With neither `cron` nor `interval` the schedule is params.yaml's `schedule.cron`. `flow` is
    the pipeline by default; one of its group flows (`data_flow`, ...) serves a part of it.
    """
    if cron and interval:
        raise ConfigError("give a cron schedule or an interval, not both")
    if not get_current_settings().api.url:
        raise ConfigError(
            "schedules need a Prefect server: start one (`prefect server start`) and set "
            "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    if not interval:
        cron = cron or load_params(params_file, profile).schedule.cron
    flow.serve(
        name=name,
        cron=cron,
        interval=interval,
        parameters={"profile": profile, "params_file": params_file},
        # Runs share one workspace (data/, dvc.lock): never two at once.
        limit=1,
        # The installed package is importable from any directory; a file path is not.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
