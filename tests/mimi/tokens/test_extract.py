"""`mimi.tokens`: input listing, extraction (codes, manifest, batching, bad files), recovery."""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

import mimi
from mimi.audio import resample
from mimi.defaults import resolve_model
from mimi.errors import MimiError
from mimi.tokens import extract_tokens, list_inputs, token_key
from tests.helpers import speechlike

# -- helpers shared with test_reader.py and tests/cli/test_tokens.py -------------------------------

# (relative path, sample rate, channels, seconds)
CORPUS = [
    ("a16k.wav", 16000, 1, 2.0),
    ("music/stereo44k.flac", 44100, 2, 1.3),
    ("short48k.wav", 48000, 1, 0.03),          # 1440 samples at 48 kHz: less than one frame
    ("deep/er/b24k.wav", 24000, 1, 3.5),
    ("deep/c 48k stereo.wav", 48000, 2, 0.7),
    ("tiny22k.flac", 22050, 1, 0.2),
]


def write_audio_file(path: Path, rate: int, channels: int, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    chans = [speechlike(seconds, sr=rate, seed=seed + 17 * c) for c in range(channels)]
    sf.write(path, np.stack(chans, axis=1) if channels > 1 else chans[0], rate)


def write_corpus(folder: Path, spec=CORPUS) -> list[str]:
    for seed, (rel, rate, channels, seconds) in enumerate(spec):
        write_audio_file(folder / rel, rate, channels, seconds, seed)
    return sorted(rel for rel, *_ in spec)


def reference_codes(model: mimi.MimiModel, path: Path) -> torch.Tensor:
    """The file encoded alone: read, channel mean, soxr to 24 kHz, `model.encode`."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(data.T.copy()).mean(0, keepdim=True)
    wav = resample(mono, rate, model.sample_rate)
    with torch.inference_mode():
        return model.encode(wav[None])[0]


def read_manifest(out: Path, name: str = "manifest.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def load_codes(out: Path, entry: dict) -> torch.Tensor:
    with safe_open(str(out / entry["shard"]), framework="pt") as f:
        return f.get_tensor(entry["key"])


def all_codes(out: Path) -> dict[str, torch.Tensor]:
    return {e["audio"]: load_codes(out, e) for e in read_manifest(out)}




# -- inputs --------------------------------------------------------------------------------------

def test_list_inputs_folder(tmp_path):
    rels = write_corpus(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    (tmp_path / "in" / ".hidden.wav").write_bytes(b"x")
    (tmp_path / "in" / "UPPER.WAV").write_bytes(b"x")
    files = list_inputs(tmp_path / "in")
    assert [f.rel for f in files] == sorted(rels + ["UPPER.WAV"])
    assert all(f.path.is_absolute() and f.path.is_file() for f in files)
    assert files[[f.rel for f in files].index("deep/er/b24k.wav")].path == (tmp_path / "in/deep/er/b24k.wav").resolve()


def test_list_inputs_manifests(tmp_path):
    write_corpus(tmp_path / "in")
    (tmp_path / "list.txt").write_text(f"# comment\nin/a16k.wav\n\n  in/short48k.wav  \n{tmp_path}/in/tiny22k.flac\n")
    files = list_inputs(tmp_path / "list.txt")
    assert [f.rel for f in files] == ["in/a16k.wav", "in/short48k.wav", f"{tmp_path}/in/tiny22k.flac"]
    assert all(f.path.is_file() for f in files)
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "m.jsonl").write_text('{"audio": "../in/a16k.wav", "text": "hi"}\n\n{"audio": "../in/deep/er/b24k.wav"}\n')
    files = list_inputs(sub / "m.jsonl")
    assert [f.rel for f in files] == ["../in/a16k.wav", "../in/deep/er/b24k.wav"]
    assert files[1].path.resolve() == (tmp_path / "in/deep/er/b24k.wav").resolve()


@pytest.mark.parametrize("setup, message", [
    (lambda d: d / "missing", "no such"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no audio files"),
    (lambda d: (d / "x.csv").write_text("a") and d / "x.csv", "manifest"),
    (lambda d: (d / "dup.txt").write_text("a.wav\n# x\na.wav\n") and d / "dup.txt", "more than once"),
    (lambda d: (d / "bad.jsonl").write_text('{"audio": "a.wav"}\n{oops\n') and d / "bad.jsonl", ":2: not valid JSON"),
    (lambda d: (d / "noaudio.jsonl").write_text('{"file": "a.wav"}\n') and d / "noaudio.jsonl", "\"audio\""),
    (lambda d: (d / "blank.lst").write_text("# nothing\n\n") and d / "blank.lst", "lists no audio"),
])
def test_list_inputs_errors(tmp_path, setup, message):
    with pytest.raises(MimiError, match=message) as err:
        list_inputs(setup(tmp_path))
    assert "\n" not in str(err.value)


# -- extraction ----------------------------------------------------------------------------------

def test_codes_manifest_and_shards(tiny_model, tmp_path):
    rels = write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    report = extract_tokens(tmp_path / "in", out, tiny_model, batch_size=3, shard_size=2)
    assert (report.files_total, report.files_encoded, report.files_failed, report.files_done_before) == (6, 6, 0, 0)
    assert report.shards_written == 3 and report.manifest == out / "manifest.jsonl"
    manifest = read_manifest(out)
    assert [e["audio"] for e in manifest] == rels  # sorted by audio when finished
    fingerprint = mimi.weights_fingerprint(tiny_model)
    spec = {rel: (rate, ch, sec) for rel, rate, ch, sec in CORPUS}
    for e in manifest:
        rate, channels, _ = spec[e["audio"]]
        info = sf.info(tmp_path / "in" / e["audio"])
        samples_24k = round(info.frames * 24000 / rate)
        assert e["sample_rate"] == rate and e["channels"] == channels and e["samples"] == info.frames
        assert e["frames"] == math.ceil(samples_24k / 1920) and e["codebooks"] == 8
        assert e["model_id"] == "mimi-tiny" and e["fingerprint"] == fingerprint
        assert e["key"] == token_key(e["audio"]) and e["shard"].startswith("shard-r0-")
        codes = load_codes(out, e)
        assert codes.dtype == torch.int16 and tuple(codes.shape) == (8, e["frames"])
        # batching (zero right-padding) changes nothing: the file encoded alone
        assert torch.equal(codes.long(), reference_codes(tiny_model, tmp_path / "in" / e["audio"])), e["audio"]
    assert next(e for e in manifest if e["audio"] == "short48k.wav")["frames"] == 1
    with safe_open(str(out / "shard-r0-00000.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["fingerprint"] == fingerprint and meta["codebooks"] == "8" and meta["model_id"] == "mimi-tiny"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl"] + [f"shard-r0-0000{i}.safetensors" for i in range(3)]


def test_batches_are_sorted_by_length(tiny_model, tmp_path, monkeypatch):
    write_corpus(tmp_path / "in")
    widths = []
    encode = tiny_model.encode

    def spy(wav):
        widths.append(wav.shape)
        return encode(wav)

    monkeypatch.setattr(tiny_model, "encode", spy)
    extract_tokens(tmp_path / "in", tmp_path / "out", tiny_model, batch_size=2, shard_size=2)
    assert [w[0] for w in widths] == [2, 2, 2]
    assert [w[-1] for w in widths] == sorted((w[-1] for w in widths), reverse=True)
    assert widths[0][-1] == 3.5 * 24000  # the longest file first
    by_shard = {}
    for e in read_manifest(tmp_path / "out"):
        by_shard.setdefault(e["shard"], set()).add(e["audio"])
    assert by_shard["shard-r0-00000.safetensors"] == {"deep/er/b24k.wav", "a16k.wav"}
    assert by_shard["shard-r0-00002.safetensors"] == {"short48k.wav", "tiny22k.flac"}


def test_workers_and_loaded_model_give_the_same_codes(tiny_model, tmp_path):
    write_corpus(tmp_path / "in")
    extract_tokens(tmp_path / "in", tmp_path / "a", tiny_model, batch_size=4)
    loaded = resolve_model(str(mimi.save(tiny_model, tmp_path / "tiny.safetensors")))
    report = extract_tokens(tmp_path / "in", tmp_path / "b", loaded, batch_size=1, num_workers=2, shard_size=5)
    assert report.files_encoded == 6 and report.shards_written == 2
    a, b = all_codes(tmp_path / "a"), all_codes(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    entry = read_manifest(tmp_path / "b")[0]
    assert entry["model_id"] == str((tmp_path / "tiny.safetensors").resolve())
    assert entry["fingerprint"] == loaded.fingerprint == mimi.weights_fingerprint(tiny_model)


def test_bad_files_are_listed_and_skipped(tiny_model, tmp_path, capsys):
    rels = write_corpus(tmp_path / "in")
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "corrupt.wav").write_bytes(rng.bytes(5000))
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    nan = speechlike(0.5, sr=16000)
    nan[100] = np.nan
    sf.write(tmp_path / "in" / "nan.wav", nan, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    report = extract_tokens(tmp_path / "in", out, tiny_model, batch_size=4, progress=True)
    assert (report.files_total, report.files_encoded, report.files_failed) == (9, 6, 3)
    assert "7/7" in capsys.readouterr().err  # the bar counts the files given to the DataLoader
    assert [e["audio"] for e in read_manifest(out)] == rels
    errors = {e["audio"]: e["error"] for e in read_manifest(out, "errors.jsonl")}
    assert errors.keys() == {"corrupt.wav", "empty.wav", "nan.wav"}
    assert "empty" in errors["empty.wav"] and "NaN" in errors["nan.wav"]
    assert all(msg and "\n" not in msg for msg in errors.values())
    again = extract_tokens(tmp_path / "in", out, tiny_model)  # failed files are not retried
    assert again.nothing_to_do and (again.files_done_before, again.files_failed_before) == (6, 3)
    assert again.files_encoded == again.files_failed == again.shards_written == 0


def test_rerun_on_finished_folder_changes_nothing(tiny_model, tmp_path):
    write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    extract_tokens(tmp_path / "in", out, tiny_model, shard_size=4)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    report = extract_tokens(tmp_path / "in", out, tiny_model, shard_size=4)
    assert report.nothing_to_do and report.files_encoded == 0 and report.files_done_before == 6
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before


def test_resume_after_simulated_crash(tiny_model, tmp_path):
    """Torn last manifest line, an orphan shard, a temp file: rerun fixes all, each file once."""
    rels = write_corpus(tmp_path / "in")
    clean = tmp_path / "clean"
    extract_tokens(tmp_path / "in", clean, tiny_model, shard_size=1)
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    lines = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    torn = json.loads(lines[-1])
    (out / "manifest.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][:25])  # killed mid-append
    shutil.copy(out / torn["shard"], out / "shard-r0-00042.safetensors")  # renamed, not yet listed
    (out / ".shard-r0-00043.safetensors.tmp").write_bytes(b"half a shard")
    (out / "notes.txt").write_text("not ours: left alone")
    report = extract_tokens(tmp_path / "in", out, tiny_model, shard_size=1)
    assert (report.files_done_before, report.files_encoded, report.shards_written) == (5, 1, 1)
    manifest = read_manifest(out)
    assert [e["audio"] for e in manifest] == rels
    redone = next(e for e in manifest if e["audio"] == torn["audio"])
    assert redone["shard"] == "shard-r0-00006.safetensors"  # numbering continues after the highest kept
    shards = {p.name for p in out.glob("shard-*")}
    assert shards == {e["shard"] for e in manifest}  # the orphans are gone
    assert not list(out.glob(".*")) and (out / "notes.txt").exists()
    a, b = all_codes(clean), all_codes(out)
    assert all(torch.equal(a[k], b[k]) for k in rels)


def test_resume_after_simulated_multi_rank_crash(tiny_model, tmp_path):
    """Per-rank manifests left by a killed torchrun run are merged by a single-process rerun."""
    rels = write_corpus(tmp_path / "in")
    clean = tmp_path / "clean"
    extract_tokens(tmp_path / "in", clean, tiny_model, shard_size=1)
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    lines = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    (out / "manifest.jsonl").unlink()
    (out / "manifest.r0.jsonl").write_bytes(b"".join(lines[0:2]))
    (out / "manifest.r1.jsonl").write_bytes(b"".join(lines[2:4]) + lines[4][:-3])  # torn
    (out / "errors.r1.jsonl").write_bytes(b'{"audio": "gone.wav", "error": "x"}\n')
    for line in lines[4:]:
        (out / json.loads(line)["shard"]).rename(out / json.loads(line)["shard"].replace("-r0-", "-r1-"))
    report = extract_tokens(tmp_path / "in", out, tiny_model, shard_size=1)
    assert (report.files_done_before, report.files_encoded) == (4, 2)
    assert [e["audio"] for e in read_manifest(out)] == rels
    assert read_manifest(out, "errors.jsonl") == [{"audio": "gone.wav", "error": "x"}]
    assert not list(out.glob("*.r*.jsonl")) and not list(out.glob("shard-r1-*"))
    assert {p.name for p in out.glob("shard-*")} == {e["shard"] for e in read_manifest(out)}
    a, b = all_codes(clean), all_codes(out)
    assert all(torch.equal(a[k], b[k]) for k in rels)


def test_refuses_another_model_or_codebook_count(tiny_model, tmp_path):
    write_corpus(tmp_path / "in", CORPUS[:2])
    out = tmp_path / "out"
    extract_tokens(tmp_path / "in", out, tiny_model)
    write_corpus(tmp_path / "in", CORPUS[2:3])  # something left to do
    path = mimi.save(tiny_model, tmp_path / "tiny.safetensors")
    with pytest.raises(MimiError, match="4 codebooks"):
        extract_tokens(tmp_path / "in", out, resolve_model(str(path), num_codebooks=4))
    other = mimi.load(path)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(MimiError, match="fingerprint"):
        extract_tokens(tmp_path / "in", out, other)
    assert len(read_manifest(out)) == 2
    assert extract_tokens(tmp_path / "in", out, resolve_model(str(path))).files_encoded == 1


def test_locked_folder_and_bad_arguments(tiny_model, tmp_path):
    write_corpus(tmp_path / "in", CORPUS[:1])
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(MimiError, match="another"):
            extract_tokens(tmp_path / "in", out, tiny_model)
    finally:
        os.close(fd)
    for kwargs in ({"batch_size": 0}, {"shard_size": 0}, {"num_workers": -1}):
        with pytest.raises(MimiError):
            extract_tokens(tmp_path / "in", out, tiny_model, **kwargs)
    with pytest.raises(MimiError):
        extract_tokens(tmp_path / "in", out, "kyutai/mimi")  # type: ignore[arg-type]
    (out / "manifest.jsonl").write_text('{"audio": "a16k.wav"}\nnot json\n')
    with pytest.raises(MimiError, match="manifest.jsonl:2"):
        extract_tokens(tmp_path / "in", out, tiny_model)


def test_token_keys_are_safe_and_unique():
    names = ["a b.wav", "a_b.wav", "dir/a b.wav", "é/ü.flac", "x" * 500 + ".wav"]
    keys = [token_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    assert all(set(k) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for k in keys)
    assert all(len(k) <= 131 for k in keys) and keys[0].startswith("a_b.wav-")
