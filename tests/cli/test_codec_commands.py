"""`mimi encode / decode / roundtrip / info` (and `convert` feeding them), end to end.

Each test drives the real command line (click's CliRunner, or a subprocess where the real exit
status and stderr matter) with a tiny model saved to a file once per module. Reference values
come from the library's offline path: `model.encode` on the input resampled with
`mimi.audio.resample`, and `model.decode` of those codes.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import mimi
import mimi.compress as compress
from mimi.audio import AudioWriter, read_audio, resample, resampled_length
from mimi.defaults import resolve_model
from mimi.errors import MimiError
from mimi.format import FIXED_OVERHEAD, MAX_HEADER_BYTES, read_mimi, write_mimi
from mimi.model import MimiModel
from mimi_cli.main import main
from tests.helpers import make_model, speechlike

FRAME = 1920  # samples per frame at 24 kHz
BITS = 6  # the tiny model has 64-entry codebooks


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return mimi.save(make_model(mimi.MimiConfig.tiny()), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def other_model_path(tmp_path_factory) -> Path:
    """Same architecture, other weights (another seed): another fingerprint."""
    return mimi.save(make_model(mimi.MimiConfig.tiny(), seed=1),
                     tmp_path_factory.mktemp("other") / "other.safetensors")


@pytest.fixture(scope="module")
def loaded(model_path):
    return resolve_model(str(model_path))


def _write(path: Path, data: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def _signal(seconds: float | None, sr: int, channels: int = 1, samples: int | None = None,
            seed: int = 0) -> np.ndarray:
    n = samples if samples is not None else int(round(seconds * sr))
    cols = [speechlike(max(n, sr // 10) / sr + 0.01, sr=sr, seed=seed + c)[:n] for c in range(channels)]
    return np.stack(cols, axis=1)  # [n, C]


def _can_write_ogg() -> bool:
    return "OGG" in sf.available_formats() and sf.check_format("OGG", "VORBIS")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    files = {
        "stereo_44k.flac": _write(d / "stereo_44k.flac", _signal(0.4, 44100, channels=2), 44100, "PCM_16"),
        "float_16k.wav": _write(d / "float_16k.wav", _signal(0.4, 16000, seed=3), 16000, "FLOAT"),
        "pcm_48k.wav": _write(d / "pcm_48k.wav", _signal(0.3, 48000, seed=4), 48000, "PCM_16"),
        "pcm_24k.wav": _write(d / "pcm_24k.wav", _signal(0.5, 24000, seed=5), 24000, "PCM_16"),
        "exact_2_frames_24k.wav": _write(d / "exact_2_frames_24k.wav", _signal(None, 24000, samples=2 * FRAME),
                                         24000, "PCM_16"),
        "short_500_24k.wav": _write(d / "short_500_24k.wav", _signal(None, 24000, samples=500), 24000, "PCM_16"),
        "short_100_16k.wav": _write(d / "short_100_16k.wav", _signal(None, 16000, samples=100), 16000, "PCM_16"),
        "3ch_8k.wav": _write(d / "3ch_8k.wav", _signal(0.25, 8000, channels=3, seed=7), 8000, "PCM_16"),
    }
    if _can_write_ogg():
        files["vorbis_22k.ogg"] = _write(d / "vorbis_22k.ogg", _signal(0.3, 22050, seed=9), 22050, "VORBIS")
    return files


INPUT_NAMES = ["stereo_44k.flac", "float_16k.wav", "pcm_48k.wav", "pcm_24k.wav", "exact_2_frames_24k.wav",
               "short_500_24k.wav", "short_100_16k.wav", "3ch_8k.wav", "vorbis_22k.ogg"]


@pytest.fixture(scope="module")
def encoded(inputs, model_path, tmp_path_factory) -> Path:
    """A valid .mimi file (0.5 s of 24 kHz mono, 7 frames), encoded once for the module."""
    out = tmp_path_factory.mktemp("encoded") / "speech.mimi"
    result = invoke("encode", inputs["pcm_24k.wav"], out, "--model", model_path)
    assert result.exit_code == 0, result.output
    return out


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, code: int = 1, *mentions: str) -> str:
    """Exit `code`, exactly one `Error: ...` line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    # a crash (uncaught exception) also exits 1 under CliRunner, with the exception recorded
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and lines[0] != "Error: ", result.stderr
    assert "Traceback" not in result.output
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    return lines[0]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def offline_codes(model: MimiModel, path: Path) -> np.ndarray:
    """[C, K, F] codes of `model.encode` on the file resampled to 24 kHz, one channel at a time."""
    audio = read_audio(path)
    x24 = resample(audio.samples, audio.sample_rate, model.sample_rate)
    with torch.inference_mode():
        return np.stack([model.encode(x24[c][None, None])[0].numpy() for c in range(x24.shape[0])])


