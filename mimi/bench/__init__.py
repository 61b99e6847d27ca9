"""Codec benchmarks: quality against bitrate (with Opus and Codec2 baselines) and speed.

``mimi.bench.quality.run_quality`` scores Mimi at several codebook counts and the baseline
codecs of ``mimi.bench.baselines`` on a set of audio files; ``mimi.bench.speed.run_speed``
times encoding, decoding and streaming, next to transformers' and Kyutai's implementations
when they are installed. The submodules are imported lazily (matplotlib, transformers).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Baseline", "available_baselines", "QualityReport", "run_quality", "SpeedReport", "run_speed",
]

_EXPORTS = {
    "Baseline": "mimi.bench.baselines",
    "available_baselines": "mimi.bench.baselines",
    "QualityReport": "mimi.bench.quality",
    "run_quality": "mimi.bench.quality",
    "SpeedReport": "mimi.bench.speed",
    "run_speed": "mimi.bench.speed",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mimi.bench' has no attribute {name!r}")
