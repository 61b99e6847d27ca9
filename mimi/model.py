"""`MimiModel`: SEANet encoder -> transformer -> 25->12.5 Hz conv -> split RVQ, and back.

Shapes: audio [B, 1, T] at 24 kHz, latents [B, D, F], codes [B, K, F] with F = ceil(T / 1920).

Offline `encode` zero-pads the audio to a whole number of frames first, which is exactly what
streaming does with a zero-padded last chunk. So offline == streaming for any length, and an
item of a right-padded batch gets the same codes as when encoded alone. (Kyutai's and
transformers' offline encoders pad inside each conv instead; for lengths that are multiples of
1920 samples the two are identical, otherwise only the last frame can differ.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimi.config import MimiConfig
from mimi.modules.resample import ConvDownsample, ConvTrUpsample
from mimi.modules.seanet import SeanetDecoder, SeanetEncoder
from mimi.modules.streaming import StreamingContainer
from mimi.modules.transformer import Transformer
from mimi.quantization.rvq import SplitResidualVectorQuantizer


class MimiModel(StreamingContainer):
    def __init__(self, config: MimiConfig, encoder: SeanetEncoder, encoder_transformer: Transformer,
                 downsample: ConvDownsample, quantizer: SplitResidualVectorQuantizer,
                 upsample: ConvTrUpsample, decoder_transformer: Transformer, decoder: SeanetDecoder,
                 num_codebooks: int = 8):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.encoder_transformer = encoder_transformer
        self.downsample = downsample
        self.quantizer = quantizer
        self.upsample = upsample
        self.decoder_transformer = decoder_transformer
        self.decoder = decoder
        self._num_codebooks = 0
        self.set_num_codebooks(num_codebooks)

    # -- properties ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def frame_size(self) -> int:
        return self.config.frame_size

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.n_q

    @property
    def codebook_size(self) -> int:
        return self.quantizer.bins

    def set_dtype(self, dtype: torch.dtype) -> "MimiModel":
        """Cast for inference in `dtype` (e.g. bfloat16). The quantizer stays float32: a
        nearest-neighbour search in bf16 flips most codes (see benchmarks/results/bf16_agreement.md),
        and it costs little. `quantize` / `dequantize` convert at its boundary."""
        self.to(dtype)
        self.quantizer.float()
        return self

    def _quantizer_dtype(self) -> torch.dtype:
        return self.quantizer.semantic.input_proj.weight.dtype

    def _decoder_dtype(self) -> torch.dtype:
        return self.upsample.convtr.convtr.weight.dtype

    def set_num_codebooks(self, k: int) -> None:
        if not isinstance(k, int) or not 1 <= k <= self.quantizer.n_q:
            raise ValueError(f"number of codebooks must be an integer in [1, {self.quantizer.n_q}], got {k!r}")
        self._num_codebooks = k

    # -- encoder side ----------------------------------------------------------------------
    def _check_audio(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"audio must be [B, 1, T] (mono, 24 kHz), got {tuple(wav.shape)}")
        T = wav.shape[-1]
        if T == 0 and not self.is_streaming:
            raise ValueError("audio is empty (0 samples)")
        if self.is_streaming:
            if T % self.frame_size:
                raise ValueError(f"streaming chunks must be multiples of {self.frame_size} samples, got {T}")
            return wav
        pad = -T % self.frame_size
        return F.pad(wav, (0, pad)) if pad else wav  # [B, 1, F * frame_size]

    def encode_to_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """Unquantised latent: audio [B, 1, T] -> [B, D, ceil(T / frame_size)]."""
        wav = self._check_audio(wav)
        z = self.encoder(wav)  # [B, D, T / hop] at 25 Hz
        z = self.encoder_transformer(z)
        return self.downsample(z)  # [B, D, F] at 12.5 Hz

    def quantize(self, latent: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Latent [B, D, F] -> codes [B, K, F] (long)."""
        k = self._num_codebooks if num_codebooks is None else num_codebooks
        return self.quantizer.encode(latent.to(self._quantizer_dtype()), k)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio [B, 1, T] -> codes [B, K, ceil(T / frame_size)], K = `num_codebooks`."""
        return self.quantize(self.encode_to_latent(wav))

    # -- decoder side ----------------------------------------------------------------------
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] -> quantised latent [B, D, F]."""
        if codes.dtype not in (torch.int64, torch.int32, torch.int16):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size})")
        return self.quantizer.decode(codes.long()).to(self._decoder_dtype())

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, D, F] -> audio [B, 1, F * frame_size]."""
        z = self.upsample(latent)  # [B, D, 2F] at 25 Hz
        z = self.decoder_transformer(z)
        return self.decoder(z)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] -> audio [B, 1, F * frame_size]."""
        return self.decode_latent(self.dequantize(codes))


def build_mimi(config: MimiConfig, num_codebooks: int = 8) -> MimiModel:
    """A randomly initialised MimiModel of the given architecture."""
    dim = config.seanet.dimension
    return MimiModel(
        config,
        encoder=SeanetEncoder(config.seanet),
        encoder_transformer=Transformer(config.transformer),
        downsample=ConvDownsample(dim, config.resample_stride),
        quantizer=SplitResidualVectorQuantizer(dim, config.quantizer),
        upsample=ConvTrUpsample(dim, config.resample_stride),
        decoder_transformer=Transformer(config.transformer),
        decoder=SeanetDecoder(config.seanet),
        num_codebooks=min(num_codebooks, config.quantizer.n_q),
    )
