"""Test helpers: speech-like audio, realistic random weights, small models."""

from __future__ import annotations

import numpy as np
import torch

import mimi
from mimi.model import MimiModel

# (F1, F2, F3) in Hz for a few vowels
_VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390)]


def _resonator(freq: float, bandwidth: float, sr: int, taps: int = 400) -> np.ndarray:
    t = np.arange(taps) / sr
    return np.exp(-np.pi * bandwidth * t) * np.sin(2 * np.pi * freq * t)


def speechlike(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like audio: voiced syllables (glottal pulses through formant
    resonators, gliding pitch), fricative noise bursts and pauses. Float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, dtype=np.float64)
    pos = 0
    while pos < n:
        kind = rng.choice(["voiced", "voiced", "voiced", "fricative", "pause"])
        length = int(sr * rng.uniform(0.08, 0.3))
        seg = np.zeros(length)
        if kind == "voiced":
            f0 = rng.uniform(90, 230) * np.linspace(1.0, rng.uniform(0.8, 1.2), length)
            phase = np.cumsum(f0 / sr)
            pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
            f1, f2, f3 = _VOWELS[rng.integers(len(_VOWELS))]
            ir = _resonator(f1, 90, sr) + 0.6 * _resonator(f2, 110, sr) + 0.3 * _resonator(f3, 160, sr)
            seg = np.convolve(pulses, ir)[:length] + 0.01 * rng.standard_normal(length)
        elif kind == "fricative":
            noise = rng.standard_normal(length)
            seg = np.convolve(noise, _resonator(rng.uniform(3000, 6000), 1500, sr, 64))[:length] * 0.3
        env = np.sin(np.linspace(0, np.pi, length)) ** 0.5
        end = min(n, pos + length)
        out[pos:end] = (seg * env)[: end - pos]
        pos = end
    out /= max(np.abs(out).max(), 1e-9)
    return (0.7 * out).astype(np.float32)


def speech_tensor(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """[B, 1, T] speech-like audio at 24 kHz, one distinct utterance per item."""
    return torch.stack([torch.from_numpy(speechlike(seconds, seed=seed + b))[None] for b in range(batch)])


def randomize_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Break init symmetries: LayerScales around 0.3, LayerNorm affine noise, small bias noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):  # LayerScale
                p.copy_(0.1 + 0.4 * torch.rand(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def calibrate_codebooks(model: MimiModel, wav: torch.Tensor, seed: int = 0) -> None:
    """Give every codebook Gaussian entries at the scale of the residual it sees on `wav`, so
    codes are diverse at every level (as with trained weights) without near-duplicate entries.
    Runs the RVQs level by level."""
    g = torch.Generator().manual_seed(seed)
    latent = model.encode_to_latent(wav)  # [B, D, F]
    for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
        residual = rvq.project_in(latent).transpose(1, 2).reshape(-1, rvq.input_proj.out_channels)
        for layer in rvq.layers:
            mean, std = residual.mean(0), residual.std(0)
            layer.embedding_sum.copy_(mean + std * torch.randn(layer.bins, layer.dim, generator=g))
            layer.cluster_usage.fill_(1.0)
            layer.initialized.fill_(1.0)
            residual = residual - layer.decode(layer.encode(residual))


def make_model(config: mimi.MimiConfig, num_codebooks: int = 8, seed: int = 0,
               calibrate_seconds: float = 4.0) -> MimiModel:
    torch.manual_seed(seed)
    model = mimi.build_mimi(config, num_codebooks=num_codebooks).eval()
    randomize_weights(model, seed)
    # calibrated through the channels-first convs: the test models do not depend on which
    # inference path (mimi.modules.time_major) is the default
    model.encoder.time_major = model.decoder.time_major = False
    calibrate_codebooks(model, speech_tensor(calibrate_seconds, batch=2, seed=100 + seed), seed)
    model.encoder.time_major = model.decoder.time_major = True
    model.requires_grad_(False)
    return model
