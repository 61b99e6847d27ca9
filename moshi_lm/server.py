"""A live dialogue server: one `DialogueSession` per WebSocket connection (protocol:
docs/dialogue-protocol.md, messages: `moshi_lm.protocol`).

    factory = SessionFactory(mimi_model, LMGen(lm))
    server = DialogueServer(factory, ServerConfig(port=8998))
    asyncio.run(server.run_forever())

Design:
- Every connection gets its own model trees (`SessionFactory.new_session`): the module objects
  are copied but every weight tensor is shared, so a session costs only its streaming state.
- Model compute runs in a small thread pool (`compute_threads`), never on the event loop, so
  the loop keeps reading and writing every socket while frames are computed. Each connection
  submits one frame at a time, so the pool serves connections in turn.
- Each connection has two bounded queues: frames waiting for compute (`inbound_frames`) and
  model frames waiting to be sent (`outbound_frames`). When one is full the oldest frame is
  dropped and counted (`dropped_in` / `dropped_out`): a client that sends faster than the model
  runs, or does not read its replies, costs a bounded amount of memory and never holds up the
  others (a blocked send only stalls that connection's own sender task).
- On disconnect (clean close, abrupt close, ping timeout) the connection's tasks are
  cancelled, its in-flight frame is waited for and its streaming state is released.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import itertools
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import torch
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mimi.errors import MimiError
from mimi.model import MimiModel
from moshi_lm import protocol
from moshi_lm.dialogue import DialogueFrame, DialogueSession
from moshi_lm.generate import LMGen
from moshi_lm.web_page import PAGE

log = logging.getLogger("moshi_lm.server")


def shared_weights_copy(module: torch.nn.Module, memo: dict[int, Any] | None = None) -> torch.nn.Module:
    """A copy of `module` whose parameters and buffers are the original tensors (not copies):
    its own module objects, hence its own streaming state, at no cost in weights."""
    memo = dict(memo or {})
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        memo[id(tensor)] = tensor
    return copy.deepcopy(module, memo)


class SessionFactory:
    """Makes independent dialogue sessions (batch 1) over one set of weights."""

    def __init__(self, mimi: MimiModel, lm_gen: LMGen, tokenizer: Any = None):
        if mimi.is_streaming or lm_gen.is_streaming:
            raise MimiError("SessionFactory needs models that are not streaming (templates)")
        DialogueSession(mimi, lm_gen)  # check that they fit together, now
        self.mimi = mimi
        self.lm_gen = lm_gen
        self.tokenizer = tokenizer
        self._count = itertools.count()
        self._lock = threading.Lock()

    def new_session(self) -> DialogueSession:
        with self._lock:
            number = next(self._count)
            memo: dict[int, Any] = {}
            template_generator = self.lm_gen.generator
            if template_generator is not None:  # reproducible per connection: seed + connection number
                generator = torch.Generator(device=template_generator.device)
                generator.manual_seed(template_generator.initial_seed() + number)
                memo[id(template_generator)] = generator
            mimi = shared_weights_copy(self.mimi)
            gen = shared_weights_copy(self.lm_gen, memo)
        return DialogueSession(mimi, gen, batch_size=1, tokenizer=self.tokenizer)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8998  # 0: any free port (see `DialogueServer.port`)
    max_sessions: int = 8
    inbound_frames: int = 16  # user frames waiting for compute, per connection (1.28 s)
    outbound_frames: int = 32  # model frames waiting to be sent, per connection (2.56 s)
    compute_threads: int = 1
    max_message_bytes: int = 1 << 20
    ping_interval: float | None = 10.0  # keepalive: a vanished client is dropped after
    ping_timeout: float | None = 10.0  # ping_interval + ping_timeout + close_timeout at most
    close_timeout: float = 2.0  # how long a closing handshake may take before the socket is cut
    socket_send_buffer: int | None = 1 << 16  # kernel send buffer per connection (bytes; None: the OS's,
    # often megabytes): small, so a client that falls behind meets the bounded queue, not seconds of backlog
    serve_page: bool = True  # GET / (without a WebSocket upgrade) returns a small web client

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.inbound_frames < 1 or self.outbound_frames < 1 \
                or self.compute_threads < 1:
            raise MimiError("max_sessions, inbound_frames, outbound_frames and compute_threads must be >= 1")
        if not 0 <= self.port <= 65535:
            raise MimiError(f"port must be in [0, 65535], got {self.port}")


class _Box:
    """A bounded FIFO with one consumer. When full, the oldest droppable item makes room."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: collections.deque[tuple[bool, Any]] = collections.deque()
        self._ready = asyncio.Event()
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any, droppable: bool = True) -> int:
        """Append; returns how many items were dropped to make room (0 or 1): the oldest
        droppable one, else (a queue full of control messages) the oldest of all."""
        dropped = 0
        if len(self._items) >= self.capacity:
            index = next((i for i, (can_drop, _) in enumerate(self._items) if can_drop), 0)
            del self._items[index]
            dropped = 1
        self._items.append((droppable, item))
        self.peak = max(self.peak, len(self._items))
        self._ready.set()
        return dropped

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()[1]


