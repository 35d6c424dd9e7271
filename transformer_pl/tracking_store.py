"""Where runs and models are tracked: `MLFLOW_TRACKING_URI`, else the project's SQLite store.

MLflow-free, so the stage runner can key a stage on the store it writes to (a registration
belongs to one registry) without importing MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project the pipeline runs in: the working directory, where params.yaml and dvc.yaml
    are (as for every stage's inputs and outputs)."""
    return Path.cwd().resolve()


def tracking_uri(root: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the SQLite store `mlflow.db` in the project root
    (`root`, default the working directory), as an absolute path."""
    database = (root or project_root()).resolve() / "mlflow.db"
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{database}"
