"""The stage runner: which process of a multi-process launch reports, and what keys a stage."""

from pathlib import Path

import pytest

from transformer_pl.params import load_params
from transformer_pl.stages import STAGES
from transformer_pl.stages.runner import RANK_VARIABLES, is_global_zero, stage_input_key


@pytest.mark.parametrize(
    ("environment", "global_zero"),
    [
        ({}, True),  # no launcher
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun, rank 0
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),  # torchrun, second node
        ({"SLURM_PROCID": "1"}, False),  # srun
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # Lightning's own launcher
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # ... on the second node
    ],
)
def test_only_global_rank_zero_is_global_zero(
    environment: dict[str, str], global_zero: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in RANK_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    assert is_global_zero() is global_zero


def test_a_stage_writing_to_the_registry_is_keyed_on_which_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = load_params(Path(__file__).parents[2] / "params.yaml")
    register, tokenizer = STAGES["register"], STAGES["tokenizer"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = {spec.name: stage_input_key(spec, params, tmp_path) for spec in (register, tokenizer)}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team-host:5000")
    server = {spec.name: stage_input_key(spec, params, tmp_path) for spec in (register, tokenizer)}

    assert register.registry and not tokenizer.registry
    assert server["register"] != local["register"]
    assert server["tokenizer"] == local["tokenizer"]
