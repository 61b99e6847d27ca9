"""Load and save Mimi checkpoints in either released layout, from local paths or the hub.

Sources accepted by `load`:
- a Kyutai-layout `.safetensors` file (`tokenizer-e351c8d8-checkpoint125.safetensors`);
- a transformers-layout directory holding `config.json` + `model.safetensors`;
- a hub id: `kyutai/mimi` (transformers layout), a repository holding a `tokenizer-*.safetensors`
  file (e.g. `kyutai/moshiko-pytorch-bf16`), or `owner/repo/path/to/file.safetensors`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mimi.atomic import atomic_output, atomic_write_bytes
from mimi.checkpoint.keymap import RenamedState
from mimi.checkpoint.kyutai import KYUTAI_KEYS, is_kyutai_layout, kyutai_num_codebooks
from mimi.checkpoint.transformers_layout import (
    config_from_json_dict,
    config_to_json_dict,
    from_transformers,
    is_transformers_layout,
    to_transformers,
)
from mimi.config import MimiConfig, QuantizerConfig
from mimi.devices import resolve_device
from mimi.errors import MimiError
from mimi.model import MimiModel, build_mimi

LAYOUTS = ("kyutai", "transformers")
CONFIG_METADATA_KEY = "mimi_config"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/.+\.safetensors)?$")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read from disk, renamed to our keys."""

    config: MimiConfig
    state: dict[str, torch.Tensor]
    layout: str  # "kyutai" | "transformers"
    unknown_keys: list[str]
    path: Path


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; unreadable or corrupt files raise MimiError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise MimiError(f"cannot read {path} as safetensors: {exc}") from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a local checkpoint file or transformers directory (no model is built)."""
    path = Path(path)
    if path.is_dir():
        config_file, weights = path / "config.json", path / "model.safetensors"
        if not config_file.is_file() or not weights.is_file():
            raise MimiError(f"{path} is a directory but lacks config.json and model.safetensors "
                            "(expected the transformers layout of kyutai/mimi)")
        try:
            cfg_dict = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MimiError(f"invalid {config_file}: {exc}") from None
        if not isinstance(cfg_dict, dict):
            raise MimiError(f"invalid {config_file}: not a JSON object")
        cfg = config_from_json_dict(cfg_dict)
        state, _ = read_safetensors(weights)
        if not is_transformers_layout(set(state)):
            raise MimiError(f"{weights} is not in the transformers Mimi layout")
        renamed = from_transformers(state, cfg)
        return Checkpoint(cfg, renamed.state, "transformers", renamed.unknown, path)
    if not path.is_file():
        raise MimiError(f"no such checkpoint: {path}")
    state, metadata = read_safetensors(path)
    keys = set(state)
    if is_transformers_layout(keys):
        raise MimiError(f"{path} is a transformers-layout weights file; pass its directory "
                        "(with config.json) instead")
    if not is_kyutai_layout(keys):
        raise MimiError(f"{path} is not a Mimi checkpoint (neither Kyutai nor transformers layout)")
    if CONFIG_METADATA_KEY in metadata:
        cfg = MimiConfig.from_json(metadata[CONFIG_METADATA_KEY])
    else:  # a released file: the released architecture, with its own number of codebooks
        released = MimiConfig.released()
        n_q = kyutai_num_codebooks(keys)
        cfg = MimiConfig(seanet=released.seanet, transformer=released.transformer,
                         quantizer=QuantizerConfig(n_q=max(n_q, 1)), name="kyutai-mimi")
    renamed: RenamedState = KYUTAI_KEYS.state_to_ours(state)
    return Checkpoint(cfg, renamed.state, "kyutai", renamed.unknown, path)


def _check_state(model: MimiModel, ckpt: Checkpoint) -> None:
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(ckpt.state))
    unexpected = sorted(ckpt.unknown_keys + [k for k in ckpt.state if k not in expected])
    mismatched = sorted(
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k])})"
        for k, v in ckpt.state.items() if k in expected and v.shape != expected[k]
    )
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", mismatched)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise MimiError(f"checkpoint {ckpt.path} does not fit the Mimi architecture: {'; '.join(problems)}")


def model_from_checkpoint(ckpt: Checkpoint, num_codebooks: int = 8, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32) -> MimiModel:
    # Built on the meta device and given the checkpoint's tensors as they are: no random init,
    # no second copy of the weights in memory.
    with torch.device("meta"):
        model = build_mimi(ckpt.config, num_codebooks=num_codebooks)
    _check_state(model, ckpt)
    model.load_state_dict(ckpt.state, strict=True, assign=True)
    return prepare_for_inference(model, device, dtype)


def prepare_for_inference(model: MimiModel, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32) -> MimiModel:
    model = model.to(device=resolve_device(device, option="device")).set_dtype(dtype).eval()
    model.requires_grad_(False)
    return model


# -- the hub -------------------------------------------------------------------------------
def _offline_help(source: str, exc: Exception) -> MimiError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return MimiError(
        f"could not fetch {source!r} from the Hugging Face Hub ({reason[:160]}). Without network access, "
        f"download it elsewhere and pass a local path instead: a transformers-layout folder "
        f"(config.json + model.safetensors) or Kyutai's tokenizer-*.safetensors file"
    )


def resolve_hub(source: str) -> Path:
    """Download (or find in the local cache) a hub checkpoint; returns a local file or folder.

    One `snapshot_download` call: it fails fast without network and falls back to the cache.
    """
    from huggingface_hub import snapshot_download

    parts = source.split("/")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    patterns = [filename] if filename else ["config.json", "model.safetensors", "tokenizer-*.safetensors"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network, authentication, missing repo: all user-facing
        raise _offline_help(source, exc) from None
    if filename:
        found = folder / filename
    elif (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        found = folder
    else:
        found = next(iter(sorted(folder.glob("tokenizer-*.safetensors"))), folder / "missing")
    if not found.exists():
        raise MimiError(f"hub repository {repo_id!r} holds no Mimi checkpoint (expected config.json + "
                        "model.safetensors, or a tokenizer-*.safetensors file)")
    return found


def resolve_source(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return resolve_hub(text)
    raise MimiError(f"no such checkpoint: {text} (not a local path, nor a hub id like 'kyutai/mimi')")


# -- saving --------------------------------------------------------------------------------
def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _atomic_write_text(text: str, path: Path) -> None:
    atomic_write_bytes(path, text.encode())


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise MimiError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cast_for_storage(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of `state` in `dtype` (loading casts back: weights stored
    in float16 build a float32 model). A value beyond the range of `dtype` raises MimiError
    instead of being stored as infinity."""
    if dtype not in STORAGE_DTYPES.values():
        raise MimiError(f"cannot store weights as {dtype}; choose one of {', '.join(STORAGE_DTYPES)}")
    out = {}
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != dtype:
            cast = value.to(dtype)
            if not torch.isfinite(cast).all() and torch.isfinite(value).all():
                raise MimiError(f"{key} does not fit {dtype} (max |value| {float(value.abs().max()):.4g})")
            value = cast
        out[key] = value
    return out


