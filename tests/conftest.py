"""Shared fixtures. The offline settings are set at import, before any test imports a library
that reads them (Hugging Face, GX, DVC and MLflow phone home otherwise)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from transformer_pl.config import deep_merge

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(_name, _value)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Iterator[Path]:
    """The reference datasets: $TPL_DATA_DIR, else ../shared/data beside the checkout (exported
    as TPL_DATA_DIR, as the Makefile does, so that stages find them)."""
    path = Path(os.environ.get("TPL_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"reference datasets not found at {path} (set TPL_DATA_DIR)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TPL_DATA_DIR", str(path.resolve()))
        yield path


MakeProject = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """`make_project(overrides)`: a project folder with the real params.yaml, `overrides` merged
    into it (nested mappings key by key). Returns the folder; stages run with Layout(folder)."""

    def make(overrides: Mapping[str, Any] | None = None, name: str = "project") -> Path:
        root = tmp_path / name
        root.mkdir()
        params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
        params = deep_merge(params, overrides or {})
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        return root

    return make


WriteReviews = Callable[..., Path]

_POSITIVE = ["great", "superb", "moving", "delightful", "brilliant", "charming"]
_NEGATIVE = ["awful", "dull", "tedious", "clumsy", "boring", "painful"]
_NEUTRAL = ["the", "film", "plot", "actor", "scene", "story", "music", "camera", "end"]


@pytest.fixture
def write_reviews() -> WriteReviews:
    """`write_reviews(path, rows, seed)`: a user's own CSV (columns review, sentiment with values
    pos/neg), balanced, each review a distinct synthetic sentence whose label words decide it."""

    def write(path: Path, rows: int, seed: int = 0) -> Path:
        rng = random.Random(seed)
        lines = ["review,sentiment"]
        for index in range(rows):
            label = "pos" if index % 2 else "neg"
            words = rng.choices(_NEUTRAL, k=rng.randint(6, 20))
            words += rng.choices(_POSITIVE if label == "pos" else _NEGATIVE, k=3)
            rng.shuffle(words)
            lines.append(f"Review {seed}-{index}: {' '.join(words)},{label}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture
def reviews_params() -> dict[str, Any]:
    """params.yaml overrides that select a user's own CSV dataset `reviews` (files written by
    `write_reviews` under <project>/reviews/: train.csv, test.csv)."""
    return {
        "dataset": "reviews",
        "datasets": {
            "reviews": {
                "task": "classify",
                "path": "reviews",
                "format": "csv",
                "splits": {"train": "train.csv", "test": "test.csv"},
                "text_column": "review",
                "label_column": "sentiment",
                "label_names": ["negative", "positive"],
                "label_values": {"neg": "negative", "pos": "positive"},
            }
        },
        "validate": {"min_rows_per_split": 20},
        "tokenizer": {"vocab_size": 200},
    }
