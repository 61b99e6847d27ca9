"""`moshi-lm client`: stream a recording to a running `moshi-lm serve` and save the reply.

Registered on the `moshi-lm` group by `cli/lm_main.py`.
"""

from __future__ import annotations

import asyncio

import click

from mimi_cli.common import reports_errors
from mimi_cli.lm_dialogue import audio_io_options

__all__ = ["client"]


@click.command("client")
@click.option("--url", default="ws://127.0.0.1:8998/", show_default=True, help="The server's WebSocket URL.")
@audio_io_options("The model's reply, aligned with the input.")
@click.option("--stereo", is_flag=True, help="Write the user on the left and the model on the right.")
@click.option("--fast", is_flag=True, help="Send as fast as the server answers instead of in real time.")
@click.option("--format", "fmt", type=click.Choice(["f32le", "s16le"]), default="f32le", show_default=True,
              help="PCM sample format on the wire.")
@reports_errors
def client(url: str, input_path: str, output_path: str, text_path: str | None, stereo: bool, fast: bool,
           fmt: str) -> None:
    """Stream INPUT to a dialogue server frame by frame and save what the model says."""
    import torch

    from mimi.atomic import atomic_write_bytes
    from mimi.audio import AudioWriter
    from moshi_lm.client import stream_dialogue
    from moshi_lm.dialogue import format_text_stream, read_user_audio
    from moshi_lm.protocol import SAMPLE_RATE

    user = read_user_audio(input_path, SAMPLE_RATE)[0]  # [1, T]
    try:
        result = asyncio.run(stream_dialogue(url, user[0], realtime=not fast, fmt=fmt))
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: nothing written") from None
    audio = torch.cat([user, result.model_audio[None]]) if stereo else result.model_audio[None]  # [C, T]
    with AudioWriter(output_path, SAMPLE_RATE, channels=audio.shape[0]) as writer:
        writer.write(audio)
    if text_path is not None:
        header = "# time_s\tid\ttext (time: start of the model frame carrying the token)\n"
        atomic_write_bytes(text_path, (header + format_text_stream(result.text)).encode())
    c = result.server_counters
    dropped = (f"server dropped {c.get('dropped_in', 0)} input and {c.get('dropped_out', 0)} output frames"
               if c else "the server did not finish the stream")
    click.echo(f"wrote {output_path}: {result.frames_received} of {result.frames_sent} frames back; {dropped}; "
               f"{len(result.text)} text tokens")
    for message in result.errors:
        click.echo(f"server error: {message}", err=True)
    if not result.complete:
        click.echo("warning: the reply is incomplete (frames were dropped or the connection broke); "
                   "the missing audio is silence at the end", err=True)