# --------------------------------------------------------------------------------------------
# encode / decode on every kind of input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_encode_then_decode_restores_rate_channels_and_exact_length(name, inputs, model_path, loaded, tmp_path):
    if name not in inputs:
        pytest.skip("soundfile cannot write OGG/Vorbis here")
    src = inputs[name]
    info = sf.info(str(src))
    packed, restored = tmp_path / "a.mimi", tmp_path / "restored.wav"

    result = invoke("encode", src, packed, "--model", model_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {packed}") and result.stderr == ""

    mf = read_mimi(packed)
    h = mf.header
    assert (h.sample_rate, h.channels, h.num_samples) == (info.samplerate, info.channels, info.frames)
    assert h.num_frames == math.ceil(resampled_length(info.frames, info.samplerate, 24000) / FRAME)
    assert h.num_frames >= 1
    assert h.model_id == str(model_path.resolve()) and h.weights_fingerprint == loaded.fingerprint
    assert (h.num_codebooks, h.codebook_size, h.frame_rate) == (8, 64, 12.5)
    # the codes are exactly what the model gives offline on the resampled input, channel by channel
    np.testing.assert_array_equal(mf.codes, offline_codes(loaded.model, src))

    result = invoke("decode", packed, restored)  # the model comes from the header
    assert result.exit_code == 0, result.output
    out = sf.info(str(restored))
    assert (out.samplerate, out.channels, out.frames) == (info.samplerate, info.channels, info.frames)
    assert names(tmp_path) == ["a.mimi", "restored.wav"]


def test_decode_to_flac_and_ogg_restores_the_original_shape(encoded, tmp_path):
    h = read_mimi(encoded).header
    targets = ["out.flac"] + (["out.ogg"] if _can_write_ogg() else [])
    for target in targets:
        result = invoke("decode", encoded, tmp_path / target)
        assert result.exit_code == 0, result.output
        info = sf.info(str(tmp_path / target))
        assert (info.samplerate, info.channels, info.frames) == (h.sample_rate, h.channels, h.num_samples)
    assert names(tmp_path) == sorted(targets)


def test_encoding_is_deterministic(inputs, model_path, tmp_path):
    for name in ("a.mimi", "b.mimi"):
        assert invoke("encode", inputs["stereo_44k.flac"], tmp_path / name, "--model", model_path).exit_code == 0
    assert (tmp_path / "a.mimi").read_bytes() == (tmp_path / "b.mimi").read_bytes()


def test_truncated_wav_data_encodes_what_is_there(inputs, model_path, tmp_path):
    """A WAV cut in the middle of its data (mid-sample): soundfile reads up to the cut; that succeeds."""
    data = inputs["pcm_24k.wav"].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2 + 1])
    frames = sf.info(str(cut)).frames
    assert 0 < frames < sf.info(str(inputs["pcm_24k.wav"])).frames
    result = invoke("encode", cut, tmp_path / "cut.mimi", "--model", model_path)
    assert result.exit_code == 0, result.output
    assert read_mimi(tmp_path / "cut.mimi").header.num_samples == frames
    assert invoke("decode", tmp_path / "cut.mimi", tmp_path / "back.wav").exit_code == 0
    assert sf.info(str(tmp_path / "back.wav")).frames == frames


