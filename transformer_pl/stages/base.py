"""The stage contract: one plain function per stage, declared with what it reads and writes.

Both runners use these declarations — DVC through `dvc.yaml` (a test checks the two agree) and
Prefect through `pipelines/` — so there is one place that says what a stage depends on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformer_pl.atomic import write_text_atomic
from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout

StageFunction = Callable[[Params, Layout], dict[str, Any]]


class StageError(RuntimeError):
    """A stage refused its input; the message says what is wrong and where."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    run: StageFunction
    deps: tuple[str, ...]  # files and folders read, relative to the project root (code included)
    params: tuple[str, ...]  # params.yaml keys read: sections or dotted keys
    outs: tuple[str, ...] = ()  # files and folders written (DVC-cached)
    metrics: tuple[str, ...] = ()  # JSON metrics written (DVC-cached, so revisions compare)
    plots: tuple[str, ...] = ()  # folders of plot data written (DVC-cached)
    reports: tuple[str, ...] = ()  # other files a reader wants beside the run (DVC-cached)
    # Writes to the model registry at the tracking URI: another registry is another output, so
    # the stage is keyed on the URI too.
    registry: bool = False
    # Trains a model: its run samples system metrics (CPU, memory, GPU), and a flow may launch
    # it on several processes.
    trains: bool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """Everything the stage writes: outs, metrics, plots and reports."""
        return self.outs + self.metrics + self.plots + self.reports


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """A stage's JSON report (metrics, summaries), its folder created as needed; written
    atomically, so a killed stage leaves the previous report or the new one, never a part."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
