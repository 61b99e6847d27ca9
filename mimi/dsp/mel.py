"""STFT magnitudes and mel spectrograms in plain torch, differentiable, on any device.

The mel scale is HTK's (2595 log10(1 + f / 700)); filters are triangles between adjacent mel
points, normalised to unit area (Slaney-style) so that loudness does not depend on n_mels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters [n_mels, n_fft // 2 + 1] (float32)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2}, got {f_min}, {f_max}")
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)  # [n_mels, F]
    fb = fb * (2.0 / (upper - lower))  # unit area
    return fb.to(torch.float32)


def stft_magnitude(wav: torch.Tensor, n_fft: int, hop_length: int, win_length: int | None = None,
                   center: bool = True) -> torch.Tensor:
    """|STFT| of wav [B, T] or [B, 1, T] -> [B, n_fft // 2 + 1, frames] (Hann window)."""
    if wav.dim() == 3:
        wav = wav.squeeze(1)
    win_length = win_length or n_fft
    window = torch.hann_window(win_length, device=wav.device, dtype=wav.dtype)
    if center and wav.shape[-1] <= n_fft // 2:  # reflect padding needs a longer signal
        wav = F.pad(wav, (0, n_fft // 2 + 1 - wav.shape[-1]))
    spec = torch.stft(wav, n_fft, hop_length, win_length, window, center=center, return_complex=True)
    return spec.abs()


class MelSpectrogram(nn.Module):
    """wav [B, 1, T] -> mel magnitudes [B, n_mels, frames] (optionally log10(clamp(., floor)))."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float = 0.0,
                 f_max: float | None = None, power: float = 1.0, log: bool = False, floor: float = 1e-5):
        super().__init__()
        self.n_fft, self.hop_length, self.power, self.log, self.floor = n_fft, hop_length, power, log, floor
        self.register_buffer("filters", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mag = stft_magnitude(wav.float(), self.n_fft, self.hop_length)  # [B, F, frames]
        if self.power != 1.0:
            mag = mag.pow(self.power)
        mel = torch.matmul(self.filters, mag)  # [B, n_mels, frames]
        return torch.log10(mel.clamp(min=self.floor)) if self.log else mel
