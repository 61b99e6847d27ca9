"""The bottleneck transformer of Mimi: causal, sliding-window (`context` steps), RoPE.

Pre-norm layers: x + LayerScale(attn(LayerNorm(x))), then x + LayerScale(MLP(LayerNorm(x)))
with a GELU MLP and no biases in the linears. A query at step t sees keys t - context + 1 .. t.

Offline, attention runs block by block; streaming, each attention layer keeps a preallocated
ring KV cache of `context` + `RING_SLACK` steps (both in `mimi.modules.kv_cache`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimi.config import TransformerConfig
from mimi.modules.rope import rope_frequencies, rope_rotation, rotate_qkv
from mimi.modules.kv_cache import (RING_SLACK, KVCacheState, empty_kv_cache, ring_attention_step,
                                   sliding_window_attention)
from mimi.modules.streaming import StreamingContainer, StreamingModule


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale  # [B, T, D]


class MultiheadAttention(StreamingModule[KVCacheState]):
    """Causal sliding-window self-attention with fused q/k/v projection (rows q, k, v)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.context = cfg.context
        self.in_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.max_period = cfg.max_period
        self._rope_freqs: torch.Tensor | None = None  # derived, not a weight: cached per device

    def rope_freqs(self, device: torch.device) -> torch.Tensor:
        if self._rope_freqs is None or self._rope_freqs.device != device:
            self._rope_freqs = rope_frequencies(self.head_dim, self.max_period, device)
        return self._rope_freqs

    def init_state(self, batch_size: int) -> KVCacheState:
        # RING_SLACK more slots than the window: a chunk's new steps go straight into the ring
        return empty_kv_cache(batch_size, self.num_heads, self.context + RING_SLACK, self.head_dim,
                              self.in_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        offset = 0 if self._state is None else self._state.offset
        qkv = self.in_proj(x).view(B, T, 3, self.num_heads, self.head_dim)
        pos = torch.arange(offset, offset + T, device=x.device)
        q, k, v = rotate_qkv(qkv, rope_rotation(pos, self.rope_freqs(x.device)))  # each [B, H, T, Dh]
        if self._state is None:
            out = sliding_window_attention(q, k, v, self.context)
        else:
            out = ring_attention_step(q, k, v, pos, self._state, self.context)
        out = out.transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        return self.out_proj(out)


class Mlp(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.dim_feedforward, bias=False)
        self.fc2 = nn.Linear(cfg.dim_feedforward, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # [B, T, D]


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = MultiheadAttention(cfg)
        self.scale1 = LayerScale(cfg.d_model, cfg.layer_scale)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg)
        self.scale2 = LayerScale(cfg.d_model, cfg.layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale1(self.attn(self.norm1(x)))  # [B, T, D]
        return x + self.scale2(self.mlp(self.norm2(x)))


class Transformer(StreamingContainer):
    """A stack of layers on channels-first latents: [B, D, T] -> [B, D, T]."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.transpose(1, 2)  # [B, T, D]
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2)  # [B, D, T]
