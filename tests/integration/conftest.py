"""Integration-test environment: offline, and Prefect on a temporary home of its own; and
throwaway pipeline workspaces (git + DVC, the project's params.yaml and dvc.yaml, SST-2 slices).

The environment is set at import, before any test module imports Prefect (which reads its settings
once): flows called here start Prefect's ephemeral API server on a throwaway database, once per
session.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


REPO_ROOT = Path(__file__).resolve().parents[2]
SST2_SLICE_ROWS = {"train.tsv": 500, "dev.tsv": 150}
BYTECODE = shutil.ignore_patterns("__pycache__")  # as in a fresh checkout

WriteSst2Slice = Callable[..., Path]
MakeWorkspace = Callable[[str], Path]


@pytest.fixture(scope="session")
def write_sst2_slice(shared_data: Path) -> WriteSst2Slice:
    """`write_sst2_slice(folder, unknown_label_every=0)`: the head of SST-2 in its own format
    (train.tsv, dev.tsv); with `unknown_label_every=n` every n-th row gets an unknown label."""

    def write(folder: Path, unknown_label_every: int = 0) -> Path:
        folder.mkdir(parents=True)
        for name, rows in SST2_SLICE_ROWS.items():
            source = (shared_data / "sst2" / name).read_text(encoding="utf-8")
            header, *lines = source.splitlines()[: rows + 1]
            if unknown_label_every:
                lines = [
                    f"{line.rsplit(chr(9), 1)[0]}\tmaybe"
                    if index % unknown_label_every == 0
                    else line
                    for index, line in enumerate(lines, start=1)
                ]
            (folder / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
        return folder

    return write


@pytest.fixture(scope="session")
def make_workspace(
    tmp_path_factory: pytest.TempPathFactory, write_sst2_slice: WriteSst2Slice
) -> MakeWorkspace:
    """`make_workspace(name)`: a git + DVC workspace holding the project's params.yaml (dataset
    sst2, read from a slice beside it) and dvc.yaml, and the code files the stages depend on."""
    from transformer_pl.stages import STAGES

    produced = {out for spec in STAGES.values() for out in (*spec.outs, *spec.metrics, *spec.plots)}
    code_deps = {dep for spec in STAGES.values() for dep in spec.deps if dep not in produced}

    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        for dep in sorted(code_deps):
            (root / dep).parent.mkdir(parents=True, exist_ok=True)
            if (REPO_ROOT / dep).is_dir():
                shutil.copytree(REPO_ROOT / dep, root / dep, ignore=BYTECODE)
            else:
                shutil.copy(REPO_ROOT / dep, root / dep)
        shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
        slice_dir = write_sst2_slice(root.parent / f"{root.name}-sst2")
        params = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
        # Line edits, so that the copy keeps the real file's layout (the flows edit it too).
        params, chosen = re.subn(r"(?m)^dataset: .*$", "dataset: sst2", params)
        params, pointed = re.subn(
            r"(?m)^(  sst2:\n(?:    .*\n)*?    path: ).*$", rf"\g<1>{slice_dir}", params
        )
        assert (chosen, pointed) == (1, 1), "params.yaml no longer has the expected layout"
        (root / "params.yaml").write_text(params, encoding="utf-8")
        subprocess.run(["git", "init", "--quiet"], cwd=root, check=True)
        subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=root, check=True)
        if (REPO_ROOT / ".dvc" / "config").is_file():
            shutil.copy(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
        return root

    return make
