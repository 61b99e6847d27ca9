"""Baseline codecs (Opus through ffmpeg, Codec2 through c2enc / c2dec) and their discovery."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mimi.bench import baselines as bl
from mimi.bench.baselines import Codec2Baseline, OpusBaseline, available_baselines
from mimi.errors import MimiError
from mimi.metrics import align
from tests.helpers import speechlike

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
needs_codec2 = pytest.mark.skipif(shutil.which("c2enc") is None or shutil.which("c2dec") is None,
                                  reason="codec2 (c2enc / c2dec) not installed")


def _envelope(x: np.ndarray, win: int = 720, hop: int = 240) -> np.ndarray:
    """Frame RMS (30 ms frames, 10 ms hop at 24 kHz)."""
    n = 1 + (len(x) - win) // hop
    return np.array([np.sqrt(np.mean(x[i * hop:i * hop + win] ** 2)) for i in range(n)])


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speechlike(2.0, seed=5)


def _by_family(family: str) -> list[bl.Baseline]:
    found, skipped = available_baselines([family])
    if not found:
        pytest.skip(f"no {family} baseline here: {skipped}")
    return found


def test_names_bitrates_and_expansion():
    every = bl.all_baselines()
    assert [b.name for b in every] == ["opus-6k", "opus-8k", "opus-12k", "codec2-700C", "codec2-1200",
                                       "codec2-3200"]
    assert [b.bitrate_bps for b in every] == [6000, 8000, 12000, 700, 1200, 3200]
    assert all(isinstance(b, bl.Baseline) for b in every)
    with pytest.raises(Exception):  # frozen
        every[0].bitrate_bps = 1  # type: ignore[misc]


@needs_ffmpeg
def test_opus_round_trip(speech, tmp_path):
    found = _by_family("opus")
    assert [b.setting for b in found] == ["6k", "8k", "12k"]
    for b in found:
        out = b.run(speech, tmp_path)
        assert out.dtype == np.float32 and out.shape == speech.shape
        # a waveform codec: the aligned waveforms correlate
        assert align(speech, out, 24000).correlation > 0.5, b.name


@needs_codec2
def test_codec2_round_trip(speech, tmp_path):
    found = _by_family("codec2")
    assert [b.setting for b in found] == ["700C", "1200", "3200"]
    for b in found:
        out = b.run(speech, tmp_path)
        assert out.dtype == np.float32 and out.shape == speech.shape
        assert np.all(np.isfinite(out)) and np.abs(out).max() > 0.01
        # Codec2 is parametric (it does not keep the waveform's phase), so the samples barely
        # correlate; the loudness envelope does.
        assert np.corrcoef(_envelope(speech), _envelope(out))[0, 1] > 0.5, b.name


def test_missing_tool_is_reported_and_skipped(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "c2enc" else real_which(name, *a, **k))
    found, skipped = available_baselines(["codec2"])
    assert found == []
    assert len(skipped) == 3 and all("c2enc not found" in s for s in skipped)
    assert skipped[0].startswith("codec2-700C:")

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    found, skipped = available_baselines(["opus", "codec2"])
    assert found == [] and len(skipped) == 6
    assert all("ffmpeg not found" in s for s in skipped[:3])


def test_unknown_baseline_is_an_error():
    with pytest.raises(MimiError, match="unknown baseline 'mp3'"):
        available_baselines(["mp3"])
    found, skipped = available_baselines(["opus-8k", "opus"])  # a single setting, no duplicates
    assert len(found) + len(skipped) == 3


@needs_ffmpeg
def test_tool_failure_quotes_its_stderr(speech, tmp_path):
    bad = OpusBaseline(name="opus-bad", bitrate_bps=1.0, family="opus", setting="bad", tools=("ffmpeg",),
                       ffmpeg_bitrate="not-a-bitrate")
    with pytest.raises(MimiError, match=r"^ffmpeg failed \(exit status \d+\): .+"):
        bad.run(speech, tmp_path)


@needs_codec2
def test_codec2_bad_mode_fails_cleanly(speech, tmp_path):
    bad = Codec2Baseline(name="codec2-bad", bitrate_bps=1.0, family="codec2", setting="bad",
                         tools=("c2enc", "c2dec"), mode="9999")
    with pytest.raises(MimiError, match=r"^c2enc failed"):
        bad.run(speech, tmp_path)


def test_rejects_bad_input(tmp_path):
    b = bl.all_baselines()[0]
    with pytest.raises(MimiError, match="mono"):
        b.run(np.zeros((2, 100), np.float32), tmp_path)
    with pytest.raises(MimiError, match="finite"):
        b.run(np.full(100, np.nan, np.float32), tmp_path)
