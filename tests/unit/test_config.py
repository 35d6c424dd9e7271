"""params.yaml loading: profiles overlay the base, malformed config fails at load naming the key."""

from pathlib import Path

import pytest
import yaml

from transformer_pl.config import ConfigError, deep_merge, load_params, parse_params

PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(PROJECT_PARAMS.read_text())


def test_project_params_load_for_every_profile(raw):
    for profile in ["default", *raw["profiles"]]:
        params = load_params(PROJECT_PARAMS, profile)
        assert params.profile == profile
        assert params.dataset_spec.task in {"classify", "lm", "translate"}


def test_profile_overlays_only_the_keys_it_names(raw):
    base = parse_params(raw, "default")
    tiny = parse_params(raw, "tiny")
    assert tiny.model.d_model == raw["profiles"]["tiny"]["model"]["d_model"] != base.model.d_model
    # Untouched keys inside an overlaid section keep their base value.
    assert tiny.model.positional == base.model.positional
    assert tiny.finetune.optim.weight_decay == base.finetune.optim.weight_decay


def test_deep_merge_replaces_leaves_and_merges_mappings():
    merged = deep_merge({"a": {"x": 1, "y": 2}, "b": [1, 2]}, {"a": {"y": 3}, "b": [9]})
    assert merged == {"a": {"x": 1, "y": 3}, "b": [9]}


def test_bad_choice_names_key_and_allowed_values(raw):
    raw["model"]["positional"] = "spiral"
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    message = str(error.value)
    assert "model.positional" in message
    assert "'sinusoidal'" in message and "'rope'" in message


def test_unknown_key_is_rejected(raw):
    raw["clean"]["min_char"] = 3  # typo of min_chars
    with pytest.raises(ConfigError, match=r"clean\.min_char: unknown key"):
        parse_params(raw)


def test_out_of_range_value_is_rejected(raw):
    raw["split"]["val_fraction"] = 1.5
    with pytest.raises(ConfigError, match=r"split\.val_fraction"):
        parse_params(raw)


def test_unknown_profile_lists_the_known_ones(raw):
    with pytest.raises(ConfigError, match="allowed: default, tiny"):
        parse_params(raw, "huge")


def test_unknown_dataset_lists_the_defined_ones(raw):
    raw["dataset"] = "mnist"
    with pytest.raises(ConfigError, match=r"dataset 'mnist'.*imdb"):
        parse_params(raw)


def test_heads_must_divide_width(raw):
    raw["model"]["n_heads"] = 3
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        parse_params(raw)


def test_classification_spec_needs_labels(raw):
    del raw["datasets"]["imdb"]["label_names"]
    with pytest.raises(ConfigError, match=r"datasets\.imdb.*label_names"):
        parse_params(raw)


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)
