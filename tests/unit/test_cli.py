"""The `tpl` command line as a new user meets it: its version, its help, a wrong stage name, a
profile DVC would not see."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from transformer_pl.cli import app

PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


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


def test_a_stage_refuses_a_profile_from_the_environment_that_dvc_cannot_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(PROJECT_PARAMS, tmp_path / "params.yaml")  # its profile: default
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TPL_PROFILE", "tiny")
    result = CliRunner().invoke(app, ["stage", "ingest"])
    assert result.exit_code == 1
    assert "TPL_PROFILE is 'tiny' but the params file says profile: default" in result.output
    assert "dvc exp run -S profile=tiny" in result.output
    assert not (tmp_path / "data").exists()  # refused before it read or wrote anything


def test_a_stage_refuses_a_base_edit_its_profile_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(PROJECT_PARAMS.read_text(encoding="utf-8"))
    locked = {key: raw[key] for key in ("finetune", "profile", "profiles")}
    lock = {"schema": "2.0", "stages": {"finetune": {"params": {"params.yaml": locked}}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")
    # What `dvc exp run -S finetune.optim.learning_rate=0.005` does under profile tiny.
    raw["profile"] = "tiny"
    raw["finetune"]["optim"]["learning_rate"] = 0.005
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TPL_PROFILE", raising=False)
    result = CliRunner().invoke(app, ["stage", "finetune"])
    assert result.exit_code == 1
    assert (
        "finetune.optim.learning_rate changed in params.yaml since stage finetune last ran, "
        "but profile 'tiny' sets it itself"
    ) in result.output
    assert "dvc exp run -S profiles.tiny.finetune.optim.learning_rate=..." in result.output
