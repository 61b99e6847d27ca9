"""What every `mimi` command shares: error reporting, common options, progress and summaries."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

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


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def summary(header, seconds: float) -> str:
    from mimi.format import bitrate_bps

    return (f"{header.duration_seconds:.2f} s, {header.channels} ch, {header.num_codebooks} codebooks, "
            f"{bitrate_bps(header) / 1000:.2f} kbps, {seconds:.1f} s wall")


model_option = click.option("--model", "model_source", default=None, metavar="SRC",
                            help="Hub id (e.g. kyutai/mimi), Kyutai .safetensors file or transformers folder "
                                 "[default: the bundled model].")
codebooks_option = click.option("--codebooks", type=click.IntRange(1, 32), default=None,
                                help="Codebooks to use: 1..32 [default: 8].")
def checked_device(ctx: click.Context, param: click.Parameter, value: str | None):
    """Click callback: `--device` as a checked `torch.device` (None stays None); a bad name or CUDA
    on a machine without it is one `Error:` line at parse time (`mimi.devices.resolve_device`)."""
    if value is None:
        return None
    from mimi.devices import resolve_device

    try:
        return resolve_device(value)
    except MimiError as exc:
        raise click.ClickException(str(exc)) from None


device_option = click.option("--device", default="cpu", show_default=True, callback=checked_device,
                             help="torch device: cpu, cuda, cuda:N or auto.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
