"""A model version's description in the registry: a short model card in markdown — what it was
trained and evaluated on, its figures beside the baselines', and where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformer_pl.headline import headline


def model_card(
    *,
    model_name: str,
    dataset: str,
    task: str,
    profile: str,
    evaluation: Mapping[str, Any],
    lineage: Mapping[str, str],
) -> str:
    """The card for one version of `model_name`. `evaluation` is evaluate's summary (its
    figures are listed beside each baseline's, with the paired 95% interval); `lineage` maps
    what a reader can look the version up by (git commit, pipeline run, DVC hashes) to its value.
    """
    lines = [
        f"# {model_name}",
        "",
        f"A `{task}` model trained by transformer-pl on dataset `{dataset}` (profile "
        f"`{profile}`). Chosen on validation data; test is reported, never used to choose.",
        "",
    ]
    if figures := headline({"evaluate": evaluation}):
        lines += ["## Figures (model, then the baselines; − baseline: paired 95% interval)", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| `{key}` | {value} |" for key, value in figures]
        lines.append("")
    if lineage:
        lines += ["## Lineage", "", "| | |", "|---|---|"]
        lines += [f"| `{key}` | `{value}` |" for key, value in lineage.items()]
        lines.append("")
    return "\n".join(lines)