@dataclass(frozen=True)
class _Frame:
    samples: torch.Tensor  # [frame_size]


@dataclass(frozen=True)
class _Marker:
    kind: str  # protocol.END or protocol.RESET


@dataclass(frozen=True)
class _Outgoing:
    audio: bytes | None  # a model frame
    texts: tuple[str, ...]  # JSON messages to send before it
    done: bool = False  # the last item: send DONE (with the final counters) and close


class _Connection:
    def __init__(self, number: int, ws: ServerConnection, session: DialogueSession, config: ServerConfig):
        self.number = number
        self.ws = ws
        self.session = session
        self.fmt = "f32le"
        self.assembler = protocol.FrameAssembler(session.frame_size)
        self.inbound = _Box(config.inbound_frames)
        self.outbound = _Box(config.outbound_frames)
        self.lock = threading.Lock()  # held while the session computes or closes
        self.frames_in = 0  # user frames received (whole frames)
        self.frames_out = 0  # model frames computed
        self.frames_sent = 0
        self.dropped_in = 0
        self.dropped_out = 0
        self.audio_started = False

    def counters(self) -> dict[str, int]:
        return {"frames_in": self.frames_in, "frames_out": self.frames_out, "frames_sent": self.frames_sent,
                "dropped_in": self.dropped_in, "dropped_out": self.dropped_out}


@dataclass(frozen=True)
class ServerStats:
    active_sessions: int
    sessions_opened: int
    sessions_closed: int
    frames_in: int  # totals over every connection, closed ones included
    frames_out: int
    dropped_in: int
    dropped_out: int
    queued_frames: int  # frames in all queues now
    queued_samples: int  # samples waiting for a whole frame now
    peak_queue: int  # deepest any queue has been
    open_sessions_state_bytes: int  # streaming state held by open sessions


