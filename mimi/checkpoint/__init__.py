"""Checkpoint layouts (Kyutai's and transformers'), loading, saving and conversion."""

from mimi.checkpoint.loading import (
    LAYOUTS,
    Checkpoint,
    convert,
    model_from_checkpoint,
    read_checkpoint,
    resolve_source,
    save,
    save_state,
    weights_fingerprint,
)

__all__ = ["LAYOUTS", "Checkpoint", "convert", "model_from_checkpoint", "read_checkpoint",
           "resolve_source", "save", "save_state", "weights_fingerprint"]
