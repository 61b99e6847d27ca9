"""Checkpoint layouts: Kyutai's file, transformers' folder, conversions and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mimi
from mimi.checkpoint.kyutai import KYUTAI_KEYS
from mimi.checkpoint.transformers_layout import interleaved_to_rotate_half, rotate_half_to_interleaved

REFERENCE_TSV = Path(__file__).parents[1] / "data" / "mimi_kyutai_checkpoint_keys.tsv"


def reference_layout() -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in REFERENCE_TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        rows[key] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    return rows


def test_kyutai_save_matches_released_layout(released_model, tmp_path):
    path = mimi.save(released_model, tmp_path / "tokenizer.safetensors", layout="kyutai")
    saved = load_file(path)
    assert {k: tuple(v.shape) for k, v in saved.items()} == reference_layout()
    assert all(v.dtype == torch.float32 for v in saved.values())


def test_kyutai_round_trip_is_identical(released_model, tmp_path):
    path = mimi.save(released_model, tmp_path / "m.safetensors", layout="kyutai")
    loaded = mimi.load(path, num_codebooks=32)
    a, b = released_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert mimi.weights_fingerprint(loaded) == mimi.weights_fingerprint(released_model)


def test_released_file_without_our_metadata_loads_as_released(released_model, tmp_path):
    """Kyutai's own file has no config metadata: the released architecture is assumed."""
    path = tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors"
    save_file({k: v.contiguous() for k, v in KYUTAI_KEYS.state_to_theirs(released_model.state_dict()).items()},
              str(path))
    loaded = mimi.load(path)
    assert loaded.config.quantizer.n_q == 32 and loaded.num_codebooks == 8
    wav = torch.randn(1, 1, 3840) * 0.1
    released_model.set_num_codebooks(8)
    with torch.no_grad():
        assert torch.equal(loaded.encode(wav), released_model.encode(wav))


def test_layouts_convert_both_ways(tiny_model, tmp_path):
    kyutai = mimi.save(tiny_model, tmp_path / "tiny.safetensors", layout="kyutai")
    folder = mimi.convert(kyutai, tmp_path / "tiny-hf", layout="transformers")
    back = mimi.convert(folder, tmp_path / "back.safetensors", layout="kyutai")
    a, b = load_file(kyutai), load_file(back)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert mimi.load(folder).config == tiny_model.config


def test_rope_permutation_is_inverse():
    w = torch.randn(8 * 64, 512)
    p = interleaved_to_rotate_half(w, 8)
    assert not torch.equal(p, w)
    assert torch.equal(rotate_half_to_interleaved(p, 8), w)
    # head 0: rows 0, 2, 4, ... come first, then 1, 3, 5, ...
    assert torch.equal(p[:32], w[0:64:2]) and torch.equal(p[32:64], w[1:64:2])


def test_load_dtype_and_codebooks(tiny_model, tmp_path):
    path = mimi.save(tiny_model, tmp_path / "t.safetensors")
    model = mimi.load(path, num_codebooks=3, dtype=torch.bfloat16)
    assert model.num_codebooks == 3 and not model.training
    for name, p in model.named_parameters():
        assert not p.requires_grad
        # reduced precision everywhere but the quantizer, which stays float32 (bf16 search flips codes)
        assert p.dtype == (torch.float32 if name.startswith("quantizer.") else torch.bfloat16), name
    with torch.no_grad():
        wav = torch.randn(1, 1, 3840, dtype=torch.bfloat16) * 0.1
        codes = model.encode(wav)
        audio = model.decode(codes)
    assert codes.dtype == torch.long and codes.shape == (1, 3, 2)
    assert audio.dtype == torch.bfloat16 and audio.shape == (1, 1, 3840)
    with pytest.raises(mimi.MimiError, match="num_codebooks"):
        mimi.load(path, num_codebooks=9)


