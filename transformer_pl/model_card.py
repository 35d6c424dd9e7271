"""A model version's description in the registry: a short model card in markdown — what it was
trained and evaluated on, its figures beside the baselines', and where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformer_pl.headline import headline

# The longest description a registry keeps (MLflow's PostgreSQL schema: varchar(5000)).
MAX_CARD_CHARS = 5000


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
    what a reader can look the version up by (git commit, pipeline run, DVC hashes) to its value;
    the hashes of code files are left out (the commit names the code). A card longer than
    `MAX_CARD_CHARS` is cut there, saying so.
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
    traced = {key: value for key, value in lineage.items() if not key.endswith(".py")}
    if traced:
        lines += ["## Lineage", "", "| | |", "|---|---|"]
        lines += [f"| `{key}` | `{value}` |" for key, value in traced.items()]
        lines.append("")
    card = "\n".join(lines)
    if len(card) <= MAX_CARD_CHARS:
        return card
    cut = f"\n\n(cut at {MAX_CARD_CHARS} characters, the registry's limit)\n"
    return card[: MAX_CARD_CHARS - len(cut)] + cut
