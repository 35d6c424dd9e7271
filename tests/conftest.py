"""Shared fixtures. The environment is set at import, before any test imports a library that reads
it: offline settings (Hugging Face, GX, DVC, MLflow and Prefect phone home otherwise), and Prefect
on a temporary home of its own, so that flows called here — in this process or in a `tpl`
subprocess, which inherits the environment — start Prefect's ephemeral API server on a throwaway
database, not the developer's.
"""

from __future__ import annotations

import atexit
import gzip
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from transformer_pl.params import deep_merge

OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)

# An ephemeral server (no PREFECT_API_URL) on its own database, not the developer's.
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tpl-prefect-home-")
# Registered before Prefect registers its server shutdown, so it runs after it.
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Prefect's console logs go to stderr, which pytest captures; skip its rich formatting.
os.environ.setdefault("PREFECT_LOGGING_COLORS", "false")


@pytest.fixture(scope="session", autouse=True)
def _stop_ephemeral_prefect_server() -> Iterator[None]:
    """Stop the ephemeral server a flow started while pytest still captures its last log line."""
    yield
    if "prefect" in sys.modules:
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer

        APILogWorker.drain_all(timeout=5)  # send the logs still queued while the server is up
        SubprocessASGIServer().stop()


PROJECT_ROOT = Path(__file__).resolve().parents[1]


# What CI services set CI to (GitHub Actions, GitLab, Buildkite: "true"; some others: "1").
CI_VALUES = {"true", "1", "yes"}


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


@pytest.fixture(scope="session")
def shared_data() -> Iterator[Path]:
    """The reference datasets: $TPL_DATA_DIR, else ../shared/data beside the checkout (exported
    as TPL_DATA_DIR, as the Makefile does, so that stages find them). Without them a test that
    needs them is skipped on a developer's machine, but fails under CI: a CI run that skipped
    every test on real data would pass having checked nothing of it."""
    path = Path(os.environ.get("TPL_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        missing = f"reference datasets not found at {path} (set TPL_DATA_DIR)"
        if running_in_ci():
            pytest.fail(f"{missing}; under CI a test that needs them fails", pytrace=False)
        pytest.skip(missing)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TPL_DATA_DIR", str(path.resolve()))
        yield path


BYTECODE = shutil.ignore_patterns("__pycache__")  # as in a fresh checkout
MakeWorkspace = Callable[..., Path]


@pytest.fixture(scope="session")
def make_workspace(tmp_path_factory: pytest.TempPathFactory) -> MakeWorkspace:
    """`make_workspace(name, dataset=None, dataset_path=None)`: a git + DVC workspace holding the
    project's params.yaml, dvc.yaml and .dvcignore, and the code files the stages depend on.

    params.yaml is the real one (dataset imdb from $TPL_DATA_DIR) unless `dataset` selects another
    spec; `dataset_path` points the selected spec's `path` at another folder.
    """
    from transformer_pl.stages import STAGES

    produced = {out for spec in STAGES.values() for out in (*spec.outs, *spec.metrics, *spec.plots)}
    code_deps = {dep for spec in STAGES.values() for dep in spec.deps if dep not in produced}

    def make(name: str, dataset: str | None = None, dataset_path: Path | None = None) -> Path:
        root = tmp_path_factory.mktemp(name)
        for dep in sorted(code_deps):
            (root / dep).parent.mkdir(parents=True, exist_ok=True)
            if (PROJECT_ROOT / dep).is_dir():
                shutil.copytree(PROJECT_ROOT / dep, root / dep, ignore=BYTECODE)
            else:
                shutil.copy(PROJECT_ROOT / dep, root / dep)
        shutil.copy(PROJECT_ROOT / "dvc.yaml", root / "dvc.yaml")
        params = (PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8")
        # Line edits, so that the copy keeps the real file's layout (the flows edit it too).
        if dataset is not None:
            params, chosen = re.subn(r"(?m)^dataset: .*$", f"dataset: {dataset}", params)
            assert chosen == 1, "params.yaml no longer has a top-level `dataset:` line"
        if dataset_path is not None:
            selected = re.search(r"(?m)^dataset: *(\S+)", params)[1]
            params, pointed = re.subn(
                rf"(?m)^(  {re.escape(selected)}:\n(?:    .*\n)*?    path: ).*$",
                lambda match: f"{match[1]}{dataset_path}",
                params,
            )
            assert pointed == 1, f"params.yaml has no `path:` in the '{selected}' spec"
        (root / "params.yaml").write_text(params, encoding="utf-8")
        subprocess.run(["git", "init", "--quiet"], cwd=root, check=True)
        subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=root, check=True)
        for config in (".dvc/config", ".dvcignore"):
            if (PROJECT_ROOT / config).is_file():
                shutil.copy(PROJECT_ROOT / config, root / config)
        return root

    return make


MakeProject = Callable[..., Path]
# What `update_params` merges: a mapping, or a function of the current params that returns one.
ParamsOverlay = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]]
UpdateParams = Callable[[Path, ParamsOverlay], dict[str, Any]]


