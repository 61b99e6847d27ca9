"""Delay pattern and its inverse."""

from __future__ import annotations

import pytest
import torch

from mimi.errors import MimiError
from moshi_lm import LMConfig, apply_delays, undo_delays

DELAYS = LMConfig.moshiko_7b().delays


def test_delay_then_undelay_is_identity():
    K, T = len(DELAYS), 12
    codes = torch.randint(0, 100, (2, K, T))
    pad = torch.full((K,), -5)
    delayed = apply_delays(codes, DELAYS, pad)
    back, valid = undo_delays(delayed, DELAYS, fill=-7)
    assert torch.equal(back[valid], codes[valid])
    for k, d in enumerate(DELAYS):
        assert valid[:, k, :T - d].all() and not valid[:, k, T - d:].any()
        assert (back[:, k, T - d:] == -7).all()


def test_exact_identity_with_room_for_the_delay():
    K, T, m = len(DELAYS), 10, max(DELAYS)
    codes = torch.randint(0, 100, (1, K, T))
    padded = torch.cat([codes, torch.zeros(1, K, m, dtype=codes.dtype)], dim=2)
    back, valid = undo_delays(apply_delays(padded, DELAYS, [0] * K), DELAYS)
    assert torch.equal(back[..., :T], codes) and valid[..., :T].all()


def test_delay_pattern():
    codes = torch.arange(3 * 5).view(1, 3, 5)
    out = apply_delays(codes, [0, 1, 2], [-1, -2, -3])
    assert out[0].tolist() == [[0, 1, 2, 3, 4], [-2, 5, 6, 7, 8], [-3, -3, 10, 11, 12]]


def test_undelay_float_logits_fill_nan():
    x = torch.randn(1, 2, 4, 3)
    out, valid = undo_delays(x, [0, 1])
    assert torch.isnan(out[0, 1, 3]).all() and torch.equal(out[0, 1, :3], x[0, 1, 1:])


def test_wrong_number_of_delays():
    with pytest.raises(MimiError):
        apply_delays(torch.zeros(1, 3, 4, dtype=torch.long), [0, 1], [0, 0, 0])
