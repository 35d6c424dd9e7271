"""`tpl`: the command line. Thin: it parses arguments and calls stages or flows."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipelines.temporary_server import STARTUP_TIMEOUT_VARIABLE, start_unless_configured
from pipelines.workspace_lock import WorkspaceBusy, workspace_lock
from transformer_pl.atomic import write_text_atomic
from transformer_pl.params import (
    PROFILE_VARIABLE,
    ConfigError,
    Params,
    load_params,
    void_base_edits,
)

if TYPE_CHECKING:
    from pipelines.workspace import PipelineResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="transformer-pl: train Transformers from raw text to a registered, served model. "
    "`tpl run` runs the whole pipeline (data → training → evaluation → registry); "
    "`tpl stage NAME` runs one stage, as `dvc repro` does; `tpl predict` uses the champion, "
    "`tpl serve` serves it over HTTP.",
)
PROJECT_LOGGERS = ("transformer_pl", "pipelines")  # what the pipeline itself says


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import version

        typer.echo(f"tpl (transformer-pl) {version('transformer-pl')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also show the pipeline's debug messages")
    ] = False,
) -> None:
    """Show the pipeline's own messages (resuming, moved-aside state files, …) on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        if not logger.handlers:
            logger.addHandler(handler)


ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="params.yaml profile overlay (default: the file's)"),
]
ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params file (default params.yaml)")
]


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="stage name, as in dvc.yaml")],
    profile: ProfileOption = None,
    params_file: ParamsOption = None,
    summary_file: Annotated[
        Path | None,
        typer.Option("--summary-file", help="also write the stage's summary (JSON) to this file"),
    ] = None,
) -> None:
    """Run one pipeline stage (what `dvc repro` calls). Under a multi-process launcher (torchrun,
    srun) every process runs it; only global rank 0 reports. Refused while another run holds the
    workspace (.tpl.lock)."""
    from transformer_pl.stages import STAGES, Layout, StageError
    from transformer_pl.stages.runner import is_global_zero, run_stage

    if name not in STAGES:
        typer.echo(f"unknown stage '{name}'; stages: {', '.join(STAGES)}", err=True)
        raise typer.Exit(2)
    # Under a multi-process launcher, rank 0 holds the workspace for all ranks.
    holding = workspace_lock(_command_line()) if is_global_zero() else nullcontext()
    try:
        with holding:
            params = _stage_params(name, params_file, profile)
            summary = run_stage(STAGES[name], params, Layout())
    except (ConfigError, StageError, WorkspaceBusy) as error:
        typer.echo(f"stage {name} failed: {error}", err=True)
        raise typer.Exit(1) from None
    if is_global_zero():
        report = json.dumps(summary, indent=2, default=str)
        typer.echo(report)
        if summary_file is not None:
            write_text_atomic(summary_file, report + "\n")


def _stage_params(name: str, params_file: Path | None, profile: str | None) -> Params:
    """The params a stage runs with. Without --profile (as `dvc repro` runs it): the params
    file's own profile, which DVC tracks. Refused there, so that DVC never records values other
    than those that ran: a $TPL_PROFILE naming another profile, and an edit of a base value
    since DVC last ran the stage that the profile overrides (it would change nothing)."""
    import yaml

    from pipelines.workspace import locked_params, resolve_params_file

    params = load_params(params_file, profile, profile_from_env=False)
    if profile is not None:
        return params
    from_env = os.environ.get(PROFILE_VARIABLE)
    if from_env and from_env != params.profile:
        raise ConfigError(
            f"{PROFILE_VARIABLE} is '{from_env}' but the params file says profile: "
            f"{params.profile}. A stage takes its profile from the file, which DVC tracks: run "
            f"`dvc exp run -S profile={from_env}` or `tpl run --profile {from_env}`, or unset "
            f"{PROFILE_VARIABLE}"
        )
    path = resolve_params_file(str(params_file) if params_file else None)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if void := void_base_edits(raw, locked_params(name, path), params.profile):
        overrides = ", ".join(f"profiles.{params.profile}.{key}" for key in void)
        raise ConfigError(
            f"{', '.join(void)} changed in {path} since stage {name} last ran, but profile "
            f"'{params.profile}' sets {'it' if len(void) == 1 else 'them'} itself: the change "
            f"would do nothing. Change {overrides} instead (`dvc exp run -S "
            f"profiles.{params.profile}.{void[0]}=...`), or choose another profile"
        )
    return params


@app.command("stages")
def list_stages() -> None:
    """List the stages in run order with what each reads and writes."""
    from transformer_pl.stages import STAGES

    for spec in STAGES.values():
        typer.echo(
            f"{spec.name}: deps={list(spec.deps)} params={list(spec.params)} outs={list(spec.outs)}"
        )


