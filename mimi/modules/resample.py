"""Learnt frame-rate conversion between the encoder rate (25 Hz) and the code rate (12.5 Hz).

Down: causal conv, kernel 2 * stride, no bias, replicate padding (full 512 -> 512 mixing).
Up: causal transposed conv, kernel 2 * stride, no bias, and - a quirk of the released
checkpoint that must be reproduced - depthwise (`groups = dimension`, weight [512, 1, 4]).
"""

from __future__ import annotations

import torch

from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from mimi.modules.streaming import StreamingContainer

# The release upsamples each channel on its own (weight [D, 1, 2 * stride]).
DEPTHWISE_UPSAMPLE = True


class ConvDownsample(StreamingContainer):
    def __init__(self, dimension: int, stride: int):
        super().__init__()
        self.conv = StreamingConv1d(dimension, dimension, 2 * stride, stride=stride, bias=False,
                                    pad_mode="replicate")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(z)  # [B, D, T] -> [B, D, ceil(T / stride)]


class ConvTrUpsample(StreamingContainer):
    def __init__(self, dimension: int, stride: int, depthwise: bool = DEPTHWISE_UPSAMPLE):
        super().__init__()
        groups = dimension if depthwise else 1
        self.convtr = StreamingConvTranspose1d(dimension, dimension, 2 * stride, stride=stride,
                                               groups=groups, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.convtr(z)  # [B, D, F] -> [B, D, F * stride]
