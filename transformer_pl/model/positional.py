"""Position information: added to the embeddings (sinusoidal, learned) or rotated into q, k (RoPE).

Every module here takes `positions`, integer positions of shape (T,) or (batch, T), so that a
KV-cached step can start at an offset and a left-padded sequence can start at 0 after its padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sinusoidal_encoding(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Returns a (max_len, d_model) float32 table, computed in float64 so far positions stay exact.
    """
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / 10000 ** (two_i / d_model)  # (max_len, ceil(d_model / 2))
    pe = torch.empty(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.float()


class SinusoidalPositionalEncoding(nn.Module):
    """The paper's fixed encoding (section 3.5); no parameters, nothing in the state dict."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """(T,) or (B, T) positions -> (T, d_model) or (B, T, d_model) encodings to add."""
        return self.pe[positions]


class LearnedPositionalEncoding(nn.Module):
    """One trained vector per position (BERT, GPT-2); cannot extrapolate past max_len."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        return nn.functional.embedding(positions, self.weight)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al., 2021): rotate each pair of query/key dimensions by the angle pos·θ_i.

    θ_i = base^(-2i/d) for i < d/2. Since rotations compose, qᵀk after rotation depends on the
    positions only through their difference. The pairs are (x_i, x_{i+d/2}) ("rotate half", as in
    GPT-NeoX/Llama) rather than the paper's adjacent (x_{2i}, x_{2i+1}): a fixed permutation of
    head dimensions that the learned projections absorb, and two contiguous halves are cheaper.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angle = torch.arange(max_len, dtype=torch.float64).unsqueeze(1) * theta  # (max_len, d/2)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate x of shape (B, H, T, d) at (T,) or (B, T) positions."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, d/2) or (B, T, d/2)
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
