"""Generator and discriminator losses for training Mimi.

- Adversarial: hinge losses on the logits of every discriminator scale.
- Feature matching: L1 distance between the discriminator's hidden activations on real and
  generated audio, each layer divided by the mean magnitude of its real activations.
- Reconstruction (the EnCodec-style baseline; the final Mimi drops it): multi-scale mel loss
  (L1 on mel magnitudes + squared error on log mels, windows 2^5 .. 2^11) and waveform L1.

Every loss is a scalar averaged over its terms, so adding scales or layers does not change its
magnitude. Reconstruction losses crop both signals to the shorter length (the decoder returns
whole frames; the reference may be shorter).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mimi.dsp import MelSpectrogram

__all__ = [
    "MultiScaleMelLoss", "feature_matching_loss", "hinge_discriminator_loss", "hinge_generator_loss",
    "waveform_l1",
]


def _check_scales(*lists: Sequence) -> None:
    if not lists[0]:
        raise ValueError("need at least one discriminator scale")
    if any(len(x) != len(lists[0]) for x in lists):
        raise ValueError(f"scale counts differ: {[len(x) for x in lists]}")


def hinge_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over scales of mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    _check_scales(real, fake)
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over scales of mean(relu(1 - D(fake)))."""
    _check_scales(fake)
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]],
                          eps: float = 1e-8) -> torch.Tensor:
    """mean_scales mean_layers  mean|fake - real| / mean|real|   (real detached).

    `real_feats[s][l]` is layer l of scale s on real audio; the normalisation makes every layer
    count the same whatever its activation scale.
    """
    _check_scales(real_feats, fake_feats)
    per_scale = []
    for reals, fakes in zip(real_feats, fake_feats):
        if len(reals) != len(fakes) or not reals:
            raise ValueError(f"layer counts differ or are zero: {len(reals)} vs {len(fakes)}")
        layers = []
        for r, f in zip(reals, fakes):
            r = r.detach()
            layers.append((f - r).abs().mean() / (r.abs().mean() + eps))
        per_scale.append(torch.stack(layers).mean())
    return torch.stack(per_scale).mean()


def _crop(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"signals differ in shape beyond length: {tuple(x.shape)} vs {tuple(y.shape)}")
    n = min(x.shape[-1], y.shape[-1])
    return x[..., :n], y[..., :n]


def waveform_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean |x - y| over the common length."""
    x, y = _crop(x, y)
    return (x - y.to(x.dtype)).abs().mean()


class MultiScaleMelLoss(nn.Module):
    """Multi-scale mel reconstruction loss, averaged over scales.

    For every i in `scales`: window n_fft = 2**i, hop 2**i // 4, `n_mels` mel bands (HTK mel,
    unit-area filters: `mimi.dsp.MelSpectrogram`), and

        l1_weight * mean|M(x) - M(y)| + log_weight * mean((log M(x) - log M(y))^2)

    with M the mel magnitude (power 1) and log = log10(clamp(M, floor)). Call `loss(estimate, target)`
    with [B, 1, T] (or [B, T]) audio; both are cropped to the shorter length.
    """

    def __init__(self, sample_rate: int = 24000, scales: Iterable[int] = range(5, 12), n_mels: int = 64,
                 f_min: float = 0.0, f_max: float | None = None, l1_weight: float = 1.0,
                 log_weight: float = 1.0, floor: float = 1e-5):
        super().__init__()
        self.scales = tuple(scales)
        if not self.scales:
            raise ValueError("need at least one scale")
        self.l1_weight, self.log_weight, self.floor = l1_weight, log_weight, floor
        self.mels = nn.ModuleList(
            MelSpectrogram(sample_rate, 2 ** i, max(1, 2 ** i // 4), n_mels, f_min=f_min, f_max=f_max)
            for i in self.scales)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        estimate, target = _crop(estimate, target)
        terms = []
        for mel in self.mels:
            me, mt = mel(estimate), mel(target)
            term = self.l1_weight * (me - mt).abs().mean()
            if self.log_weight:
                le = torch.log10(me.clamp(min=self.floor))
                lt = torch.log10(mt.clamp(min=self.floor))
                term = term + self.log_weight * (le - lt).pow(2).mean()
            terms.append(term)
        return torch.stack(terms).mean()
