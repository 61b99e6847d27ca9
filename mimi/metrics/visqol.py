"""ViSQOL (speech mode, MOS-LQO 1 .. 5) through the optional ``visqol`` package.

The package is the pure-Python port published on PyPI as ``visqol-python`` (import
name ``visqol``); it is not a dependency of ``mimi`` and is imported only when
:func:`visqol_speech` is called. Without it (or with an unrelated module named
``visqol``) the call raises :class:`~mimi.errors.MetricError`.

Speech mode works at 16 kHz; inputs are resampled. Without the package's
``[lattice]`` extra (``ai-edge-litert``) it maps similarity to MOS with the legacy
polynomial, which reads higher than the C++ default on degraded speech; pass
``use_lattice_model=True`` to insist on the lattice mapper.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from mimi.errors import MetricError
from mimi.metrics.align import as_mono, check_rate, is_silent, match_rate

__all__ = ["visqol_speech", "VISQOL_RATE", "VISQOL_MISSING"]

VISQOL_RATE = 16000
VISQOL_MISSING = "ViSQOL needs the optional 'visqol' package: pip install visqol-python"


def _api_class() -> Any:
    try:
        import visqol  # noqa: PLC0415 - optional, imported lazily
    except ImportError:
        raise MetricError(VISQOL_MISSING) from None
    api = getattr(visqol, "VisqolApi", None)
    if api is None:
        raise MetricError(VISQOL_MISSING + " (the installed 'visqol' module has no VisqolApi)")
    return api


def visqol_speech(reference: Any, degraded: Any, sample_rate: int,
                  use_lattice_model: Optional[bool] = None) -> float:
    """ViSQOL speech-mode MOS-LQO of ``degraded`` against ``reference`` (both mono, same rate).

    ``use_lattice_model`` is passed to ``VisqolApi.create`` (``None``: lattice mapper
    when its runtime is installed, polynomial otherwise). Raises :class:`MetricError`
    when the package is missing, for silent input, and when ViSQOL fails.
    """
    ref, deg = as_mono(reference, "reference"), as_mono(degraded, "degraded")
    sample_rate = check_rate(sample_rate)
    api_class = _api_class()
    if is_silent(ref):
        raise MetricError("ViSQOL is undefined: the reference is silent")
    if is_silent(deg):
        raise MetricError("ViSQOL is undefined: the degraded signal is silent")
    ref16 = match_rate(ref, sample_rate, VISQOL_RATE)
    deg16 = match_rate(deg, sample_rate, VISQOL_RATE)
    try:
        api = api_class()
        api.create(mode="speech", use_lattice_model=use_lattice_model)
        result = api.measure_from_arrays(ref16, deg16, sample_rate=VISQOL_RATE)
    except MetricError:
        raise
    except ImportError as exc:  # e.g. use_lattice_model=True without ai-edge-litert
        raise MetricError(f"ViSQOL is missing a dependency: {exc}") from None
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError, FloatingPointError) as exc:
        raise MetricError(f"ViSQOL failed ({type(exc).__name__}): {exc}") from None
    score = float(result.moslqo)
    if not np.isfinite(score):
        raise MetricError(f"ViSQOL returned a non-finite score ({score})")
    return score
