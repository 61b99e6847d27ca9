"""Config presets, derived quantities, JSON round trip and validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

import mimi
from mimi import MimiConfig, MimiError, QuantizerConfig, SeanetConfig, TransformerConfig

PRESETS = ["released", "medium", "small", "tiny"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate_and_share_the_frame_structure(name):
    cfg = MimiConfig.preset(name)
    assert cfg == getattr(MimiConfig, name)()
    assert cfg.transformer.d_model == cfg.seanet.dimension
    assert cfg.sample_rate == 24000 and cfg.frame_rate == 12.5
    assert cfg.frame_size == 1920
    assert cfg.seanet.hop_length * cfg.resample_stride == cfg.frame_size
    # the preset passes validation again when rebuilt field by field
    assert dataclasses.replace(cfg) == cfg


def test_released_architecture():
    cfg = MimiConfig.released()
    assert cfg.frame_size == 1920
    assert cfg.encoder_frame_rate == 25
    assert cfg.resample_stride == 2
    assert cfg.seanet.hop_length == 960
    assert cfg.seanet.ratios == (8, 6, 5, 4)
    assert (cfg.seanet.dimension, cfg.transformer.num_layers, cfg.transformer.context) == (512, 8, 250)
    assert cfg.transformer.head_dim == 64
    assert (cfg.quantizer.n_q, cfg.quantizer.n_q_semantic, cfg.quantizer.bins) == (32, 1, 2048)
    assert cfg == MimiConfig()


@pytest.mark.parametrize("name", PRESETS)
def test_json_round_trip(name):
    cfg = MimiConfig.preset(name)
    text = cfg.to_json()
    assert json.loads(text)["seanet"]["ratios"] == list(cfg.seanet.ratios)
    back = MimiConfig.from_json(text)
    assert back == cfg
    assert isinstance(back.seanet.ratios, tuple)
    assert back.to_json() == text
    assert MimiConfig.from_dict(cfg.to_dict()) == cfg


def test_from_json_partial_uses_defaults():
    cfg = MimiConfig.from_json(json.dumps({"quantizer": {"n_q": 16}}))
    assert cfg.quantizer.n_q == 16
    assert cfg.seanet == SeanetConfig() and cfg.transformer == TransformerConfig()


def test_configs_are_frozen():
    cfg = MimiConfig.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sample_rate = 16000  # type: ignore[misc]


@pytest.mark.parametrize("make", [
    lambda: TransformerConfig(d_model=30, num_heads=4),  # d_model not divisible by heads
    lambda: TransformerConfig(d_model=36, num_heads=4),  # odd head dim: no RoPE
    lambda: TransformerConfig(context=0),
    lambda: SeanetConfig(ratios=(8, 0, 5, 4)),
    lambda: SeanetConfig(ratios=()),
    lambda: SeanetConfig(channels=2),
    lambda: SeanetConfig(n_filters=0),
    lambda: SeanetConfig(n_filters=9, compress=2),
    lambda: SeanetConfig(pad_mode="reflect"),
    lambda: QuantizerConfig(n_q=4, n_q_semantic=5),
    lambda: QuantizerConfig(n_q_semantic=0),
    lambda: QuantizerConfig(bins=1),
    lambda: MimiConfig(seanet=SeanetConfig(dimension=32, n_filters=8)),  # d_model 512 != 32
    lambda: MimiConfig(frame_rate=0),
    lambda: MimiConfig(sample_rate=-1),
    lambda: MimiConfig(frame_rate=10.0),  # 25 Hz encoder rate is not a multiple of 10 Hz
    lambda: MimiConfig(sample_rate=24001, frame_rate=12.5),
    lambda: MimiConfig.preset("huge"),
], ids=["heads", "odd-head-dim", "context", "ratio-0", "no-ratios", "stereo", "filters-0", "compress",
        "pad-mode", "semantic>n_q", "semantic-0", "bins", "dmodel-vs-seanet", "frame-rate-0", "sample-rate",
        "non-integer-resample", "non-integer-frame-size", "unknown-preset"])
def test_invalid_configs_raise_mimi_error(make):
    with pytest.raises(MimiError, match="invalid Mimi config|unknown Mimi preset"):
        make()


@pytest.mark.parametrize("text", [
    "{not json",
    "",
    "[1, 2, 3]",
    '"released"',
    '{"seanet": {"foo": 1}}',  # unknown nested field
    '{"transformer": {"d_model": 30, "num_heads": 4}}',
    '{"transformer": null}',
    '{"seanet": {"ratios": 5}}',
    '{"seanet": {"ratios": [8, "a"]}}',
    '{"seanet": {"ratios": [8, 0, 5, 4]}}',
    '{"sample_rate": "x"}',
    '{"seanet": {"dimension": 256}}',  # transformer d_model mismatch
])
def test_invalid_json_raises_mimi_error(text):
    with pytest.raises(MimiError):
        MimiConfig.from_json(text)


def test_mimi_error_is_exported():
    assert issubclass(mimi.MimiError, Exception)
    with pytest.raises(mimi.MimiError):
        MimiConfig.from_json("{")


def test_unknown_top_level_field_raises():
    with pytest.raises(MimiError):
        MimiConfig.from_json('{"sample_rte": 16000}')


def test_non_object_section_raises_mimi_error():
    with pytest.raises(MimiError):
        MimiConfig.from_json('{"seanet": "ab"}')


def test_non_string_name_raises():
    with pytest.raises(MimiError, match="name"):
        MimiConfig.from_json('{"name": 5}')


def test_small_preset_fits_the_bundled_model_budget():
    import mimi

    model = mimi.build_mimi(MimiConfig.small())
    size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert size <= 25 * 2**20 and model.config.quantizer.n_q == 32


def test_medium_preset_fits_the_bundled_model_budget_in_float16():
    model = mimi.build_mimi(MimiConfig.medium())
    floats = [v for v in model.state_dict().values() if v.is_floating_point()]
    assert sum(v.numel() * 2 for v in floats) <= 25 * 10**6  # stored by `mimi convert --dtype float16`
    assert model.config.quantizer.n_q == 32 and model.config.seanet.n_filters == 32
