"""Validate: Great Expectations suites over the cleaned splits, the gate before split.

One suite per split, built from the dataset spec and the clean/validate params:

    every task    exactly the expected columns, their types, no nulls, unique row numbers, text
                  lengths within [min_chars, max_chars], at least `min_rows_per_split` rows
    classify      labels in range(len(label_names)); unique texts (when deduplicating)
    translate     both sides within the length bounds (no empty side), unique (text, target)
                  pairs
    lm            non-empty lines of at least min_chars (repeated lines are allowed)
    (task's own)  the dataset spec's `expectations` over its `validation_columns` (e.g. tag:
                  IOB2 tags, one per word)
    train, unlabeled (classify, translate; when drop_leakage): `in_heldout` false, i.e. no
                  text also in val/test

and one summary suite over a table with a row per split: `quarantine_fraction` at most
`max_quarantine_fraction`, `rarest_class_fraction` at least `min_class_fraction` (classify), no
`unaligned_lines` (translate: both languages' files have a line for every pair), and at least
`min_words_per_split` whitespace-separated `words` (lm: the text a perplexity is measured on).
`in_heldout` is computed for validation only.

GX 1.x: an ephemeral context (in-memory stores, analytics off) with one filesystem output, the
Data Docs site; per frame a pandas data source asset, a whole-dataframe batch definition, a
suite, a validation definition and a checkpoint (a dataframe is a batch parameter of the whole
checkpoint run, hence one per frame); the Data Docs are built once at the end. A checkpoint does
not raise when expectations fail: `validate_splits` returns the outcome and the caller stops the
pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from transformer_pl.params import CleanParams, DatasetSpec, ValidateParams
from transformer_pl.data import HELDOUT_SPLITS, TRAINING_SPLITS

SUMMARY = "summary"


@dataclass
class ValidationOutcome:
    success: bool
    suites: dict[str, list[dict[str, Any]]]  # suite -> one record per expectation
    splits: list[dict[str, Any]]  # the summary table, a record per split
    failures: list[str] = field(default_factory=list)  # one readable line per failed expectation

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "failures": self.failures,
            "splits": self.splits,
            "suites": self.suites,
        }


def validate_splits(
    frames: Mapping[str, pd.DataFrame],
    quarantine: pd.DataFrame,
    dataset: str,
    spec: DatasetSpec,
    clean: CleanParams,
    params: ValidateParams,
    docs_dir: Path,
) -> ValidationOutcome:
    """Run every suite; Data Docs HTML goes to `docs_dir`."""
    checked = {split: _with_derived_columns(split, frames, spec, clean) for split in frames}
    checked[SUMMARY] = split_summary(frames, quarantine, spec)
    context = _ephemeral_context(docs_dir)
    source = context.data_sources.add_pandas(name=dataset)
    suites: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []
    for name, frame in checked.items():
        expectations = (
            summary_expectations(spec, params)
            if name == SUMMARY
            else split_expectations(name, spec, clean, params)
        )
        suite = context.suites.add(gx.ExpectationSuite(name=f"{dataset}.{name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{dataset}.{name}", data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{dataset}.{name}",
                validation_definitions=[definition],
                result_format="SUMMARY",
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        records = [
            _record(expectation_result)
            for run in result.run_results.values()
            for expectation_result in run.results
        ]
        suites[suite.name] = records
        failures += [
            _failure_line(suite.name, record) for record in records if not record["success"]
        ]
    # Once for all results (an UpdateDataDocsAction per checkpoint re-renders the whole site).
    context.build_data_docs()
    splits = checked[SUMMARY].round(6).astype(object).where(checked[SUMMARY].notna(), None)
    return ValidationOutcome(not failures, suites, splits.to_dict("records"), failures)


def split_expectations(
    split: str, spec: DatasetSpec, clean: CleanParams, params: ValidateParams
) -> list[gxe.Expectation]:
    texts = ["text", "target"] if spec.parallel else ["text"]
    labeled = _labeled(split, spec)
    columns = ["row", "text", *(c for c in spec.columns if c != "label" or labeled)]
    derived = _derived_columns(split, spec, clean)
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=columns + derived, exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=params.min_rows_per_split),
        gxe.ExpectColumnValuesToBeInTypeList(column="row", type_list=["int64"]),
        gxe.ExpectColumnValuesToBeUnique(column="row"),
    ]
    for column in texts:
        expectations += [
            gxe.ExpectColumnValuesToNotBeNull(column=column),
            gxe.ExpectColumnValuesToBeOfType(column=column, type_="str"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=column, min_value=max(clean.min_chars, 1), max_value=clean.max_chars
            ),
        ]
    if labeled:
        expectations += [
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(
                column="label",
                value_set=list(range(len(spec.label_names or []))),
            ),
        ]
    if not spec.corpus and clean.deduplicate:
        example = list(spec.example_columns)
        expectations.append(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=example)
            if len(example) > 1
            else gxe.ExpectColumnValuesToBeUnique(column="text")
        )
    if "in_heldout" in derived:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="in_heldout", value_set=[False]))
    return expectations + spec.expectations(clean)


def summary_expectations(spec: DatasetSpec, params: ValidateParams) -> list[gxe.Expectation]:
    expectations: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToBeBetween(
            column="quarantine_fraction", min_value=0, max_value=params.max_quarantine_fraction
        )
    ]
    if spec.labelled:
        # Null for unlabeled splits, which GX skips.
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="rarest_class_fraction", min_value=params.min_class_fraction, max_value=1
            )
        )
    if spec.parallel:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column="unaligned_lines", min_value=0, max_value=0)
        )
    if spec.corpus:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column="words", min_value=params.min_words_per_split)
        )
    return expectations


def split_summary(
    frames: Mapping[str, pd.DataFrame], quarantine: pd.DataFrame, spec: DatasetSpec
) -> pd.DataFrame:
    """One row per split: rows in, quarantined, their fraction, the rarest class's share
    (classify), lines without a counterpart in the other language's file (translate) and
    words kept (lm)."""
    rows = []
    for split, frame in frames.items():
        dropped = quarantine[quarantine["split"] == split]
        rows_in = len(frame) + len(dropped)
        row: dict[str, Any] = {
            "split": split,
            "rows_in": rows_in,
            "quarantined": len(dropped),
            "quarantine_fraction": len(dropped) / max(rows_in, 1),
        }
        if spec.labelled:
            row["rarest_class_fraction"] = (
                _rarest_class_fraction(frame["label"], spec) if _labeled(split, spec) else None
            )
        if spec.parallel:
            row["unaligned_lines"] = int(
                dropped["detail"].astype("string").str.startswith("no aligned line").sum()
            )
        if spec.corpus:
            row["words"] = int(frame["text"].str.split().str.len().sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _labeled(split: str, spec: DatasetSpec) -> bool:
    return spec.labelled and split != "unlabeled"


def _rarest_class_fraction(labels: pd.Series, spec: DatasetSpec) -> float:
    """The smallest share of any label name in the split (0 when a class is absent)."""
    counts = labels.value_counts()
    rarest = min(counts.get(label, 0) for label in range(len(spec.label_names or [])))
    return rarest / max(len(labels), 1)


def _derived_columns(split: str, spec: DatasetSpec, clean: CleanParams) -> list[str]:
    """Columns computed for validation only: for training splits, whether the text is also in
    val/test (unless leakage is allowed: drop_leakage false); then the task's own."""
    derived = []
    if not spec.corpus and split in TRAINING_SPLITS and clean.drop_leakage:
        derived.append("in_heldout")
    return derived + list(spec.validation_columns)


