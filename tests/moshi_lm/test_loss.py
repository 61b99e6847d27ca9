"""lm_loss: text CE + audio CE, semantic level weighted 100 vs 1, PAD down-weighted."""

from __future__ import annotations

import math

import pytest
import torch

from mimi.errors import MimiError
from moshi_lm import LMOutput, lm_loss, lm_loss_parts


def _output(B=1, dep_q=3, T=4, card=5, text_card=6, seed=0) -> LMOutput:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, dep_q, T, card, generator=g)
    mask = torch.ones(B, dep_q, T, dtype=torch.bool)
    mask[:, 1:, -1] = False
    logits[~mask] = float("nan")
    return LMOutput(logits, mask, torch.randn(B, 1, T, text_card, generator=g), torch.ones(B, 1, T, dtype=torch.bool))


def _ce(logits, target):
    return float(-torch.log_softmax(logits, -1)[target])


def test_weights_match_a_hand_computation():
    out = _output()
    codes = torch.tensor([[[3, 1, 0, 5], [0, 1, 2, 3], [4, 4, 4, 4], [1, 2, 3, 0], [0, 0, 0, 0]]])
    parts = lm_loss_parts(out, codes, semantic_weight=100.0, pad_weight=0.5, pad_ids=(3, 0))
    num = den = 0.0
    for k in range(3):
        for t in range(4):
            if out.mask[0, k, t]:
                w = 100.0 if k == 0 else 1.0
                num += w * _ce(out.logits[0, k, t], codes[0, 1 + k, t])
                den += w
    assert math.isclose(float(parts.audio), num / den, rel_tol=1e-5)
    tw = [0.5, 1.0, 0.5, 1.0]  # text targets 3 (PAD) and 0 (EPAD) weigh 0.5
    text = sum(w * _ce(out.text_logits[0, 0, t], codes[0, 0, t]) for t, w in enumerate(tw)) / sum(tw)
    assert math.isclose(float(parts.text), text, rel_tol=1e-5)
    assert torch.isfinite(parts.total) and math.isclose(float(parts.total), float(parts.text + parts.audio))
    assert torch.equal(lm_loss(out, codes), parts.total)


def test_semantic_level_dominates():
    out = _output(seed=1)
    codes = torch.randint(0, 5, (1, 5, 4))
    only_sem = lm_loss_parts(out, codes, semantic_weight=1e9).audio
    sem_ce = torch.nn.functional.cross_entropy(out.logits[0, 0], codes[0, 1])
    assert math.isclose(float(only_sem), float(sem_ce), rel_tol=1e-4)


def test_loss_gradient_is_finite_despite_nan_logits():
    out = _output()
    logits = out.logits.clone().requires_grad_(True)
    codes = torch.randint(0, 5, (1, 5, 4))
    loss = lm_loss(LMOutput(logits, out.mask, out.text_logits, out.text_mask), codes)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~out.mask] == 0).all()


def test_mismatched_codes():
    with pytest.raises(MimiError):
        lm_loss(_output(), torch.zeros(1, 5, 3, dtype=torch.long))
