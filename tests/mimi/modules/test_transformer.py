"""The bottleneck transformer against a naive reference, streaming == offline, causality, RoPE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mimi.config import TransformerConfig
from mimi.modules.rope import apply_rope, rope_frequencies, rope_rotation, rotate_qkv
from mimi.modules.kv_cache import KVCacheState
from mimi.modules.transformer import Transformer

CFG = TransformerConfig(d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, context=5)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _model(cfg: TransformerConfig = CFG, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if name.endswith(".scale"):
            p.fill_(0.5)
        elif "norm" in name:  # non-trivial LayerNorm affine, so a wrong norm would show
            p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
    return model


def _input(T: int, B: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randn(B, CFG.d_model, T, generator=torch.Generator().manual_seed(seed))  # [B, D, T]


# -- a naive reference, written independently of mimi.modules --------------------------------

def _naive_rope(x: torch.Tensor, max_period: float) -> torch.Tensor:
    """x [B, H, T, Dh]: rotate pair (2i, 2i+1) at step t by t * max_period ** (-2i / Dh)."""
    B, H, T, Dh = x.shape
    out = x.clone()
    for t in range(T):
        for i in range(Dh // 2):
            angle = t * max_period ** (-2.0 * i / Dh)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[:, :, t, 2 * i], x[:, :, t, 2 * i + 1]
            out[:, :, t, 2 * i] = a * c - b * s
            out[:, :, t, 2 * i + 1] = a * s + b * c
    return out


def _naive_transformer(model: Transformer, cfg: TransformerConfig, z: torch.Tensor) -> torch.Tensor:
    """z [B, D, T] -> [B, D, T], everything in float64, full [T, T] window mask."""
    x = z.double().transpose(1, 2)  # [B, T, D]
    B, T, D = x.shape
    H, Dh = cfg.num_heads, cfg.d_model // cfg.num_heads
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = (i - j >= 0) & (i - j < cfg.context)  # [T, T]
    for layer in model.layers:
        w = {n: p.double() for n, p in layer.named_parameters()}
        h = F.layer_norm(x, (D,), w["norm1.weight"], w["norm1.bias"], cfg.norm_eps)
        qkv = h @ w["attn.in_proj.weight"].t()  # [B, T, 3D]
        q, k, v = (qkv[..., n * D:(n + 1) * D].reshape(B, T, H, Dh).transpose(1, 2) for n in range(3))
        q, k = _naive_rope(q, cfg.max_period), _naive_rope(k, cfg.max_period)
        scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # [B, H, T, T]
        scores = scores.masked_fill(~allowed, float("-inf"))
        attn = torch.softmax(scores, dim=-1) @ v  # [B, H, T, Dh]
        attn = attn.transpose(1, 2).reshape(B, T, D) @ w["attn.out_proj.weight"].t()
        x = x + w["scale1.scale"] * attn
        h = F.layer_norm(x, (D,), w["norm2.weight"], w["norm2.bias"], cfg.norm_eps)
        mlp = F.gelu(h @ w["mlp.fc1.weight"].t()) @ w["mlp.fc2.weight"].t()
        x = x + w["scale2.scale"] * mlp
    return x.transpose(1, 2)


@pytest.mark.parametrize("T", [23, 5, 4, 1])
def test_offline_matches_naive_reference(T):
    """T=23 > context runs the blockwise path; T <= context the plain causal one."""
    model = _model()
    z = _input(T)
    out = model(z)
    ref = _naive_transformer(model, CFG, z)
    assert out.shape == z.shape
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_offline_matches_naive_reference_other_shapes():
    cfg = TransformerConfig(d_model=24, num_heads=3, num_layers=1, dim_feedforward=40, context=3,
                            max_period=100.0)
    model = _model(cfg, seed=4)
    z = torch.randn(1, 24, 11, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model(z).double(), _naive_transformer(model, cfg, z), atol=1e-5, rtol=0)


def test_sliding_window_really_limits_attention():
    """The reference with an unlimited context differs: the window is exercised by T=23."""
    model = _model()
    z = _input(23)
    unlimited = TransformerConfig(d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, context=1000)
    ref_unlimited = _naive_transformer(model, unlimited, z)
    assert not torch.allclose(model(z).double(), ref_unlimited, atol=1e-3)
    # a query at step t must not depend on inputs older than t - context + 1 (one layer deep)
    one = _model(TransformerConfig(d_model=32, num_heads=2, num_layers=1, dim_feedforward=64, context=5))
    z2 = z.clone()
    z2[..., :10] = torch.randn(2, 32, 10, generator=torch.Generator().manual_seed(9))
    y, y2 = one(z), one(z2)
    torch.testing.assert_close(y[..., 14:], y2[..., 14:], atol=1e-5, rtol=0)
    assert not torch.allclose(y[..., 10:14], y2[..., 10:14], atol=1e-3)


@pytest.mark.parametrize("chunks", [[1, 2, 7, 1, 12], [23], [5, 5, 5, 5, 3], [1] * 23, [12, 11]])
def test_streaming_matches_offline(chunks):
    model = _model()
    z = _input(sum(chunks))
    offline = model(z)
    outs, pos = [], 0
    with model.streaming(batch_size=2):
        for n in chunks:
            outs.append(model(z[..., pos:pos + n]))
            pos += n
        attn = model.layers[0].attn
        assert isinstance(attn.state, KVCacheState) and attn.state.offset == 23
    torch.testing.assert_close(torch.cat(outs, dim=-1), offline, atol=1e-5, rtol=0)


def test_streaming_snapshot_restore_and_reset():
    model = _model()
    z = _input(16)
    with model.streaming(batch_size=2):
        first = model(z[..., :4])
        model(z[..., 4:9])
        snap = model.snapshot()
        a1 = model(z[..., 9:16])
        model.restore(snap)
        a2 = model(z[..., 9:16])
        model.reset_streaming()
        again = model(z[..., :4])
    assert torch.equal(a1, a2)
    assert torch.equal(first, again)
    torch.testing.assert_close(a1, model(z)[..., 9:16], atol=1e-5, rtol=0)


@pytest.mark.parametrize("t", [1, 4, 5, 9, 17, 22])
def test_causality(t):
    model = _model()
    z = _input(23)
    z2 = z.clone()
    z2[..., t:] = torch.randn(2, 32, 23 - t, generator=torch.Generator().manual_seed(t))
    y, y2 = model(z), model(z2)
    torch.testing.assert_close(y[..., :t], y2[..., :t], atol=1e-6, rtol=0)
    assert not torch.allclose(y[..., t:], y2[..., t:], atol=1e-3)


# -- RoPE -----------------------------------------------------------------------------------

def test_rope_frequencies_formula():
    freqs = rope_frequencies(16, 10000.0)
    expected = torch.tensor([10000.0 ** (-2 * i / 16) for i in range(8)])
    torch.testing.assert_close(freqs, expected)


def test_apply_rope_preserves_pair_norms_and_identity_at_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 50, 16, generator=g)
    y = apply_rope(x, rope_rotation(torch.arange(50), rope_frequencies(16, 10000.0)))
    assert y.shape == x.shape and y.dtype == x.dtype
    pair_norm = lambda a: a.view(2, 3, 50, 8, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(y), pair_norm(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])  # position 0: identity
    assert not torch.allclose(y[:, :, 1:], x[:, :, 1:])


def test_apply_rope_matches_naive_and_is_relative():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 12, 8, generator=g)
    freqs = rope_frequencies(8, 10000.0)
    torch.testing.assert_close(apply_rope(x, rope_rotation(torch.arange(12), freqs)), _naive_rope(x, 10000.0),
                               atol=1e-6, rtol=0)
    # <rope(q, m), rope(k, n)> depends only on m - n
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def dot(m, n):
        return (apply_rope(q, rope_rotation(torch.tensor([m]), freqs))
                * apply_rope(k, rope_rotation(torch.tensor([n]), freqs))).sum()

    torch.testing.assert_close(dot(7, 3), dot(4, 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(dot(10, 10), (q * k).sum(), atol=1e-5, rtol=0)
    assert not torch.allclose(dot(7, 3), dot(3, 0), atol=1e-4)


def test_apply_rope_equals_the_real_formula():
    """The complex product is the four real products of the interleaved pairs (to an ulp)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 300, 64, generator=g)
    angles = torch.arange(300, dtype=torch.float32)[:, None] * rope_frequencies(64, 10000.0)[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    re, im = x[..., 0::2], x[..., 1::2]
    expected = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)
    torch.testing.assert_close(apply_rope(x, torch.complex(cos, sin)), expected, atol=2e-6, rtol=0)


