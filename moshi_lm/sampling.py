"""Token sampling: temperature + top-k, or greedy (argmax)."""

from __future__ import annotations

import torch


def sample_token(logits: torch.Tensor, use_sampling: bool = True, temp: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [..., V] -> token ids [...] (long). Greedy when `use_sampling` is False or temp <= 0;
    top_k <= 0 or >= V samples from the whole distribution."""
    if not use_sampling or temp <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temp, dim=-1)  # [..., V]
    flat = probs.reshape(-1, probs.shape[-1])  # [N, V]
    if 0 < top_k < flat.shape[-1]:
        top_probs, top_ids = flat.topk(top_k, dim=-1)  # [N, k]
        choice = torch.multinomial(top_probs, 1, generator=generator)  # [N, 1]
        ids = top_ids.gather(-1, choice)
    else:
        ids = torch.multinomial(flat, 1, generator=generator)
    return ids.view(probs.shape[:-1])
