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
