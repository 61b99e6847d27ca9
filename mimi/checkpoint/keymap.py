"""Two-way key renaming from explicit tables of templates.

A table is a tuple of `(ours, theirs)` templates such as
`("{side}.layers.{i}.conv.{p}", "{side}.model.{i}.conv.conv.{p}")`. Placeholders match the
patterns in `PLACEHOLDERS` and are carried across unchanged. Each key must match exactly one
rule; keys that match none are reported by the caller as unexpected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

PLACEHOLDERS = {
    "i": r"\d+",
    "j": r"\d+",
    "p": r"weight|bias",
    "side": r"encoder|decoder",
    "tr": r"encoder_transformer|decoder_transformer",
    "proj": r"input_proj|output_proj",
}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(
        f"(?P<{p[1:-1]}>{PLACEHOLDERS[p[1:-1]]})" if p.startswith("{") else re.escape(p) for p in parts
    )
    return re.compile(f"^{regex}$")


@dataclass(frozen=True)
class RenamedState:
    state: dict[str, torch.Tensor]  # renamed tensors
    unknown: list[str] = field(default_factory=list)  # source keys no rule matched


@dataclass(frozen=True)
class KeyTable:
    rules: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_forward", [(_compile(a), b) for a, b in self.rules])
        object.__setattr__(self, "_backward", [(_compile(b), a) for a, b in self.rules])

    @staticmethod
    def _rename(key: str, compiled: list[tuple[re.Pattern[str], str]]) -> str | None:
        for pattern, target in compiled:
            m = pattern.match(key)
            if m:
                return target.format(**m.groupdict())
        return None

    def to_theirs(self, key: str) -> str | None:
        return self._rename(key, self._forward)  # type: ignore[attr-defined]

    def to_ours(self, key: str) -> str | None:
        return self._rename(key, self._backward)  # type: ignore[attr-defined]

    def state_to_theirs(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state.items():
            theirs = self.to_theirs(key)
            if theirs is None:
                raise KeyError(f"no name in the target layout for parameter {key!r}")
            out[theirs] = value
        return out

    def state_to_ours(self, state: dict[str, torch.Tensor]) -> RenamedState:
        out, unknown = {}, []
        for key, value in state.items():
            ours = self.to_ours(key)
            if ours is None:
                unknown.append(key)
            else:
                out[ours] = value
        return RenamedState(out, unknown)
