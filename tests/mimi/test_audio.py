"""Tests for audio I/O and resampling (``mimi.audio``)."""

from __future__ import annotations

import os
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf
import torch

import mimi.audio as audio_mod
from mimi.audio import (
    Audio,
    AudioInfo,
    StreamingResampler,
    audio_info,
    iter_audio_blocks,
    read_audio,
    resample,
    resampled_length,
    write_audio,
)
from mimi.errors import AudioReadError, MimiError


def sine(rate: int, seconds: float, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """[T, C] float32 sines, channel c at freq * (c + 1)."""
    t = np.arange(int(round(rate * seconds))) / rate
    cols = [amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def test_read_wav_int16(tmp_path: Path) -> None:
    data = sine(24_000, 0.5)
    path = tmp_path / "a.wav"
    sf.write(path, data, 24_000, subtype="PCM_16")
    audio = read_audio(path)
    assert isinstance(audio, Audio)
    assert audio.sample_rate == 24_000
    assert audio.samples.dtype == torch.float32
    assert audio.samples.shape == (1, 12_000)
    assert audio.channels == 1 and audio.num_samples == 12_000
    assert audio.duration_seconds == 0.5
    np.testing.assert_allclose(audio.samples[0].numpy(), data[:, 0], atol=1.0 / 32768)
    assert audio.samples.is_contiguous()


def test_read_float_wav_16k(tmp_path: Path) -> None:
    data = sine(16_000, 0.25)
    data[10, 0] = 1.5  # float files are not clipped on read
    path = tmp_path / "f.wav"
    sf.write(path, data, 16_000, subtype="FLOAT")
    audio = read_audio(str(path))
    assert audio.sample_rate == 16_000
    assert audio.samples.shape == (1, 4000)
    np.testing.assert_array_equal(audio.samples[0].numpy(), data[:, 0])


def test_read_stereo_flac_44k1(tmp_path: Path) -> None:
    data = sine(44_100, 0.3, channels=2)
    data[:, 1] *= 0.25  # make the channels distinguishable
    path = tmp_path / "s.flac"
    sf.write(path, data, 44_100, subtype="PCM_16")
    audio = read_audio(path)
    assert audio.sample_rate == 44_100
    assert audio.samples.shape == (2, data.shape[0])
    np.testing.assert_allclose(audio.samples.numpy(), data.T, atol=1.0 / 32768)
    info = audio_info(path)
    assert info == AudioInfo(sample_rate=44_100, channels=2, frames=data.shape[0], format="FLAC", subtype="PCM_16")
    assert info.duration_seconds == pytest.approx(0.3)


def test_read_wav_48k_pcm24(tmp_path: Path) -> None:
    data = sine(48_000, 0.2, channels=3)
    path = tmp_path / "x.wav"
    sf.write(path, data, 48_000, subtype="PCM_24")
    audio = read_audio(path)
    assert audio.sample_rate == 48_000
    assert audio.samples.shape == (3, 9600)
    np.testing.assert_allclose(audio.samples.numpy(), data.T, atol=1e-6)


@pytest.mark.parametrize("ext,fmt", [("ogg", "OGG"), ("mp3", "MP3")])
def test_read_lossy_formats(tmp_path: Path, ext: str, fmt: str) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile without {fmt}")
    data = sine(24_000, 1.0)
    path = tmp_path / f"x.{ext}"
    sf.write(path, data, 24_000, format=fmt)
    audio = read_audio(path)
    assert audio.sample_rate == 24_000
    assert audio.samples.shape[0] == 1
    assert abs(audio.samples.shape[1] - 24_000) < 2400
    assert audio.samples.abs().max() > 0.3  # it decoded to the sine, not silence


# --------------------------------------------------------------------------
# Read errors
# --------------------------------------------------------------------------


def _float_wav_with(tmp_path: Path, value: float) -> Path:
    data = sine(16_000, 0.1)
    data[5, 0] = value
    path = tmp_path / "bad.wav"
    sf.write(path, data, 16_000, subtype="FLOAT")
    return path


def _make_bad(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "missing":
        return tmp_path / "nope.wav", "no such file"
    if kind == "directory":
        d = tmp_path / "dir.wav"
        d.mkdir()
        return d, "is a directory"
    if kind == "empty":
        p = tmp_path / "empty.wav"
        p.write_bytes(b"")
        return p, "empty file"
    if kind == "text":
        p = tmp_path / "notes.txt"
        p.write_text("this is not audio\n" * 20)
        return p, "not a readable audio file"
    if kind == "garbage_wav":
        p = tmp_path / "garbage.wav"
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
        return p, "not a readable audio file"
    if kind == "truncated_header":
        p = tmp_path / "trunc.wav"
        sf.write(p, sine(16_000, 0.1), 16_000)
        p.write_bytes(p.read_bytes()[:20])
        return p, "not a readable audio file"
    if kind == "zero_samples":
        p = tmp_path / "zero.wav"
        sf.write(p, np.zeros((0, 1), np.float32), 16_000)
        assert p.stat().st_size > 0
        return p, "zero samples"
    raise AssertionError(kind)


BAD_KINDS = ["missing", "directory", "empty", "text", "garbage_wav", "truncated_header", "zero_samples"]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize(
    "reader",
    [read_audio, audio_info, lambda p: list(iter_audio_blocks(p, 1000))],
    ids=["read_audio", "audio_info", "iter_audio_blocks"],
)
def test_read_errors(tmp_path: Path, kind: str, reader: Callable[[Path], Any]) -> None:
    path, match = _make_bad(tmp_path, kind)
    with pytest.raises(AudioReadError, match=match) as info:
        reader(path)
    message = str(info.value)
    assert "\n" not in message
    assert os.fspath(path) in message
    assert isinstance(info.value, MimiError)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_read_nan_inf(tmp_path: Path, value: float) -> None:
    path = _float_wav_with(tmp_path, value)
    with pytest.raises(AudioReadError, match="contains NaN/Inf samples"):
        read_audio(path)
    with pytest.raises(AudioReadError, match="contains NaN/Inf samples"):
        list(iter_audio_blocks(path, 100))
    assert audio_info(path).frames == 1600  # the header alone is fine


def test_iter_blocks_fails_early_on_bad_file(tmp_path: Path) -> None:
    with pytest.raises(AudioReadError):
        iter_audio_blocks(tmp_path / "missing.wav", 10)  # no next() needed


@pytest.mark.parametrize("block", [0, -1, 1.5, True])
def test_iter_blocks_bad_block_size(tmp_path: Path, block: Any) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, sine(16_000, 0.1), 16_000)
    with pytest.raises(MimiError, match="block_frames"):
        iter_audio_blocks(path, block)


@pytest.mark.parametrize("block", [1, 999, 1000, 1001, 4410, 100_000])
def test_iter_blocks_matches_read(tmp_path: Path, block: int) -> None:
    data = sine(44_100, 0.1, channels=2)  # 4410 frames
    path = tmp_path / "s.flac"
    sf.write(path, data, 44_100)
    blocks = list(iter_audio_blocks(path, block))
    assert all(b.dtype == torch.float32 and b.shape[0] == 2 for b in blocks)
    assert all(b.shape[1] == block for b in blocks[:-1])
    assert 0 < blocks[-1].shape[1] <= block
    assert len(blocks) == -(-4410 // block)
    torch.testing.assert_close(torch.cat(blocks, dim=1), read_audio(path).samples, rtol=0, atol=0)


# --------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------


def test_resample_identity() -> None:
    x = torch.randn(2, 1234)
    y = resample(x, 24_000, 24_000)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    y64 = resample(x.double(), 16_000, 16_000)
    assert y64.dtype == torch.float32


@pytest.mark.parametrize("from_rate", [8_000, 16_000, 22_050, 24_000, 44_100, 48_000, 96_000])
@pytest.mark.parametrize("length", [0, 1, 2, 7, 1919, 1920, 44_101])
def test_resample_length(from_rate: int, length: int) -> None:
    x = torch.randn(2, length) * 0.1
    y = resample(x, from_rate, 24_000)
    expected = int(np.floor(length * 24_000 / from_rate + 0.5))
    assert resampled_length(length, from_rate, 24_000) == expected
    assert y.shape == (2, expected)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("from_rate", [16_000, 44_100, 48_000])
def test_resample_quality(from_rate: int) -> None:
    x = torch.from_numpy(sine(from_rate, 0.5, freq=1000.0).T.copy())
    y = resample(x, from_rate, 24_000)
    ref = sine(24_000, 0.5, freq=1000.0).T
    # Away from the edges a band-limited sine comes through essentially unchanged.
    np.testing.assert_allclose(y[:, 500:-500].numpy(), ref[:, 500:-500], atol=1e-3)


def test_resample_bad_args() -> None:
    with pytest.raises(MimiError, match="from_rate"):
        resample(torch.zeros(1, 10), 0, 24_000)
    with pytest.raises(MimiError, match="to_rate"):
        resample(torch.zeros(1, 10), 16_000, -1)
    with pytest.raises(MimiError, match="2-D"):
        resample(torch.zeros(10), 16_000, 24_000)


@pytest.mark.parametrize("from_rate,to_rate", [(44_100, 24_000), (16_000, 24_000), (48_000, 24_000), (22_050, 24_000), (24_000, 24_000)])
@pytest.mark.parametrize("channels,length", [(1, 30_011), (2, 9_601)])
def test_streaming_resampler_matches_whole(from_rate: int, to_rate: int, channels: int, length: int) -> None:
    gen = torch.Generator().manual_seed(from_rate + length)
    x = torch.randn(channels, length, generator=gen) * 0.3
    whole = resample(x, from_rate, to_rate)
    stream = StreamingResampler(from_rate, to_rate, channels)
    rng = np.random.default_rng(length)
    outs, i = [], 0
    while i < length:
        n = int(rng.integers(1, 4000))
        outs.append(stream.process(x[:, i : i + n]))
        i += n
    outs.append(stream.process(x[:, :0], last=True))
    assert stream.finished
    chunked = torch.cat(outs, dim=1)
    assert chunked.shape == whole.shape
    # Observed: bit-identical (max abs difference 0.0) with soxr 1.1.
    assert (chunked - whole).abs().max().item() < 1e-4


def test_streaming_resampler_last_chunk_nonempty() -> None:
    x = torch.randn(1, 5000)
    stream = StreamingResampler(16_000, 24_000, 1)
    out = torch.cat([stream.process(x[:, :3000]), stream.process(x[:, 3000:], last=True)], dim=1)
    assert out.shape == (1, 7500)
    with pytest.raises(MimiError, match="finished"):
        stream.process(x)


def test_streaming_resampler_errors() -> None:
    stream = StreamingResampler(16_000, 24_000, 2)
    with pytest.raises(MimiError, match="channels"):
        stream.process(torch.zeros(1, 100))
    with pytest.raises(MimiError):
        StreamingResampler(0, 24_000, 1)
    with pytest.raises(MimiError):
        StreamingResampler(16_000, 24_000, 0)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def test_write_wav_default_pcm16_and_clip(tmp_path: Path) -> None:
    x = torch.tensor([[0.0, 0.5, -0.5, 1.5, -1.5]])
    path = tmp_path / "o.wav"
    write_audio(path, x, 24_000)
    info = audio_info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels, info.frames) == ("WAV", "PCM_16", 24_000, 1, 5)
    y = read_audio(path).samples
    np.testing.assert_allclose(y.numpy(), [[0.0, 0.5, -0.5, 1.0, -1.0]], atol=1.0 / 32768)
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]


def test_write_float_not_clipped(tmp_path: Path) -> None:
    x = torch.tensor([[0.0, 1.5, -2.0]])
    path = tmp_path / "o.wav"
    write_audio(path, x, 16_000, subtype="FLOAT")
    torch.testing.assert_close(read_audio(path).samples, x, rtol=0, atol=0)


def test_write_flac_stereo_round_trip(tmp_path: Path) -> None:
    x = torch.from_numpy(sine(44_100, 0.2, channels=2).T.copy())
    path = tmp_path / "o.flac"
    write_audio(path, x, 44_100)
    a = read_audio(path)
    assert a.sample_rate == 44_100
    assert audio_info(path).format == "FLAC"
    torch.testing.assert_close(a.samples, x, rtol=0, atol=1.0 / 32768)


def test_write_bad_arguments(tmp_path: Path) -> None:
    x = torch.zeros(1, 10)
    with pytest.raises(MimiError, match="extension"):
        write_audio(tmp_path / "o.xyz", x, 16_000)
    with pytest.raises(MimiError, match="extension"):
        write_audio(tmp_path / "noext", x, 16_000)
    with pytest.raises(MimiError, match="subtype"):
        write_audio(tmp_path / "o.flac", x, 16_000, subtype="FLOAT")
    with pytest.raises(MimiError, match="NaN/Inf"):
        write_audio(tmp_path / "o.wav", torch.tensor([[0.0, float("nan")]]), 16_000)
    with pytest.raises(MimiError, match="sample_rate"):
        write_audio(tmp_path / "o.wav", x, 0)
    with pytest.raises(MimiError, match="2-D"):
        write_audio(tmp_path / "o.wav", torch.zeros(10), 16_000)
    with pytest.raises(MimiError, match="cannot write"):
        write_audio(tmp_path / "missing_dir" / "o.wav", x, 16_000)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.wav"
    path.write_bytes(b"previous")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio_mod.os, "replace", boom)
    with pytest.raises(MimiError, match="No space left"):
        write_audio(path, torch.zeros(1, 100), 16_000)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]


