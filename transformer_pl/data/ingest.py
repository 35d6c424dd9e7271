"""Ingest: the source's splits copied into `data/raw/` as Parquet, with a checksum record.

data/raw/<split>.parquet   canonical raw frames (sources.py): every source record, malformed
                           ones included with their parse error
data/raw/manifest.json     dataset, task, and per split the files read (path as in params,
                           bytes, sha256), rows, parse errors and blank separator lines
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from transformer_pl.params import DatasetSpec
from transformer_pl.data import read_frames, write_frames
from transformer_pl.data.sources import load_splits

MANIFEST = "manifest.json"


def ingest(spec: DatasetSpec, dataset: str, project_root: Path, raw_dir: Path) -> dict[str, Any]:
    """Read every split of `spec`, write it under `raw_dir`; returns the manifest."""
    splits = load_splits(spec, project_root)
    write_frames({split: raw.frame for split, raw in splits.items()}, raw_dir)
    manifest = {
        "dataset": dataset,
        "task": spec.task,
        "source": spec.source,
        "format": spec.format,
        "splits": {
            split: {
                "files": raw.files,
                "rows": len(raw.frame),
                "parse_errors": int(raw.frame["parse_error"].notna().sum()),
                "blank_lines": raw.blank_lines,
            }
            for split, raw in splits.items()
        },
    }
    (raw_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_raw(raw_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The raw frames and the manifest that describes them."""
    manifest = json.loads((raw_dir / MANIFEST).read_text(encoding="utf-8"))
    return read_frames(raw_dir), manifest
