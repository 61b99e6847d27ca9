"""Our Mimi against transformers' MimiModel (the oracle) on identical random weights."""

from __future__ import annotations

import pytest
import torch

import mimi
from tests.helpers import speech_tensor

transformers = pytest.importorskip("transformers")


def level_agreement(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    assert ours.shape == theirs.shape
    return (ours == theirs).float().mean(dim=(0, 2))  # [K]


def snr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - test).pow(2).sum().clamp(min=1e-30)))


@pytest.fixture(scope="module")
def oracle(released_model, tmp_path_factory):
    folder = mimi.save(released_model, tmp_path_factory.mktemp("hf") / "mimi", layout="transformers")
    return transformers.MimiModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return speech_tensor(6.0, batch=2, seed=7)  # 75 frames, a whole number of frames


@pytest.mark.parametrize("num_codebooks", [8, 32])
def test_codes_match_transformers(released_model, oracle, speech, num_codebooks):
    released_model.set_num_codebooks(num_codebooks)
    with torch.no_grad():
        ours = released_model.encode(speech)
        theirs = oracle.encode(speech, num_quantizers=num_codebooks).audio_codes
    assert ours.shape == (2, num_codebooks, 75)
    agree = level_agreement(ours, theirs)
    assert agree[:2].min() >= 0.999, agree
    assert agree.mean() >= 0.98, agree
    # the input really exercises the quantizer: many distinct codes at the deepest level
    assert ours[:, -1].unique().numel() > 10


def test_decode_matches_transformers(released_model, oracle, speech):
    released_model.set_num_codebooks(32)
    with torch.no_grad():
        codes = released_model.encode(speech)
        for k in (1, 32):
            ours = released_model.decode(codes[:, :k])
            theirs = oracle.decode(codes[:, :k]).audio_values
            assert ours.shape == theirs.shape == (2, 1, 75 * 1920)
            assert snr_db(theirs, ours) >= 40.0


def test_latent_matches_transformers_encoder(released_model, oracle, speech):
    with torch.no_grad():
        ours = released_model.encode_to_latent(speech)
        theirs = oracle.encoder(speech).latents
    assert snr_db(theirs, ours) >= 60.0


def test_transformers_layout_round_trip_is_identical(released_model, tmp_path):
    """transformers layout -> ours -> transformers layout gives identical tensors."""
    from safetensors.torch import load_file

    first = mimi.save(released_model, tmp_path / "a", layout="transformers")
    reloaded = mimi.load(first, num_codebooks=32)
    second = mimi.save(reloaded, tmp_path / "b", layout="transformers")
    a = load_file(first / "model.safetensors")
    b = load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (first / "config.json").read_text() == (second / "config.json").read_text()


def test_transformers_reads_our_config(released_model, tmp_path):
    folder = mimi.save(released_model, tmp_path / "m", layout="transformers")
    cfg = transformers.MimiConfig.from_pretrained(folder)
    assert cfg.num_quantizers == 32 and cfg.sliding_window == 250 and cfg.upsample_groups == 512
    assert cfg.frame_rate == 12.5
