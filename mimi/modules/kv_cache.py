"""Causal sliding-window attention: blockwise offline, and one streaming step over a ring cache.

Shared by Mimi's bottleneck transformer and `moshi_lm`'s transformers. A query at step t sees
keys t - window + 1 .. t. Offline, queries go in blocks of `window` against at most
2 * window keys, so memory stays linear in the sequence length. Streaming, keys and values of
the last `capacity` steps live in a preallocated ring, with each slot's absolute step.
"""

from __future__ import annotations

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


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Offline causal attention within `window` steps: q, k, v [B, H, T, Dh] -> [B, H, T, Dh]."""
    T = q.shape[2]
    if T <= window:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    pos = torch.arange(T, device=q.device)
    blocks = []
    for start in range(0, T, window):  # queries [start, end) see keys [start - window + 1, end)
        end, k_start = min(start + window, T), max(0, start - window + 1)
        mask = window_mask(pos[start:end], pos[k_start:end], window)
        blocks.append(F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, k_start:end], v[:, :, k_start:end], attn_mask=mask))
    return torch.cat(blocks, dim=2)


def ring_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                        state: KVCacheState, window: int) -> torch.Tensor:
    """Attend T new steps (absolute steps `pos`) to the cache and themselves, then store them.

    q, k, v [B, H, T, Dh] -> [B, H, T, Dh]; the window is capped by the ring's capacity."""
    cap = state.keys.shape[2]
    keys = torch.cat([state.keys, k], dim=2)  # [B, H, cap + T, Dh]
    values = torch.cat([state.values, v], dim=2)
    mask = window_mask(pos, torch.cat([state.positions, pos]), min(window, cap))
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    keep = min(q.shape[2], cap)  # write the newest `cap` steps into the ring
    slots = pos[-keep:] % cap
    state.keys.index_copy_(2, slots, k[:, :, -keep:])
    state.values.index_copy_(2, slots, v[:, :, -keep:])
    state.positions.index_copy_(0, slots, pos[-keep:])
    state.offset += q.shape[2]
    return out