def _corrupt(source: Path, path: Path, drop=(), add=(), reshape=()) -> Path:
    """A copy of `source` (metadata kept) with keys dropped, added or mis-shaped."""
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(source)
    for key in drop:
        del state[key]
    for key in add:
        state[key] = torch.zeros(3)
    for key in reshape:
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def test_bad_keys_are_named(tiny_model, tmp_path):
    state = mimi.save(tiny_model, tmp_path / "ok.safetensors")
    key = "encoder.model.0.conv.conv.weight"
    with pytest.raises(mimi.MimiError, match=r"missing keys: encoder\.layers\.0\.conv\.weight"):
        mimi.load(_corrupt(state, tmp_path / "a.safetensors", drop=[key]))
    with pytest.raises(mimi.MimiError, match=r"unexpected keys: encoder\.model\.99\.bogus"):
        mimi.load(_corrupt(state, tmp_path / "b.safetensors", add=["encoder.model.99.bogus"]))
    with pytest.raises(mimi.MimiError, match=r"mis-shaped: encoder\.layers\.0\.conv\.weight"):
        mimi.load(_corrupt(state, tmp_path / "c.safetensors", reshape=[key]))


def test_bad_sources_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(mimi.MimiError, match="no such checkpoint"):
        mimi.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(mimi.MimiError, match="cannot read"):
        mimi.load(tmp_path / "junk.safetensors")
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(mimi.MimiError, match="not a Mimi checkpoint"):
        mimi.load(tmp_path / "other.safetensors")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(mimi.MimiError, match="config.json"):
        mimi.load(tmp_path / "empty_dir")
    with pytest.raises(mimi.MimiError, match="unknown layout"):
        mimi.convert(tmp_path / "x", tmp_path / "y", layout="onnx")


def test_hub_offline_error_says_how_to_pass_a_local_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mimi.MimiError, match="pass a local path"):
        mimi.load("kyutai/mimi")


def test_unsupported_transformers_config_is_refused(tiny_model, tmp_path):
    import json

    folder = mimi.save(tiny_model, tmp_path / "hf", layout="transformers")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["upsample_groups"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(mimi.MimiError, match="upsample_groups"):
        mimi.load(folder)


def test_hub_id_loads_from_the_local_hub_cache(tiny_model, tmp_path, monkeypatch):
    """The hub path through huggingface_hub, served from its cache layout (no network)."""
    cache = tmp_path / "cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--kyutai--mimi" / "snapshots" / commit
    mimi.save(tiny_model, snapshot, layout="transformers")
    (cache / "models--kyutai--mimi" / "refs").mkdir(parents=True)
    (cache / "models--kyutai--mimi" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache), raising=False)
    loaded = mimi.load("kyutai/mimi")
    assert mimi.weights_fingerprint(loaded) == mimi.weights_fingerprint(tiny_model)


def test_float16_storage_halves_the_file_and_loads_as_float32(tiny_model, tmp_path):
    """`mimi convert --dtype float16` (how the bundled model is stored): every float tensor is
    stored in half precision; loading builds a float32 model whose weights are those values."""
    full = mimi.save(tiny_model, tmp_path / "full.safetensors")
    half = mimi.convert(full, tmp_path / "half.safetensors", layout="kyutai", dtype=torch.float16)
    stored = load_file(half)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = mimi.load(half)
    state = loaded.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(state[key], value.to(torch.float16).float(), rtol=0, atol=0)
    # fine-tuning starts from it too (the trainer's --init reads the same file)
    from mimi.training.trainer import _build_model  # noqa: PLC0415

    model = _build_model(None, half)  # type: ignore[arg-type]
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)


def test_storage_dtype_overflow_is_a_clear_error(tiny_model, tmp_path):
    state = dict(tiny_model.state_dict())
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(1e6)
    with pytest.raises(mimi.MimiError, match="does not fit"):
        mimi.checkpoint.save_state(state, tiny_model.config, tmp_path / "x.safetensors", dtype=torch.float16)
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_convert_dtype(tiny_model, tmp_path):
    from click.testing import CliRunner

    from mimi_cli.main import main

    src = mimi.save(tiny_model, tmp_path / "t.safetensors")
    result = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "h.safetensors"), "--layout", "kyutai",
                                       "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "bfloat16" in result.output
    assert next(iter(load_file(tmp_path / "h.safetensors").values())).dtype == torch.bfloat16
