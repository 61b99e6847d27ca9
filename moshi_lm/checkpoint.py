"""Loading and saving Moshi LM checkpoints in Kyutai's layout.

A checkpoint is a directory (or a hub id such as `kyutai/moshiko-pytorch-bf16`) holding
`config.json` (the LM constructor's arguments, possibly with repository keys such as
`moshi_name`, `mimi_name`, `tokenizer_name`, `lm_gen_config`) and the weights file named by
`moshi_name` (default `model.safetensors`). A directory without `config.json` is taken to be
Moshi 7B, as Kyutai does for its oldest repositories.

Kyutai's keys differ from ours; `key_table(config)` lists every weight explicitly with its
Kyutai name, our name and its shape in the file (RMSNorm `alpha` is stored [1, 1, D], ours is
[D]). Older files store each attention's projections fused as `self_attn.in_proj_weight`
(or `in_proj.weight`) [S * 3D, D] and `self_attn.out_proj.weight` [S * D, D], stacked over
the S per-step weight sets; they are split on load.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from mimi.atomic import atomic_output, atomic_write_bytes
from mimi.checkpoint.loading import read_safetensors
from mimi.devices import resolve_device
from mimi.errors import MimiError
from moshi_lm.config import LMConfig
from moshi_lm.mlp import gated_hidden_dim
from moshi_lm.model import LMModel, build_lm

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Keys of Kyutai's config.json that describe the repository, not the LM architecture.
REPOSITORY_KEYS = ("moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name",
                   "model_type", "lm_gen_config", "tts_config", "stt_config", "model_id", "depformer_causal")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class KeyEntry:
    kyutai: str  # name in Kyutai's state dict
    ours: str  # name in LMModel.state_dict()
    shape: tuple[int, ...]  # shape in Kyutai's file


def _norm_entries(kind: str, kyutai: str, ours: str, dim: int) -> list[KeyEntry]:
    if kind.startswith("rms_norm"):
        return [KeyEntry(f"{kyutai}.alpha", f"{ours}.weight", (1, 1, dim))]
    return [KeyEntry(f"{kyutai}.weight", f"{ours}.weight", (dim,)),
            KeyEntry(f"{kyutai}.bias", f"{ours}.bias", (dim,))]


def _mlp_entries(gating: str, kyutai: str, ours: str, dim: int, ff: int) -> list[KeyEntry]:
    if gating == "none":
        return [KeyEntry(f"{kyutai}.linear1.weight", f"{ours}.linear1.weight", (ff, dim)),
                KeyEntry(f"{kyutai}.linear2.weight", f"{ours}.linear2.weight", (dim, ff))]
    hidden = gated_hidden_dim(dim, ff)
    return [KeyEntry(f"{kyutai}.linear_in.weight", f"{ours}.linear_in.weight", (2 * hidden, dim)),
            KeyEntry(f"{kyutai}.linear_out.weight", f"{ours}.linear_out.weight", (dim, hidden))]


def _layer_entries(kyutai: str, ours: str, *, dim: int, ff: int, norm: str, gating: str,
                   layer_scale: float | None, steps: int) -> list[KeyEntry]:
    out = _norm_entries(norm, f"{kyutai}.norm1", f"{ours}.norm1", dim)
    out += _norm_entries(norm, f"{kyutai}.norm2", f"{ours}.norm2", dim)
    for s in range(steps):
        out.append(KeyEntry(f"{kyutai}.self_attn.in_projs.{s}.weight", f"{ours}.self_attn.in_projs.{s}.weight",
                            (3 * dim, dim)))
        out.append(KeyEntry(f"{kyutai}.self_attn.out_projs.{s}.weight", f"{ours}.self_attn.out_projs.{s}.weight",
                            (dim, dim)))
        # Kyutai: a single `gating` module when weights are shared, a list `gating.{s}` otherwise
        mlp = f"{kyutai}.gating" if steps == 1 else f"{kyutai}.gating.{s}"
        if gating == "none":
            mlp = kyutai
        out += _mlp_entries(gating, mlp, f"{ours}.mlps.{s}", dim, ff)
    if layer_scale is not None:
        out.append(KeyEntry(f"{kyutai}.layer_scale_1.scale", f"{ours}.scale1.scale", (dim,)))
        out.append(KeyEntry(f"{kyutai}.layer_scale_2.scale", f"{ours}.scale2.scale", (dim,)))
    return out


def key_table(cfg: LMConfig) -> list[KeyEntry]:
    """Every weight of an LMModel for `cfg`: Kyutai's name, ours, and the shape in the file."""
    D, Dd = cfg.dim, cfg.depformer_dim
    t: list[KeyEntry] = [KeyEntry("text_emb.weight", "embeddings.text.weight", (cfg.text_card + 1, D))]
    t += [KeyEntry(f"emb.{i}.weight", f"embeddings.audio.{i}.weight", (cfg.card + 1, D)) for i in range(cfg.n_q)]
    for layer in range(cfg.num_layers):
        t += _layer_entries(f"transformer.layers.{layer}", f"transformer.layers.{layer}", dim=D,
                            ff=cfg.dim_feedforward, norm=cfg.norm, gating=cfg.gating,
                            layer_scale=cfg.layer_scale, steps=1)
    t += _norm_entries(cfg.norm, "out_norm", "out_norm", D)
    t.append(KeyEntry("text_linear.weight", "text_head.weight", (cfg.text_card, D)))
    n_in = cfg.dep_q if cfg.depformer_multi_linear else 1
    t += [KeyEntry(f"depformer_in.{i}.weight", f"depformer.in_projs.{i}.weight", (Dd, D)) for i in range(n_in)]
    t += [KeyEntry(f"depformer_emb.{i}.weight", f"depformer.audio_emb.{i}.weight", (cfg.card + 1, Dd))
          for i in range(cfg.dep_q - 1)]
    t.append(KeyEntry("depformer_text_emb.weight", "depformer.text_emb.weight", (cfg.text_card + 1, Dd)))
    for layer in range(cfg.depformer_num_layers):
        t += _layer_entries(f"depformer.layers.{layer}", f"depformer.transformer.layers.{layer}", dim=Dd,
                            ff=cfg.depformer_feedforward, norm=cfg.norm, gating=cfg.depformer_gating,
                            layer_scale=cfg.depformer_layer_scale, steps=cfg.depformer_num_steps)
    t += [KeyEntry(f"linears.{i}.weight", f"depformer.heads.{i}.weight", (cfg.card, Dd)) for i in range(cfg.dep_q)]
    return t


