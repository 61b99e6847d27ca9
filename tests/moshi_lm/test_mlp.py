"""Gated MLP: hidden width rounding, gate order, per-step application."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moshi_lm.mlp import GatedMlp, PlainMlp, gated_hidden_dim, make_mlp


def test_hidden_width_rounding():
    assert gated_hidden_dim(4096, int(4.125 * 4096)) == 11264
    assert gated_hidden_dim(1024, int(4.125 * 1024)) == 2816
    assert gated_hidden_dim(64, int(4.125 * 64)) == 176
    assert gated_hidden_dim(32, 132) == 88
    assert gated_hidden_dim(64, 256) == 21 * 64 // 8  # the f == 4 d special case


def test_gated_mlp_is_silu_of_first_half_times_second():
    torch.manual_seed(0)
    mlp = GatedMlp(16, 66)
    x = torch.randn(2, 3, 16)
    h = mlp.linear_in(x)
    a, b = h[..., :44], h[..., 44:]
    torch.testing.assert_close(mlp(x), mlp.linear_out(F.silu(a) * b))
    assert not any(m.bias is not None for m in (mlp.linear_in, mlp.linear_out))


def test_plain_mlp_when_no_gating():
    mlp = make_mlp("none", 8, 32)
    assert isinstance(mlp, PlainMlp) and mlp.linear1.out_features == 32
