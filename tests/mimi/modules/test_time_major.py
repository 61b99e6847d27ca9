"""The time-major SEANet path's ELU: agreement with `F.elu`, special values, in-place rules."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimi.modules.time_major import elu


def test_elu_matches_the_exact_value_to_float_rounding():
    x = torch.cat([torch.randn(100_000) * 4, torch.linspace(-1e-3, 1e-3, 10_001), torch.linspace(-30, 30, 10_001)])
    exact = F.elu(x.double())
    assert (elu(x).double() - exact).abs().max() < 6e-8  # F.elu itself: ~3e-8
    assert (F.elu(x).double() - exact).abs().max() < 6e-8
    assert torch.equal(elu(x)[x > 0], x[x > 0])  # the positive side is x itself


def test_elu_special_values():
    x = torch.tensor([float("-inf"), float("inf"), float("nan"), 0.0, -0.0])
    y = elu(x)
    assert y[0] == -1 and y[1] == float("inf") and torch.isnan(y[2]) and y[3] == 0 and y[4] == 0


def test_elu_in_place_only_when_asked():
    x = torch.randn(1000)
    keep = x.clone()
    y = elu(x)
    assert torch.equal(x, keep) and y.data_ptr() != x.data_ptr()
    z = elu(x, inplace=True)
    assert z.data_ptr() == x.data_ptr() and torch.equal(z, y)
