"""The facts a reader of a pipeline run looks for first — rows, quarantine, validation, each
evaluation figure beside its baselines with the paired interval, the registry's decision — as
`tpl run` prints them, the flow's summary lists them and a model version's card shows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What evaluate reports beside a model metric `<split>_<metric>`: each baseline's
# `<name>_<split>_<metric>`, and the paired difference `<split>_<metric>_minus_<name>` with
# its 95% interval (`…_ci95_low`, `…_ci95_high`).
BASELINES = ("baseline", "nbsvm")


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