def streaming_state_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of every tensor in the streaming states of these module trees."""
    from mimi.modules.streaming import StreamingModule

    total = 0
    for root in modules:
        for m in root.modules():
            if isinstance(m, StreamingModule) and m.state is not None:
                for value in vars(m.state).values():
                    if isinstance(value, torch.Tensor):
                        total += value.numel() * value.element_size()
    return total


class DialogueServer:
    def __init__(self, factory: SessionFactory, config: ServerConfig = ServerConfig()):
        self.factory = factory
        self.config = config
        self._executor: ThreadPoolExecutor | None = None
        self._server: Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._numbers = itertools.count()
        self._opening = 0
        self._opened = 0
        self._closed = 0
        self._totals = collections.Counter()
        self._peak = 0

    # -- lifetime ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise MimiError("the server is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/"

    async def start(self) -> None:
        if self._server is not None:
            raise MimiError("the server is already started")
        cfg = self.config
        self._executor = ThreadPoolExecutor(max_workers=cfg.compute_threads, thread_name_prefix="dialogue")
        try:
            self._server = await serve(
                self._handle, cfg.host, cfg.port, compression=None, max_size=cfg.max_message_bytes,
                ping_interval=cfg.ping_interval, ping_timeout=cfg.ping_timeout, close_timeout=cfg.close_timeout,
                process_request=self._process_request if cfg.serve_page else None)
        except OSError as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise MimiError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def __aenter__(self) -> "DialogueServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_forever(self) -> None:
        async with self:
            await asyncio.get_running_loop().create_future()  # until cancelled (Ctrl-C)

    def stats(self) -> ServerStats:
        conns = list(self._connections.values())
        live = collections.Counter()
        for c in conns:
            live.update(c.counters())
        total = self._totals + live
        peak = max([self._peak] + [max(c.inbound.peak, c.outbound.peak) for c in conns])
        return ServerStats(
            active_sessions=len(conns), sessions_opened=self._opened, sessions_closed=self._closed,
            frames_in=total["frames_in"], frames_out=total["frames_out"], dropped_in=total["dropped_in"],
            dropped_out=total["dropped_out"], queued_frames=sum(len(c.inbound) + len(c.outbound) for c in conns),
            queued_samples=sum(c.assembler.pending for c in conns), peak_queue=peak,
            open_sessions_state_bytes=sum(streaming_state_bytes(c.session.mimi, c.session.lm_gen) for c in conns))

    # -- HTTP: the web page ----------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if request.path.split("?")[0] not in ("/", "/index.html"):
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        response = connection.respond(HTTPStatus.OK, PAGE)
        del response.headers["Content-Type"]  # respond() made it text/plain
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    # -- one connection --------------------------------------------------------------------------
    async def _run(self, conn: _Connection, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with conn.lock:
                return fn(*args)

        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, locked)

    async def _handle(self, ws: ServerConnection) -> None:
        if len(self._connections) + self._opening >= self.config.max_sessions:
            await ws.send(protocol.message(protocol.ERROR, message="server full, try again later"))
            await ws.close(1013, "server full")
            return
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        self._opening += 1  # a slot is taken while the session is being made
        try:
            session = await loop.run_in_executor(self._executor, lambda: self.factory.new_session().start())
        except MimiError as exc:
            await ws.send(protocol.message(protocol.ERROR, message=str(exc)))
            await ws.close(1011, "cannot open a session")
            return
        finally:
            self._opening -= 1
        conn = _Connection(next(self._numbers), ws, session, self.config)
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and self.config.socket_send_buffer:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_send_buffer)
        self._connections[conn.number] = conn
        self._opened += 1
        tasks: list[asyncio.Task] = []
        try:
            await ws.send(protocol.message(
                protocol.READY, protocol=protocol.PROTOCOL_VERSION, sample_rate=session.sample_rate,
                frame_size=session.frame_size, formats=list(protocol.FORMATS), format=conn.fmt,
                delay_frames=session.lm_gen.model.config.max_delay, inbound_frames=self.config.inbound_frames,
                outbound_frames=self.config.outbound_frames))
            tasks = [asyncio.create_task(self._compute_loop(conn)), asyncio.create_task(self._send_loop(conn))]
            if await self._receive_loop(conn):  # END: the sender finishes, sends DONE and closes
                await tasks[1]
        except ConnectionClosed:
            pass
        except Exception:  # a bug: log it, never take the server down
            log.exception("dialogue connection %d failed", conn.number)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                    await task
            await self._run(conn, session.close)  # waits for a frame still computing
            self._connections.pop(conn.number, None)
            self._totals.update(conn.counters())
            self._peak = max(self._peak, conn.inbound.peak, conn.outbound.peak)
            conn.inbound.clear()
            conn.outbound.clear()
            self._closed += 1
            with contextlib.suppress(Exception):
                await ws.close()

    async def _receive_loop(self, conn: _Connection) -> bool:
        """Until the client closes (False) or sends END (True). Never waits on compute or sending."""
        async for msg in conn.ws:
            if isinstance(msg, bytes):
                try:
                    samples = protocol.pcm_decode(msg, conn.fmt)
                except MimiError as exc:
                    self._reply(conn, protocol.message(protocol.ERROR, message=str(exc)))
                    continue
                conn.audio_started = True
                for frame in conn.assembler.push(samples):
                    conn.frames_in += 1
                    conn.dropped_in += conn.inbound.put(_Frame(frame))
                continue
            try:
                control = protocol.parse_client_message(msg)
            except MimiError as exc:
                self._reply(conn, protocol.message(protocol.ERROR, message=str(exc)))
                continue
            if control.type == protocol.START:
                if conn.audio_started:
                    self._reply(conn, protocol.message(protocol.ERROR, message="\"start\" must come before any audio"))
                else:
                    conn.fmt = control.format or conn.fmt
            elif control.type == protocol.STATS:
                self._reply(conn, protocol.message(protocol.STATS, **conn.counters()))
            elif control.type == protocol.RESET:
                conn.inbound.clear()
                conn.assembler.reset()
                conn.inbound.put(_Marker(protocol.RESET), droppable=False)  # the queue is empty: no drop
            elif control.type == protocol.END:
                last = conn.assembler.flush()
                if last is not None:
                    conn.frames_in += 1
                    conn.dropped_in += conn.inbound.put(_Frame(last))
                conn.dropped_in += conn.inbound.put(_Marker(protocol.END), droppable=False)
                return True
        return False

    def _reply(self, conn: _Connection, text: str) -> None:
        conn.dropped_out += conn.outbound.put(_Outgoing(None, (text,)), droppable=False)

    async def _compute_loop(self, conn: _Connection) -> None:
        while True:
            item = await conn.inbound.get()
            if isinstance(item, _Marker):
                if item.kind == protocol.RESET:
                    await self._run(conn, conn.session.reset)
                    self._reply(conn, protocol.message(protocol.RESET))  # frame numbers restart at 0
                    continue
                conn.dropped_out += conn.outbound.put(_Outgoing(None, (), done=True), droppable=False)
                return
            result: DialogueFrame = await self._run(conn, conn.session.step, item.samples.view(1, 1, -1))
            conn.frames_out += 1
            texts = tuple(protocol.message(protocol.TEXT, frame=result.index,
                                           time=round(result.index * conn.session.frame_seconds, 3),
                                           id=tok.id, text=tok.text)
                          for tok in result.tokens if tok is not None)
            conn.dropped_out += conn.outbound.put(_Outgoing(protocol.pcm_encode(result.audio[0, 0], conn.fmt), texts))

    async def _send_loop(self, conn: _Connection) -> None:
        while True:
            item: _Outgoing = await conn.outbound.get()
            for text in item.texts:
                await conn.ws.send(text)
            if item.done:
                await conn.ws.send(protocol.message(protocol.DONE, **conn.counters()))
                await conn.ws.close()
                return
            if item.audio is not None:
                await conn.ws.send(item.audio)
                conn.frames_sent += 1
