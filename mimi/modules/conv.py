"""Causal 1-D convolution and transposed convolution, offline and streaming.

Offline, a causal conv pads `kernel - stride` samples on the left (zeros, or the first sample
with `pad_mode="replicate"`) and just enough on the right to complete the last frame, so an
input of length T gives ceil(T / stride) frames. Streaming, the left context is carried in a
preallocated buffer instead, and chunks must be whole multiples of the stride: the outputs
then equal the offline ones exactly.

A causal transposed conv trims `kernel - stride` samples on the right; streaming, those
samples are kept as a partial overlap-add buffer and completed by the next chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mimi.modules.streaming import StreamingModule, StreamingState


@dataclass
class ConvState(StreamingState):
    previous: torch.Tensor  # [B, C_in, kernel - stride]: input samples still needed
    started: bool  # replicate padding is taken from the first sample of the stream


@dataclass
class ConvTrState(StreamingState):
    partial: torch.Tensor  # [B, C_out, kernel - stride]: overlap-add tail, bias excluded


class StreamingConv1d(StreamingModule[ConvState]):
    """Causal Conv1d. The wrapped `nn.Conv1d` is `self.conv`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, pad_mode: str = "constant"):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"unsupported pad_mode {pad_mode!r}")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride,
                              dilation=dilation, groups=groups, bias=bias)
        self.pad_mode = pad_mode
        self.stride = stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.padding_total = self.effective_kernel - stride
        if self.padding_total < 0:
            raise ValueError(f"stride {stride} is larger than the effective kernel {self.effective_kernel}: "
                             "samples between kernels would be skipped")

    def init_state(self, batch_size: int) -> ConvState:
        w = self.conv.weight
        previous = torch.zeros(batch_size, self.conv.in_channels, self.padding_total,
                               device=w.device, dtype=w.dtype)
        return ConvState(previous=previous, started=False)

    def output_length(self, length: int) -> int:
        return math.ceil(length / self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, T] -> [B, C_out, ceil(T / stride)]
        if self._state is None:
            return self._forward_offline(x)
        return self._forward_streaming(x, self._state)

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        n_out = self.output_length(length)
        extra = n_out * self.stride - length  # right padding that completes the last frame
        c = self.conv
        if self.pad_mode == "constant" and extra <= self.padding_total:
            # Let the conv zero-pad both sides itself (no padded copy of the input) and drop
            # the surplus outputs on the right: the same sums as explicit causal padding.
            y = F.conv1d(x, c.weight, c.bias, self.stride, self.padding_total, c.dilation, c.groups)
            return y[..., :n_out]  # [B, C_out, ceil(T/S)]
        x = F.pad(x, (self.padding_total, extra), mode=self.pad_mode)  # [B, C_in, K - S + ceil(T/S)*S]
        return c(x)

    def _forward_streaming(self, x: torch.Tensor, state: ConvState) -> torch.Tensor:
        length = x.shape[-1]
        if length % self.stride:
            raise ValueError(f"streaming chunks must be multiples of the stride {self.stride}, got {length}")
        if length == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        if not state.started:
            if self.pad_mode == "replicate":
                state.previous.copy_(x[..., :1].expand_as(state.previous))
            state.started = True
        x = torch.cat([state.previous, x], dim=-1)  # [B, C_in, K - S + T]
        y = self.conv(x)
        if self.padding_total > 0:
            state.previous.copy_(x[..., -self.padding_total:])
        return y


class StreamingConvTranspose1d(StreamingModule[ConvTrState]):
    """Causal ConvTranspose1d. The wrapped `nn.ConvTranspose1d` is `self.convtr`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        self.convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride,
                                         groups=groups, bias=bias)
        self.stride = stride
        self.padding_total = kernel_size - stride
        if self.padding_total < 0:
            raise ValueError("kernel_size must be >= stride")

    def init_state(self, batch_size: int) -> ConvTrState:
        w = self.convtr.weight
        partial = torch.zeros(batch_size, self.convtr.out_channels, self.padding_total,
                              device=w.device, dtype=w.dtype)
        return ConvTrState(partial=partial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, T] -> [B, C_out, T * stride]
        if self._state is None:
            y = self.convtr(x)  # [B, C_out, T*S + K - S]
            return y[..., : y.shape[-1] - self.padding_total]
        return self._forward_streaming(x, self._state)

    def _forward_streaming(self, x: torch.Tensor, state: ConvTrState) -> torch.Tensor:
        out_len = x.shape[-1] * self.stride
        if out_len == 0:
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0)
        ct = self.convtr
        y = F.conv_transpose1d(x, ct.weight, None, self.stride, groups=ct.groups)  # [B, C, T*S + K - S]
        pt = self.padding_total
        if pt > 0:
            y[..., :pt] += state.partial
            state.partial.copy_(y[..., out_len:])
        y = y[..., :out_len]
        if ct.bias is not None:
            y = y + ct.bias[:, None]
        return y
