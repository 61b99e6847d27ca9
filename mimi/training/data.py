"""Training data: random fixed-length crops of a folder or manifest of audio files.

A *source* is

* a folder, searched recursively (symlinked folders not followed) for audio files by
  extension (case-insensitive: ``wav flac ogg oga mp3 aiff aif au opus``); hidden files and
  folders are skipped; sorted by path relative to the folder;
* a ``.jsonl`` manifest: one JSON object per line with an ``"audio"`` or ``"path"`` key (the
  ``mimi corpus`` manifests use ``"path"``); blank lines are skipped;
* a ``.txt`` / ``.lst`` manifest: one path per line; blank lines and ``#`` comments skipped.

Relative paths in a manifest are resolved against the manifest's folder.

:class:`AudioCropDataset` item ``i`` depends only on ``(seed, epoch, i)``: the same whatever
the DataLoader's ``num_workers``, its worker assignment or the order items are asked for.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Iterator, Optional, Union

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from mimi.audio import open_audio, resample, resampled_length
from mimi.errors import AudioReadError, MimiError
from mimi.tokens.inputs import list_inputs

__all__ = ["AudioCropDataset", "EvalClips", "list_audio"]

PathLike = Union[str, "os.PathLike[str]"]

# Extra source samples read on each side of a crop that needs resampling, so that the
# resampler's edge transients fall outside the kept window.
_RESAMPLE_MARGIN_S = 0.05
# Crop starts are aligned to the common grid of both rates when its step is at most this many
# output samples (0.1 s at 24 kHz); for odd rates they are not (a sub-sample shift, harmless).
_MAX_ALIGN_STEP = 2400


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def _entries(source: PathLike) -> list[tuple[Path, str]]:
    """(path to read, name) for every file of ``source``: the same listing as `mimi tokens`."""
    return [(f.path, f.rel) for f in list_inputs(source)]


def list_audio(source: PathLike) -> list[Path]:
    """The audio files of ``source`` (a folder or a manifest; see the module docstring).

    Raises:
        MimiError: the source is missing, holds no audio files, is not a folder or manifest,
            or the manifest is unreadable or malformed.
    """
    return [path for path, _ in _entries(source)]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read(f: sf.SoundFile, path: Path, start: int, frames: int) -> np.ndarray:
    """Mono float32 samples ``[start, start + frames)`` of an open file."""
    try:
        if start:
            f.seek(start)
        data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AudioReadError(f"{path}: cannot decode audio ({first})") from None
    if not np.isfinite(data).all():
        raise AudioReadError(f"{path}: contains NaN/Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32)


def _to_rate(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return x
    return resample(torch.from_numpy(x)[None], from_rate, to_rate)[0].numpy()


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad (at the end) to exactly ``n`` samples."""
    if x.size >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - x.size, dtype=np.float32)])


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise MimiError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_range(name: str, value: object) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise MimiError(f"{name} must be a (low, high) pair of numbers or None, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise MimiError(f"{name} must be a finite (low, high) pair with low <= high, got {value!r}")
    return lo, hi


class AudioCropDataset(Dataset):
    """Random ``segment_samples``-long mono crops of the audio files of ``source``.

    Item ``i`` is a float32 tensor ``[1, segment_samples]`` at ``sample_rate``:

    1. a file: the items ``[k * N, (k + 1) * N)`` (``N`` files) visit every file once, in an
       order shuffled by ``(seed, epoch, k)``;
    2. a random window of the file: only that window is read (plus a 50 ms margin each side
       when the file's rate differs, so resampling edge effects are cut away), resampled with
       soxr to ``sample_rate`` and downmixed to mono; files shorter than the segment are
       zero-padded at the end. With resampling, the window starts where both rates' sample grids
       meet (every 80 output samples from 44.1 kHz, 3 from 16 kHz), so the crop matches the
       whole file resampled;
    3. a random gain, uniform in ``gain_db`` (``None``: no gain); samples are not clipped;
    4. if ``noise_snr_db`` is given: white Gaussian noise at an SNR uniform in that range,
       relative to the crop's power (a silent crop stays silent).

    All randomness comes from a generator seeded with ``(seed, epoch, i)``, so items do not
    depend on DataLoader workers. The epoch lives in shared memory: :meth:`set_epoch` before
    iterating reaches persistent workers too.

    Args:
        source: folder or manifest (see the module docstring).
        segment_samples: crop length in samples at ``sample_rate``.
        sample_rate: output rate.
        gain_db: (low, high) in dB, or None.
        noise_snr_db: (low, high) in dB, or None for no noise.
        seed: non-negative integer.
        length: ``len(dataset)`` (default: the number of files).

    Raises:
        MimiError: bad arguments or source; :class:`~mimi.errors.AudioReadError` (naming the
            file) when an item's file is missing or unreadable.
    """

    def __init__(self, source: PathLike, *, segment_samples: int, sample_rate: int = 24000,
                 gain_db: Optional[Sequence[float]] = (-10.0, 6.0),
                 noise_snr_db: Optional[Sequence[float]] = None, seed: int = 0,
                 length: Optional[int] = None) -> None:
        self.segment_samples = _check_int("segment_samples", segment_samples, 1)
        self.sample_rate = _check_int("sample_rate", sample_rate, 1)
        self.gain_db = _check_range("gain_db", gain_db)
        self.noise_snr_db = _check_range("noise_snr_db", noise_snr_db)
        self.seed = _check_int("seed", seed, 0)
        self.files = list_audio(source)
        self.length = len(self.files) if length is None else _check_int("length", length, 1)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Use the crops of ``epoch`` (call before iterating; reaches running workers too)."""
        self._epoch.fill_(_check_int("epoch", epoch, 0))

    def _file_index(self, epoch: int, index: int) -> int:
        n = len(self.files)
        block, pos = divmod(index, n)
        key = (epoch, block)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) >= 4:
                self._perms.pop(next(iter(self._perms)))
            perm = np.random.default_rng([self.seed, epoch, block, 1]).permutation(n)
            self._perms[key] = perm
        return int(perm[pos])

    def __getitem__(self, index: int) -> torch.Tensor:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"dataset index must be an integer, got {index!r}")
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} items")
        epoch = self.epoch
        path = self.files[self._file_index(epoch, index)]
        rng = np.random.default_rng([self.seed, epoch, index, 0])
        x = self._crop(path, rng)
        if self.gain_db is not None:
            x = x * np.float32(10.0 ** (rng.uniform(*self.gain_db) / 20.0))
        if self.noise_snr_db is not None:
            snr = rng.uniform(*self.noise_snr_db)
            power = float(np.mean(x.astype(np.float64) ** 2))
            noise = rng.standard_normal(x.size)
            if power > 0:
                x = x + (noise * math.sqrt(power / 10.0 ** (snr / 10.0))).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]

    def _crop(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        seg, out_rate = self.segment_samples, self.sample_rate
        with open_audio(path) as f:
            rate, frames = int(f.samplerate), int(f.frames)
            if rate == out_rate:
                if frames <= seg:
                    return _fit(_read(f, path, 0, frames), seg)
                start = int(rng.integers(0, frames - seg + 1))
                return _fit(_read(f, path, start, seg), seg)
            total = resampled_length(frames, rate, out_rate)
            if total <= seg:
                return _fit(_to_rate(_read(f, path, 0, frames), rate, out_rate), seg)
            # Start on a sample where the input and output grids meet (every 80 output samples for
            # 44.1 -> 24 kHz), so the crop is exactly a window of the whole file resampled.
            g = math.gcd(rate, out_rate)
            out_step, in_step = (out_rate // g, rate // g) if out_rate // g <= _MAX_ALIGN_STEP else (1, 1)
            start_out = int(rng.integers(0, (total - seg) // out_step + 1)) * out_step
            src_start = start_out * rate // out_rate
            need = -(-seg * rate // out_rate) + 1
            margin = -(-int(math.ceil(_RESAMPLE_MARGIN_S * rate)) // in_step) * in_step
            a = max(0, src_start - margin)
            b = min(frames, src_start + need + margin)
            y = _to_rate(_read(f, path, a, b - a), rate, out_rate)
            offset = ((src_start - a) * out_rate + rate // 2) // rate
            return _fit(y[offset:], seg)


# --------------------------------------------------------------------------------------------
# Evaluation clips
# --------------------------------------------------------------------------------------------


def _interleave_by_folder(entries: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Round robin over parent folders (in sorted order), so the first clips cover every folder."""
    groups: dict[str, list[tuple[Path, str]]] = {}
    for e in entries:
        groups.setdefault(e[1].rsplit("/", 1)[0] if "/" in e[1] else "", []).append(e)
    out: list[tuple[Path, str]] = []
    lists = [groups[k] for k in sorted(groups)]
    for i in range(max(len(g) for g in lists)):
        out.extend(g[i] for g in lists if i < len(g))
    return out


class EvalClips(Sequence):
    """Whole held-out files for evaluation, loaded once: a sequence of ``(name, tensor [1, T])``.

    Each file is read from its start, at most ``max_seconds`` of it (``None``: all), downmixed
    to mono and resampled with soxr to ``sample_rate``. ``name`` is the path relative to the
    folder, or as written in the manifest. A manifest keeps its order; a folder's files are
    interleaved round robin over their parent folders (``flite/slt``, ``festival/ked_diphone``,
    ...), so the first few clips cover every voice.

    Raises:
        MimiError: bad source or ``max_seconds``; AudioReadError for an unreadable file.
    """

    def __init__(self, source: PathLike, max_seconds: Optional[float] = None, *, sample_rate: int = 24000) -> None:
        if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, numbers.Real)
                                        or not math.isfinite(max_seconds) or max_seconds <= 0):
            raise MimiError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
        self.sample_rate = _check_int("sample_rate", sample_rate, 1)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        entries = _entries(source)
        if Path(os.fspath(source)).is_dir():
            entries = _interleave_by_folder(entries)
        self.clips: list[tuple[str, torch.Tensor]] = [(name, self._load(path)) for path, name in entries]

    def _load(self, path: Path) -> torch.Tensor:
        with open_audio(path) as f:
            rate, frames = int(f.samplerate), int(f.frames)
            if self.max_seconds is not None:
                # a little extra so the resampler's tail is cut, not zero-faded
                frames = min(frames, int(math.ceil(self.max_seconds * rate)) + int(_RESAMPLE_MARGIN_S * rate))
            x = _to_rate(_read(f, path, 0, frames), rate, self.sample_rate)
        if self.max_seconds is not None:
            x = x[: int(round(self.max_seconds * self.sample_rate))]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index):  # type: ignore[override]
        return self.clips[index]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.clips)

    @property
    def seconds(self) -> float:
        """Total duration of the clips."""
        return sum(c.shape[-1] for _, c in self.clips) / self.sample_rate
