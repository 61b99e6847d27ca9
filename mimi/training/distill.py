"""Semantic distillation: pull Mimi's first (semantic) RVQ level toward WavLM features.

The teacher (`WavLMTeacher`) turns 24 kHz audio into frozen self-supervised features at
Mimi's 12.5 Hz frame rate: resample to 16 kHz in torch (`resample_torch`, so it runs on the
training device), normalise each utterance to zero mean and unit variance as WavLM's feature
extractor does, take one hidden layer (50 Hz), and average-pool it (kernel 8, stride 4,
non-causal) to one vector per Mimi frame. `SemanticDistillation` holds the trainable linear
projection from Mimi's latent to the teacher's dimension and the cosine-distance loss.

The released recipe uses WavLM-large (1024-d); the layer and the loss weight are not
published, hence options. `transformers` is only imported when a teacher is built.
"""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Union

import torch
import torch.nn.functional as F
from torch import nn

from mimi.errors import MimiError

if TYPE_CHECKING:  # pragma: no cover
    import transformers

__all__ = ["SemanticDistillation", "WavLMTeacher", "resample_torch"]


# -- resampling -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _polyphase_filter(up: int, down: int, zero_crossings: int, rolloff: float,
                      beta: float) -> tuple[torch.Tensor, int]:
    """Kaiser-windowed sinc filters, one per output phase: ([up, K] float64, left context W).

    Output sample n = q * up + r sits at input position q * down + r * down / up. Its filter
    tap k reads input sample q * down + k - W and weighs it by h(k - W - r * down / up), with
    h(t) = c sinc(c t) kaiser(t / W): c the cutoff relative to the input Nyquist (the lower
    of the two Nyquists, times `rolloff`), W the half-width in input samples that holds
    `zero_crossings / 2` zero crossings of the sinc on each side.
    """
    cutoff = min(1.0, up / down) * rolloff
    half = math.ceil((zero_crossings / 2) / cutoff)  # W
    taps = 2 * half + down + 1  # offsets -W .. down + W
    offsets = torch.arange(taps, dtype=torch.float64) - half  # [K]
    phases = torch.arange(up, dtype=torch.float64)[:, None] * down / up  # [up, 1]
    t = offsets[None, :] - phases  # [up, K]
    inside = t.abs() <= half
    window = torch.special.i0(beta * torch.sqrt((1 - (t / half) ** 2).clamp(min=0))) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64))
    h = cutoff * torch.sinc(cutoff * t) * window * inside
    h = h / h.sum(dim=1, keepdim=True)  # unit DC gain for every phase
    return h, half


