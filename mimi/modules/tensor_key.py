"""Cache keys for values derived from tensors (transposed-conv polyphase weights, time-major
GEMM weights, codebooks): a derived value is reused while its sources' keys are unchanged.

The key holds the storage pointer (reassignment, `.to()`, `load_state_dict(assign=True)`
change it) and the version counter (every in-place write bumps it). Tensors made under
`torch.inference_mode()` have no version counter: their key has `None` there, so an in-place
write to them inside inference mode is not seen (`tracks_writes` says which tensors those are).
"""

from __future__ import annotations

import torch


def tracks_writes(t: torch.Tensor) -> bool:
    """Whether in-place writes to `t` change its key (false for inference tensors)."""
    return not t.is_inference()


def tensor_key(t: torch.Tensor | None) -> tuple | None:
    if t is None:
        return None
    return (t.data_ptr(), t._version if tracks_writes(t) else None, t.dtype, t.device)
