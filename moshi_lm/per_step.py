"""Per-step weights: step `s` of a short sequence uses its own module (the depformer's
"weights per step", one set per codebook). With a single module every step shares it."""

from __future__ import annotations

import torch
from torch import nn

from mimi.errors import MimiError


def apply_per_step(modules: nn.ModuleList, x: torch.Tensor, offset: int) -> torch.Tensor:
    """x [B, T, C] at absolute steps offset .. offset + T - 1 -> [B, T, C'] (module t applied to step t)."""
    if len(modules) == 1:
        return modules[0](x)
    T = x.shape[1]
    if offset + T > len(modules):
        raise MimiError(f"step {offset + T - 1} has no weights: only {len(modules)} steps are defined")
    return torch.cat([modules[offset + t](x[:, t:t + 1]) for t in range(T)], dim=1)
