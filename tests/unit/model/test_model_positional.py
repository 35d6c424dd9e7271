from __future__ import annotations

import math

import torch

from transformer_pl.model import RotaryEmbedding, SinusoidalPositionalEncoding, sinusoidal_encoding


def test_sinusoidal_values_follow_the_formula() -> None:
    d_model = 16
    pe = sinusoidal_encoding(max_len=600, d_model=d_model)
    assert pe.shape == (600, d_model)
    for pos in (0, 1, 7, 513):
        for i in (0, 3, 7):
            angle = pos / 10000 ** (2 * i / d_model)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_sinusoidal_module_looks_up_positions_and_has_no_state() -> None:
    module = SinusoidalPositionalEncoding(max_len=32, d_model=8)
    positions = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    torch.testing.assert_close(module(positions), sinusoidal_encoding(32, 8)[positions])
    assert module.state_dict() == {}


def test_rope_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_len=64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> torch.Tensor:
        return (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum()

    torch.testing.assert_close(score(5, 2), score(40, 37))
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(5, 2), score(5, 3))
    # A rotation keeps the norm.
    torch.testing.assert_close(rope(q, torch.tensor([9])).norm(), q.norm())
