"""Multi-scale STFT discriminator (the adversary of Mimi's training recipe).

Each scale looks at one complex STFT of the waveform, its real and imaginary parts stacked as
channels, `[B, 2 * in_channels, frames, freq]`, and runs a small 2-D conv net over it:

    conv (kernel_size)                                  -> LeakyReLU
    for each dilation d: conv (kernel_size, dilation (d, 1) in time, stride (1, 2): halves freq)
                                                        -> LeakyReLU
    conv (kernel (k_t, k_t))                            -> LeakyReLU
    conv to 1 channel (kernel (k_t, k_t))               = logits [B, 1, frames', freq']

All convs are weight-normalised and padded "same" along each axis (so the time axis keeps its
length and only the strided freq axis shrinks). Every LeakyReLU output is a feature map for the
feature-matching loss. The recipe's defaults: 32 filters, n_fft (1024, 2048, 512, 256, 128)
with hops of a quarter window, LeakyReLU slope 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DiscriminatorOutput", "MultiScaleSTFTDiscriminator", "STFTDiscriminator"]


@dataclass
class DiscriminatorOutput:
    logits: torch.Tensor  # [B, 1, frames', freq']
    features: list[torch.Tensor]  # activations of every hidden layer


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return tuple(((k - 1) * d) // 2 for k, d in zip(kernel, dilation))  # type: ignore[return-value]


def _conv(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
          dilation: tuple[int, int] = (1, 1)) -> nn.Module:
    return weight_norm(nn.Conv2d(cin, cout, kernel, stride=stride, dilation=dilation,
                                 padding=_same_padding(kernel, dilation)))


class STFTDiscriminator(nn.Module):
    """One scale: wav [B, C, T] -> DiscriminatorOutput."""

    def __init__(self, filters: int, n_fft: int, hop_length: int, win_length: int, in_channels: int = 1,
                 max_filters: int = 1024, filters_scale: int = 1, kernel_size: tuple[int, int] = (3, 9),
                 dilations: tuple[int, ...] = (1, 2, 4), stride: tuple[int, int] = (1, 2),
                 negative_slope: float = 0.3):
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} > n_fft {n_fft}")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.negative_slope = negative_slope
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        kernel = tuple(kernel_size)
        layers = [_conv(2 * in_channels, filters, kernel)]
        channels = filters
        for i, d in enumerate(dilations):
            out = min(filters_scale ** (i + 1) * filters, max_filters)
            layers.append(_conv(channels, out, kernel, stride=tuple(stride), dilation=(d, 1)))
            channels = out
        square = (kernel[0], kernel[0])
        out = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        layers.append(_conv(channels, out, square))
        self.convs = nn.ModuleList(layers)
        self.conv_post = _conv(out, 1, square)

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, C, T] -> [B, 2C, frames, freq] (real parts of all channels, then imaginary)."""
        B, C, T = wav.shape
        spec = torch.stft(wav.reshape(B * C, T).float(), self.n_fft, self.hop_length, self.win_length,
                          self.window, center=True, pad_mode="constant", normalized=True,
                          return_complex=True)  # [B*C, freq, frames]
        spec = spec.view(B, C, *spec.shape[-2:]).transpose(-1, -2)  # [B, C, frames, freq]
        return torch.cat([spec.real, spec.imag], dim=1)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = self.spectrogram(wav)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            features.append(x)
        return DiscriminatorOutput(logits=self.conv_post(x), features=features)


class MultiScaleSTFTDiscriminator(nn.Module):
    """One `STFTDiscriminator` per (n_fft, hop, window): wav [B, 1, T] -> list of outputs."""

    def __init__(self, filters: int = 32, n_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128),
                 hop_lengths: tuple[int, ...] = (256, 512, 128, 64, 32),
                 win_lengths: tuple[int, ...] | None = None, in_channels: int = 1, max_filters: int = 1024,
                 filters_scale: int = 1, kernel_size: tuple[int, int] = (3, 9),
                 dilations: tuple[int, ...] = (1, 2, 4), stride: tuple[int, int] = (1, 2),
                 negative_slope: float = 0.3):
        super().__init__()
        win_lengths = tuple(n_ffts) if win_lengths is None else tuple(win_lengths)
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(filters, n, h, w, in_channels=in_channels, max_filters=max_filters,
                              filters_scale=filters_scale, kernel_size=kernel_size, dilations=dilations,
                              stride=stride, negative_slope=negative_slope)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths))

    def forward(self, wav: torch.Tensor) -> list[DiscriminatorOutput]:
        if wav.dim() != 3 or wav.shape[1] != self.in_channels:
            raise ValueError(f"expected audio [B, {self.in_channels}, T], got {tuple(wav.shape)}")
        return [d(wav) for d in self.discriminators]
