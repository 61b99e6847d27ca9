"""`mimi tokens INPUT OUT_DIR`: encode a dataset of audio files into Mimi tokens.

Registered on the `mimi` group by `cli/main.py` (`main.add_command(tokens)`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import os
import sys

import click

from mimi_cli.common import checked_device, model_option, quiet_option, reports_errors

__all__ = ["tokens"]

if TYPE_CHECKING:
    import torch


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.command("tokens")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False, path_type=str))
@model_option
@click.option("--codebooks", type=click.IntRange(min=1), default=None, metavar="N",
              help="Codebooks per frame [default: 8, or the model's count if fewer].")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, metavar="B",
              help="Files encoded together (sorted by length, so little padding).")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True, metavar="W",
              help="Processes reading and resampling audio (0: in the main process).")
@click.option("--shard-size", type=click.IntRange(min=1), default=256, show_default=True, metavar="S",
              help="Files per safetensors shard.")
@click.option("--device", default="cpu", show_default=True, metavar="D", callback=checked_device,
              help="Torch device for the model (under torchrun, cuda means cuda:LOCAL_RANK).")
@quiet_option
@reports_errors
def tokens(input_path: str, out_dir: str, model_source: str | None, codebooks: int | None,
           batch_size: int, num_workers: int, shard_size: int, device: "torch.device", quiet: bool) -> None:
    """Encode every audio file of INPUT into Mimi tokens in OUT_DIR.

    INPUT is a folder (searched recursively for wav, flac, ogg, oga, mp3, aiff, aif, au and
    opus files) or a manifest: a .txt/.lst file with one path per line, or a .jsonl file of
    objects with an "audio" key (relative paths are relative to the manifest's folder).

    Each file is downmixed to mono (channel average), resampled to 24 kHz and encoded. OUT_DIR
    receives safetensors shards of int16 [codebooks, frames] codes and manifest.jsonl (one line
    per file: shard, key, frames, original sample rate, length and channels, model). Files that
    cannot be read are listed in errors.jsonl and skipped.

    Interrupted? Run the same command again: it resumes where it stopped. To use several
    processes or GPUs, launch it with torchrun --nproc_per_node=N.
    """
    from mimi.defaults import resolve_model
    from mimi.tokens import extract_tokens
    from mimi.tokens.distributed import env_world_size, local_device

    loaded = resolve_model(model_source, num_codebooks=codebooks, device=local_device(device))
    rank = int(os.environ.get("RANK", "0") or 0) if env_world_size() > 1 else 0
    progress = not quiet and rank == 0 and sys.stderr.isatty()
    report = extract_tokens(input_path, out_dir, loaded, batch_size=batch_size,
                            num_workers=num_workers, shard_size=shard_size, progress=progress)
    if rank != 0:
        return
    failed_before = (f", {report.files_failed_before} skipped as failed before"
                     if report.files_failed_before else "")
    if report.files_encoded == 0 and report.files_failed == 0:
        click.echo(f"nothing to do: all {_plural(report.files_total, 'file')} are already done "
                   f"({report.files_done_before} in {report.manifest}{failed_before})")
        return
    errors = os.path.join(out_dir, "errors.jsonl")
    failed = f"{report.files_failed} failed (see {errors})" if report.files_failed else "0 failed"
    click.echo(f"encoded {_plural(report.files_encoded, 'file')} in {report.seconds:.1f} s, "
               f"{report.files_done_before} skipped as done{failed_before}, {failed}; "
               f"manifest: {report.manifest}")
