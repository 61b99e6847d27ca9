"""A client of the live dialogue server: stream a recording, collect the model's reply.

    result = asyncio.run(stream_dialogue("ws://127.0.0.1:8998/", user_audio))   # [T] at 24 kHz
    result.model_audio                                                          # [T]

`realtime=True` sends one 80 ms frame every 80 ms, as a microphone would. `realtime=False`
sends as fast as the server answers, keeping at most `window` frames in flight (so the
server's bounded queues never overflow and no frame is dropped).
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from mimi.errors import MimiError
from moshi_lm import protocol
from moshi_lm.dialogue import TimedText


@dataclass(frozen=True)
class ClientResult:
    model_audio: torch.Tensor  # [T] float32: the model frames received, in order, zero-padded/cut to T
    text: tuple[TimedText, ...]
    frames_sent: int
    frames_received: int
    server_counters: dict[str, int]  # from the server's "done" message (empty when it never came)
    errors: tuple[str, ...]  # "error" messages the server sent

    @property
    def complete(self) -> bool:
        """Every frame came back and the server said done (the reply is aligned with the input)."""
        return bool(self.server_counters) and self.frames_received == self.frames_sent


@dataclass
class _Inbox:
    frames: list[torch.Tensor] = field(default_factory=list)
    text: list[TimedText] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def _connect_kwargs() -> dict[str, Any]:
    kwargs: dict[str, Any] = {"compression": None, "open_timeout": 10, "max_size": 1 << 20}
    if "proxy" in inspect.signature(connect).parameters:  # websockets >= 15 reads *_proxy variables
        kwargs["proxy"] = None
    return kwargs


async def _receive(ws: ClientConnection, fmt: str, inbox: _Inbox) -> None:
    try:
        async for msg in ws:
            if isinstance(msg, bytes):
                inbox.frames.append(protocol.pcm_decode(msg, fmt))
                inbox.arrived.set()
                continue
            data = protocol.parse_server_message(msg)
            kind = data["type"]
            if kind == protocol.TEXT:
                inbox.text.append(TimedText(item=0, frame=int(data["frame"]), time_s=float(data["time"]),
                                            id=int(data["id"]), text=data.get("text")))
            elif kind == protocol.ERROR:
                inbox.errors.append(str(data.get("message", "")))
            elif kind == protocol.DONE:
                inbox.done = {k: int(v) for k, v in data.items() if k != "type"}
                return
    except ConnectionClosed:
        return


async def stream_dialogue(url: str, user_audio: torch.Tensor, *, realtime: bool = True, fmt: str = "f32le",
                          window: int = 8, stall_timeout: float = 30.0) -> ClientResult:
    """Send `user_audio` [T] (float, 24 kHz mono) frame by frame; return the model's reply."""
    if fmt not in protocol.FORMATS:
        raise MimiError(f"unknown PCM format {fmt!r}; choose one of {', '.join(protocol.FORMATS)}")
    audio = user_audio.reshape(-1).float()
    if audio.numel() == 0:
        raise MimiError("nothing to send: the audio is empty")
    try:
        ws = await connect(url, **_connect_kwargs())
    except (OSError, InvalidURI, InvalidHandshake, TimeoutError) as exc:
        raise MimiError(f"cannot connect to {url}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    async with ws:
        try:
            ready = protocol.parse_server_message(await asyncio.wait_for(ws.recv(), 10))
        except (ConnectionClosed, TimeoutError, asyncio.TimeoutError):
            raise MimiError(f"{url}: the server closed the connection or did not say ready") from None
        if ready.get("type") == protocol.ERROR:
            raise MimiError(f"{url}: {ready.get('message', 'refused')}")
        if ready.get("type") != protocol.READY or ready.get("protocol") != protocol.PROTOCOL_VERSION:
            raise MimiError(f"{url}: not a dialogue server of protocol {protocol.PROTOCOL_VERSION}")
        frame_size, rate = int(ready["frame_size"]), int(ready["sample_rate"])
        if rate != protocol.SAMPLE_RATE:
            raise MimiError(f"{url}: the server runs at {rate} Hz, this client sends {protocol.SAMPLE_RATE} Hz")
        if fmt != "f32le":
            await ws.send(protocol.message(protocol.START, format=fmt))
        inbox = _Inbox()
        receiver = asyncio.create_task(_receive(ws, fmt, inbox))
        frames = list(audio.split(frame_size))
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        try:
            for i, frame in enumerate(frames):
                if realtime:
                    await asyncio.sleep(max(0.0, start + i * frame_size / rate - loop.time()))
                else:
                    while sent - len(inbox.frames) >= window and not receiver.done():
                        inbox.arrived.clear()
                        try:
                            await asyncio.wait_for(inbox.arrived.wait(), stall_timeout)
                        except (TimeoutError, asyncio.TimeoutError):
                            break  # frames dropped on the way: carry on
                if receiver.done():
                    break  # the server went away
                await ws.send(protocol.pcm_encode(frame, fmt))  # the last one may be short: the server pads
                sent += 1
            if not receiver.done():
                await ws.send(protocol.message(protocol.END))
            await receiver
        except ConnectionClosed:
            receiver.cancel()
    T = audio.numel()
    received = torch.cat(inbox.frames) if inbox.frames else torch.zeros(0)
    model_audio = torch.nn.functional.pad(received, (0, max(0, T - received.numel())))[:T]
    return ClientResult(model_audio=model_audio, text=tuple(inbox.text), frames_sent=sent,
                        frames_received=len(inbox.frames), server_counters=inbox.done, errors=tuple(inbox.errors))
