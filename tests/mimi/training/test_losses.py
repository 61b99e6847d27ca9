"""Hinge and feature-matching losses on known values; multi-scale mel loss; waveform L1."""

from __future__ import annotations

import math

import pytest
import torch

from mimi.training.losses import (
    MultiScaleMelLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    waveform_l1,
)
from tests.helpers import speech_tensor




def test_hinge_discriminator_loss_known_values():
    real = [torch.tensor([2.0, 0.5, -1.0]), torch.tensor([[1.0, 1.0]])]
    fake = [torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([[-1.0, 0.0]])]
    # scale 0: mean(0, .5, 2) + mean(0, 1, 2) = 5/6 + 1; scale 1: 0 + mean(0, 1) = 0.5
    expected = ((5 / 6 + 1.0) + 0.5) / 2
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(expected)


def test_hinge_generator_loss_known_values():
    fake = [torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([3.0])]
    assert float(hinge_generator_loss(fake)) == pytest.approx((4 / 3 + 0.0) / 2)


def test_feature_matching_zero_for_identical_and_normalised():
    g = torch.Generator().manual_seed(0)
    feats = [[torch.randn(2, 4, 5, generator=g) for _ in range(3)] for _ in range(2)]
    assert float(feature_matching_loss(feats, [[f.clone() for f in s] for s in feats])) == 0.0
    real = [[torch.full((2, 3), 2.0), torch.full((4,), -10.0)]]
    fake = [[torch.full((2, 3), 3.0).requires_grad_(True), torch.full((4,), -5.0).requires_grad_(True)]]
    # layer 0: |3 - 2| / 2 = 0.5; layer 1: |-5 + 10| / 10 = 0.5
    loss = feature_matching_loss(real, fake)
    assert float(loss.detach()) == pytest.approx(0.5)
    real_leaf = real[0][0].requires_grad_(True)
    loss = feature_matching_loss([[real_leaf, real[0][1]]], fake)
    loss.backward()
    assert fake[0][0].grad is not None and real_leaf.grad is None  # real features are detached


def test_loss_inputs_are_checked():
    with pytest.raises(ValueError):
        hinge_discriminator_loss([torch.zeros(1)], [])
    with pytest.raises(ValueError):
        feature_matching_loss([[torch.zeros(1)]], [[torch.zeros(1), torch.zeros(1)]])


def test_multiscale_mel_loss():
    loss_fn = MultiScaleMelLoss()
    assert [m.n_fft for m in loss_fn.mels] == [32, 64, 128, 256, 512, 1024, 2048]
    assert [m.hop_length for m in loss_fn.mels] == [8, 16, 32, 64, 128, 256, 512]
    x = speech_tensor(0.25, batch=2)
    assert float(loss_fn(x, x.clone())) == 0.0
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    loss = loss_fn(y, x)
    assert float(loss.detach()) > 0
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # a louder error gives a larger loss; lengths are cropped to the shorter signal
    assert float(loss_fn(x * 0.5, x)) > float(loss_fn(x * 0.9, x))
    assert float(loss_fn(torch.cat([x, torch.ones(2, 1, 100)], -1), x)) == 0.0


def test_waveform_l1():
    x = torch.tensor([[[1.0, 2.0, 3.0, 9.0]]])
    y = torch.tensor([[[0.0, 2.0, 5.0]]])
    assert float(waveform_l1(x, y)) == pytest.approx(1.0)
    assert math.isclose(float(waveform_l1(y, y)), 0.0)