def test_write_atomic_encoder_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = audio_mod.sf.SoundFile.write

    def broken_write(self: Any, data: Any) -> None:
        real_write(self, data[:10])  # some samples reach the temp file first
        raise RuntimeError("encoder exploded\nsecond line")

    monkeypatch.setattr(audio_mod.sf.SoundFile, "write", broken_write)
    with pytest.raises(MimiError, match="encoder exploded") as info:
        write_audio(tmp_path / "o.wav", torch.zeros(1, 100), 16_000)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(audio_mod.sf.SoundFile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "o.wav", torch.zeros(1, 100), 16_000)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------


def test_audio_dataclass() -> None:
    a = Audio(samples=torch.zeros(2, 48_000), sample_rate=24_000)
    assert (a.channels, a.num_samples, a.duration_seconds) == (2, 48_000, 2.0)
    with pytest.raises(FrozenInstanceError):
        a.sample_rate = 1  # type: ignore[misc]
    with pytest.raises(MimiError):
        Audio(samples=torch.zeros(10), sample_rate=24_000)
    with pytest.raises(MimiError):
        Audio(samples=torch.zeros(1, 10), sample_rate=0)
    with pytest.raises(FrozenInstanceError):
        AudioInfo(1, 1, 1).frames = 2  # type: ignore[misc]
