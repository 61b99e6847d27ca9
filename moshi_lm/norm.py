"""Normalisations of the Moshi transformers, chosen by the config's `norm` string.

- "rms_norm_f32" (Moshi, Helium): RMSNorm computed in float32, eps 1e-8;
- "rms_norm": RMSNorm in the input's dtype, eps 1e-5;
- "layer_norm": `nn.LayerNorm`, eps 1e-5;  "layer_norm_f32": LayerNorm in float32, eps 1e-8.

RMSNorm: y = x * weight / sqrt(eps + mean(x ** 2)) over the last dim, returned in x's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimi.errors import MimiError


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-8, compute_dtype: torch.dtype | None = torch.float32):
        super().__init__()
        self.eps = eps
        self.compute_dtype = compute_dtype  # None: compute in the input's dtype
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.compute_dtype is None else x.to(self.compute_dtype)  # [..., D]
        inv_rms = torch.rsqrt(self.eps + y.pow(2).mean(dim=-1, keepdim=True))  # [..., 1]
        return (y * (self.weight.to(inv_rms.dtype) * inv_rms)).to(x.dtype)


class LayerNormF32(nn.LayerNorm):
    """LayerNorm whose statistics and affine transform run in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "rms_norm_f32":
        return RMSNorm(dim, eps=1e-8, compute_dtype=torch.float32)
    if kind == "rms_norm":
        return RMSNorm(dim, eps=1e-5, compute_dtype=None)
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5)
    if kind == "layer_norm_f32":
        return LayerNormF32(dim, eps=1e-8)
    raise MimiError(f"unknown norm {kind!r}")
