"""`moshi-lm` command line: training and running Moshi-style LMs over Mimi tokens.

Each command lives in its own module (`cli/lm_*.py`) and is registered below. Errors print one
line `Error: ...` and exit with status 1, as for `mimi` (`mimi_cli.common.reports_errors`).
"""

from __future__ import annotations

import click

import mimi
from mimi_cli.lm_client import client
from mimi_cli.lm_dialogue import dialogue
from mimi_cli.lm_serve import serve
from mimi_cli.lm_train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mimi.__version__, prog_name="moshi-lm")
def main() -> None:
    """Moshi-style speech LMs over Mimi tokens: Inner Monologue data, training, dialogue."""


main.add_command(train)
main.add_command(dialogue)
main.add_command(serve)
main.add_command(client)
