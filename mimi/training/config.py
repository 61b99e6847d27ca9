"""Training configuration: frozen dataclasses read from a TOML file (stdlib `tomllib`).

Every section and key is optional except `[data] train`; unknown keys are errors. A run saves
its fully resolved configuration as `config.resolved.json` in its output folder, and
`mimi train` reads `.json` as well as `.toml`. Example (all values shown are the defaults
unless noted):

    steps = 2000            # required in practice; default 1000
    batch_size = 8
    seed = 0
    model = "small"         # a preset name, or a table with a full MimiConfig

    [data]
    train = "corpus/train"  # folder or manifest (required)
    eval = "corpus/eval"    # held-out clips for PESQ/STOI (optional)
    segment_seconds = 1.0

    [loss]
    mode = "adversarial"    # Mimi's final setup; "encodec" adds mel + L1 reconstruction
    ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimi.config import MimiConfig
from mimi.errors import MimiError


SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DataConfig:
    train: str = ""
    eval: str | None = None
    segment_seconds: float = 1.0
    gain_db: tuple[float, float] = (-10.0, 6.0)
    noise_snr_db: tuple[float, float] | None = None
    num_workers: int = 0
    eval_max_clips: int = 8
    eval_max_seconds: float = 10.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 8e-4
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 5e-2  # transformer weights only
    disc_lr: float = 8e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.99  # weight EMA of the generator
    warmup_steps: int = 0
    schedule: str = "constant"  # or "cosine": from lr down to min_lr_ratio * lr at the last step
    min_lr_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise MimiError(f"training config: optim.schedule must be one of {', '.join(SCHEDULES)}, "
                            f"got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise MimiError("training config: optim.min_lr_ratio must be in [0, 1]")
        if self.warmup_steps < 0:
            raise MimiError("training config: optim.warmup_steps must be >= 0")

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate of the 0-based `step` of a `total_steps` run: a linear warm-up over
        `warmup_steps`, then constant or a half cosine that ends at `min_lr_ratio * lr`."""
        lr = self.lr
        if self.schedule == "cosine":
            span = max(1, total_steps - 1 - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            lr *= self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.warmup_steps:
            lr *= min(1.0, (step + 1) / self.warmup_steps)
        return lr


@dataclass(frozen=True)
class LossConfig:
    mode: str = "adversarial"  # "adversarial": adversarial + feature matching; "encodec": + reconstruction
    adversarial: float = 1.0
    feature: float = 3.0
    mel: float = 1.0
    l1: float = 0.1
    balancer: bool = True
    commitment: float = 1.0
    disc_start_step: int = 0


@dataclass(frozen=True)
class QuantizerTrainConfig:
    num_codebooks: int | None = None  # levels trained (default: all of the model's)
    q_dropout: bool = True
    no_quant_rate: float = 0.5
    ema_decay: float = 0.99
    threshold_ratio: float = 0.1


@dataclass(frozen=True)
class DistillConfig:
    teacher: str | None = None  # WavLM folder or hub id; None disables distillation
    layer: int = -1
    weight: float = 1.0
    pool_kernel: int = 8
    pool_stride: int = 4
    teacher_dim: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    model: MimiConfig = field(default_factory=MimiConfig.small)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    quantizer: QuantizerTrainConfig = field(default_factory=QuantizerTrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"  # auto: cuda if available
    bf16: bool = True  # autocast on GPU
    cpu_bf16: bool = False  # autocast on CPU too: ~1.5x faster steps where the CPU has AMX (AVX512-BF16)
    log_every: int = 10
    eval_every: int = 500
    checkpoint_every: int = 500
    eval_codebooks: int = 8
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if not self.data.train:
            raise MimiError("training config: [data] train is required (a folder or manifest of audio)")
        if self.steps < 1 or self.batch_size < 1:
            raise MimiError("training config: steps and batch_size must be >= 1")
        if self.loss.mode not in ("adversarial", "encodec"):
            raise MimiError(f"training config: loss.mode must be 'adversarial' or 'encodec', got {self.loss.mode!r}")
        if not 0.0 <= self.quantizer.no_quant_rate <= 1.0:
            raise MimiError("training config: quantizer.no_quant_rate must be in [0, 1]")
        n_q = self.quantizer.num_codebooks
        if n_q is not None and not 1 <= n_q <= self.model.quantizer.n_q:
            raise MimiError(f"training config: quantizer.num_codebooks must be in [1, {self.model.quantizer.n_q}]")
        if min(self.log_every, self.eval_every, self.checkpoint_every) < 1:
            raise MimiError("training config: log_every, eval_every and checkpoint_every must be >= 1")

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks or self.model.quantizer.n_q

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
             "quantizer": QuantizerTrainConfig, "distill": DistillConfig}


# scalar annotations checked before a dataclass is built (a TOML string where a bool or a number
# belongs would otherwise pass through to the training loop); other annotations are not checked
_SCALARS: dict[str, tuple[type, ...]] = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


def _check_scalars(cls: type, values: dict[str, Any], where: str) -> None:
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        hint = str(f.type)
        optional = hint.endswith(" | None")
        kinds = _SCALARS.get(hint.removesuffix(" | None"))
        value = values[f.name]
        if kinds is None or (optional and value is None):
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = hint.removesuffix(" | None") + (" (or absent)" if optional else "")
            raise MimiError(f"training config: {where}{f.name} must be of type {wanted}, got {value!r}")


def _section(cls: type, values: Any, name: str) -> Any:
    if not isinstance(values, dict):
        raise MimiError(f"training config: [{name}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise MimiError(f"training config: unknown key(s) in [{name}]: {', '.join(unknown)}")
    _check_scalars(cls, values, f"[{name}] ")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise MimiError(f"training config: [{name}]: {exc}") from None


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MimiError(f"training config: unknown key(s): {', '.join(unknown)}")
    values: dict[str, Any] = {k: v for k, v in data.items() if k not in _SECTIONS and k != "model"}
    _check_scalars(TrainConfig, values, "")
    for name, cls in _SECTIONS.items():
        if name in data:
            values[name] = _section(cls, data[name], name)
    model = data.get("model", "small")
    values["model"] = MimiConfig.preset(model) if isinstance(model, str) else MimiConfig.from_dict(model)
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise MimiError(f"training config: {exc}") from None


def read_config_table(path: str | Path, what: str = "training config") -> dict[str, Any]:
    """The raw table of a `.toml` (or resolved `.json`) config file; `what` names it in errors.
    Shared by `mimi train` and `moshi-lm train`."""
    path = Path(path)
    if not path.is_file():
        raise MimiError(f"no such {what}: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MimiError(f"invalid {what} {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise MimiError(f"invalid {what} {path}: not a table")
    return data


def load_config(path: str | Path) -> TrainConfig:
    """Read a `.toml` (or a resolved `.json`) training config; relative data paths are kept as given."""
    return config_from_dict(read_config_table(path))


def save_resolved(cfg: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
