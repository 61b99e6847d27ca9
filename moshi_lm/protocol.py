"""The live dialogue protocol over WebSocket (spec: docs/dialogue-protocol.md).

Binary messages carry raw mono PCM at 24 kHz, little-endian: `f32le` (float32, the default)
or `s16le` (int16), in either direction. Text messages are JSON objects with a "type" field,
for control (client -> server) and for the model's text tokens and status (server -> client).
Only the standard library, torch and numpy are used here (no websockets), so any client can reuse it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from mimi.errors import MimiError

PROTOCOL_VERSION = 1
SAMPLE_RATE = 24000
FRAME_SIZE = 1920
FORMATS = ("f32le", "s16le")
SAMPLE_BYTES = {"f32le": 4, "s16le": 2}

# client -> server
START = "start"  # {"type": "start", "format": "s16le"}: choose the PCM format (before any audio)
END = "end"  # no more audio: finish the frames received, send "done", close
RESET = "reset"  # start the dialogue afresh (frames already queued are dropped)
STATS = "stats"  # ask for the connection's counters
# server -> client
READY = "ready"
TEXT = "text"
DONE = "done"
ERROR = "error"

CLIENT_TYPES = (START, END, RESET, STATS)


def pcm_encode(samples: torch.Tensor, fmt: str) -> bytes:
    """samples [T] float -> raw little-endian PCM bytes."""
    x = samples.detach().reshape(-1).float().cpu()
    if fmt == "f32le":
        return x.contiguous().numpy().astype("<f4", copy=False).tobytes()
    if fmt == "s16le":
        q = torch.round(x.clamp(-1.0, 1.0) * 32767.0).to(torch.int16)
        return q.contiguous().numpy().astype("<i2", copy=False).tobytes()
    raise MimiError(f"unknown PCM format {fmt!r}; choose one of {', '.join(FORMATS)}")


def pcm_decode(data: bytes, fmt: str) -> torch.Tensor:
    """Raw little-endian PCM bytes (a whole number of samples) -> [T] float32."""
    width = SAMPLE_BYTES.get(fmt)
    if width is None:
        raise MimiError(f"unknown PCM format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if len(data) % width:
        raise MimiError(f"{fmt} audio must be a whole number of {width}-byte samples, got {len(data)} bytes")
    if not data:
        return torch.zeros(0)
    if fmt == "f32le":
        x = torch.frombuffer(bytearray(data), dtype=torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise MimiError("f32le audio holds NaN or infinite samples")
        return x
    return torch.frombuffer(bytearray(data), dtype=torch.int16).float() / 32768.0


@dataclass(frozen=True)
class ControlMessage:
    """A client's text message, checked."""

    type: str
    format: str | None = None  # for START


def parse_client_message(text: str) -> ControlMessage:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise MimiError("text messages must be JSON objects") from None
    if not isinstance(raw, dict) or raw.get("type") not in CLIENT_TYPES:
        raise MimiError(f"unknown message; expected a JSON object with \"type\" in {', '.join(CLIENT_TYPES)}")
    fmt = raw.get("format")
    if raw["type"] == START and fmt not in FORMATS:
        raise MimiError(f"\"format\" must be one of {', '.join(FORMATS)}")
    return ControlMessage(raw["type"], fmt if raw["type"] == START else None)


def message(kind: str, **fields: Any) -> str:
    """A JSON text message of `kind`."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def parse_server_message(text: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise MimiError("the server sent a text message that is not JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise MimiError("the server sent a JSON message without a \"type\"")
    return raw


class FrameAssembler:
    """Cuts an incoming stream of samples (any chunk sizes) into whole frames."""

    def __init__(self, frame_size: int = FRAME_SIZE):
        self.frame_size = frame_size
        self._pending = torch.zeros(0)

    @property
    def pending(self) -> int:
        """Samples waiting for the rest of their frame (always < frame_size)."""
        return int(self._pending.numel())

    def push(self, samples: torch.Tensor) -> list[torch.Tensor]:
        """samples [n] -> the frames now complete, each [frame_size]."""
        buf = torch.cat([self._pending, samples.reshape(-1).float()])
        whole = buf.numel() // self.frame_size * self.frame_size
        frames = list(buf[:whole].split(self.frame_size)) if whole else []
        self._pending = buf[whole:].clone()
        return frames

    def flush(self) -> torch.Tensor | None:
        """The last partial frame, zero-padded to a whole frame (None when nothing is pending)."""
        if not self.pending:
            return None
        frame = torch.nn.functional.pad(self._pending, (0, self.frame_size - self.pending))
        self._pending = torch.zeros(0)
        return frame

    def reset(self) -> None:
        self._pending = torch.zeros(0)
