"""Semantic distillation: torch resampler, WavLM teacher at 12.5 Hz, loss and gradient paths."""

from __future__ import annotations

import math

import pytest
import torch

import mimi
from mimi.errors import MimiError
from mimi.quantization.training import split_rvq_train_forward
from mimi.training.distill import SemanticDistillation, WavLMTeacher, resample_torch
from tests.helpers import speech_tensor

transformers = pytest.importorskip("transformers")




def _tiny_wavlm_config():
    # WavLM's real hop: 320 samples at 16 kHz (50 Hz), here in three convs (5 * 8 * 8)
    return transformers.WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32, max_bucket_distance=64,
        mask_time_prob=0.0, layerdrop=0.0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return WavLMTeacher(_tiny_wavlm_config(), layer=-1)


# -- resampling -------------------------------------------------------------------------------

def test_resample_sine_keeps_frequency_and_amplitude():
    amp, f = 0.5, 1000.0
    x = amp * torch.sin(2 * math.pi * f * torch.arange(24000, dtype=torch.float64) / 24000).float()
    y = resample_torch(x[None, None], 24000, 16000)[0, 0]
    assert y.shape == (16000,)
    n = torch.arange(16000, dtype=torch.float64)
    core = slice(400, -400)  # away from the zero-padded edges
    ref = amp * torch.sin(2 * math.pi * f * n / 16000)
    assert float((y.double() - ref)[core].abs().max()) < 0.01 * amp
    amplitude = float(y[core].double().pow(2).mean().sqrt()) * math.sqrt(2)
    assert amplitude == pytest.approx(amp, rel=0.01)
    spectrum = torch.fft.rfft(y[core].double() * torch.hann_window(16000 - 800, dtype=torch.float64))
    peak_hz = float(spectrum.abs().argmax()) * 16000 / (16000 - 800)
    assert peak_hz == pytest.approx(f, abs=2.0)


def test_resample_rejects_above_new_nyquist_lengths_and_gradient():
    t = torch.arange(24000) / 24000
    alias = torch.sin(2 * math.pi * 10000 * t)  # above 8 kHz: must not fold back to 6 kHz
    assert float(resample_torch(alias, 24000, 16000)[400:-400].abs().max()) < 0.01
    up = resample_torch(torch.sin(2 * math.pi * 1000 * torch.arange(16000) / 16000), 16000, 24000)
    ref = torch.sin(2 * math.pi * 1000 * torch.arange(24000) / 24000)
    assert up.shape == (24000,) and float((up - ref)[400:-400].abs().max()) < 0.01
    assert resample_torch(torch.zeros(3, 1001), 24000, 16000).shape == (3, 667)  # round(1001 * 2 / 3)
    assert resample_torch(torch.zeros(2, 0), 24000, 16000).shape == (2, 0)
    x = torch.randn(2, 1, 960, requires_grad=True)
    resample_torch(x, 24000, 16000).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- teacher ----------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1920 * 5, 24000, 24000 + 500])
def test_teacher_frames_match_mimi_frames(teacher, T):
    feats = teacher(0.3 * torch.randn(2, 1, T, generator=torch.Generator().manual_seed(T)))
    assert feats.shape == (2, math.ceil(T / 1920), 32)
    assert torch.isfinite(feats).all() and not feats.requires_grad


def test_teacher_is_frozen_and_scale_invariant(teacher):
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training  # stays in eval mode
    wav = speech_tensor(0.5, batch=2)
    torch.testing.assert_close(teacher(wav), teacher(3.0 * wav), atol=1e-4, rtol=1e-4)  # per-utterance norm


def test_teacher_pooling_is_centred_masked_average(teacher):
    hidden = torch.arange(10, dtype=torch.float32)[None, :, None]  # [1, 10, 1] frame indices
    pooled = teacher.pool(hidden, frames=3)[0, :, 0]
    # frame f averages teacher frames [4f - 2, 4f + 6) that exist
    expected = [sum(range(0, 6)) / 6, sum(range(2, 10)) / 8, sum(range(6, 10)) / 4]
    torch.testing.assert_close(pooled, torch.tensor(expected))


def test_teacher_loads_local_folder_and_reports_bad_source(teacher, tmp_path):
    teacher.model.save_pretrained(tmp_path / "wavlm")
    loaded = WavLMTeacher(tmp_path / "wavlm", layer=1)
    wav = speech_tensor(0.3)
    reference = WavLMTeacher(_tiny_wavlm_config(), layer=1)
    reference.model.load_state_dict(teacher.model.state_dict())
    torch.testing.assert_close(loaded(wav), reference(wav))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MimiError, match="local path"):
        WavLMTeacher(tmp_path / "empty")
    with pytest.raises(MimiError, match="layer"):
        WavLMTeacher(_tiny_wavlm_config(), layer=3)


# -- student side -----------------------------------------------------------------------------

def test_distillation_loss_values():
    distill = SemanticDistillation(4, 6)
    semantic = torch.randn(2, 4, 7)
    with torch.no_grad():
        aligned = distill.proj(semantic.transpose(1, 2))
    with torch.no_grad():
        assert float(distill.loss(semantic, 2.0 * aligned)) == pytest.approx(0.0, abs=1e-6)
        assert float(distill.loss(semantic, -aligned)) == pytest.approx(2.0, abs=1e-6)
        assert float(distill.loss(semantic, aligned[:, :5])) == pytest.approx(0.0, abs=1e-6)  # cropped


def test_distillation_gradient_reaches_projection_and_encoder_not_teacher(teacher):
    torch.manual_seed(1)
    model = mimi.build_mimi(mimi.MimiConfig.tiny()).train()
    wav = speech_tensor(0.32, batch=2)  # 4 frames
    latent = model.encode_to_latent(wav)
    q = split_rvq_train_forward(model.quantizer, latent, n_q=8, q_dropout=True,
                                generator=torch.Generator().manual_seed(2))
    target = teacher(wav)
    assert target.shape[1] == latent.shape[-1] == 4
    distill = SemanticDistillation(model.config.seanet.dimension, teacher.dim)
    loss = distill.loss(q.semantic, target)
    assert 0.0 < float(loss.detach()) < 2.0
    loss.backward()
    assert distill.proj.weight.grad.abs().sum() > 0
    encoder_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in encoder_grads) and sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert model.quantizer.semantic.input_proj.weight.grad.abs().sum() > 0
    assert model.quantizer.acoustic.input_proj.weight.grad is None  # only the semantic level is distilled
    assert all(p.grad is None for p in teacher.parameters())
