"""The delay pattern between streams, and its inverse.

Stream k is shifted `delays[k]` steps later: delayed[:, k, t] = codes[:, k, t - delays[k]],
the first `delays[k]` steps holding `pad[k]`. Moshi delays its acoustic codebooks by one frame
relative to text and the semantic codebook. Undoing the delay shifts back and marks the last
`delays[k]` steps of stream k as invalid (there is nothing to bring back there).
"""

from __future__ import annotations

from typing import Sequence

import torch

from mimi.errors import MimiError


def _check(delays: Sequence[int], K: int) -> None:
    if len(delays) != K:
        raise MimiError(f"expected {K} delays (one per stream), got {len(delays)}")
    if any(d < 0 for d in delays):
        raise MimiError(f"delays must be >= 0, got {list(delays)}")


def apply_delays(codes: torch.Tensor, delays: Sequence[int], pad: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """codes [B, K, T] -> delayed [B, K, T] (the last delays[k] steps of stream k are dropped)."""
    B, K, T = codes.shape
    _check(delays, K)
    pad = torch.as_tensor(pad, dtype=codes.dtype, device=codes.device).reshape(K)
    out = torch.empty_like(codes)
    for k, d in enumerate(delays):
        d = min(d, T)
        out[:, k, :d] = pad[k]
        out[:, k, d:] = codes[:, k, :T - d]
    return out


def undo_delays(x: torch.Tensor, delays: Sequence[int],
                fill: float | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, K, T, ...] in delayed time -> (x [B, K, T, ...] in original time, valid [B, K, T] bool).

    Positions with nothing to bring back (the last delays[k] of stream k) hold `fill`
    (default: NaN for floating tensors, the zero token -1 for integer ones)."""
    B, K, T = x.shape[:3]
    _check(delays, K)
    if fill is None:
        fill = float("nan") if x.is_floating_point() else -1
    out = torch.full_like(x, fill)
    valid = torch.zeros(B, K, T, dtype=torch.bool, device=x.device)
    for k, d in enumerate(delays):
        d = min(d, T)
        out[:, k, :T - d] = x[:, k, d:]
        valid[:, k, :T - d] = True
    return out, valid
