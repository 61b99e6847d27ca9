"""Euclidean codebook with exponential-moving-average (EMA) updates.

The codebook is stored as the EMA statistics `embedding_sum` [bins, dim] and `cluster_usage`
[bins]; the codebook itself is `embedding_sum / cluster_usage.clamp(min=epsilon)`. This is how
the released checkpoint stores it, so loading needs no conversion. Training updates (k-means
initialisation, EMA, dead-code replacement) live in `mimi.training`; this module only holds
the statistics and does nearest-neighbour search.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimi.modules.tensor_key import tensor_key, tracks_writes


class EmaCodebook(nn.Module):
    def __init__(self, dim: int, bins: int, epsilon: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.bins = bins
        self.epsilon = epsilon
        self.register_buffer("initialized", torch.zeros(1))
        self.register_buffer("cluster_usage", torch.ones(bins))
        self.register_buffer("embedding_sum", torch.randn(bins, dim))
        self._cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def _embedding_and_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codebook [bins, dim], squared norms [bins]), computed once per version of the
        statistics: an EMA update, a dead-code replacement or a load changes the key (in-place
        writes bump `_version`, reassignment changes the storage), so training stays exact while
        inference (a streaming step uses every codebook) skips the division."""
        s, u = self.embedding_sum, self.cluster_usage
        if not (tracks_writes(s) and tracks_writes(u)):  # statistics made under inference mode: no cache
            emb = s / u.clamp(min=self.epsilon)[:, None]
            return emb, (emb * emb).sum(-1)
        key = (tensor_key(s), tensor_key(u))
        if self._cache is None or self._cache[0] != key:
            emb = s / u.clamp(min=self.epsilon)[:, None]  # [bins, dim]
            self._cache = (key, emb, (emb * emb).sum(-1))
        return self._cache[1], self._cache[2]

    @property
    def embedding(self) -> torch.Tensor:
        return self._embedding_and_norms()[0]  # [bins, dim]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest entry by L2 distance: x [N, dim] -> codes [N] (long).

        argmin |x - e|^2 = argmin (|e|^2 - 2 x.e): one matmul, no [N, bins, dim] temporary.
        """
        emb, norms = self._embedding_and_norms()
        scores = torch.addmm(norms[None, :], x, emb.t(), alpha=-2.0)  # [N, bins]
        return scores.argmin(dim=-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embedding)  # [...] -> [..., dim]
