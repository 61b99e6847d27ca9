"""Training checkpoints: everything needed to resume a run exactly, without pickle.

A checkpoint is a folder `step_NNNNNNN/` holding
- `model.safetensors`: the generator (Kyutai layout + our config in the metadata, loadable by
  `mimi.load`), `ema.safetensors`: its weight EMA (the weights to ship);
- `discriminator.safetensors`, `extra.safetensors`: discriminator, distillation projection;
- `optimizer_g.safetensors`, `optimizer_d.safetensors`: optimizer states (tensors, plus the
  param groups as JSON metadata);
- `state.json`: step, generator RNG states (hex), balancer state.
It is written to a temporary folder and renamed, so a crash never leaves half a checkpoint;
`latest` names the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from mimi.checkpoint import save_state
from mimi.checkpoint.kyutai import KYUTAI_KEYS
from mimi.checkpoint.loading import read_safetensors
from mimi.config import MimiConfig
from mimi.errors import MimiError


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, meta


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in json.loads(meta.get("scalars", "{}")).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = json.loads(meta["param_groups"])
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


@dataclass
class TrainingState:
    """What a checkpoint restores."""

    step: int
    model: nn.Module
    ema: dict[str, torch.Tensor]
    discriminator: nn.Module
    extra: nn.Module  # trainable modules besides the codec (distillation projection)
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    generator: torch.Generator
    balancer_state: dict[str, float]


def save_checkpoint(folder: Path, ts: TrainingState, config: MimiConfig) -> Path:
    """Write `folder/step_N` atomically and point `folder/latest` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{ts.step:07d}"
    tmp = folder / f".step_{ts.step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model_state = {k: v.float() for k, v in ts.model.state_dict().items()}
    save_state(model_state, config, tmp / "model.safetensors", layout="kyutai")
    save_state(ts.ema, config, tmp / "ema.safetensors", layout="kyutai")
    _save_tensors(ts.discriminator.state_dict(), tmp / "discriminator.safetensors")
    _save_tensors(ts.extra.state_dict(), tmp / "extra.safetensors")
    for name, opt in (("optimizer_g", ts.opt_g), ("optimizer_d", ts.opt_d)):
        tensors, meta = optimizer_to_tensors(opt)
        _save_tensors(tensors, tmp / f"{name}.safetensors", meta)
    state = {"step": ts.step, "generator": ts.generator.get_state().numpy().tobytes().hex(),
             "torch_rng": torch.get_rng_state().numpy().tobytes().hex(), "balancer": ts.balancer_state}
    (tmp / "state.json").write_text(json.dumps(state) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = folder / ".latest.tmp"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, folder / "latest")
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def _ours_from_kyutai(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_safetensors(path)
    renamed = KYUTAI_KEYS.state_to_ours(tensors)
    if renamed.unknown:
        raise MimiError(f"{path}: unexpected keys {renamed.unknown[:3]}")
    return renamed.state


def load_checkpoint(path: Path, ts: TrainingState) -> None:
    """Restore `ts` in place from checkpoint folder `path`."""
    try:
        state = json.loads((path / "state.json").read_text())
        ts.model.load_state_dict(_ours_from_kyutai(path / "model.safetensors"), strict=True)
        ema = _ours_from_kyutai(path / "ema.safetensors")
        if set(ema) != set(ts.ema):
            raise KeyError(f"ema.safetensors keys differ from the model's: {sorted(set(ema) ^ set(ts.ema))[:4]}")
        for k, v in ema.items():  # in place: the EMA stays on the training device
            ts.ema[k].copy_(v)
        ts.discriminator.load_state_dict(read_safetensors(path / "discriminator.safetensors")[0])
        ts.extra.load_state_dict(read_safetensors(path / "extra.safetensors")[0])
        for name, opt in (("optimizer_g", ts.opt_g), ("optimizer_d", ts.opt_d)):
            optimizer_from_tensors(opt, *read_safetensors(path / f"{name}.safetensors"))
    except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise MimiError(f"cannot resume from {path}: {exc}") from None
    ts.step = int(state["step"])
    ts.generator.set_state(torch.frombuffer(bytearray.fromhex(state["generator"]), dtype=torch.uint8))
    torch.set_rng_state(torch.frombuffer(bytearray.fromhex(state["torch_rng"]), dtype=torch.uint8))
    ts.balancer_state = dict(state.get("balancer", {}))
