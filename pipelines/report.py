"""The markdown summary a flow run publishes as a Prefect artifact: the headline facts, then
each stage's summary. Plain functions of the stage summaries (no Prefect)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.workspace import PipelineResult
from transformer_pl.headline import headline


def _flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_markdown(result: PipelineResult, profile: str, dataset: str) -> str:
    """A headline table, then one table per stage that ran listing what its summary reports."""
    lines = [f"# transformer-pl: `{dataset}`, profile `{profile}`", ""]
    if result.mlflow_run_id:
        lines += [f"MLflow run: [`{result.mlflow_run_id}`]({result.mlflow_run_url})", ""]
    if facts := headline(result.stages):
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {_cell(value, limit=300)} |" for key, value in facts]
        lines.append("")
    for name, summary in result.stages.items():
        lines += [f"## {name}", "", "| key | value |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in _flatten(summary or {}).items()]
        lines.append("")
    return "\n".join(lines)
