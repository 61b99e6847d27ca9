"""`run_quality`: every output, the summary rows and bitrates, failed metrics kept out of the means."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mimi
from mimi.bench.quality import OUTPUT_FILES, list_audio_files, run_quality
from mimi.defaults import resolve_model
from mimi.errors import MimiError
from tests.helpers import make_model, speechlike

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = mimi.save(make_model(mimi.MimiConfig.tiny()), tmp_path_factory.mktemp("model") / "tiny.safetensors")
    return resolve_model(str(path))


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("wavs")
    (d / "sub").mkdir()
    files = {
        "a": d / "a.wav",
        "b": d / "sub" / "b.wav",  # 16 kHz stereo: mixed to mono and resampled
        "short": d / "short.wav",  # 0.1 s: too short for PESQ and (E)STOI
    }
    sf.write(files["a"], speechlike(2.0, seed=1), 24000)
    sf.write(files["b"], np.stack([speechlike(2.0, sr=16000, seed=2)] * 2, axis=1), 16000)
    sf.write(files["short"], speechlike(0.1, seed=3), 24000)
    return files


@pytest.fixture(scope="module")
def report(loaded, wavs, tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    out = tmp_path_factory.mktemp("out")
    return run_quality([wavs["a"], wavs["b"]], loaded, codebooks=(1, 8), baselines=("opus",), out_dir=out)


def test_writes_every_output(report):
    for name in OUTPUT_FILES:
        path = report.out_dir / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (report.out_dir / "quality_vs_bitrate.png").read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread  # a PNG matplotlib can read back, of a sensible size

    img = imread(report.out_dir / "quality_vs_bitrate.png")
    assert img.shape[0] > 300 and img.shape[1] > 600


def test_summary_rows_and_bitrates(report):
    rows = {(r.codec, r.setting): r for r in report.summary}
    assert list(rows) == [("mimi", "K=1"), ("mimi", "K=8"), ("opus", "6k"), ("opus", "8k"), ("opus", "12k")]
    assert rows["mimi", "K=8"].bitrate_bps == 8 * 6 * 12.5 == 600  # 64-entry codebooks: 6 bits
    assert rows["mimi", "K=1"].bitrate_bps == 75
    assert rows["opus", "8k"].bitrate_bps == 8000
    for r in rows.values():
        assert r.num_files == 2
        assert all(r.scored[m] == 2 and r.failed[m] == 0 for m in report.metrics)
        assert all(math.isfinite(r.means[m]) for m in report.metrics)
    # Opus at 12 kbps is near transparent on this audio; the random tiny Mimi is not
    assert rows["opus", "12k"].means["stoi"] > 0.8 > rows["mimi", "K=8"].means["stoi"]

    md = (report.out_dir / "summary.md").read_text()
    assert md.startswith("| codec | setting | kbps | PESQ | STOI | ESTOI |")
    assert "| mimi | K=8 | 0.600 |" in md and "| opus | 12k | 12.000 |" in md

    with open(report.out_dir / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["codec"], r["setting"]) for r in summary] == list(rows)
    assert float(summary[1]["bitrate_kbps"]) == 0.6 and summary[1]["stoi_failed"] == "0"

    with open(report.out_dir / "per_file.csv", newline="") as f:
        per_file = list(csv.DictReader(f))
    assert len(per_file) == 2 * 5 and all(r["errors"] == "" for r in per_file)

    data = json.loads((report.out_dir / "results.json").read_text())
    assert data["model_id"] == report.model_id and len(data["per_file"]) == 10
    assert data["codebooks"] == [1, 8] and data["skipped_baselines"] == []


def test_failed_metric_is_counted_and_excluded_from_the_mean(loaded, wavs, tmp_path):
    rep = run_quality([wavs["a"], wavs["short"]], loaded, codebooks=(8,), baselines=(), out_dir=tmp_path)
    (row,) = rep.summary
    per = {Path(r.file).name: r for r in rep.results}
    assert per["short.wav"].scores["stoi"] is None and "STOI" in per["short.wav"].errors["stoi"]
    assert per["short.wav"].scores["pesq"] is None and per["short.wav"].errors["pesq"]
    for metric in ("pesq", "stoi", "estoi"):
        assert row.failed[metric] == 1 and row.scored[metric] == 1
        assert row.means[metric] == pytest.approx(per["a.wav"].scores[metric])  # the mean of the others only
    assert row.failed["mel"] == 0 and row.scored["mel"] == 2

    md = (tmp_path / "summary.md").read_text()
    assert "(1 scored, 1 failed)" in md and "nan" not in md.lower()
    data = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN anywhere
    short = [r for r in data["per_file"] if r["file"].endswith("short.wav")][0]
    assert short["scores"]["stoi"] is None and "stoi" in short["errors"]
    assert data["summary"][0]["failed"]["stoi"] == 1
    with open(tmp_path / "per_file.csv", newline="") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    assert rows["short.wav"]["stoi"] == "" and "stoi:" in rows["short.wav"]["errors"]


def test_codebooks_are_clipped_and_folders_searched(loaded, wavs, tmp_path):
    folder = wavs["a"].parent
    assert sorted(p.name for p in list_audio_files(folder)) == ["a.wav", "b.wav", "short.wav"]
    rep = run_quality([wavs["b"]], loaded, codebooks=(4, 16, 32), baselines=(), out_dir=tmp_path)
    assert rep.codebooks == (4, 8)  # the tiny model has 8 codebooks
    assert [r.setting for r in rep.summary] == ["K=4", "K=8"]


def test_unreadable_file_is_reported_not_fatal(loaded, wavs, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    rep = run_quality([wavs["a"], bad], loaded, codebooks=(1,), baselines=(), out_dir=tmp_path / "out")
    assert rep.files == [str(wavs["a"])] and str(bad) in rep.file_errors
    with pytest.raises(MimiError, match="no input file could be read"):
        run_quality([bad], loaded, codebooks=(1,), baselines=(), out_dir=tmp_path / "out2")
    with pytest.raises(MimiError, match="no such file"):
        run_quality([tmp_path / "missing.wav"], loaded, baselines=(), out_dir=tmp_path / "out3")


def test_failing_codec_is_recorded_per_file(loaded, wavs, tmp_path):
    from mimi.bench.baselines import OpusBaseline

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    bad = OpusBaseline(name="opus-bad", bitrate_bps=5000.0, family="opus", setting="bad", tools=("ffmpeg",),
                       ffmpeg_bitrate="not-a-bitrate")
    rep = run_quality([wavs["a"]], loaded, codebooks=(), baselines=[bad], out_dir=tmp_path)
    (row,) = rep.summary
    assert all(row.failed[m] == 1 and row.means[m] is None for m in rep.metrics)
    assert "ffmpeg failed" in rep.results[0].errors["pesq"]
    assert "n/a (1 failed)" in (tmp_path / "summary.md").read_text()
