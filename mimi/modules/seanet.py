"""SEANet convolutional encoder and decoder (causal, as in Mimi).

Layer indices follow the released checkpoint's `model.N` numbering (activations count as
layers), so the key tables in `mimi.checkpoint` map index for index.
"""

from __future__ import annotations

import torch
from torch import nn

from mimi.config import SeanetConfig
from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from mimi.modules.rate_stages import plan_stages, run_stages
from mimi.modules.streaming import StreamingContainer
from mimi.modules.time_major import seanet_time_major, supports


class _TimeMajorDispatch:
    """Inference on CPU (offline and streaming) runs the stack time-major, as GEMMs
    (`mimi.modules.time_major`): the same sums in another order, much faster than `conv1d`
    there. Set `time_major = False` on the encoder/decoder to use the channels-first convs
    (they share the streaming states, so a stream may switch between the two)."""

    time_major: bool = True
    chunk_bytes: int = 4 << 20  # offline: activation budget of one chunk per rate stage (`mimi.modules.rate_stages`)
    layers: nn.Sequential
    _input_per_frame: int  # input samples (encoder) or frames (decoder) per 25 Hz frame
    _time_major_supported: bool  # `supports(self.layers)`, fixed at construction

    def _use_time_major(self, x: torch.Tensor) -> bool:
        if not self.time_major or x.device.type != "cpu" or torch.is_grad_enabled():
            return False
        return self._time_major_supported

    def _forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] channels-first (a view of time-major data is free) -> [B, C', T'].

        Offline, the stack runs as a stream whose chunks are sized per rate stage
        (`mimi.modules.rate_stages`): activations of a few MB at the high rates (they stay in
        cache), hundreds of frames at the low rates (large GEMMs over the large weights). The
        outputs are those of the whole-input pass."""
        xt = x.transpose(1, 2)  # [B, T, C]
        if self.layers[0].is_streaming or xt.shape[1] % self._input_per_frame or not xt.shape[1]:
            return seanet_time_major(self.layers, xt).transpose(1, 2)
        stages = plan_stages(self.layers, self._input_per_frame, self.chunk_bytes)
        with self.streaming(xt.shape[0]):
            return run_stages(stages, seanet_time_major, xt).transpose(1, 2)


class ResidualUnit(nn.Module):
    """ELU, conv k3 (dim -> dim/compress), ELU, conv k1 (back to dim), plus an identity skip."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int, pad_mode: str):
        super().__init__()
        hidden = dim // compress
        # indices 0..3 as in the checkpoint: block.1 and block.3 are the convs. The first ELU
        # must keep its input (the skip path); the second may overwrite the conv's output.
        self.block = nn.Sequential(
            nn.ELU(alpha=1.0),
            StreamingConv1d(dim, hidden, kernel_size, dilation=dilation, pad_mode=pad_mode),
            nn.ELU(alpha=1.0, inplace=True),
            StreamingConv1d(hidden, dim, 1, pad_mode=pad_mode),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # [B, dim, T]


def _residual_units(cfg: SeanetConfig, dim: int) -> list[nn.Module]:
    return [
        ResidualUnit(dim, cfg.residual_kernel_size, cfg.dilation_base ** j, cfg.compress, cfg.pad_mode)
        for j in range(cfg.n_residual_layers)
    ]


def decoder_convtr_indices(cfg: SeanetConfig) -> list[int]:
    """Indices of the transposed convs in `SeanetDecoder.layers` (2, 5, 8, 11 in the release)."""
    per_stage = 2 + cfg.n_residual_layers  # ELU, transposed conv, residual units
    return [1 + 1 + k * per_stage for k in range(len(cfg.ratios))]


class SeanetEncoder(_TimeMajorDispatch, StreamingContainer):
    """Audio [B, 1, T] -> latent [B, dimension, T / hop_length]."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        mult = 1
        layers: list[nn.Module] = [StreamingConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size,
                                                   pad_mode=cfg.pad_mode)]
        for ratio in reversed(cfg.ratios):  # 4, 5, 6, 8 in the release
            dim = mult * cfg.n_filters
            layers += _residual_units(cfg, dim)
            layers += [nn.ELU(alpha=1.0),
                       StreamingConv1d(dim, dim * 2, ratio * 2, stride=ratio, pad_mode=cfg.pad_mode)]
            mult *= 2
        layers += [nn.ELU(alpha=1.0),
                   StreamingConv1d(mult * cfg.n_filters, cfg.dimension, cfg.last_kernel_size,
                                   pad_mode=cfg.pad_mode)]
        self.layers = nn.Sequential(*layers)
        self._input_per_frame = cfg.hop_length
        self._time_major_supported = supports(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_time_major(x):  # [B, 1, T] is already time-major; the result is [B, D, T / hop] as a view
            return self._forward_time_major(x)
        return self.layers(x)  # [B, 1, T] -> [B, D, T / hop]


class SeanetDecoder(_TimeMajorDispatch, StreamingContainer):
    """Latent [B, dimension, F] -> audio [B, 1, F * hop_length]."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        mult = 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [StreamingConv1d(cfg.dimension, mult * cfg.n_filters, cfg.kernel_size,
                                                   pad_mode=cfg.pad_mode)]
        for ratio in cfg.ratios:  # 8, 6, 5, 4 in the release
            dim = mult * cfg.n_filters
            layers += [nn.ELU(alpha=1.0), StreamingConvTranspose1d(dim, dim // 2, ratio * 2, stride=ratio)]
            layers += _residual_units(cfg, dim // 2)
            mult //= 2
        layers += [nn.ELU(alpha=1.0),
                   StreamingConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size, pad_mode=cfg.pad_mode)]
        self.layers = nn.Sequential(*layers)
        self._input_per_frame = 1
        self._time_major_supported = supports(self.layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self._use_time_major(z):  # [B, F * hop, 1] viewed as [B, 1, F * hop]: the same memory
            return self._forward_time_major(z)
        return self.layers(z)  # [B, D, F] -> [B, 1, F * hop]
