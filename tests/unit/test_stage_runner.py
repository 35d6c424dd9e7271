"""Which process of a multi-process launch reports: the ranks each launcher gives its processes."""

import pytest

from transformer_pl.stages.runner import RANK_VARIABLES, is_global_zero


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
