"""LMConfig: presets, derived sizes, JSON round trip, strictness."""

from __future__ import annotations

import dataclasses

import pytest

from mimi.errors import MimiError
from moshi_lm import LMConfig
from moshi_lm.mlp import gated_hidden_dim


def test_moshiko_preset_is_the_released_config():
    cfg = LMConfig.moshiko_7b()
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.context) == (4096, 32, 32, 3000)
    assert (cfg.text_card, cfg.card, cfg.n_q, cfg.dep_q) == (32000, 2048, 16, 8)
    assert cfg.delays == (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
    assert (cfg.depformer_dim, cfg.depformer_num_layers, cfg.depformer_num_heads) == (1024, 6, 16)
    assert cfg.norm == "rms_norm_f32" and cfg.gating == "silu" and cfg.positional_embedding == "rope"
    assert cfg.depformer_pos_emb == "none" and cfg.depformer_weights_per_step and cfg.depformer_multi_linear
    # hidden = 2/3 * 4.125 * d, integer-rounded as Kyutai does
    assert gated_hidden_dim(cfg.dim, cfg.dim_feedforward) == 11264
    assert gated_hidden_dim(cfg.depformer_dim, cfg.depformer_feedforward) == 2816
    assert cfg.num_user_codebooks == 8 and cfg.max_delay == 1


def test_tiny_is_moshiko_shaped():
    cfg, big = LMConfig.tiny(), LMConfig.moshiko_7b()
    assert cfg.delays == big.delays and (cfg.n_q, cfg.dep_q) == (big.n_q, big.dep_q)
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.text_card, cfg.card) == (64, 2, 4, 64, 32)
    assert (cfg.depformer_dim, cfg.depformer_num_layers, cfg.depformer_num_heads) == (32, 2, 2)


@pytest.mark.parametrize("name", ["moshiko_7b", "tiny"])
def test_json_round_trip(name):
    cfg = LMConfig.preset(name)
    assert LMConfig.from_json_dict(cfg.to_json_dict()) == cfg
    assert LMConfig.from_json(cfg.to_json()) == cfg
    assert dataclasses.replace(cfg) == cfg


def test_unknown_key_is_named():
    d = LMConfig.tiny().to_json_dict()
    d["conditioners"] = {}
    with pytest.raises(MimiError, match="conditioners"):
        LMConfig.from_json_dict(d)


@pytest.mark.parametrize("change", [
    {"delays": [0, 1]}, {"dim": 65}, {"norm": "batch_norm"}, {"dep_q": 17}, {"gating": "swish"},
    {"positional_embedding": "alibi"}, {"dim": "64"}, {"context": 0},
])
def test_invalid_configs_raise_mimi_error(change):
    with pytest.raises(MimiError):
        LMConfig.from_json_dict({**LMConfig.tiny().to_json_dict(), **change})


def test_unknown_preset():
    with pytest.raises(MimiError, match="unknown LM preset"):
        LMConfig.preset("nope")
