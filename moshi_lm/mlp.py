"""Feed-forward blocks of the Moshi transformers.

Gated (Helium / Moshi, e.g. "silu"): `linear_out(act(a) * b)` where `[a, b] = linear_in(x)`
(first half is activated, second half is the gate's multiplier). Its hidden width, from the
nominal feed-forward size `f` (`int(hidden_scale * dim)`), is `2 * f // 3` (integer division,
so moshiko's 4096-d temporal layers get 11264 and its 1024-d depformer layers 2816), except
`21 * dim // 8` when `f == 4 * dim`.

Ungated ("none"): `linear2(gelu(linear1(x)))` with hidden width `f`. No biases anywhere.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mimi.errors import MimiError

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu, "gelu": F.gelu, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
}


def gated_hidden_dim(dim: int, dim_feedforward: int) -> int:
    if dim_feedforward == 4 * dim:
        return (21 * dim) // 8
    return (2 * dim_feedforward) // 3


class GatedMlp(nn.Module):
    def __init__(self, dim: int, dim_feedforward: int, activation: str = "silu"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise MimiError(f"unknown gating activation {activation!r}")
        self.activation = activation
        hidden = gated_hidden_dim(dim, dim_feedforward)
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_in(x)  # [B, T, 2 * H]
        a, b = h.view(*h.shape[:-1], 2, -1).unbind(-2)  # each [B, T, H]
        return self.linear_out(_ACTIVATIONS[self.activation](a) * b)  # [B, T, D]


class PlainMlp(nn.Module):
    def __init__(self, dim: int, dim_feedforward: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim_feedforward, bias=False)
        self.linear2 = nn.Linear(dim_feedforward, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))  # [B, T, D]


def make_mlp(gating: str, dim: int, dim_feedforward: int) -> nn.Module:
    if gating == "none":
        return PlainMlp(dim, dim_feedforward)
    return GatedMlp(dim, dim_feedforward, gating)
