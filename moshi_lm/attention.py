"""Self-attention of the Moshi transformers: causal, optional sliding window, optional RoPE,
optional per-step projection weights, streaming through a ring KV cache.

Why not `mimi.modules.transformer.MultiheadAttention`: that one is tied to Mimi's
`TransformerConfig`, has a single fused `in_proj`, always a finite window, always RoPE, and no
per-step weights. The depformer needs one q/k/v and one output projection per codebook step
(chosen by the streaming offset), an unbounded window offline, and no positional embedding.
This module keeps Mimi's conventions and reuses its pieces: `KVCacheState` (the ring cache),
`window_mask`, the interleaved RoPE of `mimi.modules.rope`, and the same block-wise offline
attention, so memory stays linear in T for the temporal transformer.

A query at step t sees keys t - context + 1 .. t (all keys <= t when `context` is None).
Projection rows are (q, k, v), each `num_heads * head_dim`, heads contiguous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimi.errors import MimiError
from mimi.modules.rope import apply_rope, rope_cos_sin, rope_frequencies
from mimi.modules.streaming import StreamingModule
from mimi.modules.transformer import KVCacheState, window_mask
from moshi_lm.per_step import apply_per_step


class Attention(StreamingModule[KVCacheState]):
    def __init__(self, dim: int, num_heads: int, *, num_steps: int = 1, causal: bool = True,
                 context: int | None = None, rope_max_period: float | None = None,
                 cache_capacity: int | None = None):
        """num_steps: weight sets (1: shared). rope_max_period None: no RoPE.
        cache_capacity: streaming KV cache length (defaults to `context`, else `num_steps`)."""
        super().__init__()
        if dim % num_heads:
            raise MimiError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.context = context
        self.rope_max_period = rope_max_period
        self.cache_capacity = cache_capacity or context or (num_steps if num_steps > 1 else None)
        self.in_projs = nn.ModuleList(nn.Linear(dim, 3 * dim, bias=False) for _ in range(num_steps))
        self.out_projs = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_steps))
        self._rope_freqs: torch.Tensor | None = None  # derived, cached per device

    def _freqs(self, device: torch.device) -> torch.Tensor:
        assert self.rope_max_period is not None
        if self._rope_freqs is None or self._rope_freqs.device != device:
            self._rope_freqs = rope_frequencies(self.head_dim, self.rope_max_period, device)
        return self._rope_freqs

    def _window(self) -> int:
        return self.context if self.context is not None else (1 << 62)

    def init_state(self, batch_size: int) -> KVCacheState:
        if not self.causal:
            raise MimiError("a non-causal attention cannot stream")
        if self.cache_capacity is None:
            raise MimiError("streaming needs a finite context (or per-step weights) to size the KV cache")
        w = self.in_projs[0].weight
        shape = (batch_size, self.num_heads, self.cache_capacity, self.head_dim)
        return KVCacheState(
            keys=torch.zeros(shape, device=w.device, dtype=w.dtype),
            values=torch.zeros(shape, device=w.device, dtype=w.dtype),
            positions=torch.full((self.cache_capacity,), -1, device=w.device, dtype=torch.long),
            offset=0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        offset = 0 if self._state is None else self._state.offset
        qkv = apply_per_step(self.in_projs, x, offset).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh]
        pos = torch.arange(offset, offset + T, device=x.device)  # [T]
        if self.rope_max_period is not None:
            cos, sin = rope_cos_sin(pos, self._freqs(x.device))  # [T, Dh / 2]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self._state is None:
            out = self._attend_offline(q, k, v)
        else:
            out = self._attend_streaming(q, k, v, pos, self._state)
        out = out.transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        return apply_per_step(self.out_projs, out, offset)

    def _attend_offline(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.causal:
            return F.scaled_dot_product_attention(q, k, v)
        T, ctx = q.shape[2], self._window()
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
        cap = state.keys.shape[2]
        keys = torch.cat([state.keys, k], dim=2)  # [B, H, cap + T, Dh]
        values = torch.cat([state.values, v], dim=2)
        mask = window_mask(pos, torch.cat([state.positions, pos]), min(self._window(), cap))
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # [B, H, T, Dh]
        keep = min(q.shape[2], cap)  # write the newest `cap` steps into the ring
        slots = pos[-keep:] % cap
        state.keys.index_copy_(2, slots, k[:, :, -keep:])
        state.values.index_copy_(2, slots, v[:, :, -keep:])
        state.positions.index_copy_(0, slots, pos[-keep:])
        state.offset += q.shape[2]
        return out
