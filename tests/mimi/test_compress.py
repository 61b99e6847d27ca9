"""`mimi.compress`: file-level encode / decode / roundtrip / info, model checks and chunking."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mimi
import mimi.compress as compress
from mimi.audio import AudioWriter, read_audio, resample, resampled_length
from mimi.compress import (
    CodecReport,
    MimiFileInfo,
    check_model_matches,
    decode_file,
    encode_file,
    load_decoder_for,
    mimi_file_info,
    roundtrip_file,
)
from mimi.defaults import LoadedModel, resolve_model
from mimi.errors import AudioReadError, MimiError, MimiFormatError
from mimi.format import FIXED_OVERHEAD, MimiHeader, read_mimi, write_mimi
from mimi.model import MimiModel
from tests.helpers import make_model, speechlike

FRAME = 1920


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return mimi.save(make_model(mimi.MimiConfig.tiny()), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def loaded(model_path) -> LoadedModel:
    return resolve_model(str(model_path))


def _wav(path: Path, sr: int, samples: int, channels: int = 1, subtype: str = "PCM_16", seed: int = 0) -> Path:
    cols = [speechlike(max(samples, sr // 10) / sr + 0.01, sr=sr, seed=seed + c)[:samples] for c in range(channels)]
    sf.write(str(path), np.stack(cols, axis=1), sr, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    return {
        "mono24": _wav(d / "mono24.wav", 24000, 14000),  # 8 frames
        "stereo44": _wav(d / "stereo44.wav", 44100, 17000, channels=2, subtype="FLOAT", seed=2),  # 5 frames
        "mono16": _wav(d / "mono16.flac", 16000, 5000, seed=4),  # 4 frames
    }


def offline_codes(model: MimiModel, path: Path) -> np.ndarray:
    a = read_audio(path)
    x24 = resample(a.samples, a.sample_rate, model.sample_rate)
    with torch.inference_mode():
        return np.stack([model.encode(x24[c][None, None])[0].numpy() for c in range(x24.shape[0])])


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --------------------------------------------------------------------------------------------
# encode_file / decode_file / roundtrip_file / mimi_file_info
# --------------------------------------------------------------------------------------------


def test_encode_file_report_and_header(audio, loaded, tmp_path):
    src = audio["stereo44"]
    report = encode_file(str(src), str(tmp_path / "s.mimi"), loaded)  # str paths
    assert isinstance(report, CodecReport)
    assert report.output == tmp_path / "s.mimi" and isinstance(report.output, Path)
    assert isinstance(report.seconds, float) and report.seconds >= 0
    h = report.header
    assert isinstance(h, MimiHeader)
    assert h.model_id == loaded.model_id
    assert h.weights_fingerprint == loaded.fingerprint == mimi.weights_fingerprint(loaded.model)
    assert (h.sample_rate, h.channels, h.num_samples) == (44100, 2, 17000)
    assert h.num_frames == math.ceil(resampled_length(17000, 44100, 24000) / FRAME)
    assert (h.num_codebooks, h.codebook_size, h.frame_rate) == (8, 64, 12.5)
    assert h.library_version == mimi.__version__
    mf = read_mimi(tmp_path / "s.mimi")
    assert mf.header == h
    np.testing.assert_array_equal(mf.codes, offline_codes(loaded.model, src))


def test_encode_file_records_the_loaded_model_id(audio, model_path, tmp_path):
    loaded = resolve_model(str(model_path))
    assert loaded.model_id == str(model_path.resolve())
    custom = LoadedModel(loaded.model, "test:custom-id", loaded.fingerprint)
    h = encode_file(audio["mono16"], tmp_path / "a.mimi", custom).header
    assert h.model_id == "test:custom-id"


def test_decode_file_restores_rate_channels_length(audio, loaded, tmp_path):
    for name in ("mono24", "stereo44", "mono16"):
        src = audio[name]
        enc = encode_file(src, tmp_path / f"{name}.mimi", loaded)
        dec = decode_file(tmp_path / f"{name}.mimi", tmp_path / f"{name}.out.wav", loaded)
        assert isinstance(dec, CodecReport) and dec.header == enc.header
        assert dec.output == tmp_path / f"{name}.out.wav" and dec.seconds >= 0
        a, b = sf.info(str(src)), sf.info(str(dec.output))
        assert (b.samplerate, b.channels, b.frames) == (a.samplerate, a.channels, a.frames)


def test_decode_24k_matches_model_decode(audio, loaded, tmp_path):
    src = audio["mono24"]
    encode_file(src, tmp_path / "a.mimi", loaded)
    decode_file(tmp_path / "a.mimi", tmp_path / "a.wav", loaded)
    got, _ = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    codes = torch.from_numpy(read_mimi(tmp_path / "a.mimi").codes)
    with torch.inference_mode():
        ref = loaded.model.decode(codes)[0, 0, : len(got)].clamp(-1, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=2 / 32768 + 1e-5)


@pytest.mark.parametrize("sr,n", [(24000, 1), (24000, 1919), (24000, 1920), (24000, 1921), (16000, 1279),
                                  (16000, 1280), (16000, 1281), (48000, 3841), (44100, 100)])
def test_frames_and_length_at_frame_boundaries(sr, n, loaded, tmp_path):
    src = _wav(tmp_path / "in.wav", sr, n)
    h = encode_file(src, tmp_path / "a.mimi", loaded).header
    assert h.num_frames == math.ceil(resampled_length(n, sr, 24000) / FRAME) >= 1
    assert h.num_samples == n
    decode_file(tmp_path / "a.mimi", tmp_path / "out.wav", loaded)
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.frames) == (sr, n)


def test_roundtrip_file_equals_encode_then_decode_and_cleans_up(audio, loaded, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    src = audio["stereo44"]
    rep = roundtrip_file(src, tmp_path / "rt.wav", loaded)
    assert isinstance(rep, CodecReport) and rep.output == tmp_path / "rt.wav" and rep.seconds >= 0
    assert listing(scratch) == []  # the temporary .mimi and its folder are gone
    enc = encode_file(src, tmp_path / "a.mimi", loaded)
    assert rep.header == enc.header
    decode_file(tmp_path / "a.mimi", tmp_path / "dec.wav", loaded)
    a, _ = sf.read(str(tmp_path / "rt.wav"), dtype="int16")
    b, _ = sf.read(str(tmp_path / "dec.wav"), dtype="int16")
    np.testing.assert_array_equal(a, b)


def test_roundtrip_file_failure_cleans_up_its_temporary_folder(tmp_path, loaded, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(AudioReadError):
        roundtrip_file(tmp_path / "missing.wav", tmp_path / "rt.wav", loaded)
    assert listing(scratch) == []
    assert listing(tmp_path) == ["scratch"]


def test_mimi_file_info(audio, loaded, tmp_path):
    path = tmp_path / "s.mimi"
    h = encode_file(audio["stereo44"], path, loaded).header
    fi = mimi_file_info(str(path))
    assert isinstance(fi, MimiFileInfo)
    assert fi.path == path and fi.header == h
    assert fi.bitrate_bps == 8 * 6 * 12.5 * 2
    hlen = int.from_bytes(path.read_bytes()[5:9], "little")
    assert fi.file_bytes == path.stat().st_size == hlen + math.ceil(2 * 8 * h.num_frames * 6 / 8) + FIXED_OVERHEAD
    d = fi.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["path"] == str(path) and d["duration_seconds"] == pytest.approx(17000 / 44100)
    assert d["bitrate_bps"] == fi.bitrate_bps and d["file_bytes"] == fi.file_bytes
    for key, value in h.to_dict().items():
        assert d[key] == value


@pytest.mark.parametrize("k", [1, 3])
def test_fewer_codebooks(audio, model_path, loaded, tmp_path, k):
    small = resolve_model(str(model_path), num_codebooks=k)
    assert small.fingerprint == loaded.fingerprint  # same weights, whatever K
    h = encode_file(audio["mono24"], tmp_path / "k.mimi", small).header
    assert h.num_codebooks == k
    full = encode_file(audio["mono24"], tmp_path / "full.mimi", loaded)
    np.testing.assert_array_equal(read_mimi(tmp_path / "k.mimi").codes, read_mimi(full.output).codes[:, :k])
    assert mimi_file_info(tmp_path / "k.mimi").bitrate_bps == k * 6 * 12.5
    dec = load_decoder_for(read_mimi(tmp_path / "k.mimi").header, None)
    assert dec.model.num_codebooks == k
    decode_file(tmp_path / "k.mimi", tmp_path / "k.wav", dec)
    assert sf.info(str(tmp_path / "k.wav")).frames == 14000


# --------------------------------------------------------------------------------------------
# which model: check_model_matches / load_decoder_for
# --------------------------------------------------------------------------------------------


def _header(loaded: LoadedModel, **changes) -> MimiHeader:
    h = MimiHeader(model_id=loaded.model_id, weights_fingerprint=loaded.fingerprint, sample_rate=24000,
                   channels=1, num_samples=1920, num_codebooks=8, num_frames=1, frame_rate=12.5,
                   codebook_size=64, library_version=mimi.__version__)
    return dataclasses.replace(h, **changes)


def test_check_model_matches(loaded):
    assert check_model_matches(_header(loaded), loaded) is None
    assert check_model_matches(_header(loaded, num_codebooks=3), loaded) is None
    with pytest.raises(MimiError, match="fingerprint") as e:
        check_model_matches(_header(loaded, weights_fingerprint="0123456789abcdef"), loaded)
    msg = str(e.value)
    assert "0123456789abcdef" in msg and loaded.fingerprint in msg and "\n" not in msg
    with pytest.raises(MimiError, match="9 codebooks"):
        check_model_matches(_header(loaded, num_codebooks=9), loaded)
    with pytest.raises(MimiError, match="2048"):
        check_model_matches(_header(loaded, codebook_size=2048), loaded)


def test_load_decoder_for_uses_the_header_or_the_given_source(audio, model_path, loaded, tmp_path):
    three = resolve_model(str(model_path), num_codebooks=3)
    encode_file(audio["mono16"], tmp_path / "a.mimi", three)
    dec = load_decoder_for(read_mimi(tmp_path / "a.mimi").header, None)
    assert dec.model_id == str(model_path.resolve()) and dec.fingerprint == loaded.fingerprint
    assert dec.model.num_codebooks == 3
    dec = load_decoder_for(read_mimi(str(tmp_path / "a.mimi")).header, str(model_path))
    assert dec.model.num_codebooks == 3 and dec.fingerprint == loaded.fingerprint


def test_decode_file_refuses_another_model_and_writes_nothing(audio, loaded, tmp_path):
    other_model = make_model(mimi.MimiConfig.tiny(), seed=1, calibrate_seconds=1.0)
    other = LoadedModel(other_model, "test:other", mimi.weights_fingerprint(other_model))
    assert other.fingerprint != loaded.fingerprint
    encode_file(audio["mono16"], tmp_path / "a.mimi", loaded)
    with pytest.raises(MimiError, match=other.fingerprint):
        decode_file(tmp_path / "a.mimi", tmp_path / "out.wav", other)
    assert listing(tmp_path) == ["a.mimi"]


# --------------------------------------------------------------------------------------------
# chunking
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_results(audio, loaded, tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = tmp_path_factory.mktemp("default_chunks")
    out = {}
    for name in ("mono24", "stereo44"):
        encode_file(audio[name], d / f"{name}.mimi", loaded)
        decode_file(d / f"{name}.mimi", d / f"{name}.wav", loaded)
        out[name] = (read_mimi(d / f"{name}.mimi").codes, sf.read(str(d / f"{name}.wav"), dtype="int16")[0])
    return out


@pytest.mark.parametrize("chunk_frames", [1, 3])
@pytest.mark.parametrize("name", ["mono24", "stereo44"])
def test_chunk_size_changes_nothing(name, chunk_frames, audio, loaded, default_results, tmp_path, monkeypatch):
    codes, decoded = default_results[name]
    assert codes.shape[-1] > 3  # several chunks at these sizes
    monkeypatch.setattr(compress, "CHUNK_FRAMES", chunk_frames)
    encode_file(audio[name], tmp_path / "a.mimi", loaded)
    np.testing.assert_array_equal(read_mimi(tmp_path / "a.mimi").codes, codes)
    decode_file(tmp_path / "a.mimi", tmp_path / "a.wav", loaded)
    got = sf.read(str(tmp_path / "a.wav"), dtype="int16")[0]
    assert got.shape == decoded.shape
    # streaming decode in other chunk sizes: same audio up to float rounding (one int16 step)
    assert np.abs(got.astype(np.int32) - decoded).max() <= 1


# --------------------------------------------------------------------------------------------
# errors and atomicity
# --------------------------------------------------------------------------------------------


def test_encode_file_bad_inputs_raise_audio_read_error_and_write_nothing(loaded, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "empty.wav").write_bytes(b"")
    (src / "text.wav").write_text("not audio\n" * 50)
    x = speechlike(0.2, sr=16000)
    x[10] = np.nan
    sf.write(str(src / "nan.wav"), x, 16000, subtype="FLOAT")
    for bad in (src / "empty.wav", src / "text.wav", src / "nan.wav", src / "missing.wav", src):
        with pytest.raises(AudioReadError) as e:
            encode_file(bad, out / "x.mimi", loaded)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert listing(out) == []


def test_decode_file_and_info_raise_format_errors(audio, loaded, tmp_path):
    good = tmp_path / "good.mimi"
    encode_file(audio["mono16"], good, loaded)
    data = good.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    for i, bad in enumerate((b"", data[:7], data[: len(data) // 2], data[:-1], data + b"x", b"RIFF" + data[4:])):
        p = tmp_path / f"bad{i}.mimi"
        p.write_bytes(bad)
        with pytest.raises(MimiFormatError):
            decode_file(p, out / "x.wav", loaded)
        with pytest.raises(MimiFormatError):
            mimi_file_info(p)
    with pytest.raises(MimiError, match="no such file"):
        mimi_file_info(tmp_path / "missing.mimi")
    assert listing(out) == []


def test_every_single_byte_flip_is_detected(audio, loaded, tmp_path):
    good = tmp_path / "good.mimi"
    encode_file(audio["mono16"], good, loaded)
    data = good.read_bytes()
    bad = tmp_path / "bad.mimi"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(MimiFormatError):
            mimi_file_info(bad)


def _fail_on_call(monkeypatch, cls, name: str, n: int, exc: BaseException) -> list:
    original = getattr(cls, name)
    calls: list = []

    def wrapper(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def test_encode_file_failing_midway_leaves_nothing_and_keeps_an_old_file(audio, loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    calls = _fail_on_call(monkeypatch, MimiModel, "encode", 3, RuntimeError("boom"))
    (tmp_path / "keep.mimi").write_bytes(b"old")
    for target in ("new.mimi", "keep.mimi"):
        calls.clear()
        with pytest.raises(RuntimeError, match="boom"):
            encode_file(audio["mono24"], tmp_path / target, loaded)
        assert len(calls) == 3
    assert listing(tmp_path) == ["keep.mimi"]
    assert (tmp_path / "keep.mimi").read_bytes() == b"old"


def test_decode_file_failing_midway_leaves_nothing_and_keeps_an_old_file(audio, loaded, tmp_path, monkeypatch):
    encode_file(audio["mono24"], tmp_path / "a.mimi", loaded)
    monkeypatch.setattr(compress, "CHUNK_FRAMES", 2)
    calls = _fail_on_call(monkeypatch, AudioWriter, "write", 2, RuntimeError("boom"))
    (tmp_path / "keep.wav").write_bytes(b"old")
    for target in ("new.wav", "keep.wav"):
        calls.clear()
        with pytest.raises(RuntimeError, match="boom"):
            decode_file(tmp_path / "a.mimi", tmp_path / target, loaded)
    assert listing(tmp_path) == ["a.mimi", "keep.wav"]
    assert (tmp_path / "keep.wav").read_bytes() == b"old"


def test_decode_file_refuses_num_samples_that_the_frames_do_not_cover(audio, loaded, tmp_path):
    """A header claiming 1 s more audio than its frames hold is inconsistent: refused, no output."""
    encode_file(audio["mono16"], tmp_path / "a.mimi", loaded)
    mf = read_mimi(tmp_path / "a.mimi")
    longer = dataclasses.replace(mf.header, num_samples=mf.header.num_samples + 16000)
    write_mimi(tmp_path / "b.mimi", longer, mf.codes)
    with pytest.raises(MimiFormatError, match="inconsistent"):
        decode_file(tmp_path / "b.mimi", tmp_path / "b.wav", loaded)
    assert not (tmp_path / "b.wav").exists()


def test_decode_file_absurd_num_samples_raises_mimi_error(audio, loaded, tmp_path, monkeypatch):
    encode_file(audio["mono16"], tmp_path / "a.mimi", loaded)
    mf = read_mimi(tmp_path / "a.mimi")
    write_mimi(tmp_path / "b.mimi", dataclasses.replace(mf.header, num_frames=1, num_samples=2**53 - 1),
               mf.codes[:, :, :1])
    written = [0]
    original = AudioWriter.write

    def bounded(self, samples):  # a block-padding fix would write forever: end it like a full disk
        written[0] += samples.shape[-1]
        if written[0] > 10_000_000:
            raise MimiError("simulated full disk")
        return original(self, samples)

    monkeypatch.setattr(AudioWriter, "write", bounded)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MimiError):
        decode_file(tmp_path / "b.mimi", out / "b.wav", loaded)
    assert listing(out) == []
