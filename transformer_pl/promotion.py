"""The champion rule and the record of each decision: when a newly registered version takes
`champion`, and the decision written on the version (tags `decision.*`) before any alias moves,
so an interrupted registration is finished as decided (registry.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mlflow.entities.model_registry import ModelVersion

DECISION_TAG_PREFIX = "decision."


@dataclass(frozen=True)
class RegistrationDecision:
    """What `register_model` did. `version` is the new version, or (when `registered` is False)
    the existing version with the same fingerprint. `champion_metric` is the metric of the
    champion the challenger was compared with (None when there was none, or when it was
    evaluated on other data and so not compared)."""

    model_name: str
    version: str
    registered: bool
    promoted: bool
    champion_version: str | None
    metric_key: str
    challenger_metric: float | None
    champion_metric: float | None
    evaluation_data: str
    champion_evaluation_data: str | None
    reason: str
    # The paired difference from the champion on the shared val data (`<metric>_minus_champion`
    # and its 95% interval), when both versions' per-example predictions are at hand.
    champion_comparison: dict[str, float] | None = None


def registration_fingerprint(
    git_commit: str, data_hashes: Mapping[str, str], params: Mapping[str, Any]
) -> str:
    """A hash of everything a model version is made from: equal inputs, equal fingerprint
    (independent of key order)."""
    payload = {"git_commit": git_commit, "data": dict(data_hashes), "params": dict(params)}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def should_promote(
    challenger_metric: float,
    champion: ModelVersion | None,
    champion_metric: float | None,
    same_data: bool,
    margin: float,
    greater_is_better: bool,
) -> tuple[bool, str]:
    if champion is None:
        return True, "first version: no champion yet"
    if not same_data:
        return False, (
            f"not compared: champion version {champion.version} was evaluated on other "
            "validation data (another dataset version, split or profile); versions evaluated "
            "on different data never compete. Move champion by hand if this one should serve: "
            f"tpl promote <version> --model {champion.name}"
        )
    if champion_metric is None:
        # The metric changed since the champion was registered: the two cannot be compared, and
        # keeping a champion no version can ever beat would freeze the registry.
        return True, f"champion version {champion.version} has no recorded metric to compare"
    improvement = challenger_metric - champion_metric
    if not greater_is_better:
        improvement = -improvement
    comparison = f"{challenger_metric:.6g} vs champion v{champion.version} {champion_metric:.6g}"
    if improvement > margin:
        return True, f"beats the champion by more than {margin:g}: {comparison}"
    return False, f"does not beat the champion by more than {margin:g}: {comparison}"


def recorded_decision(version: ModelVersion) -> RegistrationDecision | None:
    """The decision an interrupted registration wrote on its version, or None if it wrote none
    (or only part of one: then it is decided again, nothing having moved yet)."""
    names = [field.name for field in fields(RegistrationDecision)]
    tags = {name: version.tags.get(f"{DECISION_TAG_PREFIX}{name}") for name in names}
    if any(value is None for value in tags.values()):
        return None
    return RegistrationDecision(**{name: json.loads(value) for name, value in tags.items()})
