"""The `tpl` command line as a new user meets it: its version, its help, a wrong stage name."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from transformer_pl.cli import app


def test_version_and_user_facing_help() -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["--version"])
    assert (
        printed.exit_code == 0
        and printed.stdout == f"tpl (transformer-pl) {version('transformer-pl')}\n"
    )
    help_text = runner.invoke(app, ["--help"]).stdout
    assert "tpl run" in help_text and "Thin:" not in help_text


def test_an_unknown_stage_is_refused_with_the_real_names() -> None:
    result = CliRunner().invoke(app, ["stage", "trian"])
    assert result.exit_code == 2
    assert "unknown stage 'trian'; stages: ingest, clean" in result.output
