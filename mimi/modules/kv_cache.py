"""Causal sliding-window attention: blockwise offline, and one streaming step over a ring cache.

Shared by Mimi's bottleneck transformer and `moshi_lm`'s transformers. A query at step t sees
keys t - window + 1 .. t. Offline, queries go in blocks (`QUERY_BLOCK`) against the
block + window - 1 keys they can see, so memory stays linear in the sequence length. Streaming,
keys and values of the last `capacity` steps live in a preallocated ring, with each slot's
absolute step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mimi.modules.streaming import StreamingState


@dataclass
class KVCacheState(StreamingState):
    keys: torch.Tensor  # [B, H, capacity, Dh] ring buffer
    values: torch.Tensor  # [B, H, capacity, Dh]
    positions: torch.Tensor  # [capacity] absolute step of each slot, -1 when empty
    offset: int  # steps seen so far


def empty_kv_cache(batch_size: int, num_heads: int, capacity: int, head_dim: int,
                   like: torch.Tensor) -> KVCacheState:
    shape = (batch_size, num_heads, capacity, head_dim)
    return KVCacheState(
        keys=torch.zeros(shape, device=like.device, dtype=like.dtype),
        values=torch.zeros(shape, device=like.device, dtype=like.dtype),
        positions=torch.full((capacity,), -1, device=like.device, dtype=torch.long),
        offset=0,
    )


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """[Tq, Tk] bool: key visible to query (causal, within `window` steps, slot not empty)."""
    delta = q_pos[:, None] - k_pos[None, :]
    return (k_pos[None, :] >= 0) & (delta >= 0) & (delta < window)


RING_SLACK = 16  # streaming: ring slots beyond the window, so chunks of <= 17 steps need no cache copy
QUERY_BLOCK = 64  # offline queries per attention call: keys span QUERY_BLOCK + window - 1


@functools.lru_cache(maxsize=64)
def _block_bias(n_q: int, n_k: int, window: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[n_q, n_k] additive mask (0 or -inf) of a query block ending where its keys end."""
    q_pos = torch.arange(n_k - n_q, n_k, device=device)
    visible = window_mask(q_pos, torch.arange(n_k, device=device), window)
    return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, float("-inf"))


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Offline causal attention within `window` steps: q, k, v [B, H, T, Dh] -> [B, H, T, Dh].

    Longer than the window, queries go in blocks of min(QUERY_BLOCK, window) against the keys they
    can see, so (block + window - 1) / window of the needed scores are computed (2x with
    window-sized blocks, 1.25x at 64 for Mimi's 250; per layer 64 measured 0.8-1.25x the time of
    250 on a shared 2-core machine, `benchmarks/transformer_ab.py`). The additive masks are
    cached: interior blocks share one."""
    T = q.shape[2]
    if T <= window:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    block = min(QUERY_BLOCK, window)
    blocks = []
    for start in range(0, T, block):  # queries [start, end) see keys [start - window + 1, end)
        end, k_start = min(start + block, T), max(0, start - window + 1)
        bias = _block_bias(end - start, end - k_start, window, q.dtype, q.device)
        blocks.append(F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, k_start:end], v[:, :, k_start:end], attn_mask=bias))
    return torch.cat(blocks, dim=2)


def ring_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                        state: KVCacheState, window: int) -> torch.Tensor:
    """Attend T new steps (absolute steps `pos`) to the cache and themselves, then store them.

    q, k, v [B, H, T, Dh] -> [B, H, T, Dh]; the window is capped by the ring's capacity. When the
    ring has room for the window plus the T - 1 newer steps (see `RING_SLACK`), the new steps go
    into it first and the queries attend to the ring alone: no copy of the cache per step (not
    while recording gradients: the next step's write would clobber what backward needs)."""
    cap, T = state.keys.shape[2], q.shape[2]
    window = min(window, cap)
    recording = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if T + window - 1 <= cap and not recording:  # writing first overwrites only steps no query here sees
        _store(state, k, v, pos)
        mask = window_mask(pos, state.positions, window)  # [T, cap]
        out = F.scaled_dot_product_attention(q, state.keys, state.values, attn_mask=mask)
    else:
        keys = torch.cat([state.keys, k], dim=2)  # [B, H, cap + T, Dh]
        values = torch.cat([state.values, v], dim=2)
        mask = window_mask(pos, torch.cat([state.positions, pos]), window)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        _store(state, k, v, pos)
    state.offset += T
    return out


def _store(state: KVCacheState, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
    """Write the newest `capacity` of these steps into their ring slots."""
    cap = state.keys.shape[2]
    keep = min(k.shape[2], cap)
    slots = pos[-keep:] % cap
    state.keys.index_copy_(2, slots, k[:, :, -keep:])
    state.values.index_copy_(2, slots, v[:, :, -keep:])
    state.positions.index_copy_(0, slots, pos[-keep:])
