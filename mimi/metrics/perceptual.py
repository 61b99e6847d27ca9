"""Perceptual speech-quality metrics: wideband PESQ (ITU-T P.862.2) and (E)STOI.

Both wrap the reference implementations (the ``pesq`` and ``pystoi`` packages) and turn
every way they can fail, or silently return a meaningless number, into a
:class:`~mimi.errors.MetricError` with the reason.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mimi.errors import MetricError
from mimi.metrics.align import as_mono, check_rate, is_silent, match_rate

__all__ = ["pesq_wb", "stoi", "PESQ_RATE", "STOI_MIN_SECONDS"]

PESQ_RATE = 16000
"""Wideband PESQ works at 16 kHz; inputs at other rates are resampled (soxr VHQ)."""

STOI_MIN_SECONDS = 0.4
"""STOI needs 30 frames of 128 samples at 10 kHz (~0.39 s) of active speech after silence removal."""

_STOI_FRAMES_WARNING = "Not enough STFT frames"


def _pair(reference: Any, degraded: Any, sample_rate: Any) -> tuple[np.ndarray, np.ndarray, int]:
    return as_mono(reference, "reference"), as_mono(degraded, "degraded"), check_rate(sample_rate)


def _same_length(ref: np.ndarray, deg: np.ndarray, metric: str) -> None:
    if ref.shape != deg.shape:
        raise MetricError(f"{metric} needs signals of equal length, got {ref.shape[0]} and {deg.shape[0]} "
                          "samples; align them first (mimi.metrics.align)")


def pesq_wb(reference: Any, degraded: Any, sample_rate: int) -> float:
    """Wideband PESQ (P.862.2 MOS-LQO, about 1.04 .. 4.64) of ``degraded`` against ``reference``.

    Both signals (mono, same ``sample_rate``) are resampled to 16 kHz. PESQ does its own
    level and time alignment, so the lengths may differ slightly. Raises
    :class:`MetricError` for silent input, audio shorter than 0.25 s, no speech found
    ("no utterances") and any other failure of the ``pesq`` package.
    """
    import pesq as _pesq

    ref, deg, sample_rate = _pair(reference, degraded, sample_rate)
    if is_silent(ref):
        raise MetricError("PESQ is undefined: the reference is silent")
    if is_silent(deg):  # the pesq package crashes on an all-zero degraded signal
        raise MetricError("PESQ is undefined: the degraded signal is silent")
    ref16 = match_rate(ref, sample_rate, PESQ_RATE)
    deg16 = match_rate(deg, sample_rate, PESQ_RATE)
    try:
        score = _pesq.pesq(PESQ_RATE, ref16, deg16, "wb")
    except (_pesq.PesqError, ValueError) as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        reason = str(reason).strip() or type(exc).__name__
        raise MetricError(f"PESQ failed ({type(exc).__name__}): {reason}") from None
    score = float(score)
    if not np.isfinite(score):
        raise MetricError(f"PESQ returned a non-finite score ({score})")
    return score


def stoi(reference: Any, degraded: Any, sample_rate: int, extended: bool = False) -> float:
    """STOI (or extended STOI, ``extended=True``) of ``degraded`` against ``reference``.

    ``pystoi`` at ``sample_rate`` (it resamples to 10 kHz itself). The signals must have
    the same length (use :func:`~mimi.metrics.align.align`). STOI is in [0, 1] (ESTOI
    can dip slightly below 0); a silent degraded signal legitimately scores about 0.
    Raises :class:`MetricError` for a silent reference, or input with less than about
    0.4 s of active speech after STOI's silence removal, where ``pystoi`` would return
    a placeholder 1e-5 or a meaningless number.
    """
    from pystoi import stoi as _stoi

    metric = "ESTOI" if extended else "STOI"
    ref, deg, sample_rate = _pair(reference, degraded, sample_rate)
    _same_length(ref, deg, metric)
    seconds = ref.shape[0] / sample_rate
    if is_silent(ref):
        raise MetricError(f"{metric} is undefined: the reference is silent")
    if seconds < STOI_MIN_SECONDS:
        raise MetricError(f"{metric} needs at least {STOI_MIN_SECONDS} s of speech, got {seconds:.3f} s")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score = _stoi(ref, deg, sample_rate, extended=extended)
        except (ValueError, IndexError) as exc:  # e.g. nothing left after silence removal
            raise MetricError(f"{metric} failed: {exc}") from None
    too_short = False
    for w in caught:
        if _STOI_FRAMES_WARNING in str(w.message):
            too_short = True
        else:  # pass on anything else pystoi or numpy had to say
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if too_short:
        raise MetricError(f"{metric} needs at least ~{STOI_MIN_SECONDS} s of active speech after silence "
                          f"removal; the reference ({seconds:.3f} s) has less")
    score = float(score)
    if not np.isfinite(score):
        raise MetricError(f"{metric} returned a non-finite score ({score})")
    return score
