"""Baseline speech codecs for ``mimi bench quality``, run through their real command-line tools.

* Opus (``ffmpeg`` built with ``libopus``): ``-c:a libopus -b:a {6k,8k,12k} -application voip`` into
  an Ogg/Opus file, decoded back to 24 kHz by ffmpeg.
* Codec2 (``c2enc`` / ``c2dec``): the audio is resampled to 8 kHz 16-bit raw (s16le), encoded and
  decoded in modes 700C, 1200 and 3200, and resampled back to 24 kHz.

Every baseline takes and returns mono float32 audio at 24 kHz of the same length (the decoded
signal is cut or zero-padded at the end; any codec delay is left in, for the metrics' own
alignment to measure). :func:`available_baselines` turns names into baselines and reports, rather
than fails on, those whose tool is not installed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import soundfile as sf
import torch

from mimi.audio import resample
from mimi.errors import MimiError

__all__ = [
    "SAMPLE_RATE",
    "Baseline",
    "OpusBaseline",
    "Codec2Baseline",
    "OPUS_BITRATES",
    "CODEC2_MODES",
    "BASELINE_FAMILIES",
    "all_baselines",
    "available_baselines",
]

SAMPLE_RATE = 24000
"""Rate of the audio every baseline takes and returns."""

OPUS_BITRATES = ("6k", "8k", "12k")
"""ffmpeg ``-b:a`` values of the Opus baselines."""

CODEC2_MODES = {"700C": 700, "1200": 1200, "3200": 3200}
"""Codec2 modes (as ``c2enc`` spells them) and their bitrates in bit/s."""

CODEC2_RATE = 8000

PathLike = Union[str, "os.PathLike[str]"]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _run_tool(cmd: list[str]) -> None:
    """Run ``cmd``; a failure becomes a :class:`MimiError` quoting the tool's last stderr line."""
    try:
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, errors="replace")
    except FileNotFoundError:
        raise MimiError(f"{cmd[0]}: command not found") from None
    except subprocess.CalledProcessError as exc:
        raise MimiError(f"{cmd[0]} failed (exit status {exc.returncode}): "
                        f"{_last_line(exc.stderr or exc.stdout)}") from None


def _check_input(wav: np.ndarray) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1 or x.size == 0:
        raise MimiError(f"a baseline codec takes non-empty mono audio (1-D), got shape {tuple(np.shape(wav))}")
    if not np.all(np.isfinite(x)):
        raise MimiError("a baseline codec takes finite audio samples (found NaN or infinity)")
    return x


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Cut ``x`` to ``n`` samples, or zero-pad its end."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size >= n:
        return np.ascontiguousarray(x[:n])
    return np.concatenate([x, np.zeros(n - x.size, dtype=np.float32)])


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2")