def test_apply_rope_keeps_half_precision_dtype():
    x = torch.randn(1, 1, 4, 8).to(torch.bfloat16)
    rotation = rope_rotation(torch.arange(4), rope_frequencies(8, 10000.0))
    y = apply_rope(x, rotation)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), apply_rope(x.float(), rotation), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_qkv_is_apply_rope_on_each_of_q_and_k(dtype):
    """The fused path (q and k rotated in one pass on strided views of the projection) gives
    what rotating contiguous q and k separately gives (to an ulp: the vector and scalar complex
    loops may round differently); v is passed through."""
    B, T, H, Dh = 2, 9, 3, 8
    qkv = torch.randn(B, T, 3, H, Dh, generator=torch.Generator().manual_seed(3)).to(dtype)
    rotation = rope_rotation(torch.arange(5, 5 + T), rope_frequencies(Dh, 10000.0))
    q, k, v = rotate_qkv(qkv, rotation)
    heads = qkv.permute(2, 0, 3, 1, 4).contiguous()  # [3, B, H, T, Dh]
    assert q.shape == k.shape == v.shape == (B, H, T, Dh) and q.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(q, apply_rope(heads[0], rotation), atol=tol, rtol=tol)
    torch.testing.assert_close(k, apply_rope(heads[1], rotation), atol=tol, rtol=tol)
    assert torch.equal(v, heads[2])


def test_apply_rope_accepts_a_tensor_whose_features_are_not_contiguous():
    x = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(4)).transpose(1, 2)  # [2, 6, 8]
    rotation = rope_rotation(torch.arange(6), rope_frequencies(8, 10000.0))
    torch.testing.assert_close(apply_rope(x, rotation), apply_rope(x.contiguous(), rotation), atol=0, rtol=0)
