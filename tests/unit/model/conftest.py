"""Tiny configurations keep the whole model suite fast on a 2-core CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from transformer_pl.model import TransformerConfig


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tensors this small gain nothing from intra-op threads, and on a busy 2-core machine the
    # threads' spin-waiting makes each step ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_config() -> Callable[..., TransformerConfig]:
    def make(**overrides: object) -> TransformerConfig:
        fields: dict[str, object] = dict(
            vocab_size=32, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=64, dropout=0.0
        )
        fields.update(overrides)
        return TransformerConfig(**fields)  # type: ignore[arg-type]

    return make