def _update_params(root: Path, overlay: ParamsOverlay) -> dict[str, Any]:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params = deep_merge(params, overlay(params) if callable(overlay) else overlay)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


@pytest.fixture(scope="session")
def update_params() -> UpdateParams:
    """`update_params(root, overlay)`: merge `overlay` into root/params.yaml (nested mappings key
    by key, anything else replaced whole); returns the params written."""
    return _update_params


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """`make_project(overrides)`: a project folder with the real params.yaml, `overrides` merged
    into it (nested mappings key by key). Returns the folder; stages run with Layout(folder)."""

    def make(overrides: Mapping[str, Any] | None = None, name: str = "project") -> Path:
        root = tmp_path / name
        root.mkdir()
        shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
        _update_params(root, overrides or {})
        return root

    return make


WriteImdbSlice = Callable[..., Path]
IMDB_UNLABELED = "unsup.csv.gz"
IMDB_SLICE_ROWS = {"train.csv.gz": 300, "test.csv.gz": 300, IMDB_UNLABELED: 100}


@pytest.fixture(scope="session")
def write_imdb_slice(shared_data: Path) -> WriteImdbSlice:
    """`write_imdb_slice(folder, rows=IMDB_SLICE_ROWS, unknown_label_every=0)`: a small copy of
    IMDB in its own format (same file names, gzipped CSV), `rows` reviews of each file, the
    labelled ones balanced; with `unknown_label_every=n` every n-th labelled row gets a label
    the dataset spec does not know."""

    def write(
        folder: Path, rows: Mapping[str, int] = IMDB_SLICE_ROWS, unknown_label_every: int = 0
    ) -> Path:
        folder.mkdir(parents=True)
        for name, count in rows.items():
            labelled = name != IMDB_UNLABELED
            # Labelled files hold label 0 rows, then label 1 rows: read them whole for both.
            frame = pd.read_csv(shared_data / "imdb" / name, nrows=None if labelled else count)
            frame = frame.groupby("label", group_keys=False).head(count // frame["label"].nunique())
            if labelled and unknown_label_every:
                frame["label"] = frame["label"].astype(str)
                frame.iloc[::unknown_label_every, frame.columns.get_loc("label")] = "maybe"
            with gzip.open(folder / name, "wt", encoding="utf-8", newline="") as handle:
                frame.to_csv(handle, index=False)
        return folder

    return write


WriteReviews = Callable[..., Path]

_POSITIVE = ["great", "superb", "moving", "delightful", "brilliant", "charming"]
_NEGATIVE = ["awful", "dull", "tedious", "clumsy", "boring", "painful"]
_NEUTRAL = ["the", "film", "plot", "actor", "scene", "story", "music", "camera", "end"]


@pytest.fixture
def write_reviews() -> WriteReviews:
    """`write_reviews(path, rows, seed, lead_words=0)`: a user's own CSV (columns review,
    sentiment with values pos/neg), balanced, each review a distinct synthetic sentence whose
    label words decide it, after `lead_words` neutral words (its id's parity follows the label)."""

    def write(path: Path, rows: int, seed: int = 0, lead_words: int = 0) -> Path:
        rng = random.Random(seed)
        lines = ["review,sentiment"]
        for index in range(rows):
            label = "pos" if index % 2 else "neg"
            words = rng.choices(_NEUTRAL, k=rng.randint(6, 20))
            words += rng.choices(_POSITIVE if label == "pos" else _NEGATIVE, k=3)
            rng.shuffle(words)
            lead = "".join(f"{word} " for word in rng.choices(_NEUTRAL, k=lead_words))
            lines.append(f"{lead}Review {seed}-{index}: {' '.join(words)},{label}")
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
        "tokenizer": {"vocab_size": 400},
    }
