"""Helium-style transformer (used for both Moshi's temporal transformer and its depformer).

Pre-norm layers without biases:
    x = x + LayerScale(attn(norm1(x)));  x = x + LayerScale(mlp(norm2(x)))
LayerScale is the identity when `layer_scale` is None (Moshi 7B). With `num_steps > 1` every
layer holds one attention projection set and one MLP per step ("weights per step"): step s of
the sequence (s = streaming offset + position) uses set s.

Positional information: RoPE in the attention ("rope"), a sinusoidal embedding added to the
input ("sin": cos half then sin half, periods `max_period ** (i / (D/2 - 1))`), both
("sin_rope"), or nothing ("none", the depformer).

Streaming: `with transformer.streaming(B):` each attention keeps a ring KV cache and the
transformer its step offset (`TransformerState`), so steps can be fed one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mimi.errors import MimiError
from mimi.modules.streaming import StreamingModule, StreamingState
from mimi.modules.transformer import LayerScale
from moshi_lm.attention import Attention
from moshi_lm.mlp import make_mlp
from moshi_lm.norm import make_norm
from moshi_lm.per_step import apply_per_step


@dataclass(frozen=True)
class TransformerSpec:
    """Everything that shapes one transformer stack (derived from `LMConfig`)."""

    dim: int
    num_heads: int
    num_layers: int
    dim_feedforward: int  # nominal; a gated MLP's hidden width is derived from it
    causal: bool = True
    context: int | None = None
    positional_embedding: str = "rope"
    max_period: float = 10000.0
    gating: str = "silu"
    norm: str = "rms_norm_f32"
    layer_scale: float | None = None
    num_steps: int = 1  # weights per step (1: shared)
    cache_capacity: int | None = None  # streaming KV cache length (default: context)


def sin_embedding(positions: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """positions [T] -> [1, T, dim] (float32): cos of every phase, then sin."""
    half = dim // 2
    i = torch.arange(half, device=positions.device, dtype=torch.float32)
    phase = positions.to(torch.float32)[:, None] / (max_period ** (i / (half - 1)))[None, :]  # [T, D/2]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)[None]


class TransformerLayer(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        use_rope = spec.positional_embedding in ("rope", "sin_rope")
        self.norm1 = make_norm(spec.norm, spec.dim)
        self.self_attn = Attention(spec.dim, spec.num_heads, num_steps=spec.num_steps, causal=spec.causal,
                                   context=spec.context, rope_max_period=spec.max_period if use_rope else None,
                                   cache_capacity=spec.cache_capacity)
        self.norm2 = make_norm(spec.norm, spec.dim)
        self.mlps = nn.ModuleList(make_mlp(spec.gating, spec.dim, spec.dim_feedforward)
                                  for _ in range(spec.num_steps))
        self.scale1: nn.Module = nn.Identity() if spec.layer_scale is None else LayerScale(spec.dim, spec.layer_scale)
        self.scale2: nn.Module = nn.Identity() if spec.layer_scale is None else LayerScale(spec.dim, spec.layer_scale)

    def forward(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        x = x + self.scale1(self.self_attn(self.norm1(x)))  # [B, T, D]
        return x + self.scale2(apply_per_step(self.mlps, self.norm2(x), offset))


@dataclass
class TransformerState(StreamingState):
    offset: int  # steps seen so far


class Transformer(StreamingModule[TransformerState]):
    """[B, T, D] -> [B, T, D]."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        if spec.positional_embedding not in ("rope", "none", "sin", "sin_rope"):
            raise MimiError(f"unsupported positional embedding {spec.positional_embedding!r}")
        self.spec = spec
        self.layers = nn.ModuleList(TransformerLayer(spec) for _ in range(spec.num_layers))

    def init_state(self, batch_size: int) -> TransformerState:
        return TransformerState(offset=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        offset = 0 if self._state is None else self._state.offset
        if self.spec.positional_embedding in ("sin", "sin_rope"):
            pos = torch.arange(offset, offset + T, device=x.device)
            x = x + sin_embedding(pos, D, self.spec.max_period).to(x.dtype)
        for layer in self.layers:
            x = layer(x, offset)
        if self._state is not None:
            self._state.offset += T
        return x
