"""Attention: causal window, streaming through the ring KV cache, per-step weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mimi.errors import MimiError
from moshi_lm.attention import Attention


def reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Dense masked attention, weights picked per position (no RoPE)."""
    B, T, D = x.shape
    H, Dh = attn.num_heads, attn.head_dim
    outs = []
    qkv = torch.stack([attn.in_projs[t if len(attn.in_projs) > 1 else 0](x[:, t]) for t in range(T)], 1)
    q, k, v = qkv.view(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)
    pos = torch.arange(T)
    delta = pos[:, None] - pos[None, :]
    mask = delta >= 0
    if attn.context is not None:
        mask &= delta < attn.context
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, T, D)
    for t in range(T):
        outs.append(attn.out_projs[t if len(attn.out_projs) > 1 else 0](o[:, t]))
    return torch.stack(outs, 1)


@pytest.mark.parametrize("context,T", [(4, 11), (None, 7), (16, 9)])
def test_offline_matches_dense_reference(context, T):
    torch.manual_seed(0)
    attn = Attention(16, 2, context=context)
    x = torch.randn(2, T, 16)
    torch.testing.assert_close(attn(x), reference_attention(attn, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunks", [[1] * 13, [3, 1, 5, 4], [13]])
def test_streaming_matches_offline_beyond_the_window(chunks):
    torch.manual_seed(0)
    attn = Attention(16, 4, context=5, rope_max_period=10000.0)
    x = torch.randn(2, sum(chunks), 16)
    offline = attn(x)
    outs, start = [], 0
    with attn.streaming(2):
        for n in chunks:
            outs.append(attn(x[:, start:start + n]))
            start += n
    torch.testing.assert_close(torch.cat(outs, 1), offline, rtol=1e-5, atol=1e-5)


def test_per_step_weights_offline_and_streaming():
    torch.manual_seed(0)
    attn = Attention(8, 2, num_steps=4, cache_capacity=4)
    x = torch.randn(3, 4, 8)
    offline = attn(x)
    torch.testing.assert_close(offline, reference_attention(attn, x), rtol=1e-5, atol=1e-5)
    with attn.streaming(3):
        steps = torch.cat([attn(x[:, t:t + 1]) for t in range(4)], 1)
        with pytest.raises(MimiError, match="no weights"):
            attn(x[:, :1])
    torch.testing.assert_close(steps, offline, rtol=1e-5, atol=1e-5)


def test_streaming_needs_a_bounded_cache():
    attn = Attention(8, 2, context=None)
    with pytest.raises(MimiError):
        with attn.streaming(1):
            pass
