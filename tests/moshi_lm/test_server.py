"""The live dialogue server over loopback WebSockets: concurrent clients, abrupt and vanishing
clients, bounded queues with drop counters, no leaked sessions, protocol details."""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import socket
import weakref

import pytest
import torch

from mimi.errors import MimiError
from moshi_lm import LMGen, protocol
from moshi_lm.client import _connect_kwargs, stream_dialogue
from moshi_lm.dialogue import DialogueSession, run_dialogue
from moshi_lm.server import DialogueServer, ServerConfig, SessionFactory, _Box, shared_weights_copy
from tests.helpers import speech_tensor
from tests.moshi_lm.test_dialogue import dialogue_models
from websockets.asyncio.client import connect

FS = 1920


@pytest.fixture(scope="module")
def models():
    return dialogue_models(seed=1)


class TrackingFactory(SessionFactory):
    """Keeps weak references to every session it made, to prove none outlives its connection."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made: list[weakref.ref] = []

    def new_session(self) -> DialogueSession:
        session = super().new_session()
        self.made.append(weakref.ref(session))
        return session


def _serve(models, **config):
    codec, lm = models
    factory = TrackingFactory(codec, LMGen(lm, use_sampling=False))
    return factory, DialogueServer(factory, ServerConfig(port=0, **config))


def _offline(models, audio: torch.Tensor) -> torch.Tensor:
    codec, lm = models
    with DialogueSession(codec, LMGen(lm, use_sampling=False)) as session:
        return run_dialogue(session, audio.view(1, 1, -1)).model_audio.view(-1)


async def _settle(server: DialogueServer, timeout: float = 10.0) -> None:
    """Wait until every connection's clean-up has run."""
    for _ in range(int(timeout / 0.02)):
        if server.stats().active_sessions == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"sessions still open: {server.stats()}")


async def _drained(server: DialogueServer, sent: int, timeout: float = 20.0) -> None:
    """Wait until the server has read at least `sent` frames and every inbound frame it accepted
    has gone through the model (checked twice, a poll apart, so no frame is still on the wire)."""
    settled = 0
    for _ in range(int(timeout / 0.01)):
        s = server.stats()
        settled = settled + 1 if s.frames_in >= sent and s.frames_out == s.frames_in - s.dropped_in else 0
        if settled == 2:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"accepted frames still unprocessed: {server.stats()}")


async def _abrupt_client(url: str, frames: int) -> None:
    """Sends some audio, then the connection dies without a close frame (as when killed)."""
    ws = await connect(url, **_connect_kwargs())
    await ws.recv()  # ready
    for _ in range(frames):
        await ws.send(protocol.pcm_encode(0.1 * torch.randn(FS), "f32le"))
    await asyncio.sleep(0.05)
    ws.transport.abort()


