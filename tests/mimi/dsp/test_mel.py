import math

import pytest
import torch

from mimi.dsp import MelSpectrogram, mel_filterbank, stft_magnitude


def test_filterbank_shape_unit_area_and_peaks():
    fb = mel_filterbank(24000, 1024, 64)
    assert fb.shape == (64, 513) and (fb >= 0).all()
    df = 24000 / 1024
    area = fb.sum(-1) * df  # unit area per filter (in Hz), up to discretisation
    assert torch.allclose(area[8:], torch.ones_like(area[8:]), rtol=0.05)
    peaks = fb.argmax(-1)
    assert (peaks[1:] >= peaks[:-1]).all()  # ordered by frequency


def test_sine_energy_lands_in_the_right_band():
    sr, f0 = 24000, 1000.0
    t = torch.arange(sr) / sr
    wav = torch.sin(2 * math.pi * f0 * t)[None, None]
    mel = MelSpectrogram(sr, 1024, 256, 64)(wav)  # [1, 64, frames]
    band = mel.mean(-1)[0].argmax()
    fb = mel_filterbank(sr, 1024, 64)
    assert fb[band, round(f0 / (sr / 1024))] > 0


def test_stft_magnitude_short_input_and_gradients():
    wav = torch.randn(2, 1, 100, requires_grad=True)
    mag = stft_magnitude(wav, 512, 128)
    assert mag.shape[:2] == (2, 257)
    mag.sum().backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all()


def test_bad_range_raises():
    with pytest.raises(ValueError):
        mel_filterbank(16000, 512, 40, f_min=100, f_max=9000)
