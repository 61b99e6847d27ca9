"""`mimi bench quality` and `mimi bench speed` end to end, with a tiny model saved to a file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import pytest
import soundfile as sf
from click.testing import CliRunner

import mimi
from mimi_cli.bench import bench
from mimi_cli.main import main
from tests.helpers import make_model, speechlike




def _cli() -> click.Group:
    """`mimi` itself once `bench` is registered on it; until then a group holding just `bench`."""
    return main if "bench" in main.commands else click.Group("mimi", commands={"bench": bench})


def run(*args: str):
    return CliRunner().invoke(_cli(), ["bench", *args])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return mimi.save(make_model(mimi.MimiConfig.tiny()), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("wavs")
    paths = [d / "f1.wav", d / "f2.wav"]
    for i, p in enumerate(paths):
        sf.write(p, speechlike(2.0, seed=10 + i), 24000)
    return paths


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_quality_command(model_path, wavs, tmp_path):
    out = tmp_path / "res"
    result = run("quality", *map(str, wavs), "--model", str(model_path), "--codebooks", "1,8",
                 "--baselines", "opus", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "| mimi | K=8 | 0.600 |" in result.output and "| opus | 12k | 12.000 |" in result.output
    assert f"to {out}" in result.output
    for name in ("per_file.csv", "summary.csv", "summary.md", "results.json", "quality_vs_bitrate.png"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "results.json").read_text())["per_file"]) == 2 * 5


def test_quality_without_baselines_on_a_folder(model_path, wavs, tmp_path):
    out = tmp_path / "res"
    result = run("quality", str(wavs[0].parent), "--model", str(model_path), "--codebooks", "2",
                 "--baselines", "none", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert "2 files" in result.output and "| mimi | K=2 | 0.150 |" in result.output
    assert "opus" not in (out / "summary.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--codebooks", "x"], "'x' is not an integer"),
    (["--codebooks", "1,,8"], "comma-separated"),
    (["--codebooks", "0"], "must be >= 1"),
    (["--baselines", "mp3"], "unknown baseline 'mp3'"),
])
def test_quality_bad_lists_are_usage_errors(model_path, wavs, tmp_path, args, message):
    result = run("quality", str(wavs[0]), "--model", str(model_path), "--out", str(tmp_path / "o"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()


def test_quality_missing_input_is_an_error(model_path, tmp_path):
    result = run("quality", str(tmp_path / "nope.wav"), "--model", str(model_path), "--baselines", "none",
                 "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "no such file" in result.output and "Traceback" not in result.output


def test_speed_command(model_path, tmp_path):
    out = tmp_path / "speed"
    result = run("speed", "--model", str(model_path), "--batch-sizes", "1", "--seconds", "1", "--repeats", "1",
                 "--no-peers", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^\| mimi \| (encode|decode) \| 1 \| ([0-9.]+) \| ([0-9.]+) \|", result.output, re.M)
    assert sorted(op for op, *_ in rows) == ["decode", "encode"]
    assert all(float(med) > 0 for _, med, _ in rows)
    assert re.search(r"^\| mimi \| 100 \| [0-9.]+ \| [0-9.]+ \|", result.output, re.M)  # streaming p50 / p99
    data = json.loads((out / "speed.json").read_text())
    assert data["peers"] == [] and {r["operation"] for r in data["rows"]} == {"encode", "decode"}
    assert all(r["rtf_median"] > 0 and len(r["times_s"]) == 1 for r in data["rows"])
    assert (out / "speed.md").read_text().startswith("Model ")


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "1,x"], "'x' is not an integer"),
    (["--seconds", "0"], "--seconds"),
    (["--repeats", "0"], "--repeats"),
    (["--dtype", "float64"], "--dtype"),
])
def test_speed_bad_arguments_are_usage_errors(model_path, args, message):
    result = run("speed", "--model", str(model_path), "--no-peers", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_speed_with_transformers_peer_on_the_same_weights(model_path):
    pytest.importorskip("transformers")
    result = run("speed", "--model", str(model_path), "--batch-sizes", "1", "--seconds", "1", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\| transformers \| encode \| 1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| .* \| [0-9.]+x \|$",
                     result.output, re.M), result.output
    # identical weights: identical codes (1 s = 12 whole frames are compared)
    assert "transformers codes agree with ours on 100.0% of entries" in result.output