def test_four_concurrent_clients_and_one_killed_mid_stream(models):
    audios = [speech_tensor(1.2 + 0.16 * i, seed=20 + i).view(-1) for i in range(4)]
    expected = [_offline(models, a) for a in audios]
    factory, server = _serve(models)

    async def main():
        async with server:
            results = await asyncio.gather(
                *[stream_dialogue(server.url, a, realtime=False) for a in audios],
                _abrupt_client(server.url, 12))
            await _settle(server)
            # the server still serves after the crash
            again = await stream_dialogue(server.url, audios[0], realtime=False, fmt="s16le")
            await _settle(server)
            return results[:4], again, server.stats()

    results, again, stats = asyncio.run(main())
    for audio, want, got in zip(audios, expected, results):
        assert got.complete and got.errors == ()
        assert got.frames_sent == got.frames_received == -(-audio.numel() // FS)
        assert got.server_counters["dropped_in"] == got.server_counters["dropped_out"] == 0
        assert got.model_audio.shape == audio.shape
        assert torch.equal(got.model_audio, want)  # each connection is its own, exact, session
    assert again.complete and (again.model_audio - expected[0]).abs().max() <= 1 / 32768 + 1e-6  # int16
    assert stats.active_sessions == 0 and stats.sessions_opened == stats.sessions_closed == 6
    assert stats.queued_frames == 0 and stats.open_sessions_state_bytes == 0
    gc.collect()
    assert all(ref() is None for ref in factory.made)  # no session outlives its connection


def test_memory_stays_bounded_with_a_flooding_client_that_never_reads(models):
    """300 frames as fast as the socket takes them, replies never read: both queues overflow and
    drop with counters, the state stays the same size, and a well-behaved client alongside
    still gets every frame."""
    factory, server = _serve(models, inbound_frames=8, outbound_frames=4)
    normal_audio = speech_tensor(0.96, seed=30).view(-1)
    samples: list = []

    async def flood(url: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that falls behind
        sock.connect((server.config.host, server.port))
        ws = await connect(url, sock=sock, max_queue=1, **_connect_kwargs())
        frame = protocol.pcm_encode(0.1 * torch.randn(FS), "f32le")
        for i in range(300):
            await ws.send(frame)
            if i % 20 == 19:  # bursts of 20 frames, faster than the model runs
                await asyncio.sleep(0.05)
                samples.append(server.stats())
                # then let the model catch up, so that every burst meets an empty inbound queue
                # and at least 8 of its frames run, however slow the machine is
                await _drained(server, sent=i + 1)
                samples.append(server.stats())
        await asyncio.sleep(0.3)
        samples.append(server.stats())
        ws.transport.abort()

    async def main():
        async with server:
            _, normal = await asyncio.gather(flood(server.url),
                                             stream_dialogue(server.url, normal_audio, realtime=False, window=4))
            await _settle(server)
            return normal, server.stats()

    normal, final = asyncio.run(main())
    assert normal.complete and normal.server_counters["dropped_in"] == normal.server_counters["dropped_out"] == 0
    for s in samples:
        assert s.queued_frames <= 2 * (8 + 4) and s.queued_samples < FS
        assert s.peak_queue <= 8 + 1  # + a control message at most
    flooded = [s for s in samples if s.active_sessions == 1]
    state = {s.open_sessions_state_bytes for s in flooded}
    assert len(state) == 1 and state.pop() > 0  # ring buffers: the same size at frame 10 and 300
    assert final.frames_in == 300 + len(normal.model_audio) // FS
    assert final.dropped_in > 0 and final.dropped_out > 0
    assert final.frames_out >= 15 * 8 + len(normal.model_audio) // FS  # 8+ frames of each burst ran
    assert final.frames_out + final.dropped_in == final.frames_in
    assert final.active_sessions == 0 and final.queued_frames == 0
    gc.collect()
    assert all(ref() is None for ref in factory.made)


def test_a_vanished_client_is_dropped_by_the_keepalive(models):
    _, server = _serve(models, ping_interval=0.3, ping_timeout=0.3, close_timeout=0.3)

    async def main():
        async with server:
            ws = await connect(server.url, **_connect_kwargs())
            await ws.recv()
            await ws.send(protocol.pcm_encode(torch.zeros(3 * FS), "f32le"))
            ws.transport.pause_reading()  # no more pongs: the client is gone but the socket is open
            await asyncio.sleep(0.2)
            assert server.stats().active_sessions == 1
            await _settle(server, timeout=5.0)
            ws.transport.abort()
            return server.stats()

    stats = asyncio.run(main())
    assert stats.sessions_closed == 1 and stats.open_sessions_state_bytes == 0


def test_protocol_errors_reset_stats_and_a_full_server(models):
    _, server = _serve(models, max_sessions=1)

    async def main():
        async with server:
            ws = await connect(server.url, **_connect_kwargs())
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["frame_size"] == FS and ready["sample_rate"] == 24000
            assert ready["delay_frames"] == 1 and "s16le" in ready["formats"]
            await ws.send("not json")
            assert json.loads(await ws.recv())["type"] == "error"
            await ws.send(b"\x00\x00\x00")  # not a whole float32 sample
            assert "whole number" in json.loads(await ws.recv())["message"]
            # a second connection is refused while the only slot is taken
            with pytest.raises(MimiError, match="server full"):
                await stream_dialogue(server.url, torch.zeros(FS), realtime=False)
            await ws.send(protocol.pcm_encode(torch.zeros(FS + 5), "f32le"))  # a frame + 5 samples
            assert len(await ws.recv()) == FS * 4
            await ws.send(json.dumps({"type": "reset"}))
            assert json.loads(await ws.recv())["type"] == "reset"
            await ws.send(json.dumps({"type": "start", "format": "s16le"}))  # too late: audio was sent
            assert json.loads(await ws.recv())["type"] == "error"
            await ws.send(json.dumps({"type": "stats"}))
            stats = json.loads(await ws.recv())
            assert stats["type"] == "stats" and stats["frames_in"] == 1 and stats["frames_out"] == 1
            await ws.send(json.dumps({"type": "end"}))
            done = None
            async for msg in ws:  # frames until done, then the server closes
                if isinstance(msg, str):
                    done = json.loads(msg)
            assert done == {"type": "done", "frames_in": 1, "frames_out": 1, "frames_sent": 1,
                            "dropped_in": 0, "dropped_out": 0}
            await _settle(server)

    asyncio.run(main())


def test_web_page_and_pcm_formats(models):
    _, server = _serve(models)

    async def main():
        async with server:
            def get(path):
                conn = http.client.HTTPConnection(server.config.host, server.port, timeout=5)
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.getheader("Content-Type"), r.read().decode()

            return await asyncio.to_thread(get, "/"), await asyncio.to_thread(get, "/nope")

    (status, ctype, body), (missing, _, _) = asyncio.run(main())
    assert status == 200 and ctype.startswith("text/html") and "new WebSocket" in body and missing == 404
    x = torch.tensor([0.0, 0.5, -1.0, 1.5])
    assert torch.equal(protocol.pcm_decode(protocol.pcm_encode(x, "f32le"), "f32le"), x)
    assert torch.allclose(protocol.pcm_decode(protocol.pcm_encode(x, "s16le"), "s16le"),
                          torch.tensor([0.0, 0.5, -1.0, 1.0]), atol=1 / 32768)
    with pytest.raises(MimiError, match="NaN"):
        protocol.pcm_decode(protocol.pcm_encode(torch.tensor([float("nan")]), "f32le"), "f32le")


def test_bounded_box_drops_the_oldest_frame_first():
    box = _Box(3)
    assert [box.put(i) for i in range(3)] == [0, 0, 0]
    assert box.put("ctl", droppable=False) == 1 and box.put(4) == 1  # 0, then 1 dropped
    assert [item for _, item in box._items] == [2, "ctl", 4]
    assert box.put(5) == 1 and [item for _, item in box._items] == ["ctl", 4, 5]
    assert box.peak == 3


def test_sessions_share_weights_but_not_state(models):
    codec, lm = models
    copy = shared_weights_copy(codec)
    assert all(a is b for a, b in zip(codec.parameters(), copy.parameters()))
    with codec.streaming(1), copy.streaming(2):  # two streams at once, independent states
        assert codec.is_streaming and copy.is_streaming


def test_client_reports_a_refused_connection_in_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MimiError, match=r"cannot connect to ws://127.0.0.1:\d+/"):
        asyncio.run(stream_dialogue(f"ws://127.0.0.1:{port}/", torch.zeros(FS)))
