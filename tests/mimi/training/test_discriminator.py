"""Multi-scale STFT discriminator: shapes per scale, weight norm, gradients to the input."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from mimi.training.discriminator import DiscriminatorOutput, MultiScaleSTFTDiscriminator




def test_default_discriminator_shapes_per_scale():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator()
    T = 2400
    wav = 0.1 * torch.randn(2, 1, T)
    outs = disc(wav)
    assert len(outs) == 5
    for out, n_fft, hop in zip(outs, (1024, 2048, 512, 256, 128), (256, 512, 128, 64, 32)):
        assert isinstance(out, DiscriminatorOutput)
        frames, freq = T // hop + 1, n_fft // 2 + 1
        for _ in range(3):  # three stride-2 convs along frequency
            freq = math.ceil(freq / 2)
        assert out.logits.shape == (2, 1, frames, freq)
        assert len(out.features) == 5  # first conv, 3 dilated, last hidden conv
        assert all(f.shape[:2] == (2, 32) and f.shape[2] == frames for f in out.features)
        assert torch.isfinite(out.logits).all()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 * 6 and all(parametrize.is_parametrized(c, "weight") for c in convs)
    first = disc.discriminators[0].convs[0]
    assert first.in_channels == 2 and first.kernel_size == (3, 9)
    assert disc.discriminators[0].convs[2].dilation == (2, 1)
    assert disc.discriminators[0].convs[2].stride == (1, 2)
    assert disc.discriminators[0].negative_slope == 0.3


def test_gradients_flow_to_the_input():
    torch.manual_seed(1)
    disc = MultiScaleSTFTDiscriminator(filters=8, n_ffts=(256, 128), hop_lengths=(64, 32))
    wav = (0.1 * torch.randn(2, 1, 1600)).requires_grad_(True)
    outs = disc(wav)
    loss = sum(o.logits.mean() + sum(f.mean() for f in o.features) for o in outs)
    loss.backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all() and wav.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())


def test_filters_scale_and_max_filters():
    disc = MultiScaleSTFTDiscriminator(filters=4, filters_scale=2, max_filters=16, n_ffts=(64,), hop_lengths=(16,))
    widths = [c.out_channels for c in disc.discriminators[0].convs]
    assert widths == [4, 8, 16, 16, 16]
    out = disc(torch.randn(1, 1, 400))[0]
    assert out.logits.shape[1] == 1


def test_rejects_bad_input():
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(64,), hop_lengths=(16,))
    with pytest.raises(ValueError):
        disc(torch.randn(2, 400))
    with pytest.raises(ValueError):
        MultiScaleSTFTDiscriminator(n_ffts=(64, 128), hop_lengths=(16,))
