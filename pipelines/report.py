"""How a pipeline run reads: the headline facts `tpl run` prints, and the markdown summary a
flow run publishes as a Prefect artifact. Plain functions of the stage summaries (no Prefect)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.workspace import PipelineResult

# What evaluate reports beside a model metric `<split>_<metric>`: each baseline's
# `<name>_<split>_<metric>`, and the paired difference `<split>_<metric>_minus_<name>` with
# its 95% interval (`…_ci95_low`, `…_ci95_high`).
BASELINES = ("baseline", "nbsvm")


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


def headline(stages: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The facts a reader looks for first, from whichever stage summaries have them."""
    split, clean = stages.get("split", {}), stages.get("clean", {})
    validation, evaluation = stages.get("validate", {}), stages.get("evaluate", {})
    registration = stages.get("register", {})
    rows: list[tuple[str, str]] = []
    if isinstance(split.get("rows"), Mapping):
        rows.append(("rows", ", ".join(f"{name} {count}" for name, count in split["rows"].items())))
    if "rows_quarantined" in clean:
        rows.append(("quarantined", f"{clean['rows_quarantined']} of {clean.get('rows_in')} rows"))
    if "success" in validation:
        outcome = "passed" if validation["success"] else "failed"
        rows.append(("validation", f"{outcome} ({validation.get('expectations', '?')} checks)"))
    for key, value in evaluation.items():
        if twins := {
            name: evaluation[f"{name}_{key}"] for name in BASELINES if f"{name}_{key}" in evaluation
        }:
            rows.append((key, _beside_baselines(key, value, twins, evaluation)))
    if "model_name" in registration:
        alias = "champion" if registration.get("promoted") else "challenger"
        decision = f"{registration['model_name']} version {registration.get('version')} @{alias}"
        rows.append(("registry", f"{decision}: {registration.get('reason', '')}"))
    return rows


def _beside_baselines(
    key: str, value: Any, twins: Mapping[str, Any], evaluation: Mapping[str, Any]
) -> str:
    """`0.91 (baseline 0.9, nbsvm 0.92); − baseline +0.0100 [+0.0040, +0.0160]`."""
    text = f"{_number(value)} ({', '.join(f'{name} {_number(v)}' for name, v in twins.items())})"
    for name in twins:
        difference = f"{key}_minus_{name}"
        low, high = f"{difference}_ci95_low", f"{difference}_ci95_high"
        if {difference, low, high} <= evaluation.keys():
            text += (
                f"; − {name} {evaluation[difference]:+.4f}"
                f" [{evaluation[low]:+.4f}, {evaluation[high]:+.4f}]"
            )
    return text


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # counts: 24799, not 2.48e+04
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
