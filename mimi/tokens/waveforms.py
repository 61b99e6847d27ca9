"""Reading input files as the model hears them, in DataLoader worker processes.

`load_waveform` is THE preprocessing of `mimi tokens`: read the file at its own rate, downmix
to mono by averaging the channels (before resampling, which is linear, so the order only
changes rounding), resample to the model rate with soxr VHQ (`mimi.audio.resample`). Encode
`load_waveform(path)[None]` with the same model to reproduce a file's tokens exactly.

`WaveformDataset` wraps it as a map-style torch Dataset that never raises for a bad file: an
item holds either the waveform or a one-line error message, so one corrupt file cannot stop a
DataLoader. `collate_waveforms` right-pads a batch with zeros.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from mimi.audio import read_audio, resample
from mimi.errors import AudioReadError

__all__ = ["LoadedWaveform", "WaveformBatch", "WaveformDataset", "collate_waveforms", "load_waveform"]

PathLike = Union[str, "os.PathLike[str]"]


def load_waveform(path: PathLike, sample_rate: int = 24000) -> torch.Tensor:
    """Mono float32 ``[1, T]`` audio at `sample_rate`: channels averaged, then resampled.

    Raises:
        AudioReadError: the file is missing, unreadable, empty, holds NaN/Inf samples, or is
            too short to give a single sample at `sample_rate`.
    """
    audio = read_audio(path)
    x = audio.samples
    if x.shape[0] > 1:
        x = x.mean(dim=0, keepdim=True)
    x = resample(x, audio.sample_rate, sample_rate)
    if x.shape[-1] == 0:
        raise AudioReadError(f"{os.fspath(path)}: too short ({audio.num_samples} samples at "
                             f"{audio.sample_rate} Hz is less than one sample at {sample_rate} Hz)")
    if not torch.isfinite(x).all():
        raise AudioReadError(f"{os.fspath(path)}: NaN/Inf samples after resampling")
    return x.contiguous()


def one_line(exc: BaseException) -> str:
    """An exception as one line of text."""
    text = " ".join(str(exc).split())
    if isinstance(exc, AudioReadError) or not text:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class LoadedWaveform:
    """One item of a `WaveformDataset`: `wav` ``[1, T]``, or `error` when it could not be read."""

    index: int
    wav: Optional[torch.Tensor]
    error: Optional[str]


class WaveformDataset(Dataset):
    """Map-style Dataset: item i is `paths[i]` through `load_waveform`, errors caught."""

    def __init__(self, paths: Sequence[PathLike], sample_rate: int = 24000) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.sample_rate = int(sample_rate)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadedWaveform:
        try:
            return LoadedWaveform(index, load_waveform(self.paths[index], self.sample_rate), None)
        except Exception as exc:  # one bad file must not stop the run: report it, move on
            return LoadedWaveform(index, None, one_line(exc))


@dataclass(frozen=True)
class WaveformBatch:
    """A collated batch.

    Attributes:
        indices: dataset indices of the readable items, in `wav` order.
        lengths: their lengths in samples.
        wav: ``[B, 1, max(lengths)]`` zero right-padded, or None when no item was readable.
        errors: ``(index, message)`` for the items that could not be read.
    """

    indices: tuple[int, ...]
    lengths: tuple[int, ...]
    wav: Optional[torch.Tensor]
    errors: tuple[tuple[int, str], ...]

    def __len__(self) -> int:
        return len(self.indices) + len(self.errors)


def collate_waveforms(items: Sequence[LoadedWaveform]) -> WaveformBatch:
    """Right-pad the readable items with zeros to the longest one."""
    good = [it for it in items if it.wav is not None]
    errors = tuple((it.index, it.error or "unknown error") for it in items if it.wav is None)
    if not good:
        return WaveformBatch((), (), None, errors)
    lengths = tuple(int(it.wav.shape[-1]) for it in good)  # type: ignore[union-attr]
    wav = torch.zeros(len(good), 1, max(lengths), dtype=torch.float32)
    for row, it in enumerate(good):
        wav[row, :, : lengths[row]] = it.wav  # type: ignore[index]
    return WaveformBatch(tuple(it.index for it in good), lengths, wav, errors)
