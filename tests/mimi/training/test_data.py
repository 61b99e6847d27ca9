"""AudioCropDataset, list_audio and EvalClips: crops, resampling, augmentation, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from mimi.audio import resample
from mimi.errors import AudioReadError, MimiError
from mimi.training.data import AudioCropDataset, EvalClips, list_audio

SEG = 4800  # 0.2 s at 24 kHz


def noise(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((int(seconds * rate), channels)).astype(np.float32) * 0.1
    return x[:, 0] if channels == 1 else x


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    (root / "a").mkdir()
    (root / "b" / "deep").mkdir(parents=True)
    sf.write(root / "a" / "x24k.wav", noise(1.0, 24000, 0), 24000, subtype="FLOAT")
    sf.write(root / "a" / "y16k.flac", noise(1.0, 16000, 1), 16000)
    sf.write(root / "b" / "deep" / "z44k_stereo.wav", noise(1.0, 44100, 2, channels=2), 44100, subtype="FLOAT")
    sf.write(root / "b" / "short.wav", noise(0.05, 24000, 3), 24000, subtype="FLOAT")
    (root / "b" / "notes.txt").write_text("not audio")
    (root / ".hidden").mkdir()
    sf.write(root / ".hidden" / "skip.wav", noise(0.1, 24000, 4), 24000)
    sf.write(root / "b" / ".skip.wav", noise(0.1, 24000, 4), 24000)
    return root


REL = ["a/x24k.wav", "a/y16k.flac", "b/deep/z44k_stereo.wav", "b/short.wav"]


def whole_at_24k(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return resample(torch.from_numpy(data.mean(1))[None], rate, 24000)[0].numpy()


def locate(whole: np.ndarray, crop: np.ndarray) -> int:
    return int(np.argmax(np.correlate(whole, crop, "valid")))


def test_list_audio_folder_and_manifests(folder, tmp_path):
    assert [p.relative_to(folder).as_posix() for p in list_audio(folder)] == REL
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"path" if i % 2 else "audio": str(folder / r),
                                                            "text": "hi"}) for i, r in enumerate(REL)) + "\n\n")
    assert list_audio(tmp_path / "m.jsonl") == [folder / r for r in REL]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.txt").write_text("# comment\n\n../rel.wav\n" + str(folder / REL[0]) + "\n")
    listed = list_audio(tmp_path / "sub" / "list.txt")
    assert [p.resolve() for p in listed] == [(tmp_path / "rel.wav").resolve(), (folder / REL[0]).resolve()]


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "no such file or folder"),
    (lambda d: d, "no audio files found"),
    (lambda d: (d / "x.csv").write_text("a") and d / "x.csv", "must be a folder or a manifest"),
    (lambda d: (d / "x.jsonl").write_text("{bad\n") and d / "x.jsonl", r"x.jsonl:1: not valid JSON"),
    (lambda d: (d / "x.jsonl").write_text('{"file": "a.wav"}\n') and d / "x.jsonl", r'"audio" \(or "path"\)'),
    (lambda d: (d / "x.txt").write_text("# nothing\n") and d / "x.txt", "lists no audio files"),
])
def test_list_audio_errors(tmp_path, make, message):
    with pytest.raises(MimiError, match=message):
        list_audio(make(tmp_path))


def test_crops_are_windows_of_the_resampled_file(folder):
    for rel in REL[:3]:  # 24, 16 and 44.1 kHz stereo (downmixed)
        whole = whole_at_24k(folder / rel)
        ds = AudioCropDataset(folder, segment_samples=SEG, gain_db=None, length=8)
        ds.files = [folder / rel]  # one file, several crops
        starts = set()
        for i in range(len(ds)):
            item = ds[i]
            assert item.shape == (1, SEG) and item.dtype == torch.float32
            crop = item[0].numpy()
            k = locate(whole, crop)
            np.testing.assert_allclose(crop, whole[k:k + SEG], atol=1e-5)
            starts.add(k)
        assert len(starts) > 4


def test_short_file_is_zero_padded_and_other_rates(folder, tmp_path):
    ds = AudioCropDataset(folder, segment_samples=SEG, gain_db=None, length=4)
    ds.files = [folder / "b" / "short.wav"]
    x = ds[0][0].numpy()
    n = int(0.05 * 24000)
    np.testing.assert_array_equal(x[:n], sf.read(folder / "b" / "short.wav", dtype="float32")[0])
    assert not x[n:].any()
    ds16 = AudioCropDataset(folder, segment_samples=1600, sample_rate=16000, gain_db=None, length=2)
    ds16.files = [folder / REL[1]]
    clean = sf.read(folder / REL[1], dtype="float32")[0]
    crop = ds16[1][0].numpy()
    k = locate(clean, crop)
    np.testing.assert_array_equal(crop, clean[k:k + 1600])  # no resampling at the file's own rate


def test_gain_and_noise_ranges(tmp_path):
    sf.write(tmp_path / "dc.wav", np.full(24000, 0.25, np.float32), 24000, subtype="FLOAT")
    ds = AudioCropDataset(tmp_path, segment_samples=SEG, gain_db=(-10.0, 6.0), length=64)
    gains = np.array([20 * np.log10(float(ds[i][0].mean()) / 0.25) for i in range(len(ds))])
    assert gains.min() >= -10.0 - 1e-4 and gains.max() <= 6.0 + 1e-4 and gains.max() - gains.min() > 8
    ds = AudioCropDataset(tmp_path, segment_samples=SEG, gain_db=None, noise_snr_db=(10.0, 20.0), length=64)
    snrs = np.array([10 * np.log10(0.25 ** 2 / float((ds[i][0] - 0.25).pow(2).mean())) for i in range(len(ds))])
    assert snrs.min() > 9.5 and snrs.max() < 20.5 and snrs.max() - snrs.min() > 5
    sf.write(tmp_path / "dc.wav", np.zeros(24000, np.float32), 24000)
    assert not ds[0].any()  # a silent crop stays silent


def test_each_epoch_visits_every_file_once(tmp_path):
    for k in range(5):
        sf.write(tmp_path / f"f{k}.wav", np.full(2400, 0.1 * (k + 1), np.float32), 24000, subtype="FLOAT")
    ds = AudioCropDataset(tmp_path, segment_samples=480, gain_db=None, length=10)
    orders = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        ids = [round(float(ds[i][0, 0]) * 10) - 1 for i in range(10)]
        assert sorted(ids[:5]) == sorted(ids[5:]) == list(range(5))
        orders.append(ids)
    assert orders[0] != orders[1] or orders[1] != orders[2]
    ds.set_epoch(0)
    assert [round(float(ds[i][0, 0]) * 10) - 1 for i in range(10)] == orders[0]


def test_same_items_whatever_the_workers(folder):
    ds = AudioCropDataset(folder, segment_samples=SEG, noise_snr_db=(5.0, 30.0), seed=3, length=12)

    def epoch_batches(loader, epoch):
        ds.set_epoch(epoch)
        return torch.cat(list(loader))

    ref = [epoch_batches(DataLoader(ds, batch_size=4), e) for e in (0, 1)]
    assert not torch.equal(ref[0], ref[1])
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        assert torch.equal(epoch_batches(loader, epoch), ref[epoch])
    assert torch.equal(ds[5], ref[1][5])  # item order does not matter either
    other = AudioCropDataset(folder, segment_samples=SEG, noise_snr_db=(5.0, 30.0), seed=4, length=12)
    assert not torch.equal(other[0], ref[0][0])


def test_manifest_source_and_unreadable_files(folder, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file" * 10)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"path": str(folder / r)}) for r in REL[:2])
                                      + '\n{"path": "bad.wav"}\n{"path": "gone.wav"}\n')
    ds = AudioCropDataset(tmp_path / "m.jsonl", segment_samples=SEG)
    assert len(ds) == 4 and ds.files[2] == tmp_path / "bad.wav"
    errors = []
    for i in range(len(ds)):
        try:
            assert ds[i].shape == (1, SEG)
        except AudioReadError as exc:
            errors.append(str(exc))
    assert len(errors) == 2
    assert any(str(tmp_path / "bad.wav") in e and "not a readable audio file" in e for e in errors)
    assert any(str(tmp_path / "gone.wav") in e and "no such file" in e for e in errors)
    with pytest.raises(IndexError):
        ds[4]


def test_bad_arguments(folder):
    for kwargs, message in [({"segment_samples": 0}, "segment_samples"),
                            ({"segment_samples": SEG, "gain_db": (6, -6)}, "gain_db"),
                            ({"segment_samples": SEG, "noise_snr_db": 3}, "noise_snr_db"),
                            ({"segment_samples": SEG, "seed": -1}, "seed"),
                            ({"segment_samples": SEG, "length": 0}, "length")]:
        with pytest.raises(MimiError, match=message):
            AudioCropDataset(folder, **kwargs)


def test_eval_clips(folder, tmp_path):
    clips = EvalClips(folder, max_seconds=0.5)
    # round robin over the parent folders a, b, b/deep
    assert [name for name, _ in clips] == ["a/x24k.wav", "b/short.wav", "b/deep/z44k_stereo.wav", "a/y16k.flac"]
    lengths = {name: wav.shape for name, wav in clips}
    assert lengths["a/y16k.flac"] == lengths["b/deep/z44k_stereo.wav"] == (1, 12000)
    assert lengths["b/short.wav"] == (1, 1200)
    name, wav = clips[2]
    np.testing.assert_allclose(wav[0].numpy(), whole_at_24k(folder / name)[:12000], atol=1e-5)
    whole = EvalClips(folder)
    assert len(whole) == 4 and whole.seconds == pytest.approx(3.05, abs=1e-3)
    (tmp_path / "m.txt").write_text("\n".join(str(folder / r) for r in reversed(REL)))
    assert [n for n, _ in EvalClips(tmp_path / "m.txt", 1.0)] == [str(folder / r) for r in reversed(REL)]
    with pytest.raises(MimiError, match="max_seconds"):
        EvalClips(folder, max_seconds=0)
