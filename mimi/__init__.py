"""Mimi: Kyutai's streaming neural speech codec (24 kHz, 12.5 Hz frames, split RVQ).

    import mimi
    model = mimi.load("kyutai/mimi")               # or a local file / folder
    codes = model.encode(wav)                      # [B, 1, T] -> [B, K, ceil(T / 1920)]
    audio = model.decode(codes)                    # [B, K, F] -> [B, 1, F * 1920]
"""

from __future__ import annotations

import os

import torch

from mimi.checkpoint import LAYOUTS, convert, save, weights_fingerprint
from mimi.checkpoint.loading import model_from_checkpoint, read_checkpoint, resolve_source
from mimi.config import MimiConfig, QuantizerConfig, SeanetConfig, TransformerConfig
from mimi.errors import AudioReadError, MimiError, MimiFormatError
from mimi.model import MimiModel, build_mimi
from mimi.modules.streaming import StreamingSnapshot

__version__ = "0.1.0"


def load(source: str | os.PathLike | None = None, *, num_codebooks: int = 8, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> MimiModel:
    """Load a Mimi model in eval mode from a local checkpoint or a hub id.

    `source`: a Kyutai-layout `.safetensors` file, a transformers-layout folder
    (`config.json` + `model.safetensors`), a hub id such as `kyutai/mimi`, or None for the
    default model bundled with the package (`mimi/assets/MODEL_CARD.md`).
    """
    if source is None:
        from mimi.defaults import default_model_path

        source = default_model_path()
    ckpt = read_checkpoint(resolve_source(source))
    if not 1 <= num_codebooks <= ckpt.config.quantizer.n_q:
        raise MimiError(f"num_codebooks must be in [1, {ckpt.config.quantizer.n_q}] for this model, "
                        f"got {num_codebooks}")
    return model_from_checkpoint(ckpt, num_codebooks=num_codebooks, device=device, dtype=dtype)


__all__ = [
    "LAYOUTS", "AudioReadError", "MimiConfig", "MimiError", "MimiFormatError", "MimiModel",
    "QuantizerConfig", "SeanetConfig", "StreamingSnapshot", "TransformerConfig", "__version__",
    "build_mimi", "convert", "load", "save", "weights_fingerprint",
]
