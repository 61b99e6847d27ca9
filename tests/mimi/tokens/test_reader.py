"""`mimi.tokens.TokenDataset`: reading extracted tokens back."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from mimi.errors import MimiError
from mimi.tokens import TokenDataset, TokenItem, extract_tokens
from tests.mimi.tokens.test_extract import CORPUS, load_codes, read_manifest, write_corpus




@pytest.fixture(scope="module")
def extracted(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    rels = write_corpus(root / "in")
    extract_tokens(root / "in", root / "out", tiny_model, batch_size=4, shard_size=4)
    return root / "out", rels


def test_round_trip(extracted):
    out, rels = extracted
    ds = TokenDataset(out)
    manifest = {e["audio"]: e for e in read_manifest(out)}
    assert len(ds) == len(rels) and ds.names == rels and "a16k.wav" in ds and "nope.wav" not in ds
    assert ds.codebooks == 8 and ds.fingerprint == manifest["a16k.wav"]["fingerprint"] and ds.model_id == "mimi-tiny"
    items = list(ds.items())
    assert [it.audio for it in items] == rels and [it.audio for it in ds] == rels
    rates = {rel: rate for rel, rate, *_ in CORPUS}
    for it in items:
        e = manifest[it.audio]
        assert isinstance(it, TokenItem) and it.codes.dtype == torch.int16
        assert tuple(it.codes.shape) == (8, it.frames) and it.frames == e["frames"] and it.codebooks == 8
        assert it.sample_rate == rates[it.audio] and it.samples == e["samples"]
        assert torch.equal(it.codes, load_codes(out, e))
    assert torch.equal(ds[-1].codes, items[-1].codes) and ds.get("music/stereo44k.flac").audio == "music/stereo44k.flac"
    assert ds.record(0)["shard"] == manifest[rels[0]]["shard"]
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(KeyError):
        ds.get("nope.wav")


def test_torch_dataloader(extracted):
    out, rels = extracted
    ds = TokenDataset(out, max_open_shards=1)  # forces handle eviction and reopening
    seen = [item.audio for item in DataLoader(ds, batch_size=None, num_workers=0)]
    assert seen == rels
    batches = list(DataLoader(ds, batch_size=4, shuffle=True, collate_fn=list,
                              generator=torch.Generator().manual_seed(0)))
    assert sorted(it.audio for b in batches for it in b) == rels and [len(b) for b in batches] == [4, 2]
    in_workers = [it.audio for it in DataLoader(ds, batch_size=None, num_workers=2)]
    assert sorted(in_workers) == rels


def test_bad_folders(extracted, tmp_path):
    out, _ = extracted
    with pytest.raises(MimiError, match="no such folder"):
        TokenDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MimiError, match="manifest.jsonl"):
        TokenDataset(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    with open(bad / "manifest.jsonl", "a") as f:
        f.write("garbage\n")
    with pytest.raises(MimiError, match="not valid JSON"):
        TokenDataset(bad)
    (bad / "manifest.jsonl").write_text('{"audio": "x.wav", "shard": "../evil", "key": "k"}\n')
    with pytest.raises(MimiError, match="x.wav"):
        TokenDataset(bad)


def test_missing_shard_or_tensor(extracted, tmp_path):
    out, _ = extracted
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    entries = read_manifest(broken)
    (broken / entries[0]["shard"]).unlink()
    other = next(i for i, e in enumerate(entries) if e["shard"] != entries[0]["shard"])
    entries[other]["key"] = "no-such-key"
    (broken / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    ds = TokenDataset(broken)
    with pytest.raises(MimiError, match="missing"):
        ds[0]
    with pytest.raises(MimiError, match="no-such-key"):
        ds[other]


def test_folder_of_an_unfinished_run_is_readable(extracted, tmp_path):
    out, rels = extracted
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    lines = (partial / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    (partial / "manifest.jsonl").unlink()
    (partial / "manifest.r1.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:10])  # torn tail
    ds = TokenDataset(partial)
    assert ds.names == rels[:3] and all(item.frames > 0 for item in ds)
