"""The data stages, in run order: ingest → clean → validate → split → tokenizer → encode.

Up to split, a stage copies, cleans, checks and cuts every split, test included; split writes
test to a folder of its own (`Layout.TEST_SPLIT`). From tokenizer on, stages read the
development splits alone (`DEVELOPMENT_SPLITS`): evaluate is the only stage that reads test (and
tokenizes it itself).

Each is `stage(params, layout) -> summary`: it reads only its declared deps, writes only its outs,
and writes its summary as its metrics file under data/reports/ (outside the DVC-cached outs). The
data modules are imported inside each stage so that `tpl stage ingest` does not load Great
Expectations or `datasets`.

The source files that ingest reads live outside the workspace at a machine-specific place
($TPL_DATA_DIR), so they are not DVC deps: ingest records their sha256 in data/raw/manifest.json;
after changing a source, run `dvc repro -f ingest`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from transformer_pl.content_hash import dvc_md5
from transformer_pl.data import DEVELOPMENT_SPLITS, DataError, read_frames, write_frames
from transformer_pl.params import Params
from transformer_pl.stages.base import StageError, StageSpec
from transformer_pl.stages.code_deps import code_deps
from transformer_pl.stages.layout import Layout

REPORTS = "data/reports"
VALIDATION_SUMMARY = f"{Layout.VALIDATION}/summary.json"
DATA_DOCS = f"{Layout.VALIDATION}/docs"
QUARANTINE_FILE = "rows.parquet"

# Every data stage reads the dataset choice and, through the profile overlay, `profiles`.
DATASET_KEYS = ("dataset", "datasets", "profile", "profiles")


def ingest(params: Params, layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.ingest import ingest as ingest_source

    with _as_stage_error():
        manifest = ingest_source(
            params.dataset_spec, params.dataset, layout.root, layout / Layout.RAW
        )
    return _write_report(layout, _report("ingest"), manifest)


def clean(params: Params, layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.clean import clean_splits
    from transformer_pl.data.ingest import read_raw

    with _as_stage_error():
        raw, manifest = read_raw(layout / Layout.RAW)
        if manifest["dataset"] != params.dataset:
            raise DataError(
                f"{Layout.RAW} holds dataset '{manifest['dataset']}', params say "
                f"'{params.dataset}': run ingest first"
            )
        result = clean_splits(raw, params.dataset_spec, params.clean, params.seed)
    write_frames(result.frames, layout / Layout.CLEAN)
    quarantine_dir = _fresh_dir(layout / Layout.QUARANTINE)
    result.quarantine.to_parquet(quarantine_dir / QUARANTINE_FILE, index=False)
    return _write_report(layout, _report("clean"), {"dataset": params.dataset, **result.report})


def validate(params: Params, layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.validate import validate_splits

    with _as_stage_error():
        frames = read_frames(layout / Layout.CLEAN)
        quarantine = pd.read_parquet(layout / Layout.QUARANTINE / QUARANTINE_FILE)
    docs = _fresh_dir(layout / DATA_DOCS)
    outcome = validate_splits(
        frames,
        quarantine,
        params.dataset,
        params.dataset_spec,
        params.clean,
        params.validate_,
        docs,
    )
    _write_report(layout, VALIDATION_SUMMARY, {"dataset": params.dataset, **outcome.summary()})
    if not outcome.success:
        failures = "\n  ".join(outcome.failures)
        raise StageError(
            f"data validation failed; nothing downstream runs. Failed expectations:\n  {failures}\n"
            f"Details: {VALIDATION_SUMMARY}; Data Docs: {DATA_DOCS}/index.html"
        )
    return {
        "dataset": params.dataset,
        "success": True,
        "expectations": sum(len(records) for records in outcome.suites.values()),
        "splits": outcome.splits,
        "data_docs": f"{DATA_DOCS}/index.html",
    }


def split(params: Params, layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.split import split_frames

    with _as_stage_error():
        _require_validated(layout, params.dataset)
        frames, report = split_frames(
            read_frames(layout / Layout.CLEAN), params.dataset_spec, params.split, params.seed
        )
    # Test in a folder of its own, which only evaluate depends on: a change to test re-runs
    # evaluate alone, and no other stage's inputs hold its bytes.
    test = {name: frame for name, frame in frames.items() if name == "test"}
    write_frames(
        {name: frame for name, frame in frames.items() if name != "test"}, layout / Layout.SPLITS
    )
    write_frames(test, layout / Layout.TEST_SPLIT)
    # Each split file's DVC md5: the digest its runs log it with as an MLflow dataset input.
    digests = {name: dvc_md5(layout.split_file(name)) for name in frames}
    return _write_report(
        layout, _report("split"), {"dataset": params.dataset, **report, "digests": digests}
    )


def tokenizer(params: Params, layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.tokenizer import (
        SPECIAL_TOKENS,
        train_tokenizer,
        training_texts,
        unknown_fraction,
    )

    with _as_stage_error():
        frames = read_frames(layout / Layout.SPLITS, DEVELOPMENT_SPLITS)
    texts, sources = training_texts(frames, params.dataset_spec, params.tokenizer)
    trained = train_tokenizer(texts, params.tokenizer)
    path = layout / Layout.TOKENIZER
    path.parent.mkdir(parents=True, exist_ok=True)
    trained.save(str(path))
    val_texts = frames["val"]["text"].tolist()
    summary = {
        "dataset": params.dataset,
        "kind": params.tokenizer.kind,
        "vocab_size": trained.get_vocab_size(),
        "vocab_size_requested": params.tokenizer.vocab_size,
        "special_tokens": {token: trained.token_to_id(token) for token in SPECIAL_TOKENS},
        "trained_on": sources,
        "training_texts": len(texts),
        "val_unknown_fraction": round(unknown_fraction(trained, val_texts), 6),
    }
    return _write_report(layout, _report("tokenizer"), summary)


def encode(params: Params, layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.encode import encode_splits

    with _as_stage_error():
        frames = read_frames(layout / Layout.SPLITS, DEVELOPMENT_SPLITS)
    meta = encode_splits(
        frames,
        layout / Layout.TOKENIZER,
        params.dataset_spec,
        params.encode,
        layout / Layout.ENCODED,
    )
    return _write_report(layout, _report("encode"), {"dataset": params.dataset, **meta})


def _report(stage: str) -> str:
    return f"{REPORTS}/{stage}.json"


def _write_report(layout: Layout, relative: str, summary: dict[str, Any]) -> dict[str, Any]:
    path = layout / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _require_validated(layout: Layout, dataset: str) -> None:
    """Split is the first stage past the gate: it needs a passing validation of this dataset."""
    path = layout / VALIDATION_SUMMARY
    if not path.is_file():
        raise DataError(f"{VALIDATION_SUMMARY} not found: run validate first")
    summary = json.loads(path.read_text(encoding="utf-8"))
    if summary.get("dataset") != dataset or not summary.get("success"):
        raise DataError(f"{VALIDATION_SUMMARY}: no passing validation of '{dataset}'")


@contextmanager
def _as_stage_error() -> Iterator[None]:
    try:
        yield
    except DataError as error:
        raise StageError(str(error)) from error


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="ingest",
        run=ingest,
        deps=code_deps(ingest),
        params=DATASET_KEYS,
        outs=(Layout.RAW,),
        metrics=(_report("ingest"),),
    ),
    StageSpec(
        name="clean",
        run=clean,
        deps=(Layout.RAW, *code_deps(clean)),
        params=(*DATASET_KEYS, "clean", "seed"),
        outs=(Layout.CLEAN, Layout.QUARANTINE),
        metrics=(_report("clean"),),
    ),
    StageSpec(
        name="validate",
        run=validate,
        deps=(Layout.CLEAN, Layout.QUARANTINE, *code_deps(validate)),
        params=(*DATASET_KEYS, "clean", "validate"),
        outs=(DATA_DOCS,),
        metrics=(VALIDATION_SUMMARY,),
    ),
    StageSpec(
        name="split",
        run=split,
        deps=(Layout.CLEAN, VALIDATION_SUMMARY, *code_deps(split)),
        params=(*DATASET_KEYS, "split", "seed"),
        outs=(Layout.SPLITS, Layout.TEST_SPLIT),
        metrics=(_report("split"),),
    ),
    StageSpec(
        name="tokenizer",
        run=tokenizer,
        deps=(Layout.SPLITS, *code_deps(tokenizer)),
        params=(*DATASET_KEYS, "tokenizer"),
        outs=(Layout.TOKENIZER,),
        metrics=(_report("tokenizer"),),
    ),
    StageSpec(
        name="encode",
        run=encode,
        deps=(Layout.SPLITS, Layout.TOKENIZER, *code_deps(encode)),
        params=(*DATASET_KEYS, "encode"),
        outs=(Layout.ENCODED,),
        metrics=(_report("encode"),),
    ),
)
