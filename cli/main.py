"""`mimi` command line: each command parses its arguments, calls the library, reports.

User errors (bad files, bad arguments) print one line `Error: ...` and exit with status 1;
never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

import mimi
from mimi_cli.common import (
    codebooks_option,
    device_option,
    model_option,
    progress_enabled,
    quiet_option,
    reports_errors,
    summary,
)
from mimi_cli.bench import bench
from mimi_cli.corpus import corpus
from mimi_cli.tokens import tokens
from mimi_cli.train import train

if TYPE_CHECKING:
    import torch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mimi.__version__, prog_name="mimi")
def main() -> None:
    """Mimi neural speech codec: 24 kHz speech at 12.5 frames/s, 1.1 kbps with 8 codebooks."""


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.argument("output_path", metavar="OUTPUT.mimi", type=click.Path())
@model_option
@codebooks_option
@device_option
@quiet_option
@reports_errors
def encode(input_path: str, output_path: str, model_source: str | None, codebooks: int | None,
           device: "torch.device", quiet: bool) -> None:
    """Compress audio file INPUT (any rate, any channels) to OUTPUT.mimi."""
    from mimi.compress import encode_file
    from mimi.defaults import resolve_model

    loaded = resolve_model(model_source, num_codebooks=codebooks, device=device)
    report = encode_file(input_path, output_path, loaded, progress=progress_enabled(quiet))
    click.echo(f"wrote {output_path}: {summary(report.header, report.seconds)}")


@main.command()
@click.argument("input_path", metavar="INPUT.mimi", type=click.Path())
@click.argument("output_path", metavar="OUTPUT", type=click.Path())
@click.option("--model", "model_source", default=None, metavar="SRC",
              help="Model to decode with [default: the one recorded in the file].")
@device_option
@quiet_option
@reports_errors
def decode(input_path: str, output_path: str, model_source: str | None, device: "torch.device", quiet: bool) -> None:
    """Restore INPUT.mimi to audio file OUTPUT (.wav, .flac, ...) at its original rate and length."""
    from mimi.compress import decode_codes, load_decoder_for
    from mimi.format import read_mimi

    mf = read_mimi(input_path)  # read and verified once, before trusting the model it names
    loaded = load_decoder_for(mf.header, model_source, device=device)
    report = decode_codes(mf, output_path, loaded, progress=progress_enabled(quiet))
    click.echo(f"wrote {output_path}: {summary(report.header, report.seconds)}")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.argument("output_path", metavar="OUTPUT", type=click.Path())
@model_option
@codebooks_option
@device_option
@quiet_option
@reports_errors
def roundtrip(input_path: str, output_path: str, model_source: str | None, codebooks: int | None,
              device: "torch.device", quiet: bool) -> None:
    """Encode INPUT and decode it again to OUTPUT, to hear what the codec keeps."""
    from mimi.compress import roundtrip_file
    from mimi.defaults import resolve_model

    loaded = resolve_model(model_source, num_codebooks=codebooks, device=device)
    report = roundtrip_file(input_path, output_path, loaded, progress=progress_enabled(quiet))
    click.echo(f"wrote {output_path}: {summary(report.header, report.seconds)}")


@main.command()
@click.argument("path", metavar="FILE.mimi", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@reports_errors
def info(path: str, as_json: bool) -> None:
    """Show what a .mimi file holds: model, codebooks, frames, duration, rate, channels, bitrate."""
    import json

    from mimi.compress import mimi_file_info

    fi = mimi_file_info(path)
    if as_json:
        click.echo(json.dumps(fi.to_dict(), indent=2))
        return
    h = fi.header
    rows = [
        ("model", h.model_id), ("fingerprint", h.weights_fingerprint),
        ("codebooks", f"{h.num_codebooks} of {h.codebook_size} entries ({h.bits} bits per code)"),
        ("frames", f"{h.num_frames} at {h.frame_rate:g} Hz"), ("duration", f"{h.duration_seconds:.3f} s"),
        ("original", f"{h.sample_rate} Hz, {h.channels} channel(s), {h.num_samples} samples"),
        ("bitrate", f"{fi.bitrate_bps / 1000:.3f} kbps"), ("file size", f"{fi.file_bytes} bytes"),
        ("library", h.library_version),
    ]
    for key, value in rows:
        click.echo(f"{key:>12}: {value}")


@main.command()
@click.argument("source")
@click.argument("dest", type=click.Path(dir_okay=True, writable=True))
@click.option("--layout", type=click.Choice(mimi.LAYOUTS), required=True,
              help="kyutai: one .safetensors file; transformers: a folder with config.json + model.safetensors.")
@click.option("--dtype", "dtype_name", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
              help="Store the weights in this precision (default: as in SOURCE). Loading casts back to "
                   "float32; float16 halves the file (the bundled model is stored so).")
@reports_errors
def convert(source: str, dest: str, layout: str, dtype_name: str | None) -> None:
    """Rewrite checkpoint SOURCE (file, folder or hub id) in another layout at DEST."""
    import torch

    out = mimi.convert(source, dest, layout, dtype=getattr(torch, dtype_name) if dtype_name else None)
    click.echo(f"wrote {out} ({layout} layout{', ' + dtype_name if dtype_name else ''})")


main.add_command(bench)
main.add_command(corpus)
main.add_command(tokens)
main.add_command(train)


if __name__ == "__main__":
    main()