# --------------------------------------------------------------------------------------------
# roundtrip
# --------------------------------------------------------------------------------------------


def test_roundtrip_24k_matches_the_library_decode_of_encode(inputs, model_path, loaded, tmp_path):
    src = inputs["pcm_24k.wav"]
    result = invoke("roundtrip", src, tmp_path / "rt.wav", "--model", model_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {tmp_path / 'rt.wav'}")
    got, sr = sf.read(str(tmp_path / "rt.wav"), dtype="float32", always_2d=True)
    x, _ = sf.read(str(src), dtype="float32", always_2d=True)
    assert sr == 24000 and got.shape == x.shape
    with torch.inference_mode():
        ref = loaded.model.decode(loaded.model.encode(torch.from_numpy(x.T.copy())[:, None]))[:, 0, : len(x)]
    ref = np.clip(ref.numpy().T, -1, 1)
    # int16 quantisation of the output (1 LSB, 1.5 with libsndfile's 32767/32768 scaling) + float noise
    np.testing.assert_allclose(got, ref, rtol=0, atol=2 / 32768 + 1e-5)
    assert names(tmp_path) == ["rt.wav"]


def test_roundtrip_equals_encode_then_decode(inputs, model_path, tmp_path):
    src = inputs["stereo_44k.flac"]
    assert invoke("roundtrip", src, tmp_path / "rt.flac", "--model", model_path, "-q").exit_code == 0
    assert invoke("encode", src, tmp_path / "a.mimi", "--model", model_path).exit_code == 0
    assert invoke("decode", tmp_path / "a.mimi", tmp_path / "dec.flac").exit_code == 0
    a, sra = sf.read(str(tmp_path / "rt.flac"), dtype="int16", always_2d=True)
    b, srb = sf.read(str(tmp_path / "dec.flac"), dtype="int16", always_2d=True)
    assert sra == srb == 44100 and a.shape == b.shape == (sf.info(str(src)).frames, 2)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# --codebooks, file size, info
# --------------------------------------------------------------------------------------------


def _header_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[5:9], "little")


def test_codebooks_change_header_size_and_bitrate(inputs, model_path, tmp_path):
    src = inputs["stereo_44k.flac"]
    sizes, codes = {}, {}
    for k in (1, 4, 8):
        out = tmp_path / f"k{k}.mimi"
        result = invoke("encode", src, out, "--model", model_path, "--codebooks", k)
        assert result.exit_code == 0, result.output
        assert f"{k} codebooks" in result.stdout
        mf = read_mimi(out)
        h = mf.header
        assert h.num_codebooks == k and h.channels == 2
        hlen = _header_len(out)
        assert hlen < 1024 and hlen <= MAX_HEADER_BYTES
        assert FIXED_OVERHEAD == 13
        assert out.stat().st_size == hlen + math.ceil(h.channels * k * h.num_frames * BITS / 8) + 13
        sizes[k], codes[k] = out.stat().st_size, mf.codes

        info = json.loads(invoke("info", "--json", out).stdout)
        assert info["num_codebooks"] == k
        assert info["bitrate_bps"] == pytest.approx(k * BITS * 12.5 * 2)
        assert info["file_bytes"] == sizes[k]
    assert sizes[1] < sizes[4] < sizes[8]
    # residual quantisation: fewer codebooks are a prefix of more
    np.testing.assert_array_equal(codes[1], codes[8][:, :1])
    np.testing.assert_array_equal(codes[4], codes[8][:, :4])
    # a file with fewer codebooks decodes (the model is reloaded with the file's K)
    assert invoke("decode", tmp_path / "k1.mimi", tmp_path / "k1.wav").exit_code == 0
    info = sf.info(str(tmp_path / "k1.wav"))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, sf.info(str(src)).frames)


@pytest.mark.parametrize("k", ["0", "99", "-1", "x"])
@pytest.mark.parametrize("command", ["encode", "roundtrip"])
def test_codebooks_out_of_range_is_a_usage_error(command, k, inputs, model_path, tmp_path):
    out = tmp_path / "out" / ("x.mimi" if command == "encode" else "x.wav")
    out.parent.mkdir()
    result = invoke(command, inputs["pcm_24k.wav"], out, "--model", model_path, "--codebooks", k)
    assert result.exit_code == 2, result.output
    assert "--codebooks" in result.stderr and "Traceback" not in result.output
    assert names(out.parent) == []


