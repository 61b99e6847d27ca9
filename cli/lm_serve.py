"""`moshi-lm serve`: the live dialogue server on a local WebSocket (docs/dialogue-protocol.md).

Registered on the `moshi-lm` group by `cli/lm_main.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import click

from mimi_cli.common import reports_errors
from mimi_cli.lm_dialogue import SamplingSettings, load_dialogue_models, model_options, sampling_options

__all__ = ["serve"]


@click.command("serve")
@model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the protocol has no authentication: keep it local).")
@click.option("--port", type=click.IntRange(0, 65535), default=8998, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--max-sessions", type=click.IntRange(min=1), default=8, show_default=True,
              help="Connections served at once; more are refused (close code 1013).")
@click.option("--inbound-frames", type=click.IntRange(min=1), default=16, show_default=True,
              help="Per connection: user frames waiting for compute before the oldest is dropped.")
@click.option("--outbound-frames", type=click.IntRange(min=1), default=32, show_default=True,
              help="Per connection: model frames waiting to be sent before the oldest is dropped.")
@click.option("--compute-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads running the models (connections take turns).")
@sampling_options
@reports_errors
def serve(lm_source: str, mimi_source: str | None, tokenizer_path: str | None, device: Any, dtype_name: str,
          host: str, port: int, max_sessions: int, inbound_frames: int, outbound_frames: int,
          compute_threads: int, greedy: bool, temp: float, temp_text: float, top_k: int, top_k_text: int,
          seed: int | None) -> None:
    """Serve live full-duplex dialogues: one session per WebSocket connection.

    Clients send the user's audio as raw PCM frames (24 kHz mono, 1920 samples per 80 ms frame)
    and receive the model's audio frame for frame, plus its text tokens as JSON messages.
    GET / in a browser gives a small page that streams a file and plays the reply.
    Stop with Ctrl-C.
    """
    from moshi_lm.server import DialogueServer, ServerConfig, SessionFactory

    models = load_dialogue_models(lm_source, mimi_source, tokenizer_path, device, dtype_name,
                                  SamplingSettings(greedy, temp, temp_text, top_k, top_k_text, seed))
    factory = SessionFactory(models.mimi, models.make_gen(), tokenizer=models.tokenizer)
    config = ServerConfig(host=host, port=port, max_sessions=max_sessions, inbound_frames=inbound_frames,
                          outbound_frames=outbound_frames, compute_threads=compute_threads)
    server = DialogueServer(factory, config)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a clean stop: sessions closed, threads joined
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        async with server:
            click.echo(f"serving dialogues on {server.url} (web page: http://{host}:{server.port}/); "
                       "Ctrl-C stops", err=True)
            await stop

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    s = server.stats()
    click.echo(f"stopped: {s.sessions_opened} sessions, {s.frames_out} frames computed, "
               f"{s.dropped_in} input and {s.dropped_out} output frames dropped", err=True)
