"""Causal 1-D convolution and transposed convolution, offline and streaming.

Offline, a causal conv pads `kernel - stride` samples on the left (zeros, or the first sample
with `pad_mode="replicate"`) and just enough on the right to complete the last frame, so an
input of length T gives ceil(T / stride) frames. Streaming, the left context is carried in a
preallocated buffer instead, and chunks must be whole multiples of the stride: the outputs
then equal the offline ones exactly.

A causal transposed conv (trimming `kernel - stride` samples on the right) is computed in
its polyphase form: with kernel = n * stride, output sample m * stride + p depends only on
input frames m - n + 1 .. m, so it is a plain causal conv with kernel n producing `stride`
phases per output channel, interleaved afterwards. Same sums as `nn.ConvTranspose1d`
(float rounding aside), faster on CPU, and streaming only needs the last n - 1 input frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mimi.modules.streaming import StreamingModule, StreamingState
from mimi.modules.tensor_key import tensor_key


@dataclass
class ConvState(StreamingState):
    previous: torch.Tensor  # [B, C_in, kernel - stride]: input samples still needed
    started: bool  # replicate padding is taken from the first sample of the stream


@dataclass
class ConvTrState(StreamingState):
    previous: torch.Tensor  # [B, C_in, taps - 1]: the last input frames still needed


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
    """Causal ConvTranspose1d. The wrapped `nn.ConvTranspose1d` (weights only) is `self.convtr`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        self.convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride,
                                         groups=groups, bias=bias)
        self.stride = stride
        if kernel_size < stride:
            raise ValueError("kernel_size must be >= stride")
        self.taps = -(-kernel_size // stride)  # input frames each output sample depends on
        self._cache: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    def init_state(self, batch_size: int) -> ConvTrState:
        w = self.convtr.weight
        return ConvTrState(previous=torch.zeros(batch_size, self.convtr.in_channels, self.taps - 1,
                                                device=w.device, dtype=w.dtype))

    def polyphase_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv weight [C_out * S, C_in / G, taps] (channel o * S + p is phase p of output o) and
        bias [C_out * S]. Cached whenever no gradient is being recorded (frozen weights, or any
        forward under `torch.no_grad()`); an in-place weight update bumps `_version` and so
        invalidates the cache."""
        ct, S, n = self.convtr, self.stride, self.taps
        w, b = ct.weight, ct.bias
        cacheable = not (torch.is_grad_enabled() and (w.requires_grad or (b is not None and b.requires_grad)))
        key = (tensor_key(w), tensor_key(b))
        if cacheable and self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        G = ct.groups
        cin_g, cout_g, K = w.shape
        w = F.pad(w, (0, n * S - K))  # zero taps up to a whole number of frames
        w = w.view(G, cin_g // G, cout_g, n, S)  # tap k = j * S + p: frame lag j, phase p
        v = w.permute(0, 2, 4, 1, 3).flip(-1).reshape(G * cout_g * S, cin_g // G, n)  # lag j -> tap n-1-j
        bias = None if b is None else b.repeat_interleave(S)
        if cacheable:
            v = v.contiguous()
            self._cache = (key, v, bias)
        return v, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, T] -> [B, C_out, T * stride]
        B, _, T = x.shape
        if T == 0:
            return x.new_zeros(B, self.convtr.out_channels, 0)
        v, bias = self.polyphase_weights()
        if self._state is None:
            z = F.conv1d(x, v, bias, 1, self.taps - 1, 1, self.convtr.groups)[..., :T]  # [B, C_out*S, T]
        else:
            z = self._phases_streaming(x, v, bias, self._state)
        # interleave the phases: [B, C_out, S, T] -> [B, C_out, T, S] -> [B, C_out, T * S]
        return z.view(B, -1, self.stride, T).transpose(2, 3).reshape(B, -1, T * self.stride)

    def _phases_streaming(self, x: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                          state: ConvTrState) -> torch.Tensor:
        if self.taps == 1:
            return F.conv1d(x, v, bias, groups=self.convtr.groups)
        x = torch.cat([state.previous, x], dim=-1)  # [B, C_in, taps - 1 + T]
        state.previous.copy_(x[..., -(self.taps - 1):])
        return F.conv1d(x, v, bias, groups=self.convtr.groups)
