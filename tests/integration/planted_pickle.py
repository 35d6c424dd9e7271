"""What an attacker plants where the pipeline keeps state: a pickle that acts when loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class PlantedPickle:
    """Unpickled, it creates `marker`: a stand-in for a checkpoint or a cached result that runs a
    shell command. The tests that plant one assert the marker never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return Path.touch, (self.marker,)
