"""dvc.yaml agrees with the stage declarations, and `dvc repro` reruns exactly what changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from transformer_pl.params import load_params
from transformer_pl.stages import STAGES, StageSpec
from transformer_pl.stages.data import STAGES as DATA_STAGES
from transformer_pl.stages.dvc_pipeline import render_dvc_yaml
from transformer_pl.stages.runner import stage_input_key

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DVC_PIPELINE: dict[str, Any] = yaml.safe_load(
    (PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8")
)
DVC_STAGES: dict[str, dict[str, Any]] = DVC_PIPELINE["stages"]
VENV_BIN = Path(sys.executable).parent


def paths(entries: list[str | dict[str, Any]]) -> list[str]:
    """dvc.yaml lists a path as a string or as a one-key mapping {path: options}."""
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


@pytest.mark.parametrize("spec", list(STAGES.values()), ids=list(STAGES))
def test_dvc_yaml_matches_the_stage_declaration(spec: StageSpec):
    assert spec.name in DVC_STAGES, f"stage '{spec.name}' is missing from dvc.yaml"
    stage = DVC_STAGES[spec.name]
    assert stage["cmd"] == f"tpl stage {spec.name}"
    # A stage's plots are a folder of whatever plots its task has, each file rendered as the
    # top-level `plots:` says; its reports are plain outs.
    declared = {"outs": (*spec.outs, *spec.plots, *spec.reports), "plots": ()}
    for key in ("deps", "params", "outs", "metrics", "plots"):
        listed = paths(stage.get(key, []))
        assert len(listed) == len(set(listed)), f"{spec.name}.{key} lists a path twice"
        assert set(listed) == set(declared.get(key, getattr(spec, key))), f"{spec.name}.{key}"
    # Every output is cached: a revision or an experiment holds its metrics and plots too.
    assert all(isinstance(entry, str) for entry in stage.get("outs", []) + stage.get("metrics", []))


def test_top_level_plots_render_files_of_a_stage_plots_folder():
    folders = {folder for spec in STAGES.values() for folder in spec.plots}
    for plot in DVC_PIPELINE.get("plots", []):
        name, options = (plot, None) if isinstance(plot, str) else next(iter(plot.items()))
        # A plot is a file, or an id whose `y` names the files it overlays.
        files = options["y"] if options and isinstance(options.get("y"), dict) else [name]
        for file in files:
            assert Path(file).parent.as_posix() in folders, file


def test_dvc_yaml_has_no_stage_the_code_does_not_declare():
    assert set(DVC_STAGES) == set(STAGES)


def test_the_committed_dvc_yaml_is_the_generated_one():
    committed = (PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8")
    assert committed == render_dvc_yaml(), "dvc.yaml is stale: run `tpl dvc-yaml`"


@pytest.mark.parametrize(
    ("edited", "reruns", "stays"),
    [
        # The teacher tempers its probabilities (calibration.py) inside finetune; evaluate fits
        # the served temperature with it too.
        (
            "transformer_pl/tasks/classify/calibration.py",
            {"finetune", "evaluate"},
            {"ingest", "tokenizer"},
        ),
        # Pretraining encodes its blocks with data/encode.py.
        ("transformer_pl/data/encode.py", {"encode", "pretrain"}, {"ingest", "split"}),
        # Behaviour in the config (the `auto` objective, defaults) reaches every stage.
        ("transformer_pl/params.py", set(STAGES), set()),
    ],
)
def test_editing_a_module_invalidates_exactly_the_stages_that_import_it(
    tmp_path: Path, edited: str, reruns: set[str], stays: set[str]
):
    shutil.copytree(
        PROJECT_ROOT / "transformer_pl",
        tmp_path / "transformer_pl",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    params = load_params(PROJECT_ROOT / "params.yaml")
    before = {name: stage_input_key(spec, params, tmp_path) for name, spec in STAGES.items()}
    with (tmp_path / edited).open("a", encoding="utf-8") as source:
        source.write("\n# an edit\n")
    after = {name: stage_input_key(spec, params, tmp_path) for name, spec in STAGES.items()}

    changed = {name for name in STAGES if before[name] != after[name]}
    assert reruns <= changed and not stays & changed, sorted(changed)
    assert changed == {name for name, spec in STAGES.items() if edited in spec.deps}


# Slow: eleven `tpl stage` processes, each importing its libraries and opening MLflow.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dvc_repro_skips_what_is_unchanged_and_reruns_what_a_param_change_touches(
    tmp_path, make_project, update_params, write_reviews, reviews_params
):
    project = make_project({**reviews_params, "profile": "tiny"})
    # What DVC hashes: dvc.yaml, params.yaml and the code the stages list as deps.
    shutil.copy(PROJECT_ROOT / "dvc.yaml", project)
    shutil.copytree(
        PROJECT_ROOT / ".dvc",
        project / ".dvc",
        ignore=shutil.ignore_patterns("tmp", "cache", "config.local"),
    )
    shutil.copytree(
        PROJECT_ROOT / "transformer_pl",
        project / "transformer_pl",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    write_reviews(project / "reviews" / "train.csv", 200, seed=0)
    write_reviews(project / "reviews" / "test.csv", 60, seed=1)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # `tpl` for the stage commands
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",  # not the checkout's store
    }
    data_stages = [spec.name for spec in DATA_STAGES]

    def repro() -> list[str]:
        """Run the data stages (up to the last one); the names of the stages that ran."""
        result = subprocess.run(
            [str(VENV_BIN / "dvc"), "repro", data_stages[-1]],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return re.findall(r"Running stage '([\w-]+)'", result.stdout)

    assert repro() == data_stages
    assert repro() == []
    # Changes the cleaned text, so everything after it reruns.
    update_params(project, {"clean": {"lowercase": True}})
    assert repro() == data_stages[1:]
    status = subprocess.run(  # the data stages and their upstream; training has not run here
        [str(VENV_BIN / "dvc"), "status", data_stages[-1]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "up to date" in status.stdout