def save_state(state: dict[str, torch.Tensor], config: MimiConfig, dest: str | os.PathLike,
               layout: str = "kyutai", dtype: torch.dtype | None = None) -> Path:
    """Write our state dict in a released layout: a `.safetensors` file (kyutai) or a folder;
    `dtype` (float16, bfloat16...) casts the floating-point tensors for storage."""
    _check_layout(layout)
    dest = Path(dest)
    if dtype is not None:
        state = cast_for_storage(state, dtype)
    if layout == "kyutai":
        _atomic_save_safetensors(KYUTAI_KEYS.state_to_theirs(state), dest,
                                 {"format": "pt", CONFIG_METADATA_KEY: config.to_json()})
        return dest
    if dest.exists() and not dest.is_dir():
        raise MimiError(f"{dest} exists and is not a directory (the transformers layout is a folder)")
    dest.mkdir(parents=True, exist_ok=True)
    _atomic_save_safetensors(to_transformers(state, config), dest / "model.safetensors", {"format": "pt"})
    _atomic_write_text(json.dumps(config_to_json_dict(config), indent=2) + "\n", dest / "config.json")
    return dest


def save(model: MimiModel, dest: str | os.PathLike, layout: str = "kyutai") -> Path:
    state = {k: v.float() for k, v in model.state_dict().items()}
    return save_state(state, model.config, dest, layout)


def convert(source: str | os.PathLike, dest: str | os.PathLike, layout: str,
            dtype: torch.dtype | None = None) -> Path:
    """Rewrite a checkpoint in another layout; tensors are copied unchanged unless `dtype`
    casts them for storage (e.g. float16 halves the file)."""
    _check_layout(layout)
    ckpt = read_checkpoint(resolve_source(source))
    with torch.device("meta"):
        model = build_mimi(ckpt.config)
    _check_state(model, ckpt)
    return save_state(ckpt.state, ckpt.config, dest, layout, dtype=dtype)


def weights_fingerprint(model: MimiModel) -> str:
    """A short hash of the architecture and every weight (as float32), to match files to models."""
    h = hashlib.sha256(dataclasses.replace(model.config, name="").to_json().encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to(torch.float32).cpu().contiguous().numpy().data)
    return h.hexdigest()[:16]
