"""Norms: RMSNorm computed in float32, the other variants."""

from __future__ import annotations

import pytest
import torch

from mimi.errors import MimiError
from moshi_lm.norm import LayerNormF32, RMSNorm, make_norm


def test_rms_norm_f32_computes_in_float32():
    torch.manual_seed(0)
    norm = make_norm("rms_norm_f32", 16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(2, 5, 16) * 100).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    xf = x.float()
    expected = xf * norm.weight / torch.sqrt(1e-8 + xf.pow(2).mean(-1, keepdim=True))
    assert torch.equal(y, expected.to(torch.bfloat16))
    # computing in bf16 would differ
    xb = x
    in_bf16 = xb * norm.weight.to(torch.bfloat16) * torch.rsqrt(1e-8 + xb.pow(2).mean(-1, keepdim=True))
    assert not torch.equal(y, in_bf16)


def test_rms_norm_scale_invariance_and_eps():
    norm = RMSNorm(8, eps=1e-5, compute_dtype=None)
    x = torch.randn(3, 4, 8)
    torch.testing.assert_close(norm(x), norm(7 * x), rtol=1e-5, atol=1e-5)
    assert norm.eps == 1e-5 and make_norm("rms_norm", 8).eps == 1e-5 and make_norm("rms_norm_f32", 8).eps == 1e-8


def test_layer_norm_variants():
    x = torch.randn(2, 3, 8)
    ln = make_norm("layer_norm", 8)
    assert isinstance(ln, torch.nn.LayerNorm) and ln.eps == 1e-5
    ln32 = make_norm("layer_norm_f32", 8)
    assert isinstance(ln32, LayerNormF32) and ln32.eps == 1e-8
    y = ln32(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), torch.nn.functional.layer_norm(x.to(torch.bfloat16).float(), (8,), eps=1e-8),
                               rtol=1e-2, atol=1e-2)
    with pytest.raises(MimiError):
        make_norm("group_norm", 8)
