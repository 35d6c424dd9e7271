"""How a pipeline run reads: the headline `tpl run` prints and the Prefect summary artifact."""

from __future__ import annotations

from pipelines.report import summary_markdown
from pipelines.workspace import PipelineResult
from transformer_pl.headline import headline

STAGES = {
    "clean": {"rows_in": 2400, "rows_quarantined": 4},
    "validate": {"success": True, "expectations": 32},
    "split": {"rows": {"train": 719, "val": 80, "test": 800}},
    "evaluate": {
        "test_accuracy": 0.66625,
        "baseline_test_accuracy": 0.85375,
        "test_n_examples": 800.0,
        "baseline_test_n_examples": 800.0,
        "test_predict_seconds": 1.5,  # no baseline twin: not a headline fact
    },
    "register": {
        "model_name": "transformer-pl-imdb",
        "version": "2",
        "promoted": False,
        "reason": "0.6663 does not beat the champion's 0.7 by 0.005",
    },
}


def test_headline_pairs_each_metric_with_its_baseline_and_states_the_registry_decision():
    assert headline(STAGES) == [
        ("rows", "train 719, val 80, test 800"),
        ("quarantined", "4 of 2400 rows"),
        ("validation", "passed (32 checks)"),
        ("test_accuracy", "0.6663 (baseline 0.8538)"),
        ("test_n_examples", "800 (baseline 800)"),
        (
            "registry",
            "transformer-pl-imdb version 2 @challenger: "
            "0.6663 does not beat the champion's 0.7 by 0.005",
        ),
    ]


def test_headline_shows_every_baseline_and_the_paired_interval():
    evaluation = {
        "val_accuracy": 0.9,
        "test_accuracy": 0.91,
        "baseline_val_accuracy": 0.905,
        "baseline_test_accuracy": 0.9,
        "nbsvm_test_accuracy": 0.92,
        "test_accuracy_minus_baseline": 0.01,
        "test_accuracy_minus_baseline_ci95_low": 0.004,
        "test_accuracy_minus_baseline_ci95_high": 0.016,
    }
    assert headline({"evaluate": evaluation}) == [
        ("val_accuracy", "0.9 (baseline 0.905)"),
        ("test_accuracy", "0.91 (baseline 0.9, nbsvm 0.92); − baseline +0.0100 [+0.0040, +0.0160]"),
    ]


def test_headline_of_a_partial_run_has_only_what_ran():
    assert headline({"validate": {"success": False, "expectations": 32}}) == [
        ("validation", "failed (32 checks)")
    ]


def test_summary_markdown_escapes_table_cells_and_links_the_mlflow_run():
    result = PipelineResult(
        {"validate": {"failed": "a|b\nc"}}, "abc123", "http://127.0.0.1:5000/#/runs/abc123"
    )
    text = summary_markdown(result, "tiny", "imdb")
    assert text.startswith("# transformer-pl: `imdb`, profile `tiny`")
    assert "MLflow run: [`abc123`](http://127.0.0.1:5000/#/runs/abc123)" in text
    assert "| failed | a\\|b c |" in text
