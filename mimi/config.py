"""Frozen configuration dataclasses for Mimi, with named presets.

`MimiConfig.released()` is the architecture of Kyutai's released checkpoint
(`tokenizer-e351c8d8-checkpoint125.safetensors`, `kyutai/mimi`); `MimiConfig.tiny()` and
`MimiConfig.small()` are cut-down presets for tests and training on small machines.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mimi.errors import MimiError


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise MimiError(f"invalid Mimi config: {message}")


@dataclass(frozen=True)
class SeanetConfig:
    """Convolutional encoder/decoder (SEANet). `ratios` are the decoder's (upsampling) order."""

    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    pad_mode: str = "constant"

    def __post_init__(self) -> None:
        _check(self.channels == 1, "only mono (channels=1) is supported")
        _check(self.dimension > 0 and self.n_filters > 0, "dimension and n_filters must be positive")
        _check(len(self.ratios) > 0 and all(r >= 1 for r in self.ratios), "ratios must be >= 1")
        _check(self.n_residual_layers >= 0, "n_residual_layers must be >= 0")
        _check(self.compress >= 1 and self.n_filters % self.compress == 0, "n_filters must divide by compress")
        _check(self.pad_mode in ("constant", "replicate"), f"unsupported pad_mode {self.pad_mode!r}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


@dataclass(frozen=True)
class TransformerConfig:
    """The bottleneck transformer, run at the encoder frame rate (25 Hz in the release)."""

    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250
    max_period: float = 10000.0
    layer_scale: float = 0.01
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check(self.d_model % self.num_heads == 0, "d_model must divide by num_heads")
        _check((self.d_model // self.num_heads) % 2 == 0, "head dim must be even for RoPE")
        _check(self.num_layers >= 0 and self.context >= 1, "num_layers >= 0 and context >= 1")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass(frozen=True)
class QuantizerConfig:
    """Split RVQ: `n_q_semantic` semantic levels + the rest acoustic, both on the same input."""

    dimension: int = 256
    n_q: int = 32
    n_q_semantic: int = 1
    bins: int = 2048
    ema_decay: float = 0.99
    epsilon: float = 1e-5
    threshold_usage_ratio: float = 0.1

    def __post_init__(self) -> None:
        _check(self.n_q >= 1 and 1 <= self.n_q_semantic < self.n_q + 1, "need 1 <= n_q_semantic <= n_q")
        _check(self.bins >= 2 and self.dimension >= 1, "bins >= 2 and dimension >= 1")


@dataclass(frozen=True)
class MimiConfig:
    sample_rate: int = 24000
    frame_rate: float = 12.5
    seanet: SeanetConfig = field(default_factory=SeanetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    name: str = "mimi-released"

    def __post_init__(self) -> None:
        _check(self.sample_rate > 0 and self.frame_rate > 0, "rates must be positive")
        ratio = self.encoder_frame_rate / self.frame_rate
        _check(abs(ratio - round(ratio)) < 1e-9 and round(ratio) >= 1,
               "encoder frame rate must be an integer multiple of the frame rate")
        _check(self.transformer.d_model == self.seanet.dimension,
               "transformer d_model must equal the SEANet dimension")
        size = self.sample_rate / self.frame_rate
        _check(abs(size - round(size)) < 1e-9, "sample_rate / frame_rate must be an integer")

    # -- derived quantities ------------------------------------------------------------
    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.seanet.hop_length

    @property
    def resample_stride(self) -> int:
        """Stride of the learnt 25 -> 12.5 Hz conv (2 in the release)."""
        return round(self.encoder_frame_rate / self.frame_rate)

    @property
    def frame_size(self) -> int:
        return round(self.sample_rate / self.frame_rate)

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def released(cls) -> "MimiConfig":
        """Kyutai's released Mimi (32 codebooks of 2048, 12.5 Hz)."""
        return cls()

    @classmethod
    def small(cls) -> "MimiConfig":
        """The released frame structure and 32 codebooks of 2048 at ~2.6M weights (18 MB in
        float32, within the 25 MB budget of the bundled default model): for CPU or one-GPU training."""
        return cls(
            seanet=SeanetConfig(dimension=128, n_filters=16),
            transformer=TransformerConfig(d_model=128, num_heads=4, num_layers=2, dim_feedforward=512),
            quantizer=QuantizerConfig(dimension=32, n_q=32, bins=2048),
            name="mimi-small",
        )

    @classmethod
    def medium(cls) -> "MimiConfig":
        """The released frame structure and 32 codebooks of 2048 at ~8.5M weights: SEANet 32
        filters, a 192-d latent and 2-layer transformers (the bundled default model; 21 MB
        stored in float16, see `mimi convert --dtype`)."""
        return cls(
            seanet=SeanetConfig(dimension=192, n_filters=32),
            transformer=TransformerConfig(d_model=192, num_heads=4, num_layers=2, dim_feedforward=768),
            quantizer=QuantizerConfig(dimension=32, n_q=32, bins=2048),
            name="mimi-medium",
        )

    @classmethod
    def tiny(cls) -> "MimiConfig":
        """A very small model with the released rates, for fast tests."""
        return cls(
            seanet=SeanetConfig(dimension=32, n_filters=8),
            transformer=TransformerConfig(d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, context=10),
            quantizer=QuantizerConfig(dimension=16, n_q=8, bins=64),
            name="mimi-tiny",
        )

    @classmethod
    def preset(cls, name: str) -> "MimiConfig":
        presets = {"released": cls.released, "medium": cls.medium, "small": cls.small, "tiny": cls.tiny}
        if name not in presets:
            raise MimiError(f"unknown Mimi preset {name!r}; choose one of {', '.join(presets)}")
        return presets[name]()

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MimiConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MimiError(f"invalid Mimi config: unknown field(s) {', '.join(map(repr, unknown))}")
        sections = {}
        for name in ("seanet", "transformer", "quantizer"):
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise MimiError(f"invalid Mimi config: {name!r} must be an object")
            sections[name] = dict(section)
        if "ratios" in sections["seanet"]:
            if not isinstance(sections["seanet"]["ratios"], (list, tuple)):
                raise MimiError("invalid Mimi config: seanet.ratios must be a list")
            sections["seanet"]["ratios"] = tuple(sections["seanet"]["ratios"])
        name = data.get("name", "mimi")
        if not isinstance(name, str):
            raise MimiError("invalid Mimi config: name must be a string")
        try:
            return cls(
                sample_rate=data.get("sample_rate", 24000),
                frame_rate=data.get("frame_rate", 12.5),
                seanet=SeanetConfig(**sections["seanet"]),
                transformer=TransformerConfig(**sections["transformer"]),
                quantizer=QuantizerConfig(**sections["quantizer"]),
                name=name,
            )
        except (TypeError, ValueError) as exc:  # unknown or missing field, wrong value type
            raise MimiError(f"invalid Mimi config: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "MimiConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MimiError(f"invalid Mimi config JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MimiError("invalid Mimi config JSON: not an object")
        return cls.from_dict(data)