@app.command("dvc-yaml")
def write_dvc_yaml(
    check: Annotated[
        bool, typer.Option("--check", help="only say whether dvc.yaml is current (exit 1 if not)")
    ] = False,
) -> None:
    """Write dvc.yaml from the stage declarations (deps, code derived from the imports,
    params, outs, metrics, plots), in the project root."""
    from transformer_pl.atomic import write_text_atomic
    from transformer_pl.stages.dvc_pipeline import DVC_PIPELINE_FILE, render_dvc_yaml

    rendered, path = render_dvc_yaml(), Path(DVC_PIPELINE_FILE)
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if check:
        if current != rendered:
            typer.echo(
                f"{path} is not what the stage declarations give: run `tpl dvc-yaml`", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"{path} is current")
        return
    if current != rendered:
        write_text_atomic(path, rendered)
    typer.echo(f"{path} {'written' if current != rendered else 'already current'}")


@app.command("params")
def show_params(profile: ProfileOption = None, params_file: ParamsOption = None) -> None:
    """Print the effective parameters (params.yaml + profile), validated."""
    try:
        params = load_params(params_file, profile)
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    json.dump(params.model_dump(mode="json", by_alias=True), sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command("run")
def run_pipeline(
    profile: ProfileOption = None,
    params_file: ParamsOption = None,
    force_flow: Annotated[
        bool,
        typer.Option(
            "--force-flow",
            help="make a Prefect flow run even when nothing changed (its stages then all come "
            "from the cache)",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline as a Prefect flow (cached stages are skipped), tracked in MLflow.
    With nothing changed since the last run, say so and show its results, without Prefect.
    Refused at once while another run holds the workspace (.tpl.lock names it)."""
    try:
        with workspace_lock(_command_line()):
            _run_pipeline(profile, params_file, force_flow)
    except WorkspaceBusy as error:
        typer.echo(f"pipeline refused: {error}", err=True)
        raise typer.Exit(1) from None


def _command_line() -> str:
    """This command as the user typed it, for the message a run refused meanwhile gets."""
    return shlex.join(["tpl", *sys.argv[1:]])


def _run_pipeline(profile: str | None, params_file: Path | None, force_flow: bool) -> None:
    from pipelines.workspace import resolve_params_file, unchanged_pipeline

    # Prefect's 20 s allowance for starting its temporary server is too short on a busy small
    # machine.
    os.environ.setdefault(STARTUP_TIMEOUT_VARIABLE, "120")
    # Without a Prefect server to use, one boots in the background while this process
    # checks for changes and imports the pipeline.
    server = start_unless_configured()
    path = resolve_params_file(str(params_file) if params_file else None)
    try:
        unchanged = None if force_flow else unchanged_pipeline(profile, path)
    except ConfigError as error:
        typer.echo(f"pipeline failed: {error}", err=True)
        raise typer.Exit(1) from None  # (the server stops at exit)
    if unchanged is not None:
        if server is not None:
            server.stop()
        for name in unchanged.stages:
            typer.echo(f"{name}: skipped (up to date)", err=True)
        typer.echo(
            "Nothing changed since the last run (inputs, params and outputs of every stage; "
            "dvc.lock agrees): no flow run. `tpl run --force-flow` makes one anyway.",
            err=True,
        )
        _print_result(unchanged, "the last run; nothing new was tracked")
        return
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_UI_URL,
        get_current_settings,
        temporary_settings,
    )

    from pipelines.flows import pipeline_flow
    from transformer_pl.stages import StageError
    from transformer_pl.tracking import open_tracking_store

    if server is not None and get_current_settings().api.url:  # a Prefect profile names one
        server.stop()
        server = None
    api_settings: dict[Any, str] = {}
    if server is not None:
        open_tracking_store()  # while the server boots
        server.wait_until_ready()
        # No UI and gone at exit: no "View at" links to it.
        api_settings = {PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}
    try:
        with temporary_settings(updates=api_settings):
            result = pipeline_flow(profile=profile, params_file=str(path))
    except (ConfigError, StageError) as error:
        typer.echo(f"pipeline failed: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        if server is not None:
            server.stop_after_flush()
    _print_result(result)


def _print_result(result: PipelineResult, run_note: str | None = None) -> None:
    from transformer_pl.headline import headline

    for fact, value in headline(result.stages):
        typer.echo(f"{fact}: {value}")
    note = f"  ({run_note})" if run_note else ""
    typer.echo(f"MLflow run: {result.mlflow_run_url}{note}")
    typer.echo("  the local store (no MLFLOW_TRACKING_URI) opens with `make ui`")


@app.command()
def deploy(
    cron: Annotated[
        str | None, typer.Option(help="cron schedule (default: params.yaml schedule.cron)")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="run every N seconds instead of on a cron", min=1)
    ] = None,
    profile: ProfileOption = None,
    params_file: ParamsOption = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "transformer-pl",
) -> None:
    """Serve the pipeline as a scheduled Prefect deployment (needs PREFECT_API_URL)."""
    from pipelines.deployments import serve_pipeline

    try:
        serve_pipeline(
            cron=cron,
            interval=interval,
            profile=profile,
            name=name,
            params_file=str(params_file) if params_file else None,
        )
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


def _registered_model(model: str | None, params_file: Path | None, profile: str | None) -> str:
    """The registered model a command acts on (`--model`, else the params' name), with MLflow
    pointed at the project's tracking store."""
    import mlflow

    from transformer_pl.tracking import tracking_uri

    try:
        model_name = model or load_params(params_file, profile).model_name
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    mlflow.set_tracking_uri(tracking_uri())
    return model_name


@app.command()
def predict(
    texts: Annotated[
        list[str] | None,
        typer.Argument(
            help="texts to classify, tag, continue or translate (QA: --question and --context)"
        ),
    ] = None,
    question: Annotated[
        str | None, typer.Option(help="QA: the question to answer from --context")
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="QA: the paragraph that holds the answer")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="registered model name (default: from params)"),
    ] = None,
    alias: Annotated[str, typer.Option(help="registry alias of the version to use")] = "champion",
    profile: ProfileOption = None,
    params_file: ParamsOption = None,
) -> None:
    """Run texts through a registered model (`models:/<name>@<alias>`), a line per text: a
    classifier's label and probabilities, a tagger's entities, a language model's continuation
    or a translation, then the text. A QA model answers --question from --context: the answer,
    its score and its character offsets."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from transformer_pl.registry import predict_frame
    from transformer_pl.serving import TEXT_COLUMN
    from transformer_pl.tasks.classify.predict import PROBABILITY_PREFIX

    asks = question is not None or context is not None
    if asks == bool(texts) or (asks and (question is None or context is None)):
        typer.echo("give texts, or (for a QA model) both --question and --context", err=True)
        raise typer.Exit(2)
    model_name = _registered_model(model, params_file, profile)
    frame = (
        pd.DataFrame({"question": [question], "context": [context]})
        if asks
        else pd.DataFrame({TEXT_COLUMN: texts})
    )
    try:
        predictions = predict_frame(model_name, frame, alias=alias)
    except MlflowException as error:
        typer.echo(f"cannot use models:/{model_name}@{alias}: {error.message}", err=True)
        raise typer.Exit(1) from None
    inputs = [question] if asks else list(texts or [])
    for text, row in zip(inputs, predictions.to_dict("records"), strict=True):
        if "answer" in row:
            typer.echo(f"{row['answer']}\t{row['score']:.3f}\t{row['start']}:{row['end']}\t{text}")
        elif "entities" in row:
            entities = "  ".join(
                f"{entity['type']}={entity['text']}[{entity['start']}:{entity['end']}]"
                for entity in row["entities"]
            )
            typer.echo(f"{entities}\t{text}")
        elif "label" in row:
            probabilities = "  ".join(
                f"{column.removeprefix(PROBABILITY_PREFIX)}={value:.3f}"
                for column, value in row.items()
                if column.startswith(PROBABILITY_PREFIX)
            )
            typer.echo(f"{row['label']}\t{probabilities}\t{text}")
        else:  # a continuation or a translation, on one line
            (answer,) = row.values()
            escaped = answer.replace("\n", "\\n")
            typer.echo(f"{escaped}\t{text}")


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option("--model", help="registered model name (default: from params)"),
    ] = None,
    alias: Annotated[str, typer.Option(help="registry alias of the version to serve")] = "champion",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 5001,
    profile: ProfileOption = None,
    params_file: ParamsOption = None,
) -> None:
    """Serve a registered model (`models:/<name>@<alias>`) over HTTP: MLflow's scoring server
    (`POST /invocations`, `GET /ping`, as `mlflow models serve`), with the request limits
    registered with the model, the body's bytes included (a 413 beyond
    `serve.max_request_bytes`)."""
    import uvicorn
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from transformer_pl.scoring_app import MODEL_URI_VARIABLE

    model_name = _registered_model(model, params_file, profile)
    try:  # a missing model or alias: one line, not the server's traceback
        MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        typer.echo(f"cannot use models:/{model_name}@{alias}: {error.message}", err=True)
        raise typer.Exit(1) from None
    os.environ[MODEL_URI_VARIABLE] = f"models:/{model_name}@{alias}"
    uvicorn.run("transformer_pl.scoring_app:create_app", factory=True, host=host, port=port)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the model version to serve as champion")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="registered model name (default: from params)"),
    ] = None,
    profile: ProfileOption = None,
    params_file: ParamsOption = None,
) -> None:
    """Make a version the champion by hand. The pipeline never promotes a version scored on
    other validation data than the champion's (another dataset version or profile): a person
    decides, and the version records that a person did (tag `promoted_by_hand`)."""
    from transformer_pl.registry import RegistryError, promote_by_hand

    model_name = _registered_model(model, params_file, profile)
    try:
        promote_by_hand(model_name, version)
    except RegistryError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"models:/{model_name}@champion is version {version}")


if __name__ == "__main__":
    app()
