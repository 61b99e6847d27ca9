"""Quality metrics: PESQ / STOI / SI-SDR / mel distance, alignment, codebook statistics."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mimi.errors import MetricError, MimiError
from mimi.metrics import (
    QualityScores,
    align,
    bitrate_bps,
    codebook_usage,
    entropy_bitrate_bps,
    evaluate_pair,
    match_rate,
    mel_distance,
    pesq_wb,
    si_sdr,
    stoi,
    visqol_speech,
)
from tests.helpers import speechlike

RATES = [16000, 24000]


@pytest.fixture(scope="module", params=RATES, ids=lambda sr: f"{sr // 1000}k")
def speech(request):
    sr = request.param
    return speechlike(2.0, sr=sr, seed=7), sr


def _with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """x plus white noise scaled so that SI-SDR (zero-mean) is snr_db."""
    x = x.astype(np.float64)
    xc = x - x.mean()
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise -= noise.mean()
    noise -= xc * np.dot(noise, xc) / np.dot(xc, xc)  # exactly orthogonal to the reference
    noise *= np.sqrt(np.dot(xc, xc) / np.dot(noise, noise) / 10 ** (snr_db / 10))
    return x + noise


def _active(x: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    """The loudest `seconds`-long stretch of x (speechlike may start with a pause)."""
    n = int(seconds * sr)
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(n), mode="valid")
    start = int(np.argmax(energy))
    return x[start:start + n]


def test_metric_error_is_a_mimi_error():
    assert issubclass(MetricError, MimiError)


def test_identical_signals_score_perfectly(speech):
    x, sr = speech
    s = evaluate_pair(x, x, sr)
    assert isinstance(s, QualityScores) and s.errors == {}
    assert s.lag_samples == 0 and s.num_samples == len(x) and s.correlation == pytest.approx(1.0)
    assert s.pesq > 4.5 and s.stoi > 0.99 and s.estoi > 0.99
    assert s.si_sdr > 60 and s.mel == pytest.approx(0.0, abs=1e-9)
    assert s.visqol is None and "visqol" not in s.errors  # not requested


def test_delayed_copy_is_aligned_and_scores_like_the_original(speech):
    x, sr = speech
    late = np.concatenate([np.zeros(123, np.float32), x])  # codec-like: delayed, and longer
    s = evaluate_pair(x, torch.from_numpy(late)[None], sr)  # [1, T] torch input works too
    assert s.lag_samples == 123 and s.errors == {}
    assert s.num_samples == len(x) and s.correlation > 0.999
    assert s.pesq > 4.5 and s.stoi > 0.99 and s.estoi > 0.99 and s.si_sdr > 60

    a = align(x, x[50:], sr)  # degraded early: negative lag
    assert a.lag_samples == -50 and len(a.reference) == len(a.degraded) == len(x) - 50
    np.testing.assert_allclose(a.reference, a.degraded)


def test_align_respects_max_lag():
    sr = 16000
    x = speechlike(1.0, sr=sr, seed=2)
    late = np.concatenate([np.zeros(800, np.float32), x])
    assert align(x, late, sr, max_lag_seconds=0.1).lag_samples == 800
    assert align(x, late, sr, max_lag_seconds=0.0).lag_samples == 0
    assert align(x, late, sr, max_lag_seconds=0.01).lag_samples != 800  # out of range


def test_align_long_signal_matches_brute_force_correlation():
    from mimi.metrics.align import _xcorr

    rng = np.random.default_rng(0)
    ref, deg = rng.standard_normal(150_000), rng.standard_normal(140_000)  # several FFT blocks
    lags = range(-40, 41)
    brute = [np.dot(ref[max(0, -k):min(len(ref), len(deg) - k)], deg[max(0, k):min(len(deg), len(ref) + k)])
             for k in lags]
    np.testing.assert_allclose(_xcorr(ref, deg, 40), brute, atol=1e-8)

    x = speechlike(5.0, sr=16000, seed=1)  # 80k samples: more than one block
    assert align(x, x[321:], 16000).lag_samples == -321
    assert align(x, np.concatenate([np.zeros(7999), x]), 16000).lag_samples == 7999


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_si_sdr_matches_known_snr(snr_db):
    x = speechlike(2.0, sr=16000, seed=3)
    y = _with_noise(x, snr_db)
    assert si_sdr(x, y) == pytest.approx(snr_db, abs=0.5)
    assert si_sdr(x, 0.25 * y) == pytest.approx(si_sdr(x, y), abs=1e-6)  # scale-invariant
    # Ordinary (not orthogonalised) white noise at the same power also lands within 0.5 dB.
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(len(x))
    xc = x.astype(np.float64) - x.mean()
    noise *= np.sqrt(np.dot(xc, xc) / np.dot(noise, noise) / 10 ** (snr_db / 10))
    assert si_sdr(x, x + noise) == pytest.approx(snr_db, abs=0.5)


def test_noise_lowers_the_perceptual_scores(speech):
    x, sr = speech
    clean, noisy = evaluate_pair(x, _with_noise(x, 20.0), sr), evaluate_pair(x, _with_noise(x, 5.0), sr)
    assert clean.errors == {} and noisy.errors == {}
    assert 4.5 > clean.pesq > noisy.pesq and 1.0 > clean.stoi > noisy.stoi and clean.estoi > noisy.estoi
    assert 0 < clean.mel < noisy.mel


def test_failing_metrics_raise_metric_error():
    sr = 16000
    x = speechlike(2.0, sr=sr, seed=4)
    silence = np.zeros_like(x)
    with pytest.raises(MetricError, match="silent"):
        pesq_wb(silence, silence, sr)
    with pytest.raises(MetricError, match="silent"):
        pesq_wb(x, silence, sr)
    with pytest.raises(MetricError, match="PESQ failed"):  # the pesq package's own error, wrapped
        pesq_wb(_active(x, sr, 0.1), _active(x, sr, 0.1), sr)
    short = _active(x, sr, 0.1)
    with pytest.raises(MetricError, match="STOI needs"):
        stoi(short, short, sr)
    with pytest.raises(MetricError, match="ESTOI needs"):
        stoi(short, short, sr, extended=True)
    # Long enough, but too little left after STOI's silence removal (pystoi would return 1e-5).
    sparse = np.zeros(sr, np.float32)
    sparse[4000:4000 + len(short)] = short
    with pytest.raises(MetricError, match="active speech"):
        stoi(sparse, sparse, sr)
    with pytest.raises(MetricError, match="silent"):
        stoi(silence, x, sr)
    with pytest.raises(MetricError, match="silent"):
        si_sdr(silence, x)
    with pytest.raises(MetricError, match="equal length"):
        si_sdr(x, x[:-1])
    with pytest.raises(MetricError, match="equal length"):
        mel_distance(x, x[:-1], sr)


def test_evaluate_pair_records_failures_as_none():
    sr = 24000
    x = speechlike(2.0, sr=sr, seed=5)
    s = evaluate_pair(x, np.zeros_like(x), sr)
    assert s.pesq is None and "silent" in s.errors["pesq"]
    assert s.si_sdr is None and "silent" in s.errors["si_sdr"]
    assert s.stoi is not None and s.stoi < 0.05  # silent output is (correctly) unintelligible
    assert s.mel is not None and s.mel > 1.0
    assert set(s.errors) == {"pesq", "si_sdr"}

    short = _active(x, sr, 0.1)
    s = evaluate_pair(short, short, sr, metrics=("stoi", "si_sdr"))
    assert s.stoi is None and "STOI needs" in s.errors["stoi"]
    assert s.si_sdr > 60 and s.pesq is None and set(s.errors) == {"stoi"}
    for name, value in s.scores().items():
        assert value is None or np.isfinite(value), name
    assert s.to_dict()["errors"] == s.errors

    broken = x.copy()
    broken[100:110] = np.nan  # a diverged model: every requested metric fails, nothing is faked
    s = evaluate_pair(x, broken, sr, metrics=("pesq", "mel"))
    assert s.pesq is None and s.mel is None and set(s.errors) == {"pesq", "mel"}
    assert "10 NaN" in s.errors["mel"]
    with pytest.raises(MetricError, match="NaN"):  # a broken reference is the caller's problem
        evaluate_pair(broken, x, sr)
    with pytest.raises(MetricError, match="unknown metric"):
        evaluate_pair(x, x, sr, metrics=("pesq", "mos"))


def test_input_shapes():
    sr = 16000
    x = speechlike(0.5, sr=sr, seed=6)
    assert si_sdr(torch.from_numpy(x)[None], x[None]) > 60  # [1, T] numpy and torch
    with pytest.raises(MetricError, match="2 channels"):
        evaluate_pair(np.stack([x, x]), x, sr)
    with pytest.raises(MetricError, match="mono"):
        si_sdr(torch.from_numpy(np.stack([x, x])), x)
    with pytest.raises(MetricError, match="empty"):
        align(np.zeros(0), x, sr)
    with pytest.raises(MetricError, match="NaN"):
        mel_distance(np.full_like(x, np.nan), x, sr)


def test_match_rate_resamples_mono():
    t = np.arange(8000) / 16000  # tones well inside every passband survive 16k -> 24k -> 16k
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)
    up = match_rate(torch.from_numpy(x)[None], 16000, 24000)
    assert up.shape == (12000,) and up.dtype == np.float64
    back = match_rate(up, 24000, 16000)
    assert back.shape == x.shape
    assert si_sdr(x[500:-500], back[500:-500]) > 30
    np.testing.assert_array_equal(match_rate(x, 16000, 16000), x.astype(np.float64))


def test_codebook_usage_and_entropy():
    uniform = np.tile(np.arange(8), 50)[None]  # [K=1, T=400], 8 of 16 entries, equally often
    u = codebook_usage(uniform, 16)
    assert u.entropy_bits == (pytest.approx(3.0),) and u.perplexity == (pytest.approx(8.0),)
    assert u.used_fraction == (0.5,) and u.num_frames == 400 and u.counts.shape == (1, 16)

    codes = torch.zeros(2, 3, 40, dtype=torch.long)  # [B, K, T]
    codes[:, 1] = torch.arange(40) % 4  # level 1: uniform over 4 -> 2 bits
    codes[:, 2, :20] = 5  # level 2: two codes, half each -> 1 bit
    u = codebook_usage(codes, 2048)
    assert u.num_levels == 3 and u.num_frames == 80
    assert u.entropy_bits == pytest.approx((0.0, 2.0, 1.0)) and u.perplexity == pytest.approx((1.0, 4.0, 2.0))
    assert u.used_fraction == pytest.approx((1 / 2048, 4 / 2048, 2 / 2048))
    assert entropy_bitrate_bps(u, 12.5) == pytest.approx(3.0 * 12.5)
    assert entropy_bitrate_bps(codes, 12.5, codebook_size=2048) == pytest.approx(3.0 * 12.5)

    with pytest.raises(MetricError, match=r"\[0, 4\)"):
        codebook_usage(np.array([[0, 1, 4]]), 4)
    with pytest.raises(MetricError, match="integers"):
        codebook_usage(torch.zeros(1, 4), 4)
    with pytest.raises(MetricError, match="empty"):
        codebook_usage(np.zeros((1, 0), np.int64), 4)


def test_bitrate():
    assert bitrate_bps(8, 2048, 12.5) == 1100.0
    assert bitrate_bps(32, 2048, 12.5) == 4400.0
    assert bitrate_bps(8, 2048, 12.5, channels=2) == 2200.0
    with pytest.raises(MetricError):
        bitrate_bps(0, 2048, 12.5)


def test_visqol_without_the_package_is_a_metric_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "visqol", None)  # makes `import visqol` fail
    x = speechlike(0.5, sr=16000, seed=9)
    with pytest.raises(MetricError, match="pip install visqol-python"):
        visqol_speech(x, x, 16000)
    s = evaluate_pair(x, x, 16000, metrics=("si_sdr", "visqol"))
    assert s.visqol is None and "visqol-python" in s.errors["visqol"] and s.si_sdr > 60
