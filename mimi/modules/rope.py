"""Rotary position embedding with interleaved pairs (Kyutai's convention).

Feature pairs are (0, 1), (2, 3), ... of each head; pair i rotates by angle
`t * max_period ** (-2 i / head_dim)`. The transformers port uses the equivalent
"rotate-half" pairing (i, i + head_dim / 2) with q/k projection rows permuted to match;
`mimi.checkpoint.transformers_layout` converts between the two.
"""

from __future__ import annotations

import math

import torch


def rope_frequencies(head_dim: int, max_period: float, device: torch.device | None = None) -> torch.Tensor:
    ds = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
    return torch.exp(ds * (-math.log(max_period) * 2 / head_dim))  # [Dh / 2]


def rope_cos_sin(positions: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] (float32) -> cos, sin [T, Dh / 2]."""
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, Dh] by the angles of its T positions; computed in fp32."""
    B, H, T, Dh = x.shape
    pairs = x.float().view(B, H, T, Dh // 2, 2)
    xr, xi = pairs[..., 0], pairs[..., 1]  # [B, H, T, Dh / 2]
    out = torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1)
    return out.view(B, H, T, Dh).to(x.dtype)
