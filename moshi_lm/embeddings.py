"""Token embeddings of the Moshi LM.

Every table has `card + 1` rows: the extra row `card` is the stream's start ("initial") token
(text 32000, audio 2048 in Moshi 7B). The special id -1 (the "zero token": no input) embeds to
exactly zero, so that stream contributes nothing to the sum.
"""

from __future__ import annotations

import torch
from torch import nn

ZERO_TOKEN = -1


class ZeroableEmbedding(nn.Embedding):
    """nn.Embedding where id -1 maps to a zero vector."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_zero = (ids == ZERO_TOKEN)[..., None]  # [..., 1]
        y = super().forward(ids.clamp(min=0))  # [..., D]
        return y.masked_fill(is_zero, 0.0)


class StreamEmbeddings(nn.Module):
    """Sum of the embeddings of 1 text stream + n_q audio streams: [B, 1 + n_q, T] -> [B, T, D]."""

    def __init__(self, dim: int, text_card: int, card: int, n_q: int):
        super().__init__()
        self.text = ZeroableEmbedding(text_card + 1, dim)
        self.audio = nn.ModuleList(ZeroableEmbedding(card + 1, dim) for _ in range(n_q))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.audio[0](codes[:, 1])  # [B, T, D]
        for k in range(1, len(self.audio)):
            x = x + self.audio[k](codes[:, 1 + k])
        return x + self.text(codes[:, 0])