def test_codebooks_above_the_models_count_is_one_line(inputs, model_path, tmp_path):
    result = invoke("encode", inputs["pcm_24k.wav"], tmp_path / "x.mimi", "--model", model_path, "--codebooks", 9)
    assert_clean_error(result, 1, "--codebooks", "9")
    assert names(tmp_path) == []


def test_info_text_and_json(inputs, model_path, loaded, tmp_path):
    src = inputs["stereo_44k.flac"]
    out = tmp_path / "s.mimi"
    assert invoke("encode", src, out, "--model", model_path, "--codebooks", 5).exit_code == 0
    h = read_mimi(out).header
    n = sf.info(str(src)).frames

    result = invoke("info", "--json", out)
    assert result.exit_code == 0 and result.stderr == ""
    d = json.loads(result.stdout)
    assert d["model_id"] == str(model_path.resolve())
    assert d["weights_fingerprint"] == loaded.fingerprint
    assert d["num_codebooks"] == 5 and d["codebook_size"] == 64
    assert d["num_frames"] == h.num_frames == math.ceil(resampled_length(n, 44100, 24000) / FRAME)
    assert d["duration_seconds"] == pytest.approx(n / 44100)
    assert d["sample_rate"] == 44100 and d["channels"] == 2 and d["num_samples"] == n
    assert d["bitrate_bps"] == pytest.approx(5 * BITS * 12.5 * 2)
    assert d["frame_rate"] == 12.5 and d["file_bytes"] == out.stat().st_size
    assert d["library_version"] == mimi.__version__ and d["path"] == str(out)

    result = invoke("info", out)
    assert result.exit_code == 0 and result.stderr == ""
    rows = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    rows = {k.strip(): v for k, v in rows.items()}
    assert rows["model"] == str(model_path.resolve())
    assert rows["fingerprint"] == loaded.fingerprint
    assert rows["codebooks"].startswith("5 of 64")
    assert rows["frames"] == f"{h.num_frames} at 12.5 Hz"
    assert rows["duration"] == f"{n / 44100:.3f} s"
    assert rows["original"].startswith("44100 Hz, 2 channel")
    assert rows["bitrate"] == f"{5 * BITS * 12.5 * 2 / 1000:.3f} kbps"
    assert rows["file size"] == f"{out.stat().st_size} bytes"


# --------------------------------------------------------------------------------------------
# which model decodes
# --------------------------------------------------------------------------------------------


