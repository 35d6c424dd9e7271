"""Tests on the reference datasets skip on a machine without them, and fail under CI: a CI run
that skipped them would pass having checked nothing on real data. Each case runs pytest on a
one-test module beside a copy of tests/conftest.py (where `shared_data` lives), with
TPL_DATA_DIR pointing at a folder that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"
NEEDS_DATA = "def test_needs_the_reference_data(shared_data):\n    assert shared_data.is_dir()\n"


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(CONFTEST.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "test_needs_data.py").write_text(NEEDS_DATA, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["TPL_DATA_DIR"] = str(folder / "missing")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_reference_data_skips_outside_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "reference datasets not found" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_reference_data_fails_under_ci(tmp_path: Path, ci: str) -> None:
    result = run_pytest(tmp_path, ci=ci)
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert "under CI a test that needs them fails" in result.stdout
