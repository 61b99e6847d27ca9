"""The bottleneck transformer of Mimi: causal, sliding-window (`context` steps), RoPE.

Pre-norm layers: x + LayerScale(attn(LayerNorm(x))), then x + LayerScale(MLP(LayerNorm(x)))
with a GELU MLP and no biases in the linears. A query at step t sees keys t - context + 1 .. t.

Offline, attention runs block by block (blocks of `context` queries against at most
2 * context keys), so memory stays linear in the sequence length. Streaming, each attention
layer keeps a preallocated ring KV cache of `context` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mimi.config import TransformerConfig
from mimi.modules.rope import apply_rope, rope_cos_sin, rope_frequencies
from mimi.modules.streaming import StreamingContainer, StreamingModule, StreamingState


@dataclass
class KVCacheState(StreamingState):
    keys: torch.Tensor  # [B, H, context, Dh] ring buffer
    values: torch.Tensor  # [B, H, context, Dh]
    positions: torch.Tensor  # [context] absolute step of each slot, -1 when empty
    offset: int  # steps seen so far


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale  # [B, T, D]


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, context: int) -> torch.Tensor:
    """[Tq, Tk] bool: key visible to query (causal, within `context` steps, slot not empty)."""
    delta = q_pos[:, None] - k_pos[None, :]
    return (k_pos[None, :] >= 0) & (delta >= 0) & (delta < context)


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
        w = self.in_proj.weight
        shape = (batch_size, self.num_heads, self.context, self.head_dim)
        return KVCacheState(
            keys=torch.zeros(shape, device=w.device, dtype=w.dtype),
            values=torch.zeros(shape, device=w.device, dtype=w.dtype),
            positions=torch.full((self.context,), -1, device=w.device, dtype=torch.long),
            offset=0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        offset = 0 if self._state is None else self._state.offset
        qkv = self.in_proj(x).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh]
        pos = torch.arange(offset, offset + T, device=x.device)
        cos, sin = rope_cos_sin(pos, self.rope_freqs(x.device))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self._state is None:
            out = self._attend_offline(q, k, v)
        else:
            out = self._attend_streaming(q, k, v, pos, self._state)
        out = out.transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        return self.out_proj(out)

    def _attend_offline(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T, ctx = q.shape[2], self.context
        if T <= ctx:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        pos = torch.arange(T, device=q.device)
        blocks = []
        for start in range(0, T, ctx):  # queries [start, end) see keys [start - ctx + 1, end)
            end, k_start = min(start + ctx, T), max(0, start - ctx + 1)
            mask = window_mask(pos[start:end], pos[k_start:end], ctx)
            blocks.append(F.scaled_dot_product_attention(
                q[:, :, start:end], k[:, :, k_start:end], v[:, :, k_start:end], attn_mask=mask))
        return torch.cat(blocks, dim=2)  # [B, H, T, Dh]

    def _attend_streaming(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          pos: torch.Tensor, state: KVCacheState) -> torch.Tensor:
        keys = torch.cat([state.keys, k], dim=2)  # [B, H, ctx + T, Dh]
        values = torch.cat([state.values, v], dim=2)
        mask = window_mask(pos, torch.cat([state.positions, pos]), self.context)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        # write the newest `context` steps into the ring
        keep = min(q.shape[2], self.context)
        slots = pos[-keep:] % self.context
        state.keys.index_copy_(2, slots, k[:, :, -keep:])
        state.values.index_copy_(2, slots, v[:, :, -keep:])
        state.positions.index_copy_(0, slots, pos[-keep:])
        state.offset += q.shape[2]
        return out


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