# -- older fused attention names ----------------------------------------------------------
_LEGACY = re.compile(r"^(?P<prefix>(transformer|depformer)\.layers\.\d+\.self_attn)\."
                     r"(?P<name>in_proj_weight|in_proj\.weight|out_proj\.weight)$")


def upgrade_legacy_names(state: dict[str, torch.Tensor], cfg: LMConfig) -> dict[str, torch.Tensor]:
    """Split fused `in_proj_weight` / `in_proj.weight` / `out_proj.weight` into per-step entries."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _LEGACY.match(key)
        if m is None:
            out[key] = value
            continue
        prefix, name = m["prefix"], m["name"]
        steps = 1 if prefix.startswith("transformer.") else cfg.depformer_num_steps
        dim = cfg.dim if prefix.startswith("transformer.") else cfg.depformer_dim
        rows = (3 if name.startswith("in_proj") else 1) * dim
        if value.dim() != 2 or tuple(value.shape) != (steps * rows, dim):
            raise MimiError(f"mis-shaped checkpoint key {key}: file {list(value.shape)}, "
                            f"expected {[steps * rows, dim]}")
        target = "in_projs" if name.startswith("in_proj") else "out_projs"
        for s, chunk in enumerate(value.split(rows, dim=0)):
            out[f"{prefix}.{target}.{s}.weight"] = chunk
    return out


def _summary(label: str, items: list[str]) -> str:
    more = f" and {len(items) - 8} more" if len(items) > 8 else ""
    return f"{label}: {', '.join(items[:8])}{more}"


def kyutai_to_ours(state: dict[str, torch.Tensor], cfg: LMConfig,
                   source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename (and reshape) a Kyutai-layout state dict to LMModel's; problems are named."""
    state = upgrade_legacy_names(state, cfg)
    table = key_table(cfg)
    expected = {e.kyutai: e for e in table}
    missing = [e.kyutai for e in table if e.kyutai not in state]
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = [f"{k} (file {list(v.shape)}, expected {list(expected[k].shape)})"
                 for k, v in sorted(state.items()) if k in expected and tuple(v.shape) != expected[k].shape]
    problems = [_summary(label, items) for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)) if items]
    if problems:
        raise MimiError(f"{source} does not fit the LM config: {'; '.join(problems)}")
    return {e.ours: state[e.kyutai] for e in table}


