"""The model card a registered version carries as its description."""

from transformer_pl.model_card import MAX_CARD_CHARS, model_card


def test_the_card_lists_each_figure_beside_its_baselines_and_the_lineage():
    evaluation = {
        "dataset": "imdb",
        "val_accuracy": 0.9,
        "baseline_val_accuracy": 0.85,
        "val_accuracy_minus_baseline": 0.05,
        "val_accuracy_minus_baseline_ci95_low": 0.03,
        "val_accuracy_minus_baseline_ci95_high": 0.07,
        "test_accuracy": 0.88,
        "baseline_test_accuracy": 0.86,
        "test_predict_seconds": 3.5,
    }
    card = model_card(
        model_name="transformer-pl-imdb",
        dataset="imdb",
        task="classify",
        profile="tiny",
        evaluation=evaluation,
        lineage={
            "git.commit": "abc123",
            "dvc.data/processed/encoded": "d41d8.dir",
            "dvc.transformer_pl/params.py": "0cc17",
        },
    )
    assert card.startswith("# transformer-pl-imdb\n")
    assert "dataset `imdb` (profile `tiny`)" in card
    assert "| `val_accuracy` | 0.9 (baseline 0.85); − baseline +0.0500 [+0.0300, +0.0700] |" in card
    assert "| `test_accuracy` | 0.88 (baseline 0.86) |" in card
    assert "test_predict_seconds" not in card  # a timing without a baseline twin
    assert "| `git.commit` | `abc123` |" in card
    assert "| `dvc.data/processed/encoded` | `d41d8.dir` |" in card
    assert "params.py" not in card  # the commit names the code


def test_a_card_fits_the_registry_s_description_limit():
    evaluation = {f"test_metric_{index}": 0.5 for index in range(400)}
    evaluation |= {f"baseline_test_metric_{index}": 0.4 for index in range(400)}
    card = model_card(
        model_name="m", dataset="d", task="t", profile="p", evaluation=evaluation, lineage={}
    )
    assert len(card) == MAX_CARD_CHARS
    assert card.endswith("(cut at 5000 characters, the registry's limit)\n")


def test_a_card_without_figures_or_lineage_has_no_empty_sections():
    card = model_card(
        model_name="m", dataset="d", task="lm", profile="p", evaluation={}, lineage={}
    )
    assert "## Figures" not in card and "## Lineage" not in card
