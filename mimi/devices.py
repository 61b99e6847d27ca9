"""`resolve_device`: the torch device a user asked for (`cpu`, `cuda`, `cuda:1`, `auto`), checked.

Every command and library entry point that takes a device goes through it, so a typo or a CUDA
device on a machine without CUDA is one clear `MimiError`, never a traceback from deep inside
`Module.to`.
"""

from __future__ import annotations

import torch

from mimi.errors import MimiError


def resolve_device(name: str | torch.device, *, option: str = "--device") -> torch.device:
    """`auto` is CUDA when available, else CPU. Raises `MimiError` for a name torch does not
    know and for a CUDA device without CUDA; `option` names the setting in the message."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise MimiError(f"{option}: {name!r} is not a torch device (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MimiError(f"{option} {name}: CUDA is not available on this machine (use cpu)")
    return device