def ours_to_kyutai(state: dict[str, torch.Tensor], cfg: LMConfig) -> dict[str, torch.Tensor]:
    return {e.kyutai: state[e.ours].reshape(e.shape) for e in key_table(cfg)}


# -- files ---------------------------------------------------------------------------------
def read_config(folder: Path) -> tuple[LMConfig, str]:
    """(config, weights file name) of a checkpoint directory."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        return LMConfig.moshiko_7b(), WEIGHTS_NAME
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise MimiError(f"invalid {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise MimiError(f"invalid {path}: not a JSON object")
    weights = raw.get("moshi_name", WEIGHTS_NAME)
    if not isinstance(weights, str) or "/" in weights or weights.startswith("hf:"):
        raise MimiError(f"{path}: unsupported moshi_name {weights!r} (expected a file name in the same folder)")
    arch = {k: v for k, v in raw.items() if k not in REPOSITORY_KEYS}
    try:
        return LMConfig.from_json_dict(arch), weights
    except MimiError as exc:
        raise MimiError(f"{path}: {exc}") from None


def _resolve_hub(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME))
    except Exception as exc:  # network, missing repo, missing file: all user-facing
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise MimiError(f"could not fetch {repo_id!r} from the Hugging Face Hub ({reason}); "
                        "without network access, pass a local directory with config.json and "
                        "model.safetensors") from None
    _, weights = read_config(config.parent)
    try:
        hf_hub_download(repo_id, weights)
    except Exception as exc:
        raise MimiError(f"could not fetch {weights} of {repo_id!r} from the Hugging Face Hub: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0][:160]}") from None
    return config.parent


def resolve_source(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise MimiError(f"{path} is not a directory (expected one holding config.json and model.safetensors)")
        return path
    text = str(source)
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return _resolve_hub(text)
    raise MimiError(f"no such LM checkpoint: {text} (not a local directory, nor a hub id like "
                    "'kyutai/moshiko-pytorch-bf16')")


def load(source: str | os.PathLike, *, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> LMModel:
    """Load a Moshi LM (eval mode, no gradients) from a local directory or a hub id."""
    folder = resolve_source(source)
    cfg, weights_name = read_config(folder)
    weights = folder / weights_name
    if not weights.is_file():
        raise MimiError(f"{folder} holds no {weights_name}")
    state = kyutai_to_ours(read_safetensors(weights)[0], cfg, source=str(weights))
    with torch.device("meta"):
        model = build_lm(cfg, init=False)
    state = {k: v.to(dtype=dtype) if v.is_floating_point() else v for k, v in state.items()}
    ours = model.state_dict()
    state = {k: v.reshape(ours[k].shape) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=resolve_device(device, option="device"), dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def save(model: LMModel, directory: str | os.PathLike) -> Path:
    """Write `config.json` + `model.safetensors` (Kyutai layout, float32) into `directory`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise MimiError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    tensors = {k: v.contiguous() for k, v in ours_to_kyutai(state, model.config).items()}
    with atomic_output(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(model.config.to_json_dict(), indent=2) + "\n").encode())
    return directory
