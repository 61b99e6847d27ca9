"""Input checking, sample-rate matching and time alignment of reference/degraded pairs.

Every metric in :mod:`mimi.metrics` takes mono audio as a 1-D numpy array or torch
tensor, or a ``[1, T]`` (or ``[1, 1, T]``) array; anything with more than one channel
is rejected with :class:`~mimi.errors.MetricError`. A codec's output is usually a
little longer or shorter than its input and may be delayed; :func:`align` finds that
delay by FFT cross-correlation and trims both signals to their common, aligned part.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mimi.audio import resample
from mimi.errors import MetricError

__all__ = ["Alignment", "align", "as_mono", "match_rate", "check_rate", "is_silent", "SILENCE_PEAK"]

SILENCE_PEAK = 1e-8
"""A signal whose peak magnitude is at or below this (-160 dBFS) counts as silent."""


def check_rate(sample_rate: Any, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int, or raise :class:`MetricError` unless it is a positive integer."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or int(sample_rate) <= 0:
        raise MetricError(f"{name} must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def as_mono(x: Any, name: str = "signal", allow_nonfinite: bool = False) -> np.ndarray:
    """Mono float64 copy of ``x``: 1-D, or ``[1, T]`` / ``[1, 1, T]`` (numpy or torch).

    Raises :class:`MetricError` for multi-channel, empty or (unless ``allow_nonfinite``)
    non-finite input.
    """
    if isinstance(x, torch.Tensor):
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MetricError(f"{name} is not a numeric array: {exc}") from None
    if arr.ndim == 0:
        raise MetricError(f"{name} must be a 1-D signal or [1, T], got a scalar")
    if arr.ndim > 1:
        if any(d != 1 for d in arr.shape[:-1]):
            channels = int(np.prod(arr.shape[:-1]))
            raise MetricError(f"{name} has shape {list(arr.shape)} ({channels} channels); "
                              "quality metrics need mono audio (1-D or [1, T])")
        arr = arr.reshape(-1)
    if arr.size == 0:
        raise MetricError(f"{name} is empty")
    if not allow_nonfinite and not np.all(np.isfinite(arr)):
        raise MetricError(f"{name} holds NaN or infinite samples")
    return np.ascontiguousarray(arr)


def is_silent(x: np.ndarray) -> bool:
    """True when the peak magnitude of ``x`` is at or below :data:`SILENCE_PEAK`."""
    return x.size == 0 or float(np.max(np.abs(x))) <= SILENCE_PEAK


def match_rate(x: Any, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono ``x`` from ``from_rate`` to ``to_rate`` (soxr VHQ via :func:`mimi.audio.resample`).

    Returns a 1-D float64 array of ``round(T * to_rate / from_rate)`` samples; equal
    rates return the (mono, float64) input unchanged.
    """
    from_rate = check_rate(from_rate, "from_rate")
    to_rate = check_rate(to_rate, "to_rate")
    mono = as_mono(x)
    if from_rate == to_rate:
        return mono
    out = resample(torch.from_numpy(mono.astype(np.float32))[None], from_rate, to_rate)
    return out[0].numpy().astype(np.float64)


@dataclass(frozen=True)
class Alignment:
    """A reference/degraded pair after alignment.

    ``lag_samples`` > 0 means the degraded signal is late by that many samples
    (``degraded[n + lag] ~ reference[n]``). ``reference`` and ``degraded`` are
    the aligned parts, trimmed to a common length. ``correlation`` is the
    normalised correlation of the aligned pair,
    ``<ref, deg> / (|ref| |deg|)`` in [-1, 1] (0.0 when either part is silent,
    where it is undefined and no delay could be measured).
    """

    lag_samples: int
    reference: np.ndarray
    degraded: np.ndarray
    correlation: float

    @property
    def num_samples(self) -> int:
        return int(self.reference.shape[0])


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _xcorr(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> np.ndarray:
    """``c[k + max_lag] = sum_n ref[n] * deg[n + k]`` for ``k`` in ``[-max_lag, max_lag]``.

    Computed block by block over ``ref`` (overlap-save style FFT correlation), so the
    memory stays bounded for long signals while staying exact up to float rounding.
    """
    lag = max_lag
    block = max(1 << 16, _next_pow2(4 * (2 * lag + 1)))
    padded = np.zeros(2 * lag + max(len(deg), len(ref)), dtype=np.float64)
    padded[lag:lag + len(deg)] = deg  # padded[i + lag] == deg[i], zero outside deg
    out = np.zeros(2 * lag + 1, dtype=np.float64)
    for start in range(0, len(ref), block):
        r = ref[start:start + block]
        seg = padded[start:start + len(r) + 2 * lag]  # deg[start - lag : start + len(r) + lag]
        n = _next_pow2(len(seg) + len(r) - 1)
        cc = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(r, n)), n)
        out += cc[:2 * lag + 1]  # cc[j] = sum_m r[m] seg[m + j], no wrap-around for j <= 2 lag
    return out


def align(reference: Any, degraded: Any, sample_rate: int, max_lag_seconds: float = 0.5) -> Alignment:
    """Time-align ``degraded`` to ``reference`` (same sample rate) by FFT cross-correlation.

    The lag is the one, within ``+-max_lag_seconds``, that maximises the magnitude of
    the cross-correlation (a polarity flip is still aligned; ``correlation`` is then
    negative). Both signals are then trimmed to the overlapping part. If either signal
    is silent no delay can be measured: the lag is 0 and ``correlation`` is 0.0.
    """
    sample_rate = check_rate(sample_rate)
    ref = as_mono(reference, "reference")
    deg = as_mono(degraded, "degraded")
    if not isinstance(max_lag_seconds, numbers.Real) or not np.isfinite(max_lag_seconds) or max_lag_seconds < 0:
        raise MetricError(f"max_lag_seconds must be a finite number >= 0, got {max_lag_seconds!r}")
    max_lag = min(int(round(max_lag_seconds * sample_rate)), max(len(ref), len(deg)) - 1)

    lag = 0
    if max_lag > 0 and not is_silent(ref) and not is_silent(deg):
        c = _xcorr(ref, deg, max_lag)
        # Lags past the other signal's end (no overlap) give exactly 0; argmax picks the first maximum.
        lag = int(np.argmax(np.abs(c))) - max_lag

    if lag >= 0:
        ref_a, deg_a = ref, deg[lag:]
    else:
        ref_a, deg_a = ref[-lag:], deg
    n = min(len(ref_a), len(deg_a))
    if n == 0:
        raise MetricError(f"no overlap left after aligning (lag {lag} samples)")
    ref_a, deg_a = np.ascontiguousarray(ref_a[:n]), np.ascontiguousarray(deg_a[:n])
    denom = float(np.linalg.norm(ref_a) * np.linalg.norm(deg_a))
    correlation = float(np.clip(np.dot(ref_a, deg_a) / denom, -1.0, 1.0)) if denom > 0 else 0.0
    return Alignment(lag_samples=lag, reference=ref_a, degraded=deg_a, correlation=correlation)
