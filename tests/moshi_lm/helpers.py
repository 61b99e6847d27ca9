"""Shared helpers of the moshi_lm tests."""

from __future__ import annotations

import torch

import moshi_lm
from moshi_lm import LMConfig, LMModel


def random_codes(cfg: LMConfig, batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    """[B, 1 + n_q, T] valid codes, text first."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.card, (batch, cfg.num_codebooks, steps), generator=g)
    codes[:, 0] = torch.randint(0, cfg.text_card, (batch, steps), generator=g)
    return codes


def tiny_model(seed: int = 0, **overrides) -> LMModel:
    torch.manual_seed(seed)
    cfg = LMConfig(**{**LMConfig.tiny().to_json_dict(), **overrides})
    model = moshi_lm.build_lm(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so that a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
    return model
