"""Checkpoint: the explicit key table, round trip, older fused names, named errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import moshi_lm
from mimi.errors import MimiError
from moshi_lm import LMConfig, key_table
from moshi_lm.checkpoint import ours_to_kyutai
from tests.moshi_lm.helpers import random_codes, tiny_model

REFERENCE_KEYS = Path(__file__).with_name("moshiko_lm_checkpoint_keys.tsv")


def test_key_table_matches_the_released_moshiko_layout():
    ref = {}
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            ref[key] = tuple(json.loads(shape))
    assert {e.kyutai: e.shape for e in key_table(LMConfig.moshiko_7b())} == ref


@pytest.mark.parametrize("overrides", [
    {}, {"norm": "layer_norm", "layer_scale": 0.1, "depformer_layer_scale": 0.2},
    {"gating": "none", "depformer_weights_per_step": False, "depformer_multi_linear": False},
])
def test_key_table_covers_the_model_exactly(overrides):
    model = tiny_model(**overrides)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    table = key_table(model.config)
    assert sorted(e.ours for e in table) == sorted(ours)
    assert all(torch.Size(e.shape).numel() == torch.Size(ours[e.ours]).numel() for e in table)
    assert len({e.kyutai for e in table}) == len(table)


@pytest.fixture()
def saved(tmp_path):
    model = tiny_model(seed=2)
    folder = moshi_lm.save(model, tmp_path / "lm")
    return model, folder


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip(saved):
    model, folder = saved
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    loaded = moshi_lm.load(folder)
    assert loaded.config == model.config and _same_weights(model, loaded) and not loaded.training
    codes = random_codes(model.config, 1, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(codes).logits, model(codes).logits, equal_nan=True)
    state = load_file(str(folder / "model.safetensors"))
    assert state["out_norm.alpha"].shape == (1, 1, model.config.dim)
    bf16 = moshi_lm.load(folder, dtype=torch.bfloat16)
    assert bf16.text_head.weight.dtype == torch.bfloat16


def test_repository_keys_in_config_are_tolerated(saved):
    model, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(moshi_name="weights.safetensors", mimi_name="tokenizer.safetensors",
               tokenizer_name="tok.model", model_type="moshi", lm_gen_config={"temp": 0.8})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    assert _same_weights(model, moshi_lm.load(folder))


def test_older_fused_attention_names(saved):
    model, folder = saved
    cfg = model.config
    state = load_file(str(folder / "model.safetensors"))
    for prefix, steps, name in [("transformer.layers.0", 1, "in_proj_weight"),
                                ("transformer.layers.1", 1, "in_proj.weight"),
                                ("depformer.layers.0", cfg.dep_q, "in_proj_weight"),
                                ("depformer.layers.1", cfg.dep_q, "in_proj.weight")]:
        ins = [state.pop(f"{prefix}.self_attn.in_projs.{s}.weight") for s in range(steps)]
        outs = [state.pop(f"{prefix}.self_attn.out_projs.{s}.weight") for s in range(steps)]
        state[f"{prefix}.self_attn.{name}"] = torch.cat(ins)
        state[f"{prefix}.self_attn.out_proj.weight"] = torch.cat(outs)
    save_file(state, str(folder / "model.safetensors"))
    assert _same_weights(model, moshi_lm.load(folder))


def _rewrite(folder, edit):
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def test_missing_key_is_named(saved):
    _, folder = saved
    _rewrite(folder, lambda s: s.pop("depformer.layers.1.gating.3.linear_out.weight"))
    with pytest.raises(MimiError, match=r"missing keys: depformer\.layers\.1\.gating\.3\.linear_out\.weight"):
        moshi_lm.load(folder)


def test_unexpected_key_is_named(saved):
    _, folder = saved
    _rewrite(folder, lambda s: s.__setitem__("extra_heads.0.weight", torch.zeros(6, 64)))
    with pytest.raises(MimiError, match=r"unexpected keys: extra_heads\.0\.weight"):
        moshi_lm.load(folder)


def test_misshaped_key_is_named(saved):
    _, folder = saved
    _rewrite(folder, lambda s: s.__setitem__("emb.3.weight", torch.zeros(32, 64)))
    with pytest.raises(MimiError, match=r"mis-shaped keys: emb\.3\.weight \(file \[32, 64\], expected \[33, 64\]\)"):
        moshi_lm.load(folder)


def test_misshaped_legacy_key_is_named(saved):
    _, folder = saved

    def edit(s):
        s.pop("transformer.layers.0.self_attn.in_projs.0.weight")
        s["transformer.layers.0.self_attn.in_proj_weight"] = torch.zeros(10, 64)
    _rewrite(folder, edit)
    with pytest.raises(MimiError, match=r"transformer\.layers\.0\.self_attn\.in_proj_weight"):
        moshi_lm.load(folder)


def test_bad_config_and_sources(saved, tmp_path):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["fancy_option"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MimiError, match="fancy_option"):
        moshi_lm.load(folder)
    with pytest.raises(MimiError, match="no such LM checkpoint"):
        moshi_lm.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(LMConfig.tiny().to_json_dict()))
    with pytest.raises(MimiError, match="holds no model.safetensors"):
        moshi_lm.load(empty)


def test_ours_to_kyutai_reshapes_norms():
    model = tiny_model()
    theirs = ours_to_kyutai(model.state_dict(), model.config)
    assert theirs["transformer.layers.0.norm1.alpha"].shape == (1, 1, 64)
    assert theirs["depformer.layers.0.gating.7.linear_in.weight"].shape == (2 * 88, 32)


def test_moshiko_7b_builds_on_meta_and_fits_the_table():
    cfg = LMConfig.moshiko_7b()
    with torch.device("meta"):
        model = moshi_lm.build_lm(cfg, init=False)
    ours = {k: v.shape.numel() for k, v in model.state_dict().items()}
    table = key_table(cfg)
    assert {e.ours: torch.Size(e.shape).numel() for e in table} == ours
    assert 7.0e9 < sum(ours.values()) < 8.0e9


def test_directory_without_config_is_moshiko(tmp_path):
    from moshi_lm.checkpoint import read_config

    assert read_config(tmp_path) == (LMConfig.moshiko_7b(), "model.safetensors")
