"""`mimi train CONFIG`: train or fine-tune a Mimi codec (registered by `cli/main.py`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mimi_cli.common import quiet_option, reports_errors


@click.command("train")
@click.argument("config_path", metavar="CONFIG", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for a new run [default: runs/<CONFIG name>].")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this folder from its latest checkpoint (steps come from CONFIG).")
@click.option("--init", "init_source", default=None, metavar="SRC",
              help="Start from these codec weights (Kyutai file, transformers folder or hub id), or "
                   "'default': the bundled model and its discriminator. Their architecture replaces "
                   "CONFIG's model (recorded in config.resolved.json; --resume keeps it).")
@click.option("--init-discriminator", "init_disc", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Start the discriminator from this discriminator.safetensors [default: fresh, or the "
                   "bundled one with --init default].")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None, metavar="M",
              help="Stop after M minutes at a step boundary, with a checkpoint and final/ written; "
                   "continue later with --resume.")
@quiet_option
@reports_errors
def train(config_path: str, out_dir: str | None, resume_dir: str | None, init_source: str | None,
          init_disc: str | None, max_minutes: float | None, quiet: bool) -> None:
    """Train a Mimi codec as configured in CONFIG (TOML; see mimi/training/config.py).

    Writes config.resolved.json, train.csv, eval.csv (PESQ/STOI on [data] eval), checkpoints/
    and final/ (EMA weights, Kyutai layout, plus the discriminator). Under torchrun, trains
    with DDP across the processes.
    """
    from mimi.errors import MimiError
    from mimi.training.checkpoint import latest_checkpoint
    from mimi.training.config import load_config
    from mimi.training.trainer import train as run

    cfg = load_config(config_path)
    if resume_dir is not None and out_dir is not None:
        raise MimiError("give either --out (a new run) or --resume (an existing run), not both")
    folder = Path(resume_dir or out_dir or Path("runs") / Path(config_path).stem)
    if resume_dir is None and latest_checkpoint(folder / "checkpoints") is not None:
        raise MimiError(f"{folder} already holds a run; continue it with --resume {folder} or choose another --out")
    if resume_dir is not None and (init_source or init_disc):
        raise MimiError("--init and --init-discriminator start a new run; --resume continues one: give one or the other")
    report = run(cfg, folder, resume=resume_dir is not None, init=init_source, init_discriminator=init_disc,
                 progress=not quiet and sys.stderr.isatty(),
                 time_limit_s=None if max_minutes is None else 60.0 * max_minutes)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    scores = ", ".join(f"{k} {v:.3f}" for k, v in report.last_eval.items() if k in ("pesq", "stoi"))
    click.echo(f"trained to step {report.steps_done} (from {report.resumed_from}) in {report.seconds:.0f} s; "
               f"final weights: {report.final_model}" + (f"; eval: {scores}" if scores else ""))
