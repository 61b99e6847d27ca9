"""`mimi bench quality` and `mimi bench speed`: codec benchmarks.

Registered on the `mimi` group by `cli/main.py` (`main.add_command(bench)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from mimi_cli.common import device_option, model_option, progress_enabled, quiet_option, reports_errors

__all__ = ["bench"]

if TYPE_CHECKING:
    import torch


def _int_list(name: str, *, choices_hint: str) -> Callable[[click.Context, click.Parameter, str], tuple[int, ...]]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
        items = [v.strip() for v in str(value).split(",")]
        if not items or any(not v for v in items):
            raise click.BadParameter(f"expected a comma-separated list of {choices_hint}, got {value!r}")
        out: list[int] = []
        for v in items:
            try:
                n = int(v)
            except ValueError:
                raise click.BadParameter(f"{v!r} is not an integer (expected {choices_hint}, e.g. 1,8)") from None
            if n < 1:
                raise click.BadParameter(f"{name} must be >= 1, got {n}")
            if n not in out:
                out.append(n)
        return tuple(out)

    return parse


def _baseline_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from mimi.bench.baselines import BASELINE_FAMILIES, all_baselines

    text = str(value).strip()
    if text.lower() == "none":
        return ()
    items = [v.strip() for v in text.split(",")]
    known = list(BASELINE_FAMILIES) + [b.name for b in all_baselines()]
    for v in items:
        if v not in known:
            raise click.BadParameter(f"unknown baseline {v!r}; use a comma-separated list of "
                                     f"{', '.join(known)}, or none")
    return tuple(dict.fromkeys(items))


@click.group("bench")
def bench() -> None:
    """Codec benchmarks: quality against bitrate, and speed."""


@bench.command("quality")
@click.argument("inputs", metavar="FILES_OR_DIR...", nargs=-1, required=True, type=click.Path(path_type=str))
@model_option
@click.option("--codebooks", default="1,2,4,8,16,32", show_default=True, metavar="K,K,...",
              callback=_int_list("codebook counts", choices_hint="positive integers"),
              help="Mimi codebook counts to score (those above the model's are clipped to it).")
@click.option("--baselines", default="opus,codec2", show_default=True, metavar="NAMES",
              callback=_baseline_list,
              help="Baseline codecs: opus (6, 8, 12 kbps), codec2 (700C, 1200, 3200), single settings "
                   "such as opus-8k, or none. One whose tool is not installed is skipped and reported.")
@click.option("--out", "out_dir", default="bench-quality", show_default=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=str), help="Where the results go.")
@device_option
@quiet_option
@reports_errors
def quality(inputs: tuple[str, ...], model_source: str | None, codebooks: tuple[int, ...],
            baselines: tuple[str, ...], out_dir: str, device: "torch.device", quiet: bool) -> None:
    """Score Mimi and baseline codecs (PESQ, STOI, ESTOI, SI-SDR, mel distance) on audio files.

    FILES_OR_DIR: audio files, or folders searched recursively. Each file is mixed to mono,
    resampled to 24 kHz, encoded and decoded by every codec setting and compared with the
    original. DIR receives per_file.csv, summary.csv, summary.md, results.json and
    quality_vs_bitrate.png. A metric that fails on a file is counted as failed and left out
    of the mean.
    """
    from mimi.bench.quality import OUTPUT_FILES, run_quality
    from mimi.defaults import resolve_model

    loaded = resolve_model(model_source, device=device)
    report = run_quality(list(inputs), loaded, codebooks=codebooks, baselines=baselines, out_dir=out_dir,
                         progress=progress_enabled(quiet))
    for line in report.skipped_baselines:
        click.echo(f"skipped baseline {line}", err=True)
    for name, reason in report.file_errors.items():
        click.echo(f"skipped file {reason}" if reason.startswith(name) else f"skipped file {name}: {reason}",
                   err=True)
    n = len(report.files)
    click.echo(f"{n} file{'s' if n != 1 else ''}, model {report.model_id}, {report.seconds:.1f} s\n")
    click.echo(report.to_markdown())
    click.echo(f"wrote {', '.join(OUTPUT_FILES)} to {Path(out_dir)}")


@bench.command("speed")
@model_option
@click.option("--codebooks", type=click.IntRange(1, 32), default=None, metavar="N",
              help="Codebooks to encode / decode [default: 8, or the model's count if fewer].")
@device_option
@click.option("--dtype", "dtype_name", default="float32", show_default=True,
              type=click.Choice(["float32", "bfloat16"]), help="Model and input precision.")
@click.option("--batch-sizes", default="1,8,32", show_default=True, metavar="B,B,...",
              callback=_int_list("batch sizes", choices_hint="positive integers"), help="Batch sizes to time.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Audio seconds per batch item.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed calls per measurement (after one warm-up); the median is reported.")
@click.option("--no-peers", is_flag=True, help="Time only this package, not transformers / moshi.")
@click.option("--out", "out_dir", default=None, metavar="DIR", type=click.Path(file_okay=False, path_type=str),
              help="Also write speed.md and speed.json here.")
@reports_errors
def speed(model_source: str | None, codebooks: int | None, device: "torch.device", dtype_name: str,
          batch_sizes: tuple[int, ...], seconds: float, repeats: int, no_peers: bool, out_dir: str | None) -> None:
    """Encode / decode real-time factors, streaming latency and peak memory.

    Peers (transformers' MimiModel and Kyutai's moshi, where installed) run the same weights,
    interleaved with ours; the ours/peer column is our speed over theirs.
    """
    from mimi.bench.speed import DTYPES, run_speed
    from mimi.defaults import resolve_model

    dtype = DTYPES[dtype_name]
    loaded = resolve_model(model_source, num_codebooks=codebooks, device=device, dtype=dtype)
    report = run_speed(loaded, device=device, dtype=dtype, batch_sizes=batch_sizes, seconds=seconds,
                       repeats=repeats, peers=not no_peers)
    text = report.to_markdown()
    click.echo(text)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.md").write_text(text, encoding="utf-8")
        (out / "speed.json").write_text(report.to_json() + "\n", encoding="utf-8")
        click.echo(f"wrote speed.md, speed.json to {out}")