def test_relative_model_path_is_recorded_absolute(inputs, model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(model_path.parent)
    result = invoke("encode", inputs["pcm_48k.wav"], tmp_path / "r.mimi", "--model", model_path.name)
    assert result.exit_code == 0, result.output
    assert read_mimi(tmp_path / "r.mimi").header.model_id == str(model_path.resolve())
    monkeypatch.chdir(tmp_path)
    result = invoke("decode", "r.mimi", "r.wav")
    assert result.exit_code == 0, result.output
    assert sf.info(str(tmp_path / "r.wav")).frames == sf.info(str(inputs["pcm_48k.wav"])).frames


def test_decode_with_another_model_is_refused(encoded, other_model_path, loaded, tmp_path):
    other = resolve_model(str(other_model_path))
    assert other.fingerprint != loaded.fingerprint
    line = assert_clean_error(invoke("decode", encoded, tmp_path / "x.wav", "--model", other_model_path), 1,
                              loaded.fingerprint, other.fingerprint)
    assert "fingerprint" in line
    assert names(tmp_path) == []


def test_decode_with_the_same_weights_in_another_layout_is_accepted(encoded, inputs, model_path, tmp_path):
    hf = tmp_path / "hf"
    result = invoke("convert", model_path, hf, "--layout", "transformers")
    assert result.exit_code == 0, result.output
    assert invoke("decode", encoded, tmp_path / "a.wav", "--model", hf).exit_code == 0
    assert invoke("decode", encoded, tmp_path / "b.wav").exit_code == 0
    a, _ = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    b, _ = sf.read(str(tmp_path / "b.wav"), dtype="int16")
    np.testing.assert_array_equal(a, b)
    # and encoding with the converted checkpoint gives the same codes and fingerprint
    src = inputs["short_100_16k.wav"]
    assert invoke("encode", src, tmp_path / "via_hf.mimi", "--model", hf).exit_code == 0
    assert invoke("encode", src, tmp_path / "via_file.mimi", "--model", model_path).exit_code == 0
    via_hf, via_file = read_mimi(tmp_path / "via_hf.mimi"), read_mimi(tmp_path / "via_file.mimi")
    assert via_hf.header.weights_fingerprint == via_file.header.weights_fingerprint
    assert via_hf.header.model_id == str(hf.resolve())
    np.testing.assert_array_equal(via_hf.codes, via_file.codes)


def test_decode_when_the_recorded_model_is_gone(inputs, model_path, tmp_path):
    gone = tmp_path / "models" / "gone.safetensors"
    gone.parent.mkdir()
    shutil.copy(model_path, gone)
    assert invoke("encode", inputs["short_500_24k.wav"], tmp_path / "g.mimi", "--model", gone).exit_code == 0
    gone.unlink()
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_error(invoke("decode", tmp_path / "g.mimi", out / "g.wav"), 1, str(gone))
    assert names(out) == []
    # the same weights given explicitly still decode it
    assert invoke("decode", tmp_path / "g.mimi", out / "g.wav", "--model", model_path).exit_code == 0


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------


def _bad_audio(kind: str, d: Path, good: Path) -> Path:
    if kind == "missing":
        return d / "missing.wav"
    if kind == "directory":
        (d / "folder.wav").mkdir()
        return d / "folder.wav"
    p = d / ("bad.flac" if kind == "random.flac" else "bad.wav")
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not audio\n" * 20)
    elif kind == "truncated_header":
        p.write_bytes(good.read_bytes()[:30])
    elif kind == "header_only":
        p.write_bytes(good.read_bytes()[:44])
    elif kind == "random.flac":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind in ("nan", "inf"):
        x = _signal(0.3, 16000)
        x[1000] = np.nan if kind == "nan" else -np.inf
        _write(p, x, 16000, "FLOAT")
    elif kind == "zero_samples":
        _write(p, np.zeros((0, 1), np.float32), 24000, "PCM_16")
    else:  # pragma: no cover
        raise AssertionError(kind)
    return p


BAD_AUDIO = ["empty", "text", "directory", "missing", "truncated_header", "header_only", "random.flac",
             "nan", "inf", "zero_samples"]


@pytest.mark.parametrize("kind", BAD_AUDIO)
@pytest.mark.parametrize("command", ["encode", "roundtrip"])
def test_bad_audio_input_is_one_line_and_leaves_nothing(command, kind, inputs, model_path, tmp_path):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = _bad_audio(kind, src_dir, inputs["pcm_24k.wav"])
    target = out_dir / ("x.mimi" if command == "encode" else "x.wav")
    assert_clean_error(invoke(command, src, target, "--model", model_path), 1, str(src))
    assert names(out_dir) == []


def test_nan_after_the_first_chunk_leaves_nothing(model_path, tmp_path, monkeypatch):
    """The NaN is only seen once several chunks have gone through the model."""
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    calls = _fail_on_call(monkeypatch, MimiModel, "encode", 0, AssertionError("never raised"))
    x = _signal(0.6, 24000)
    x[12000] = np.nan  # in the 4th block of 2 frames
    src = _write(tmp_path / "late_nan.wav", x, 24000, "FLOAT")
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_error(invoke("encode", src, out / "x.mimi", "--model", model_path), 1, "NaN")
    assert len(calls) == 3
    assert names(out) == []


def _bad_mimi(kind: str, d: Path, good: Path, wav: Path) -> Path:
    if kind == "missing":
        return d / "missing.mimi"
    if kind == "directory":
        (d / "folder.mimi").mkdir()
        return d / "folder.mimi"
    data = bytearray(good.read_bytes())
    if kind == "empty":
        data = b""
    elif kind == "truncated_half":
        data = data[: len(data) // 2]
    elif kind == "truncated_crc":
        data = data[:-1]
    elif kind == "preamble_only":
        data = data[:9]
    elif kind == "trailing_byte":
        data = data + b"\0"
    elif kind == "wrong_magic":
        data[:4] = b"MIMX"
    elif kind == "wrong_version":
        data[4] = 2
    elif kind == "flipped_payload_byte":
        data[-10] ^= 0x10
    elif kind == "flipped_crc_byte":
        data[-1] ^= 0x01
    elif kind == "flipped_header_byte":  # inside the JSON, in "num_codebooks"
        i = bytes(data).index(b'"num_codebooks"') + 3
        data[i] ^= 0x01
    elif kind == "random":
        data = np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes()
    elif kind == "wav":
        data = wav.read_bytes()
    else:  # pragma: no cover
        raise AssertionError(kind)
    p = d / "bad.mimi"
    p.write_bytes(bytes(data))
    return p


BAD_MIMI = ["empty", "missing", "directory", "truncated_half", "truncated_crc", "preamble_only", "trailing_byte",
            "wrong_magic", "wrong_version", "flipped_payload_byte", "flipped_crc_byte", "flipped_header_byte",
            "random", "wav"]


@pytest.mark.parametrize("kind", BAD_MIMI)
def test_bad_mimi_file_is_one_line_for_decode_and_info(kind, encoded, inputs, model_path, tmp_path):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = _bad_mimi(kind, src_dir, encoded, inputs["short_500_24k.wav"])
    for args in (["decode", src, out_dir / "x.wav"],
                 ["decode", src, out_dir / "x.wav", "--model", model_path],
                 ["info", src],
                 ["info", "--json", src]):
        assert_clean_error(invoke(*args), 1, str(src))
        assert names(out_dir) == []


def test_output_inside_a_missing_directory_is_one_line(inputs, encoded, model_path, tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    for args in (["encode", inputs["short_500_24k.wav"], missing / "x.mimi", "--model", model_path],
                 ["decode", encoded, missing / "x.wav"],
                 ["roundtrip", inputs["short_500_24k.wav"], missing / "x.wav", "--model", model_path]):
        assert_clean_error(invoke(*args), 1, str(missing))
    assert names(tmp_path) == []


@pytest.mark.parametrize("target", ["x.xyz", "noextension", "x.mimi"])
def test_decode_to_an_unknown_audio_format_is_one_line(encoded, tmp_path, target):
    assert_clean_error(invoke("decode", encoded, tmp_path / target), 1, target)
    assert names(tmp_path) == []


def test_missing_model_is_one_line(inputs, tmp_path):
    assert_clean_error(invoke("encode", inputs["short_500_24k.wav"], tmp_path / "x.mimi",
                              "--model", tmp_path / "nope.safetensors"), 1, "nope.safetensors")
    assert names(tmp_path) == []


# --------------------------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------------------------


def test_no_progress_bar_when_not_a_terminal_and_quiet_is_accepted(inputs, encoded, model_path, tmp_path):
    src = inputs["short_500_24k.wav"]
    outputs = []
    for i, flags in enumerate(([], ["--quiet"], ["-q"])):
        out = tmp_path / f"{i}.mimi"
        result = invoke("encode", src, out, "--model", model_path, *flags)
        assert result.exit_code == 0, result.output
        assert "%|" not in result.output and result.stderr == ""
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    for i, args in enumerate((["decode", encoded], ["decode", encoded, "-q"],
                              ["roundtrip", src, "--model", model_path],
                              ["roundtrip", src, "--model", model_path, "--quiet"])):
        result = invoke(*args[:2], tmp_path / f"{i}.wav", *args[2:])
        assert result.exit_code == 0, result.output
        assert "%|" not in result.output and result.stderr == ""


def test_progress_bar_goes_to_stderr_and_quiet_silences_it(inputs, model_path, tmp_path, monkeypatch):
    import mimi_cli.main as cli

    # as if stderr were a terminal: the command asks a helper whether to show progress
    name = next(n for n in ("progress_enabled", "_progress_enabled") if hasattr(cli, n))
    monkeypatch.setattr(cli, name, lambda quiet: not quiet)
    result = invoke("encode", inputs["pcm_24k.wav"], tmp_path / "a.mimi", "--model", model_path)
    assert result.exit_code == 0, result.output
    assert "%|" in result.stderr and "%|" not in result.stdout
    result = invoke("encode", inputs["pcm_24k.wav"], tmp_path / "b.mimi", "--model", model_path, "--quiet")
    assert result.exit_code == 0 and "%|" not in result.output
    assert (tmp_path / "a.mimi").read_bytes() == (tmp_path / "b.mimi").read_bytes()


# --------------------------------------------------------------------------------------------
# atomic outputs
# --------------------------------------------------------------------------------------------


def _fail_on_call(monkeypatch, cls, name: str, n: int, exc: BaseException) -> list:
    """Make `cls.name` raise `exc` on its n-th call (1-based); returns the call log."""
    original = getattr(cls, name)
    calls: list = []

    def wrapper(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


@pytest.mark.parametrize("existing", [False, True])
def test_encode_failing_midway_leaves_no_file_and_keeps_an_old_one(inputs, model_path, tmp_path, monkeypatch,
                                                                   existing):
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    calls = _fail_on_call(monkeypatch, MimiModel, "encode", 3, MimiError("simulated failure"))
    out = tmp_path / "out.mimi"
    if existing:
        out.write_bytes(b"old contents")
    assert_clean_error(invoke("encode", inputs["pcm_24k.wav"], out, "--model", model_path), 1, "simulated failure")
    assert len(calls) == 3  # it did fail midway, after two chunks went through the model
    assert names(tmp_path) == (["out.mimi"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old contents"


def test_encode_interrupted_exits_130_and_leaves_nothing(inputs, model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    _fail_on_call(monkeypatch, MimiModel, "encode", 2, KeyboardInterrupt())
    result = invoke("encode", inputs["pcm_24k.wav"], tmp_path / "out.mimi", "--model", model_path)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "interrupted" and "Traceback" not in result.output
    assert names(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_decode_failing_midway_leaves_no_file_and_keeps_an_old_one(encoded, tmp_path, monkeypatch, existing):
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    calls = _fail_on_call(monkeypatch, MimiModel, "decode", 3, MimiError("simulated failure"))
    out = tmp_path / "out.wav"
    if existing:
        out.write_bytes(b"old contents")
    assert_clean_error(invoke("decode", encoded, out), 1, "simulated failure")
    assert len(calls) == 3
    assert names(tmp_path) == (["out.wav"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old contents"


def test_decode_disk_full_while_writing_is_one_line_and_leaves_nothing(encoded, tmp_path, monkeypatch):
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    _fail_on_call(monkeypatch, AudioWriter, "write", 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert_clean_error(invoke("decode", encoded, tmp_path / "out.wav"), 1, os.strerror(errno.ENOSPC))
    assert names(tmp_path) == []


def test_decode_interrupted_exits_130_and_leaves_nothing(encoded, tmp_path, monkeypatch):
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    _fail_on_call(monkeypatch, MimiModel, "decode", 2, KeyboardInterrupt())
    result = invoke("decode", encoded, tmp_path / "out.wav")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert names(tmp_path) == []


def test_roundtrip_failing_in_decode_leaves_nothing(inputs, model_path, tmp_path, monkeypatch):
    _fail_on_call(monkeypatch, MimiModel, "decode", 1, MimiError("simulated failure"))
    assert_clean_error(invoke("roundtrip", inputs["pcm_24k.wav"], tmp_path / "rt.wav", "--model", model_path),
                       1, "simulated failure")
    assert names(tmp_path) == []


@pytest.mark.parametrize("command", ["encode", "decode", "roundtrip"])
def test_existing_output_is_replaced_atomically_on_success(command, inputs, encoded, model_path, tmp_path):
    out = tmp_path / ("out.mimi" if command == "encode" else "out.wav")
    out.write_bytes(b"old contents")
    link = tmp_path / "hardlink"
    os.link(out, link)  # a rename over `out` leaves the old inode (seen through the link) intact
    src = encoded if command == "decode" else inputs["short_500_24k.wav"]
    args = [command, src, out] + ([] if command == "decode" else ["--model", model_path])
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert link.read_bytes() == b"old contents"
    assert not os.path.samefile(out, link)
    if command == "encode":
        read_mimi(out)
    else:
        assert sf.info(str(out)).frames > 0
    assert names(tmp_path) == ["hardlink", out.name]


def test_existing_output_is_untouched_when_the_input_is_bad(model_path, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    for command, target in (("encode", "out.mimi"), ("roundtrip", "out.wav")):
        out = tmp_path / target
        out.write_bytes(b"old contents")
        assert_clean_error(invoke(command, bad, out, "--model", model_path), 1)
        assert out.read_bytes() == b"old contents"
    (tmp_path / "bad.mimi").write_bytes(b"MIMI" + b"\0" * 40)
    assert_clean_error(invoke("decode", tmp_path / "bad.mimi", tmp_path / "out.wav"), 1)
    assert (tmp_path / "out.wav").read_bytes() == b"old contents"
    assert no_temp_files(tmp_path)


# --------------------------------------------------------------------------------------------
# real process: exit status, stderr, no traceback
# --------------------------------------------------------------------------------------------


def _run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mimi_cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_subprocess_encode_succeeds_quietly_when_stderr_is_a_pipe(inputs, model_path, tmp_path):
    proc = _run("encode", inputs["short_100_16k.wav"], tmp_path / "s.mimi", "--model", model_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar: stderr is not a terminal
    assert proc.stdout.startswith(f"wrote {tmp_path / 's.mimi'}") and proc.stdout.count("\n") == 1
    assert read_mimi(tmp_path / "s.mimi").header.num_samples == 100


def test_subprocess_error_is_exactly_one_line_on_stderr(encoded, tmp_path):
    """A corrupt payload: the model named in the header loads, then the checksum fails."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    bad = tmp_path / "bad.mimi"
    data = bytearray(encoded.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    proc = _run("decode", bad, out_dir / "x.wav", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "checksum" in lines[0], proc.stderr
    assert names(out_dir) == []


# --------------------------------------------------------------------------------------------
# known bugs
# --------------------------------------------------------------------------------------------


def test_decode_absurd_num_samples_is_a_clean_error(encoded, tmp_path, monkeypatch):
    mf = read_mimi(encoded)
    crafted = tmp_path / "in" / "absurd.mimi"
    crafted.parent.mkdir()
    header = dataclasses.replace(mf.header, num_frames=1, num_samples=2**53 - 1)
    write_mimi(crafted, header, mf.codes[:, :, :1])
    # A fix that pads in bounded blocks would write forever: stop it like a full disk would.
    written = [0]
    original = AudioWriter.write

    def bounded(self, samples):
        written[0] += samples.shape[-1]
        if written[0] > 10_000_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, samples)

    monkeypatch.setattr(AudioWriter, "write", bounded)
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_error(invoke("decode", crafted, out / "x.wav"), 1)
    assert names(out) == []


def test_decode_flipped_byte_in_model_id_reports_a_corrupt_file(encoded, model_path, tmp_path):
    data = bytearray(encoded.read_bytes())
    name = model_path.name.encode()
    i = bytes(data).index(name) + len(name) - len(".safetensors") - 1  # last letter of the stem
    data[i] ^= 0x20  # change its case: still valid JSON and a plausible path
    bad = tmp_path / "bad.mimi"
    bad.write_bytes(bytes(data))
    line = assert_clean_error(invoke("decode", bad, tmp_path / "x.wav"), 1)
    assert "checksum" in line or "corrupt" in line
