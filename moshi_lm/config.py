"""`LMConfig`: the Moshi LM architecture, keyed exactly like Kyutai's `config.json`.

Kyutai's repositories ship a `config.json` whose keys are the arguments of their LM
constructor; `LMConfig.from_json_dict` reads those keys (and only those: an unknown key is a
`MimiError`, so a config meant for another architecture is never half-read).

Derived sizes follow Kyutai's rules:
- the temporal transformer's feed-forward size is `int(hidden_scale * dim)`; the depformer's is
  `depformer_dim_feedforward`, or `int(hidden_scale * depformer_dim)` when that is None;
- a gated MLP ("silu" gating) of feed-forward size `f` has hidden width `2 * f // 3`, except
  `21 * dim // 8` when `f == 4 * dim` (see `moshi_lm.mlp.gated_hidden_dim`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from mimi.errors import MimiError

NORMS = ("rms_norm_f32", "rms_norm", "layer_norm", "layer_norm_f32")
POSITIONAL_EMBEDDINGS = ("rope", "none", "sin", "sin_rope")
GATINGS = ("none", "silu", "gelu", "relu", "sigmoid", "tanh")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise MimiError(f"invalid LM config: {message}")


@dataclass(frozen=True)
class LMConfig:
    """Constructor arguments of Kyutai's `LMModel`, as found in their `config.json`."""

    dim: int = 4096
    text_card: int = 32000
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    n_q: int = 16
    dep_q: int = 8
    card: int = 2048
    num_heads: int = 32
    num_layers: int = 32
    hidden_scale: float = 4.125
    causal: bool = True
    layer_scale: float | None = None
    context: int | None = 3000
    max_period: float = 10000.0
    gating: str = "silu"
    norm: str = "rms_norm_f32"
    positional_embedding: str = "rope"
    depformer_dim: int = 1024
    depformer_dim_feedforward: int | None = 4224
    depformer_num_heads: int = 16
    depformer_num_layers: int = 6
    depformer_layer_scale: float | None = None
    depformer_multi_linear: bool = True
    depformer_context: int | None = 8
    depformer_max_period: float = 10000.0
    depformer_gating: str = "silu"
    depformer_pos_emb: str = "none"
    depformer_weights_per_step: bool = True
    delays: tuple[int, ...] = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        _check(self.dim > 0 and self.num_heads > 0 and self.dim % self.num_heads == 0,
               f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads})")
        _check(self.depformer_dim > 0 and self.depformer_num_heads > 0
               and self.depformer_dim % self.depformer_num_heads == 0,
               f"depformer_dim ({self.depformer_dim}) must be a positive multiple of "
               f"depformer_num_heads ({self.depformer_num_heads})")
        _check(self.num_layers >= 0 and self.depformer_num_layers >= 0, "layer counts must be >= 0")
        _check(self.text_card > 0 and self.card > 0, "text_card and card must be positive")
        _check(1 <= self.dep_q <= self.n_q, f"need 1 <= dep_q <= n_q, got dep_q={self.dep_q}, n_q={self.n_q}")
        _check(len(self.delays) == self.n_q + 1,
               f"delays must have n_q + 1 = {self.n_q + 1} entries (text first), got {len(self.delays)}")
        _check(all(d >= 0 for d in self.delays), "delays must be >= 0")
        _check(self.context is None or self.context >= 1, "context must be None or >= 1")
        _check(self.depformer_context is None or self.depformer_context >= 1,
               "depformer_context must be None or >= 1")
        for name in ("norm",):
            _check(getattr(self, name) in NORMS, f"{name} must be one of {NORMS}, got {getattr(self, name)!r}")
        for name in ("positional_embedding", "depformer_pos_emb"):
            value = getattr(self, name)
            _check(value in POSITIONAL_EMBEDDINGS, f"{name} must be one of {POSITIONAL_EMBEDDINGS}, got {value!r}")
        for name in ("gating", "depformer_gating"):
            _check(getattr(self, name) in GATINGS, f"{name} must be one of {GATINGS}, got {getattr(self, name)!r}")
        _check(not (self.depformer_weights_per_step and self.depformer_gating == "none"),
               "depformer_weights_per_step needs a gated MLP (depformer_gating != 'none')")
        if "rope" in self.positional_embedding:
            _check((self.dim // self.num_heads) % 2 == 0, "head dim must be even for RoPE")
        if "rope" in self.depformer_pos_emb:
            _check((self.depformer_dim // self.depformer_num_heads) % 2 == 0, "depformer head dim must be even")

    # -- derived sizes ---------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        """Streams in the input: 1 text + n_q audio."""
        return self.n_q + 1

    @property
    def num_user_codebooks(self) -> int:
        """Audio streams that are input only (the user's): n_q - dep_q."""
        return self.n_q - self.dep_q

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def dim_feedforward(self) -> int:
        return int(self.hidden_scale * self.dim)

    @property
    def depformer_feedforward(self) -> int:
        if self.depformer_dim_feedforward is None:
            return int(self.hidden_scale * self.depformer_dim)
        return int(self.depformer_dim_feedforward)

    @property
    def depformer_num_steps(self) -> int:
        """Weight sets per depformer layer: dep_q with per-step weights, else 1."""
        return self.dep_q if self.depformer_weights_per_step else 1

    @property
    def text_initial_token_id(self) -> int:
        return self.text_card

    @property
    def initial_token_id(self) -> int:
        return self.card

    # -- presets ---------------------------------------------------------------------
    @classmethod
    def moshiko_7b(cls) -> "LMConfig":
        """The released Moshi (moshiko / moshika) 7B configuration."""
        return cls()

    @classmethod
    def tiny(cls) -> "LMConfig":
        """Moshiko-shaped but small (17 streams, 8 depformer steps, same delays): for tests."""
        return cls(dim=64, text_card=64, n_q=16, dep_q=8, card=32, num_heads=4, num_layers=2,
                   context=16, depformer_dim=32, depformer_dim_feedforward=int(4.125 * 32),
                   depformer_num_heads=2, depformer_num_layers=2)

    @classmethod
    def preset(cls, name: str) -> "LMConfig":
        presets = {"moshiko_7b": cls.moshiko_7b, "tiny": cls.tiny}
        if name not in presets:
            raise MimiError(f"unknown LM preset {name!r}; choose one of {', '.join(presets)}")
        return presets[name]()

    # -- JSON ------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["delays"] = list(self.delays)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "LMConfig":
        if not isinstance(data, dict):
            raise MimiError("invalid LM config: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MimiError(f"invalid LM config: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise MimiError(f"invalid LM config: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "LMConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MimiError(f"invalid LM config JSON: {exc}") from None
        return cls.from_json_dict(data)
