"""Integration-test workspaces: the shared `make_workspace` (tests/conftest.py, which also sets
the offline environment and Prefect's temporary home) switched to small SST-2 slices, so that the
data stages run in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from transformer_pl.params import deep_merge, load_params
from transformer_pl.stages import STAGES, Layout

SST2_SLICE_ROWS = {"train.tsv": 500, "dev.tsv": 150}
PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"

WriteSst2Slice = Callable[..., Path]
MakeWorkspace = Callable[..., Path]
RunStages = Callable[..., dict[str, dict[str, Any]]]
ShrinkProfile = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def shrink_profile() -> ShrinkProfile:
    """`shrink_profile(name, **overrides)`: params.yaml's profile `name` with `overrides` merged
    in, as params.yaml overrides (the real profile, shrunk further for a test)."""

    def shrink(name: str, **overrides: Any) -> dict[str, Any]:
        raw = yaml.safe_load(PROJECT_PARAMS.read_text(encoding="utf-8"))
        return deep_merge(raw["profiles"][name], overrides)

    return shrink


@pytest.fixture
def run_stages() -> RunStages:
    """`run_stages(root, names, profile=None)`: the named stages' functions, in order, on the
    project at `root` with its params.yaml (and `profile` overlaid); each stage's summary by
    name."""

    def run(root: Path, names: list[str], profile: str | None = None) -> dict[str, Any]:
        params = load_params(root / "params.yaml", profile)
        return {name: STAGES[name].run(params, Layout(root)) for name in names}

    return run


@pytest.fixture(scope="session")
def write_sst2_slice(shared_data: Path) -> WriteSst2Slice:
    """`write_sst2_slice(folder, unknown_label_every=0)`: the head of SST-2 in its own format
    (train.tsv, dev.tsv); with `unknown_label_every=n` every n-th row gets an unknown label."""

    def write(folder: Path, unknown_label_every: int = 0) -> Path:
        folder.mkdir(parents=True)
        for name, rows in SST2_SLICE_ROWS.items():
            source = (shared_data / "sst2" / name).read_text(encoding="utf-8")
            header, *lines = source.splitlines()[: rows + 1]
            if unknown_label_every:
                lines = [
                    f"{line.rsplit(chr(9), 1)[0]}\tmaybe"
                    if index % unknown_label_every == 0
                    else line
                    for index, line in enumerate(lines, start=1)
                ]
            (folder / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
        return folder

    return write


WriteShakespeareSlice = Callable[[Path, int], Path]


@pytest.fixture(scope="session")
def write_shakespeare_slice(shared_data: Path) -> WriteShakespeareSlice:
    """`write_shakespeare_slice(folder, lines)`: the first `lines` lines of Tiny Shakespeare,
    as its own input.txt in `folder`."""

    def write(folder: Path, lines: int) -> Path:
        folder.mkdir(parents=True)
        text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
        head = text.splitlines()[:lines]
        (folder / "input.txt").write_text("\n".join(head) + "\n", encoding="utf-8")
        return folder

    return write


@pytest.fixture(scope="session")
def make_workspace(
    make_workspace: MakeWorkspace,
    write_sst2_slice: WriteSst2Slice,
    tmp_path_factory: pytest.TempPathFactory,
) -> MakeWorkspace:
    """`make_workspace(name)`: the shared workspace (overridden here, pytest passes the shared
    fixture in) with dataset sst2, read from a slice of its own."""

    def make(name: str) -> Path:
        slice_dir = write_sst2_slice(tmp_path_factory.mktemp(f"{name}-sst2") / "sst2")
        return make_workspace(name, dataset="sst2", dataset_path=slice_dir)

    return make
