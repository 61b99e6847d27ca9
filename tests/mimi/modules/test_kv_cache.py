"""Sliding-window attention: the blocked offline path and the ring-cache step against a dense
float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from mimi.modules import kv_cache
from mimi.modules.kv_cache import empty_kv_cache, ring_attention_step, sliding_window_attention


def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, T, Dh] attention over the full [T, T] score matrix, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    T = q.shape[2]
    delta = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~((delta >= 0) & (delta < window)), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _qkv(T: int, B: int = 2, H: int = 3, Dh: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, Dh, generator=g) for _ in range(3)]


@pytest.mark.parametrize("query_block", [64, 3, 7])
@pytest.mark.parametrize("T, window", [(1, 5), (5, 5), (6, 5), (23, 5), (130, 20), (200, 1), (97, 96)])
def test_blocked_attention_matches_dense(monkeypatch, query_block, T, window):
    """Blocks smaller than, equal to and larger than the window; a last block that is partial."""
    monkeypatch.setattr(kv_cache, "QUERY_BLOCK", query_block)
    q, k, v = _qkv(T)
    out = sliding_window_attention(q, k, v, window)
    assert out.shape == q.shape and not out.isnan().any()
    torch.testing.assert_close(out.double(), _dense(q, k, v, window), atol=2e-6, rtol=0)


def test_blocked_attention_on_strided_views_and_bf16():
    """As the transformer calls it: views of a fused projection, and in bfloat16."""
    qkv = torch.randn(1, 300, 3, 4, 16, generator=torch.Generator().manual_seed(1))  # [B, T, 3, H, Dh]
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    ref = _dense(q, k, v, 100)
    torch.testing.assert_close(sliding_window_attention(q, k, v, 100).double(), ref, atol=2e-6, rtol=0)
    low = sliding_window_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 100)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.double(), ref, atol=5e-2, rtol=5e-2)


def test_block_masks_are_cached_and_shared_by_interior_blocks():
    kv_cache._block_bias.cache_clear()
    q, k, v = _qkv(64 * 10, B=1, H=1)
    sliding_window_attention(q, k, v, 100)
    first = kv_cache._block_bias.cache_info()
    # blocks start at 0, 64 (keys from 0), then every later block sees 64 + 99 keys: 3 masks
    assert first.currsize == 3 and first.hits == 7
    sliding_window_attention(q, k, v, 100)
    assert kv_cache._block_bias.cache_info().misses == first.misses


@pytest.mark.parametrize("capacity", [6, 9, 6 + kv_cache.RING_SLACK])
def test_ring_step_matches_dense_chunk_by_chunk(capacity):
    """A ring of just the window (every chunk attends to a copy of [ring; chunk]), one with a few
    spare slots (chunks of up to 4 steps go into the ring first) and one with RING_SLACK spare
    slots (all of these chunks do)."""
    window, chunks = 6, [1, 4, 9, 1, 5, 2, 17, 3]
    q, k, v = _qkv(sum(chunks))
    state = empty_kv_cache(2, 3, capacity, 8, q)
    outs, start = [], 0
    for n in chunks:
        pos = torch.arange(start, start + n)
        outs.append(ring_attention_step(q[:, :, start:start + n], k[:, :, start:start + n],
                                        v[:, :, start:start + n], pos, state, window))
        start += n
    assert state.offset == sum(chunks)
    assert sorted(state.positions.tolist()) == list(range(sum(chunks) - capacity, sum(chunks)))
    torch.testing.assert_close(torch.cat(outs, dim=2).double(), _dense(q, k, v, window), atol=2e-6, rtol=0)


def test_ring_step_caps_the_window_at_the_capacity():
    """A ring smaller than the window sees only its capacity of steps, on both paths."""
    q, k, v = _qkv(12)
    state = empty_kv_cache(2, 3, 4, 8, q)
    outs = [ring_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], torch.tensor([t]), state, 100)
            for t in range(12)]
    torch.testing.assert_close(torch.cat(outs, dim=2).double(), _dense(q, k, v, 4), atol=2e-6, rtol=0)


def test_ring_step_under_autograd_keeps_what_backward_needs():
    """While gradients are recorded the step attends to a copy, so a later step's write into the
    ring does not break the first step's backward."""
    q, k, v = (t.requires_grad_() for t in _qkv(3))
    state = empty_kv_cache(2, 3, 6 + kv_cache.RING_SLACK, 8, q.detach())
    first = ring_attention_step(q[:, :, :1], k[:, :, :1], v[:, :, :1], torch.tensor([0]), state, 6)
    ring_attention_step(q[:, :, 1:], k[:, :, 1:], v[:, :, 1:], torch.tensor([1, 2]), state, 6)
    first.sum().backward()
    assert q.grad is not None and v.grad[:, :, :1].abs().sum() > 0
