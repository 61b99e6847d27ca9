"""Which model a command uses: the one asked for, or the bundled default.

`resolve_model(None)` uses the default model shipped inside the package
(`mimi/assets/mimi-default.safetensors`, described by `mimi/assets/MODEL_CARD.md`); an
installation without it raises a `MimiError` that says to pass `--model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mimi.checkpoint.loading import model_from_checkpoint, read_checkpoint, resolve_source, weights_fingerprint
from mimi.errors import MimiError
from mimi.model import MimiModel

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL_FILE = ASSETS / "mimi-default.safetensors"
DEFAULT_DISCRIMINATOR_FILE = ASSETS / "mimi-default-discriminator.safetensors"
DEFAULT_MODEL_ID = "bundled:mimi-default"


@dataclass(frozen=True)
class LoadedModel:
    model: MimiModel
    model_id: str  # what a .mimi header records: a hub id, a path, or DEFAULT_MODEL_ID
    fingerprint: str  # `weights_fingerprint(model)`


def default_model_path() -> Path:
    if not DEFAULT_MODEL_FILE.is_file():
        raise MimiError("no default model is bundled with this installation; pass --model "
                        "(a hub id such as kyutai/mimi, a Kyutai .safetensors file or a transformers folder)")
    return DEFAULT_MODEL_FILE


def default_discriminator_path() -> Path:
    """The discriminator trained with the bundled model (for fine-tuning it: `mimi train --init default`)."""
    if not DEFAULT_DISCRIMINATOR_FILE.is_file():
        raise MimiError(f"the bundled discriminator is missing ({DEFAULT_DISCRIMINATOR_FILE}); reinstall the package")
    return DEFAULT_DISCRIMINATOR_FILE


def resolve_model(source: str | None, *, num_codebooks: int | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load `source` (or the bundled default when None) for inference."""
    if source is None or source == DEFAULT_MODEL_ID:
        path, model_id = default_model_path(), DEFAULT_MODEL_ID
    else:
        path = resolve_source(source)
        model_id = source if not Path(source).exists() else str(Path(source).resolve())
    ckpt = read_checkpoint(path)
    n_q = ckpt.config.quantizer.n_q
    k = min(8, n_q) if num_codebooks is None else num_codebooks
    if not 1 <= k <= n_q:
        raise MimiError(f"--codebooks must be in [1, {n_q}] for this model, got {k}")
    model = model_from_checkpoint(ckpt, num_codebooks=k, device=device, dtype=dtype)
    return LoadedModel(model, model_id, weights_fingerprint(model))
