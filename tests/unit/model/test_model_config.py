from __future__ import annotations

import pytest

from transformer_pl.model import TransformerConfig


def test_round_trips_through_dict() -> None:
    config = TransformerConfig(vocab_size=100, positional="rope", n_decoder_layers=3)
    assert TransformerConfig.from_dict(config.to_dict()) == config
    assert config.decoder_layers == 3
    assert TransformerConfig(vocab_size=100, n_layers=5).decoder_layers == 5


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model"),
        ({"d_model": 12, "n_heads": 4, "positional": "rope"}, "rope"),
        ({"positional": "alibi"}, "positional"),
        ({"activation": "swish"}, "activation"),
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"dropout": 1.0}, "dropout"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_decoder_layers": 0}, "n_decoder_layers"),
        ({"pad_token_id": 100}, "pad_token_id"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
    ],
)
def test_invalid_values_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TransformerConfig.from_dict({"vocab_size": 100, **overrides})


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="d_modle"):
        TransformerConfig.from_dict({"vocab_size": 100, "d_modle": 64})