@dataclass(frozen=True)
class Baseline:
    """One baseline codec at one setting.

    ``name`` is unique (``opus-6k``, ``codec2-700C``), ``family`` groups the settings of one codec
    (``opus``, ``codec2``), ``setting`` is the short label of this one (``6k``, ``700C``),
    ``bitrate_bps`` the nominal bitrate and ``tools`` the executables it needs.
    """

    name: str
    bitrate_bps: float
    family: str
    setting: str
    tools: tuple[str, ...]

    def run(self, wav_24k_mono: np.ndarray, workdir: PathLike) -> np.ndarray:
        """Encode and decode mono 24 kHz audio; returns float32 of the same length and rate.

        Temporary files go to ``workdir`` (which must exist). A failing tool raises
        :class:`MimiError` with its last line of stderr.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class OpusBaseline(Baseline):
    """Opus through ffmpeg's libopus encoder (VoIP mode), in an Ogg container."""

    ffmpeg_bitrate: str = "6k"

    def run(self, wav_24k_mono: np.ndarray, workdir: PathLike) -> np.ndarray:
        x = _check_input(wav_24k_mono)
        work = Path(workdir)
        src, coded, out = work / f"{self.name}.in.wav", work / f"{self.name}.opus", work / f"{self.name}.out.wav"
        sf.write(str(src), x, SAMPLE_RATE, subtype="FLOAT")
        quiet = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        _run_tool(quiet + ["-i", str(src), "-c:a", "libopus", "-b:a", self.ffmpeg_bitrate,
                           "-application", "voip", "-f", "ogg", str(coded)])
        _run_tool(quiet + ["-i", str(coded), "-ar", str(SAMPLE_RATE), "-ac", "1", "-c:a", "pcm_f32le", str(out)])
        try:
            y, rate = sf.read(str(out), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise MimiError(f"cannot read ffmpeg's decoded Opus audio: {exc}") from None
        if rate != SAMPLE_RATE:
            raise MimiError(f"ffmpeg decoded Opus at {rate} Hz instead of {SAMPLE_RATE} Hz")
        return _fit_length(y.mean(axis=1), x.size)


@dataclass(frozen=True)
class Codec2Baseline(Baseline):
    """Codec2 through ``c2enc`` / ``c2dec`` on 8 kHz 16-bit raw audio."""

    mode: str = "3200"

    def run(self, wav_24k_mono: np.ndarray, workdir: PathLike) -> np.ndarray:
        x = _check_input(wav_24k_mono)
        work = Path(workdir)
        src, coded, out = work / f"{self.name}.in.raw", work / f"{self.name}.c2", work / f"{self.name}.out.raw"
        x8 = resample(torch.from_numpy(x)[None], SAMPLE_RATE, CODEC2_RATE)[0].numpy()
        _to_int16(x8).tofile(str(src))
        _run_tool(["c2enc", self.mode, str(src), str(coded)])
        _run_tool(["c2dec", self.mode, str(coded), str(out)])
        y8 = np.fromfile(str(out), dtype="<i2").astype(np.float32) / 32768.0
        if y8.size == 0:
            return np.zeros_like(x)
        y = resample(torch.from_numpy(y8)[None], CODEC2_RATE, SAMPLE_RATE)[0].numpy()
        return _fit_length(y, x.size)


def _opus(bitrate: str) -> OpusBaseline:
    bps = float(bitrate.rstrip("k")) * 1000
    return OpusBaseline(name=f"opus-{bitrate}", bitrate_bps=bps, family="opus", setting=bitrate,
                        tools=("ffmpeg",), ffmpeg_bitrate=bitrate)


def _codec2(mode: str) -> Codec2Baseline:
    return Codec2Baseline(name=f"codec2-{mode}", bitrate_bps=float(CODEC2_MODES[mode]), family="codec2",
                          setting=mode, tools=("c2enc", "c2dec"), mode=mode)


def all_baselines() -> list[Baseline]:
    """Every baseline, whether or not its tool is installed."""
    return [_opus(b) for b in OPUS_BITRATES] + [_codec2(m) for m in CODEC2_MODES]


BASELINE_FAMILIES = ("opus", "codec2")
"""Names that expand to every setting of a codec."""


@functools.lru_cache(maxsize=8)
def _ffmpeg_has_libopus(ffmpeg: str) -> bool:
    try:
        res = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, errors="replace", timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[1:2] == ["libopus"] for line in res.stdout.splitlines())


def _missing(baseline: Baseline) -> str | None:
    """Why ``baseline`` cannot run here, or None when it can."""
    absent = [tool for tool in baseline.tools if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not found on PATH"
    if baseline.family == "opus" and not _ffmpeg_has_libopus(shutil.which("ffmpeg") or "ffmpeg"):
        return "ffmpeg has no libopus encoder"
    return None


def available_baselines(names: Iterable[str] = BASELINE_FAMILIES) -> tuple[list[Baseline], list[str]]:
    """The baselines named (``opus``, ``codec2`` or one setting such as ``opus-8k``) whose tools exist.

    Returns ``(baselines, skipped)``: ``skipped`` holds one line per baseline that cannot run
    here and why (a missing tool is reported, not an error). Unknown names raise
    :class:`MimiError`.
    """
    if isinstance(names, str):
        names = [names]
    every = all_baselines()
    by_name = {b.name: b for b in every}
    chosen: list[Baseline] = []
    for raw in names:
        name = raw.strip()
        if name in BASELINE_FAMILIES:
            picked = [b for b in every if b.family == name]
        elif name in by_name:
            picked = [by_name[name]]
        else:
            raise MimiError(f"unknown baseline {raw!r}; choose from {', '.join(BASELINE_FAMILIES)} "
                            f"or one of {', '.join(by_name)}")
        chosen.extend(b for b in picked if b not in chosen)
    usable: list[Baseline] = []
    skipped: list[str] = []
    for b in chosen:
        reason = _missing(b)
        if reason is None:
            usable.append(b)
        else:
            skipped.append(f"{b.name}: {reason}")
    return usable, skipped
