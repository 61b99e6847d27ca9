"""Token-level metrics: nominal bitrate, codebook usage and entropy (the ideal entropy-coded bitrate)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch

from mimi.errors import MetricError

__all__ = ["CodebookUsage", "bitrate_bps", "codebook_usage", "entropy_bitrate_bps"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise MetricError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise MetricError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def bitrate_bps(num_codebooks: int, codebook_size: int, frame_rate: float, channels: int = 1) -> float:
    """Nominal bitrate of fixed-length codes: ``channels * num_codebooks * log2(codebook_size) * frame_rate``.

    E.g. Mimi with 8 codebooks of 2048 entries at 12.5 Hz: 8 * 11 * 12.5 = 1100 bps. For
    a codebook size that is not a power of two this is the ideal ``log2`` (not rounded up).
    """
    num_codebooks = _positive_int(num_codebooks, "num_codebooks")
    codebook_size = _positive_int(codebook_size, "codebook_size")
    channels = _positive_int(channels, "channels")
    frame_rate = _positive_real(frame_rate, "frame_rate")
    return channels * num_codebooks * math.log2(codebook_size) * frame_rate


@dataclass(frozen=True)
class CodebookUsage:
    """Per-level statistics of a batch of codes (level k = the k-th RVQ codebook).

    ``used_fraction[k]``: fraction of the ``codebook_size`` entries that occur at least once.
    ``entropy_bits[k]``: plug-in (maximum-likelihood) entropy of the empirical code
    distribution, ``-sum p log2 p`` with ``p = count / num_frames`` (biased low when
    ``num_frames`` is not much larger than the codebook size). ``perplexity[k]`` =
    ``2 ** entropy_bits[k]``, the effective number of entries in use.
    """

    codebook_size: int
    num_frames: int
    counts: np.ndarray = field(compare=False, repr=False)  # [K, codebook_size] int64 occurrences
    used_fraction: tuple[float, ...]
    entropy_bits: tuple[float, ...]
    perplexity: tuple[float, ...]

    @property
    def num_levels(self) -> int:
        return len(self.entropy_bits)

    @property
    def total_entropy_bits(self) -> float:
        """Sum over levels of the per-level entropies (bits per frame)."""
        return float(sum(self.entropy_bits))


def _codes_array(codes: Any) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        if codes.is_floating_point() or codes.is_complex():
            raise MetricError(f"codes must be integers, got {codes.dtype}")
        arr = codes.detach().to("cpu").numpy()
    else:
        arr = np.asarray(codes)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
            raise MetricError(f"codes must be integers, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise MetricError(f"codes must be [B, K, T] or [K, T], got shape {list(arr.shape)}")
    return arr.astype(np.int64, copy=False)


def codebook_usage(codes: Any, codebook_size: int) -> CodebookUsage:
    """Usage and entropy of each codebook level over all items and frames of ``codes`` ([B, K, T] or [K, T]).

    Raises :class:`MetricError` for empty codes or codes outside ``[0, codebook_size)``.
    """
    codebook_size = _positive_int(codebook_size, "codebook_size")
    arr = _codes_array(codes)
    batch, levels, frames = arr.shape
    if batch * frames == 0 or levels == 0:
        raise MetricError(f"codes are empty (shape {list(arr.shape)})")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= codebook_size:
        raise MetricError(f"codes must lie in [0, {codebook_size}), found values in [{lo}, {hi}]")
    per_level = arr.transpose(1, 0, 2).reshape(levels, -1)  # [K, B*T]
    counts = np.stack([np.bincount(row, minlength=codebook_size) for row in per_level]).astype(np.int64)
    n = per_level.shape[1]
    used, entropy, perplexity = [], [], []
    for row in counts:
        p = row[row > 0] / n
        h = float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0
        used.append(float((row > 0).sum()) / codebook_size)
        entropy.append(max(h, 0.0))
        perplexity.append(float(2.0 ** max(h, 0.0)))
    return CodebookUsage(codebook_size=codebook_size, num_frames=n, counts=counts, used_fraction=tuple(used),
                         entropy_bits=tuple(entropy), perplexity=tuple(perplexity))


def entropy_bitrate_bps(codes_or_usage: Union[CodebookUsage, Any], frame_rate: float,
                        codebook_size: Optional[int] = None) -> float:
    """Bits per second an ideal entropy coder would need: ``sum_k entropy_bits[k] * frame_rate``.

    Takes a :class:`CodebookUsage`, or codes ([B, K, T] or [K, T]) together with
    ``codebook_size``. Each level is coded independently with its own (empirical,
    order-0) distribution, so this is an upper bound for context-aware coders and at
    most :func:`bitrate_bps`.
    """
    frame_rate = _positive_real(frame_rate, "frame_rate")
    if isinstance(codes_or_usage, CodebookUsage):
        usage = codes_or_usage
    else:
        if codebook_size is None:
            raise MetricError("entropy_bitrate_bps needs codebook_size when given codes")
        usage = codebook_usage(codes_or_usage, codebook_size)
    return usage.total_entropy_bits * frame_rate
