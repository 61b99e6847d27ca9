"""Audio-quality and token metrics for codec evaluation (``mimi bench``, training evaluation).

Signals are mono (1-D or ``[1, T]``, numpy or torch) at a common sample rate; use
:func:`match_rate` first when they differ. Every function raises
:class:`~mimi.errors.MetricError` when its metric cannot be computed for the input
(silence, too short, mismatched lengths, missing optional package) instead of returning
a placeholder or NaN. :func:`evaluate_pair` aligns a pair and computes several metrics,
recording each failure next to a ``None`` score.

Metric names for :func:`evaluate_pair`:

``pesq``    wideband PESQ (P.862.2), MOS-LQO ~1.04 .. 4.64, higher is better
``stoi``    STOI, 0 .. 1, higher is better
``estoi``   extended STOI, ~0 .. 1, higher is better
``si_sdr``  scale-invariant SDR in dB, higher is better
``mel``     multi-scale log10-mel L1 distance, lower is better (see :func:`mel_distance`)
``visqol``  ViSQOL speech-mode MOS-LQO 1 .. 5 (optional ``visqol-python`` package)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np

from mimi.errors import MetricError
from mimi.metrics.align import Alignment, align, as_mono, check_rate, match_rate
from mimi.metrics.codes import CodebookUsage, bitrate_bps, codebook_usage, entropy_bitrate_bps
from mimi.metrics.perceptual import pesq_wb, stoi
from mimi.metrics.signal import mel_distance, si_sdr
from mimi.metrics.visqol import visqol_speech

__all__ = [
    "MetricError",
    "Alignment",
    "align",
    "as_mono",
    "match_rate",
    "pesq_wb",
    "stoi",
    "si_sdr",
    "mel_distance",
    "visqol_speech",
    "CodebookUsage",
    "bitrate_bps",
    "codebook_usage",
    "entropy_bitrate_bps",
    "QualityScores",
    "evaluate_pair",
    "METRIC_NAMES",
    "DEFAULT_METRICS",
]

DEFAULT_METRICS = ("pesq", "stoi", "estoi", "si_sdr", "mel")

_METRICS: dict[str, Callable[[Any, Any, int], float]] = {
    "pesq": pesq_wb,
    "stoi": lambda ref, deg, sr: stoi(ref, deg, sr, extended=False),
    "estoi": lambda ref, deg, sr: stoi(ref, deg, sr, extended=True),
    "si_sdr": lambda ref, deg, sr: si_sdr(ref, deg),
    "mel": mel_distance,
    "visqol": visqol_speech,
}

METRIC_NAMES = tuple(_METRICS)
"""Every name :func:`evaluate_pair` accepts."""


@dataclass(frozen=True)
class QualityScores:
    """Scores of one aligned reference/degraded pair.

    A metric that was not requested is ``None`` and absent from ``errors``; a requested
    metric that could not be computed is ``None`` and ``errors[name]`` says why. Never a
    NaN. ``lag_samples`` (> 0: degraded is late) and ``correlation`` come from
    :func:`align`; ``num_samples`` is the length of the aligned, compared part.
    """

    pesq: Optional[float] = None
    stoi: Optional[float] = None
    estoi: Optional[float] = None
    si_sdr: Optional[float] = None
    mel: Optional[float] = None
    visqol: Optional[float] = None
    lag_samples: int = 0
    correlation: float = 0.0
    num_samples: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def scores(self) -> dict[str, Optional[float]]:
        """``{metric name: score or None}`` for every metric field."""
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)


def evaluate_pair(reference: Any, degraded: Any, sample_rate: int,
                  metrics: Iterable[str] = DEFAULT_METRICS, max_lag_seconds: float = 0.5) -> QualityScores:
    """Align ``degraded`` to ``reference`` (:func:`align`) and compute ``metrics`` on the aligned pair.

    Both signals are mono at ``sample_rate``. Each metric that raises
    :class:`MetricError` is reported as ``None`` with its message in ``errors``; a
    degraded signal holding NaN or infinite samples (a diverged model) fails every
    requested metric that way. Invalid arguments (multi-channel or empty signals, a
    non-finite reference, a bad rate, unknown metric names) raise :class:`MetricError`.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = list(dict.fromkeys(metrics))
    unknown = [name for name in names if name not in _METRICS]
    if unknown:
        raise MetricError(f"unknown metric(s) {', '.join(map(repr, unknown))}; "
                          f"choose from {', '.join(METRIC_NAMES)}")
    sample_rate = check_rate(sample_rate)
    ref = as_mono(reference, "reference")
    deg = as_mono(degraded, "degraded", allow_nonfinite=True)
    if not np.all(np.isfinite(deg)):
        bad = int(np.count_nonzero(~np.isfinite(deg)))
        message = f"the degraded signal holds {bad} NaN or infinite samples"
        return QualityScores(errors={name: message for name in names})
    alignment = align(ref, deg, sample_rate, max_lag_seconds=max_lag_seconds)
    values: dict[str, Optional[float]] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            values[name] = _METRICS[name](alignment.reference, alignment.degraded, sample_rate)
        except MetricError as exc:
            values[name] = None
            errors[name] = str(exc)
    return QualityScores(**values, lag_samples=alignment.lag_samples, correlation=alignment.correlation,
                         num_samples=alignment.num_samples, errors=errors)
