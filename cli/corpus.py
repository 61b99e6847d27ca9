"""`mimi corpus OUT_DIR`: synthesise the training corpus and the held-out evaluation set.

Registered on the `mimi` group by `cli/main.py` (`main.add_command(corpus)`).
"""

from __future__ import annotations

import os

import click

from mimi_cli.common import progress_enabled, quiet_option, reports_errors

__all__ = ["corpus"]


@click.command("corpus")
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False, path_type=str))
@click.option("--hours", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="H",
              help="Hours of training audio (0: no training set).")
@click.option("--eval-minutes", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="M",
              help="Minutes of held-out evaluation audio (0: no evaluation set).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="S",
              help="Training corpus seed; the evaluation set uses S + 1.")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="W",
              help="Synthesis processes [default: all CPUs].")
@quiet_option
@reports_errors
def corpus(out_dir: str, hours: float, eval_minutes: float, seed: int, workers: int | None, quiet: bool) -> None:
    """Synthesise a speech corpus into OUT_DIR: OUT_DIR/train and OUT_DIR/eval.

    Training audio: espeak-ng (many languages, accents and voice variants, random rate, pitch
    and amplitude) and flite's kal, awb and rms voices. Evaluation audio: only voices that
    never enter training (flite slt and the installed festival voices), reading sentences
    that cannot occur in training. Files are 24 kHz mono 16-bit WAV; each split has a
    manifest.jsonl (path, engine, voice, variant, language, rate, pitch, text, duration_s).

    The same seed always gives the same corpus. Interrupted, or want more hours? Run the
    command again with the same seed: it resumes and extends.
    """
    from mimi.training.corpus import build_corpus, build_eval_set

    workers = workers or os.cpu_count() or 1
    progress = progress_enabled(quiet)
    if hours > 0:
        report = build_corpus(out_dir, hours=hours, seed=seed, workers=workers, progress=progress)
        click.echo(f"{report.root}: {report.summary()}")
    if eval_minutes > 0:
        report = build_eval_set(out_dir, minutes=eval_minutes, seed=seed + 1, workers=workers, progress=progress)
        click.echo(f"{report.root}: {report.summary()}")
        if report.skipped_engines:
            click.echo(f"note: {', '.join(report.skipped_engines)} not installed; the evaluation set uses "
                       f"{', '.join(report.voices)} only (apt-get install festival for more voices)", err=True)
