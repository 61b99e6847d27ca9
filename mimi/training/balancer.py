"""Loss balancer: weights express each loss's share of the gradient, not a raw multiplier.

Losses computed on the decoder output `y` (adversarial, feature matching, mel, L1) can differ
by orders of magnitude and drift during training, so fixed multipliers are hard to tune. The
balancer works on the gradient each loss sends into `y`:

1. g_i = d loss_i / d y, one `torch.autograd.grad` per loss (the graph is kept);
2. n_i = an exponential moving average (decay `ema_decay`, bias-corrected) of |g_i|, the
   L2 norm of the whole gradient tensor;
3. the gradient sent into the model is  G = total_norm * sum_i (w_i / sum_j w_j) * g_i / n_i,
   so that, on average, loss i contributes w_i / sum(w) of a gradient of norm `total_norm`;
4. `y.backward(G)` propagates it through the generator.

Only losses that depend on `y` can be balanced. Losses that reach the model by another path
(the commitment loss, semantic distillation, anything on the latent) are NOT handled here: the
trainer backpropagates them itself, with their own weights (before or after `backward`, with
`retain_graph=True` on whichever runs first when the graphs overlap).
"""

from __future__ import annotations

import math

import torch

__all__ = ["Balancer"]


class Balancer:
    def __init__(self, weights: dict[str, float], total_norm: float = 1.0, ema_decay: float = 0.999,
                 eps: float = 1e-12):
        if not weights:
            raise ValueError("the balancer needs at least one weighted loss")
        if any(w < 0 or not math.isfinite(w) for w in weights.values()):
            raise ValueError(f"weights must be finite and >= 0, got {weights}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.weights = dict(weights)
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.eps = eps
        # bias-corrected EMA: average = _sums[name] / _counts[name]
        self._sums: dict[str, float] = {}
        self._counts: dict[str, float] = {}

    def average_norm(self, name: str) -> float | None:
        """Current EMA of loss `name`'s gradient norm (None before its first step)."""
        if name not in self._counts:
            return None
        return self._sums[name] / self._counts[name]

    def _update(self, name: str, norm: float) -> float:
        d = self.ema_decay
        self._sums[name] = d * self._sums.get(name, 0.0) + norm
        self._counts[name] = d * self._counts.get(name, 0.0) + 1.0
        return self._sums[name] / self._counts[name]

    def backward(self, losses: dict[str, torch.Tensor], output: torch.Tensor) -> dict[str, float]:
        """Backpropagate the balanced sum of `losses` through `output`; returns each loss's raw
        gradient norm |d loss / d output| (for logging).

        Every loss must have a weight. A loss with weight 0 is skipped (not even differentiated).
        Raises ValueError for a loss that does not depend on `output`.
        """
        unknown = sorted(set(losses) - set(self.weights))
        if unknown:
            raise ValueError(f"no balancer weight for loss(es) {unknown}")
        active = {k: v for k, v in losses.items() if self.weights[k] > 0}
        if not active:
            return {}
        total_weight = sum(self.weights[k] for k in active)
        norms: dict[str, float] = {}
        total = None
        for name, loss in active.items():
            (grad,) = torch.autograd.grad(loss, output, retain_graph=True, allow_unused=True)
            if grad is None:
                raise ValueError(f"loss {name!r} does not depend on the balanced output; backpropagate it "
                                 "directly instead")
            norm = float(grad.detach().float().norm())
            norms[name] = norm
            avg = self._update(name, norm)
            scale = self.total_norm * self.weights[name] / total_weight / (avg + self.eps)
            contribution = grad * scale
            total = contribution if total is None else total + contribution
        output.backward(total)
        return norms

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state: dict) -> None:
        self._sums = {k: float(v) for k, v in state.get("sums", {}).items()}
        self._counts = {k: float(v) for k, v in state.get("counts", {}).items()}