def _with_derived_columns(
    split: str, frames: Mapping[str, pd.DataFrame], spec: DatasetSpec, clean: CleanParams
) -> pd.DataFrame:
    frame = frames[split].copy()
    derived = _derived_columns(split, spec, clean)
    if "in_heldout" in derived:
        heldout = [frames[name]["text"] for name in HELDOUT_SPLITS if name in frames]
        frame["in_heldout"] = frame["text"].isin(set().union(*heldout))
    for name, values in spec.validation_values(frames[split]).items():
        frame[name] = values
    return frame


def _ephemeral_context(docs_dir: Path) -> gx.data_context.AbstractDataContext:
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "local_site": {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _record(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    details = result.result or {}
    kwargs = {
        key: value
        for key, value in config.kwargs.items()
        if key not in ("batch_id", "column") and value is not None
    }
    observed = details.get("observed_value")
    return {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "kwargs": kwargs,
        "success": bool(result.success),
        "unexpected_count": details.get("unexpected_count"),
        "observed_value": round(observed, 6) if isinstance(observed, float) else observed,
        "sample": [_shortened(value) for value in details.get("partial_unexpected_list", [])[:5]],
        "error": _exception_message(result.exception_info or {}),
    }


def _shortened(value: Any, limit: int = 120) -> Any:
    return value[:limit] + "…" if isinstance(value, str) and len(value) > limit else value


def _exception_message(info: Mapping[str, Any]) -> str | None:
    """GX reports an expectation's exception directly or keyed by the metric that raised it."""
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [value for value in info.values() if isinstance(value, Mapping)]
    return next(
        (value.get("exception_message") for value in nested if value.get("raised_exception")), None
    )


def _failure_line(suite: str, record: dict[str, Any]) -> str:
    target = f" on '{record['column']}'" if record["column"] else ""
    if record["unexpected_count"] is not None:
        outcome = f"{record['unexpected_count']} unexpected (e.g. {record['sample'][:3]})"
    elif record["error"]:
        outcome = f"error: {record['error']}"
    else:
        outcome = f"observed {record['observed_value']}"
    return f"{suite}: {record['expectation']}{target} {record['kwargs']} failed: {outcome}"
