"""`tpl`: the command line. Thin: it parses arguments and calls stages or flows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from transformer_pl.config import ConfigError, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

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
) -> None:
    """Run one pipeline stage (what `dvc repro` calls)."""
    from transformer_pl.stages import STAGES, Layout, StageError

    if name not in STAGES:
        typer.echo(f"unknown stage '{name}'; stages: {', '.join(STAGES)}", err=True)
        raise typer.Exit(2)
    try:
        params = load_params(params_file, profile)
        summary = STAGES[name].run(params, Layout())
    except (ConfigError, StageError) as error:
        typer.echo(f"stage {name} failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command("stages")
def list_stages() -> None:
    """List the stages in run order with what each reads and writes."""
    from transformer_pl.stages import STAGES

    for spec in STAGES.values():
        typer.echo(
            f"{spec.name}: deps={list(spec.deps)} params={list(spec.params)} outs={list(spec.outs)}"
        )


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


if __name__ == "__main__":
    app()
