"""Rotary position embedding with interleaved pairs (Kyutai's convention).

Feature pairs are (0, 1), (2, 3), ... of each head; pair i rotates by angle
`t * max_period ** (-2 i / head_dim)`. The transformers port uses the equivalent
"rotate-half" pairing (i, i + head_dim / 2) with q/k projection rows permuted to match;
`mimi.checkpoint.transformers_layout` converts between the two.

An interleaved pair (x_re, x_im) is exactly a complex number's memory layout, so the rotation is
one complex multiply by `cos + i sin` on a complex view of the features: one pass over q and k
together, 5-8x faster than the four real products and a stack (`benchmarks/transformer_ab.py`). For Mimi's heads (64 features)
on torch's AVX-512 CPU kernels it is bit-identical to `x_re * cos - x_im * sin,
x_re * sin + x_im * cos` (each product rounded, then one sum, no fused multiply-add); where the
scalar loop runs (small heads) it may differ by an ulp.
"""

from __future__ import annotations

import math

import torch


def rope_frequencies(head_dim: int, max_period: float, device: torch.device | None = None) -> torch.Tensor:
    ds = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
    return torch.exp(ds * (-math.log(max_period) * 2 / head_dim))  # [Dh / 2]


def rope_rotation(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """positions [T] -> complex64 [T, Dh / 2]: cos + i sin of each position's angles."""
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    return torch.complex(torch.cos(angles), torch.sin(angles))


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., Dh] by `rotation` (complex, broadcast against [..., Dh / 2]); fp32 inside.

    x may be a strided view (of a fused qkv projection, say) as long as its features are
    contiguous; the result is a new tensor of x's shape and dtype."""
    xf = x.float()
    if xf.stride(-1) != 1 or xf.storage_offset() % 2 or any(s % 2 for s in xf.stride()[:-1]):
        xf = xf.contiguous()
    pairs = torch.view_as_complex(xf.unflatten(-1, (-1, 2)))  # [..., Dh / 2]
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def rotate_qkv(qkv: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fused projection qkv [B, T, 3, H, Dh] and rotation [T, Dh / 2] -> q, k, v [B, H, T, Dh].

    q and k are rotated together in one pass (views of one new tensor); v is a view of qkv."""
    qk = apply_rope(qkv[:, :, :2], rotation[:, None, None])  # [B, T, 2, H, Dh]
    q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh]
    return q, k, qkv[:, :, 2].transpose(1, 2)
