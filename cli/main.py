"""`mimi` command line: each command parses its arguments, calls the library, reports.

User errors (bad files, bad arguments) print one line `error: ...` and exit with status 1;
never a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

import mimi
from mimi.errors import MimiError


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MimiError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # disk full, permission denied, ...
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mimi.__version__, prog_name="mimi")
def main() -> None:
    """Mimi neural speech codec: 24 kHz speech at 12.5 frames/s, 1.1 kbps with 8 codebooks."""


def _progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _summary(header, seconds: float) -> str:
    from mimi.format import bitrate_bps

    return (f"{header.duration_seconds:.2f} s, {header.channels} ch, {header.num_codebooks} codebooks, "
            f"{bitrate_bps(header) / 1000:.2f} kbps, {seconds:.1f} s wall")


model_option = click.option("--model", "model_source", default=None, metavar="SRC",
                            help="Hub id (e.g. kyutai/mimi), Kyutai .safetensors file or transformers folder "
                                 "[default: the bundled model].")
codebooks_option = click.option("--codebooks", type=click.IntRange(1, 32), default=None,
                                help="Codebooks to use: 1..32 [default: 8].")
device_option = click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.argument("output_path", metavar="OUTPUT.mimi", type=click.Path())
@model_option
@codebooks_option
@device_option
@quiet_option
@reports_errors
def encode(input_path: str, output_path: str, model_source: str | None, codebooks: int | None,
           device: str, quiet: bool) -> None:
    """Compress audio file INPUT (any rate, any channels) to OUTPUT.mimi."""
    from mimi.compress import encode_file
    from mimi.defaults import resolve_model

    loaded = resolve_model(model_source, num_codebooks=codebooks, device=device)
    report = encode_file(input_path, output_path, loaded, progress=_progress_enabled(quiet))
    click.echo(f"wrote {output_path}: {_summary(report.header, report.seconds)}")


@main.command()
@click.argument("input_path", metavar="INPUT.mimi", type=click.Path())
@click.argument("output_path", metavar="OUTPUT", type=click.Path())
@click.option("--model", "model_source", default=None, metavar="SRC",
              help="Model to decode with [default: the one recorded in the file].")
@device_option
@quiet_option
@reports_errors
def decode(input_path: str, output_path: str, model_source: str | None, device: str, quiet: bool) -> None:
    """Restore INPUT.mimi to audio file OUTPUT (.wav, .flac, ...) at its original rate and length."""
    from mimi.compress import decode_file, load_decoder_for

    loaded = load_decoder_for(input_path, model_source, device=device)
    report = decode_file(input_path, output_path, loaded, progress=_progress_enabled(quiet))
    click.echo(f"wrote {output_path}: {_summary(report.header, report.seconds)}")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.argument("output_path", metavar="OUTPUT", type=click.Path())
@model_option
@codebooks_option
@device_option
@quiet_option
@reports_errors
def roundtrip(input_path: str, output_path: str, model_source: str | None, codebooks: int | None,
              device: str, quiet: bool) -> None:
    """Encode INPUT and decode it again to OUTPUT, to hear what the codec keeps."""
    from mimi.compress import roundtrip_file
    from mimi.defaults import resolve_model

    loaded = resolve_model(model_source, num_codebooks=codebooks, device=device)
    report = roundtrip_file(input_path, output_path, loaded, progress=_progress_enabled(quiet))
    click.echo(f"wrote {output_path}: {_summary(report.header, report.seconds)}")


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
@reports_errors
def convert(source: str, dest: str, layout: str) -> None:
    """Rewrite checkpoint SOURCE (file, folder or hub id) in another layout at DEST."""
    out = mimi.convert(source, dest, layout)
    click.echo(f"wrote {out} ({layout} layout)")


if __name__ == "__main__":
    main()

from mimi_cli.tokens import tokens  # noqa: E402

main.add_command(tokens)
