"""Training loss of the Moshi LM: text cross-entropy + audio cross-entropy.

Audio: the semantic level (codebook 0 of Moshi's stream) weighs `semantic_weight` (100 in the
paper) against 1 for each acoustic level; the weighted sum is divided by the sum of weights.
Text: PAD / EPAD targets (Inner Monologue filler) weigh `pad_weight`, words 1; likewise
normalised. Only positions valid in the output's masks count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from mimi.errors import MimiError
from moshi_lm.model import LMOutput


@dataclass(frozen=True)
class LMLoss:
    total: torch.Tensor  # scalar: text + audio
    text: torch.Tensor  # scalar
    audio: torch.Tensor  # scalar


def _weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                 valid: torch.Tensor) -> torch.Tensor:
    """logits [B, K, T, V], targets / weights / valid [B, K, T] -> weighted mean CE over valid."""
    logits = logits.float().masked_fill(~valid[..., None], 0.0)  # invalid positions hold NaN
    targets = torch.where(valid, targets, torch.zeros_like(targets))
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    w = (weights * valid).reshape(-1)
    return (ce * w).sum() / w.sum().clamp(min=1e-12)


def lm_loss_parts(output: LMOutput, codes: torch.Tensor, semantic_weight: float = 100.0,
                  pad_weight: float = 0.5, pad_ids: Sequence[int] = (3, 0)) -> LMLoss:
    B, dep_q, T, _ = output.logits.shape
    if codes.dim() != 3 or codes.shape[0] != B or codes.shape[2] != T or codes.shape[1] < 1 + dep_q:
        raise MimiError(f"codes {list(codes.shape)} do not match the output (B={B}, T={T}, dep_q={dep_q})")
    codes = codes.long()
    audio_targets = codes[:, 1:1 + dep_q]  # [B, dep_q, T]
    audio_w = torch.ones_like(audio_targets, dtype=torch.float32)
    audio_w[:, 0] = semantic_weight
    audio = _weighted_ce(output.logits, audio_targets, audio_w, output.mask)
    text_targets = codes[:, :1]  # [B, 1, T]
    text_w = torch.ones_like(text_targets, dtype=torch.float32)
    for pad in pad_ids:
        text_w = torch.where(text_targets == pad, text_w * pad_weight, text_w)
    text = _weighted_ce(output.text_logits, text_targets, text_w, output.text_mask)
    return LMLoss(text + audio, text, audio)


def lm_loss(output: LMOutput, codes: torch.Tensor, semantic_weight: float = 100.0,
            pad_weight: float = 0.5, pad_ids: Sequence[int] = (3, 0)) -> torch.Tensor:
    """Scalar loss (text CE + audio CE) of `model(codes)` against `codes` [B, 1 + n_q, T]."""
    return lm_loss_parts(output, codes, semantic_weight, pad_weight, pad_ids).total
