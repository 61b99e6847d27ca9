"""Signal-level metrics: scale-invariant SDR and a multi-scale log-mel distance."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from mimi.dsp import MelSpectrogram
from mimi.errors import MetricError
from mimi.metrics.align import as_mono, check_rate, is_silent

__all__ = ["si_sdr", "mel_distance", "SI_SDR_LIMIT_DB", "MEL_SCALES", "MEL_FLOOR"]

SI_SDR_LIMIT_DB = 150.0
"""SI-SDR is clamped to +-150 dB (identical signals would otherwise give +inf)."""

MEL_SCALES = tuple(2 ** k for k in range(6, 12))
"""Window sizes (n_fft) of :func:`mel_distance`: 64 .. 2048 samples."""

MEL_FLOOR = 1e-5
"""Mel magnitudes are clamped to this before log10 (-100 dB), as in the training mel loss."""


def _same_length(ref: np.ndarray, est: np.ndarray, metric: str) -> None:
    if ref.shape != est.shape:
        raise MetricError(f"{metric} needs signals of equal length, got {ref.shape[0]} and {est.shape[0]} "
                          "samples; align them first (mimi.metrics.align)")


def si_sdr(reference: Any, estimate: Any) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019).

    Both signals are made zero-mean; with ``alpha = <est, ref> / <ref, ref>``,
    ``SI-SDR = 10 log10(|alpha ref|^2 / |est - alpha ref|^2)``, clamped to
    +-:data:`SI_SDR_LIMIT_DB`. Equal lengths are required (align first). Raises
    :class:`MetricError` when the reference or the estimate is silent (constant),
    where the ratio is undefined.
    """
    ref = as_mono(reference, "reference")
    est = as_mono(estimate, "estimate")
    _same_length(ref, est, "SI-SDR")
    ref = ref - ref.mean()
    est = est - est.mean()
    if is_silent(ref):
        raise MetricError("SI-SDR is undefined: the reference is silent")
    if is_silent(est):
        raise MetricError("SI-SDR is undefined: the estimate is silent")
    ref_energy = float(np.dot(ref, ref))
    alpha = float(np.dot(est, ref)) / ref_energy
    target = alpha * ref
    noise = est - target
    target_energy = float(np.dot(target, target))
    noise_energy = float(np.dot(noise, noise))
    if noise_energy <= 0.0:
        return SI_SDR_LIMIT_DB
    if target_energy <= 0.0:
        return -SI_SDR_LIMIT_DB
    value = 10.0 * np.log10(target_energy / noise_energy)
    return float(np.clip(value, -SI_SDR_LIMIT_DB, SI_SDR_LIMIT_DB))


@functools.lru_cache(maxsize=32)
def _mel(sample_rate: int, n_fft: int) -> MelSpectrogram:
    return MelSpectrogram(sample_rate, n_fft, hop_length=n_fft // 4, n_mels=min(80, n_fft // 4),
                          log=True, floor=MEL_FLOOR)


def mel_distance(reference: Any, degraded: Any, sample_rate: int) -> float:
    """Multi-scale log-mel L1 distance (lower is better, 0 for identical signals).

    Definition: for each window size ``n_fft`` in 64, 128, ..., 2048 (:data:`MEL_SCALES`),
    take the magnitude (power 1) mel spectrogram of both signals with a Hann window,
    ``hop = n_fft // 4``, ``n_mels = min(80, n_fft // 4)`` HTK-scale bands up to Nyquist
    (:class:`mimi.dsp.MelSpectrogram`, centred frames), compute
    ``mean |log10(max(mel_ref, 1e-5)) - log10(max(mel_deg, 1e-5))|`` over frames and
    over the bands whose filter covers at least one FFT bin (the smallest windows have
    a few empty low bands), and average the six per-scale means. The unit is log10
    magnitude, i.e. 1.0 means a typical 20 dB mismatch. Not scale-invariant: a gain
    change of g dB adds about g / 20. Equal lengths are required (align first).
    """
    ref = as_mono(reference, "reference")
    deg = as_mono(degraded, "degraded")
    sample_rate = check_rate(sample_rate)
    _same_length(ref, deg, "mel distance")
    wav = torch.from_numpy(np.stack([ref, deg]).astype(np.float32))[:, None]  # [2, 1, T]
    per_scale = []
    with torch.no_grad():
        for n_fft in MEL_SCALES:
            mel = _mel(sample_rate, n_fft)
            logmel = mel(wav)  # [2, n_mels, frames]
            live = mel.filters.sum(dim=1) > 0
            diff = (logmel[0] - logmel[1]).abs()[live]
            per_scale.append(float(diff.double().mean()))
    value = float(np.mean(per_scale))
    if not np.isfinite(value):  # cannot happen for finite input; guard anyway
        raise MetricError(f"mel distance is not finite ({value})")
    return value