def resample_torch(wav: torch.Tensor, from_rate: int, to_rate: int, *, zero_crossings: int = 64,
                   rolloff: float = 0.94, beta: float = 6.0) -> torch.Tensor:
    """Band-limited resampling of wav [..., T] in plain torch (differentiable, any device).

    A polyphase windowed-sinc filter: the rates are reduced by their gcd to up / down, and
    each of the `up` output phases is one strided conv of the input. The low-pass cutoff is
    `rolloff` times the lower Nyquist frequency; `zero_crossings` (in all, both sides) and the
    Kaiser `beta` set the transition width and stop-band rejection (about 60 dB for beta 6).
    The signal is taken as zero outside [0, T). Output length: round(T * to_rate / from_rate)
    (halves up, as `mimi.audio.resampled_length`); output sample n is the signal at time
    n / to_rate.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    if from_rate == to_rate:
        return wav
    g = math.gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // g, int(from_rate) // g
    lead, T = wav.shape[:-1], wav.shape[-1]
    n_out = (2 * T * to_rate + from_rate) // (2 * from_rate)
    if T == 0 or n_out == 0:
        return wav.new_zeros(*lead, n_out)
    h, half = _polyphase_filter(up, down, zero_crossings, rolloff, beta)
    dtype = wav.dtype if wav.is_floating_point() else torch.float32
    weight = h.to(device=wav.device, dtype=dtype)[:, None, :]  # [up, 1, K]
    blocks = -(-n_out // up)  # Q
    x = wav.reshape(-1, 1, T).to(dtype)
    right = max(0, (blocks - 1) * down + weight.shape[-1] - half - T)
    x = F.pad(x, (half, right))
    y = F.conv1d(x, weight, stride=down)[..., :blocks]  # [N, up, Q]
    y = y.transpose(1, 2).reshape(x.shape[0], blocks * up)[:, :n_out]
    return y.reshape(*lead, n_out)


# -- teacher ----------------------------------------------------------------------------------

class WavLMTeacher(nn.Module):
    """Frozen WavLM features at Mimi's frame rate: wav [B, 1, T] (24 kHz) -> [B, ceil(T / 1920), H].

    source: a local folder (or hub id) for `transformers.WavLMModel.from_pretrained`, or a
        `transformers.WavLMConfig` to build a randomly initialised model (tests).
    layer: index into WavLM's `hidden_states` (0 = after the positional conv, -1 = last layer).
    pool_kernel, pool_stride: average pooling of the 50 Hz features, in teacher frames. With
        WavLM's 320-sample hop at 16 kHz, stride 4 gives 12.5 Hz; the window is centred on the
        Mimi frame (`(kernel - stride) // 2` frames of look-back, the rest look-ahead), frames
        beyond the signal are left out of the average, and the output has exactly
        ceil(T / frame_size) frames, aligned with Mimi's latent.
    normalize: zero-mean unit-variance per utterance (WavLM-large's feature extractor does).

    The model is kept in eval mode (also after `.train()`), never receives gradients, and runs
    under `torch.no_grad()`.
    """

    def __init__(self, source: Union[str, os.PathLike, "transformers.WavLMConfig"], layer: int = -1,
                 pool_kernel: int = 8, pool_stride: int = 4, *, normalize: bool = True,
                 sample_rate: int = 24000, frame_size: int = 1920, teacher_rate: int = 16000):
        super().__init__()
        try:
            import transformers
        except ImportError as exc:  # pragma: no cover - transformers is a dev dependency
            raise MimiError("semantic distillation needs `transformers` (pip install transformers)") from exc
        if isinstance(source, transformers.WavLMConfig):
            model = transformers.WavLMModel(source)
        else:
            try:
                model = transformers.WavLMModel.from_pretrained(os.fspath(source))
            except Exception as exc:  # OSError, hub errors, bad files: all user-facing
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MimiError(f"could not load a WavLM teacher from {os.fspath(source)!r} ({detail}); "
                                "pass a local path to a downloaded WavLM checkpoint folder "
                                "(config.json + weights, e.g. microsoft/wavlm-large)") from None
        n_states = model.config.num_hidden_layers + 1
        if not -n_states <= layer < n_states:
            raise MimiError(f"teacher layer must be in [{-n_states}, {n_states - 1}] for this WavLM, got {layer}")
        if pool_kernel < 1 or pool_stride < 1:
            raise MimiError(f"pool_kernel and pool_stride must be >= 1, got {pool_kernel}, {pool_stride}")
        self.model = model.eval().requires_grad_(False)
        self.layer, self.pool_kernel, self.pool_stride = layer, pool_kernel, pool_stride
        self.normalize = normalize
        self.sample_rate, self.frame_size, self.teacher_rate = sample_rate, frame_size, teacher_rate

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def train(self, mode: bool = True) -> "WavLMTeacher":
        super().train(mode)
        self.model.eval()  # no dropout / layer drop / masking, ever
        return self

    def pool(self, hidden: torch.Tensor, frames: int) -> torch.Tensor:
        """hidden [B, N, H] (teacher frames) -> [B, frames, H] by masked average pooling."""
        B, N, H = hidden.shape
        left = (self.pool_kernel - self.pool_stride) // 2
        right = self.pool_stride * (frames - 1) + self.pool_kernel - left - N
        if right < 0:  # more teacher frames than the Mimi frames cover: drop the surplus
            hidden, N, right = hidden[:, : N + right], N + right, 0
        x = F.pad(hidden.transpose(1, 2), (left, right))  # [B, H, left + N + right]
        valid = F.pad(hidden.new_ones(1, 1, N), (left, right))
        sums = F.avg_pool1d(x, self.pool_kernel, self.pool_stride)  # [B, H, frames]
        counts = F.avg_pool1d(valid, self.pool_kernel, self.pool_stride)
        return (sums / counts.clamp(min=1e-6 / self.pool_kernel)).transpose(1, 2)[:, :frames]

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected audio [B, 1, T] at {self.sample_rate} Hz, got {tuple(wav.shape)}")
        T = wav.shape[-1]
        frames = -(-T // self.frame_size)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            x = resample_torch(wav[:, 0].float(), self.sample_rate, self.teacher_rate)  # [B, T16]
            if self.normalize:
                x = (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False)
                                                                   + 1e-7)
        param = next(self.model.parameters())
        out = self.model(x.to(param.dtype), output_hidden_states=True)
        hidden = out.hidden_states[self.layer].float()  # [B, N, H] at 50 Hz
        return self.pool(hidden, frames)


# -- student side -----------------------------------------------------------------------------

class SemanticDistillation(nn.Module):
    """Trainable projection of the semantic RVQ output to the teacher space, and the loss."""

    def __init__(self, latent_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(latent_dim, teacher_dim)

    def loss(self, semantic: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Mean over frames of 1 - cos(proj(semantic), teacher).

        semantic [B, D, T] (the semantic level's output, `QuantizerTrainOutput.semantic`),
        teacher [B, T', H] (`WavLMTeacher` output; detached). Lengths are cropped to min(T, T').
        """
        if semantic.dim() != 3 or teacher.dim() != 3 or semantic.shape[0] != teacher.shape[0]:
            raise ValueError(f"expected semantic [B, D, T] and teacher [B, T', H], got "
                             f"{tuple(semantic.shape)} and {tuple(teacher.shape)}")
        n = min(semantic.shape[-1], teacher.shape[1])
        student = self.proj(semantic[..., :n].transpose(1, 2)).float()  # [B, n, H]
        cos = F.cosine_similarity(student, teacher[:, :n].detach().float(), dim=-1, eps=1e-8)
        return (1.0 - cos).mean()

    def forward(self, semantic: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.loss(semantic, teacher)
