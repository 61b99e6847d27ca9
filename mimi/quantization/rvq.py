"""Residual vector quantisation, and Mimi's split (semantic + acoustic) RVQ.

Each RVQ projects its input with a 1x1 conv (no bias) to the codebook dimension, quantises
the residual level by level, and projects the sum of the chosen entries back. The split RVQ
runs two of them on the *same* latent: `semantic` (the first level, distilled toward a
self-supervised teacher in training) and `acoustic` (the remaining levels); their outputs
are summed.
"""

from __future__ import annotations

import torch
from torch import nn

from mimi.config import QuantizerConfig
from mimi.quantization.codebook import EmaCodebook


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, input_dim: int, dim: int, n_q: int, bins: int, epsilon: float = 1e-5):
        super().__init__()
        self.n_q = n_q
        self.input_proj = nn.Conv1d(input_dim, dim, 1, bias=False)
        self.output_proj = nn.Conv1d(dim, input_dim, 1, bias=False)
        self.layers = nn.ModuleList(EmaCodebook(dim, bins, epsilon) for _ in range(n_q))

    def project_in(self, z: torch.Tensor) -> torch.Tensor:
        return self.input_proj(z)  # [B, D, T] -> [B, d, T]

    def encode(self, z: torch.Tensor, n_q: int) -> torch.Tensor:
        """z [B, D, T] -> codes [B, n_q, T]."""
        if not 0 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in [0, {self.n_q}], got {n_q}")
        B, _, T = z.shape
        residual = self.project_in(z).transpose(1, 2).reshape(B * T, -1)  # [B*T, d]
        codes = []
        for layer in self.layers[:n_q]:
            idx = layer.encode(residual)  # [B*T]
            residual = residual - layer.decode(idx)
            codes.append(idx)
        if not codes:
            return z.new_zeros(B, 0, T, dtype=torch.long)
        return torch.stack(codes, dim=0).view(n_q, B, T).transpose(0, 1)  # [B, n_q, T]

    def decode_sum(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> sum of chosen entries [B, d, T], before the output projection."""
        B, K, T = codes.shape
        if K > self.n_q:
            raise ValueError(f"got {K} codebooks, this quantizer has {self.n_q}")
        total = codes.new_zeros(B, T, self.input_proj.out_channels, dtype=self.output_proj.weight.dtype)
        for k in range(K):
            total = total + self.layers[k].decode(codes[:, k])  # [B, T, d]
        return total.transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.output_proj(self.decode_sum(codes))  # [B, K, T] -> [B, D, T]


class SplitResidualVectorQuantizer(nn.Module):
    def __init__(self, input_dim: int, cfg: QuantizerConfig):
        super().__init__()
        self.n_q = cfg.n_q
        self.n_q_semantic = cfg.n_q_semantic
        self.bins = cfg.bins
        self.semantic = ResidualVectorQuantizer(input_dim, cfg.dimension, cfg.n_q_semantic, cfg.bins, cfg.epsilon)
        self.acoustic = ResidualVectorQuantizer(input_dim, cfg.dimension, cfg.n_q - cfg.n_q_semantic,
                                                cfg.bins, cfg.epsilon)

    def encode(self, z: torch.Tensor, n_q: int) -> torch.Tensor:
        """z [B, D, T] -> codes [B, n_q, T]; the first `n_q_semantic` levels are semantic."""
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"number of codebooks must be in [1, {self.n_q}], got {n_q}")
        n_sem = min(n_q, self.n_q_semantic)
        codes = self.semantic.encode(z, n_sem)
        if n_q > n_sem:
            codes = torch.cat([codes, self.acoustic.encode(z, n_q - n_sem)], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> quantised latent [B, D, T]."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"codes must be [B, K, T] with 1 <= K <= {self.n_q}, got {tuple(codes.shape)}")
        n_sem = self.n_q_semantic
        out = self.semantic.decode(codes[:, :n_sem])
        if codes.shape[1] > n_sem:
            out = out + self.acoustic.decode(codes[:, n_sem:])
        return out
