"""The base of every params.yaml section: strict (unknown keys are typos) and immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", frozen=True)
