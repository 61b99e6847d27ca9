"""Self-attention of the Moshi transformers: causal, optional sliding window, optional RoPE,
optional per-step projection weights, streaming through a ring KV cache.

Why not `mimi.modules.transformer.MultiheadAttention`: that one is tied to Mimi's
`TransformerConfig`, has a single fused `in_proj`, always a finite window, always RoPE, and no
per-step weights. The depformer needs one q/k/v and one output projection per codebook step
(chosen by the streaming offset), an unbounded window offline, and no positional embedding.
This module keeps Mimi's conventions and reuses its pieces: the ring KV cache and the
block-wise sliding-window attention of `mimi.modules.kv_cache` (memory linear in T for the
temporal transformer), and the interleaved RoPE of `mimi.modules.rope`.

A query at step t sees keys t - context + 1 .. t (all keys <= t when `context` is None).
Projection rows are (q, k, v), each `num_heads * head_dim`, heads contiguous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimi.errors import MimiError
from mimi.modules.rope import rope_frequencies, rope_rotation, rotate_qkv
from mimi.modules.streaming import StreamingModule
from mimi.modules.kv_cache import KVCacheState, empty_kv_cache, ring_attention_step, sliding_window_attention
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
        return empty_kv_cache(batch_size, self.num_heads, self.cache_capacity, self.head_dim,
                              self.in_projs[0].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        offset = 0 if self._state is None else self._state.offset
        qkv = apply_per_step(self.in_projs, x, offset).view(B, T, 3, self.num_heads, self.head_dim)
        pos = torch.arange(offset, offset + T, device=x.device)  # [T]
        if self.rope_max_period is not None:
            q, k, v = rotate_qkv(qkv, rope_rotation(pos, self._freqs(x.device)))  # each [B, H, T, Dh]
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh]
        if self._state is None:
            out = self._attend_offline(q, k, v)
        else:
            out = ring_attention_step(q, k, v, pos, self._state, self._window())
        out = out.transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        return apply_per_step(self.out_projs, out, offset)

    def _attend_offline(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.causal:
            return F.scaled_dot_product_attention(q, k, v)
        return sliding_window_attention(q, k, v, self._window())
