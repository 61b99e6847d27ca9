"""`moshi-lm train [CONFIG]`: train a Moshi-style dialogue LM (registered by `cli/lm_main.py`).

Also runnable as `python -m moshi_lm.train`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mimi_cli.common import quiet_option, reports_errors

__all__ = ["train"]

# options that set the config key of the same name (None: not given)
_OVERRIDES = ("dialogues", "tokens", "tokenizer", "num_codebooks", "card", "steps", "batch_size", "window", "lr",
              "seed", "device", "eval_fraction", "log_every", "eval_every", "checkpoint_every")
_RESUMABLE = ("steps",)


@click.command("train")
@click.argument("config_path", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--dialogues", metavar="DIR", default=None,
              help="Dialogue folder (moshi_lm.dialogue_corpus.build_dialogues: words.jsonl + audio/).")
@click.option("--tokens", metavar="DIR", default=None, help="Output folder of `mimi tokens DIALOGUES/audio`.")
@click.option("--tokenizer", metavar="FILE", default=None, help="SentencePiece model of the text stream.")
@click.option("--out", "out_dir", metavar="RUN", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Run folder of a new run.")
@click.option("--resume", "resume_dir", metavar="RUN", type=click.Path(file_okay=False, path_type=str),
              default=None, help="Continue this run from its latest checkpoint (its own config; --steps may change).")
@click.option("--preset", type=click.Choice(["micro", "tiny", "small"]), default=None,
              help="LM size [default: tiny, or CONFIG's [model] preset].")
@click.option("--num-codebooks", type=click.IntRange(min=1), default=None, metavar="K",
              help="Codebooks per speaker [default: 8].")
@click.option("--card", type=click.IntRange(min=2), default=None, metavar="N",
              help="Codebook size of the codec [default: smallest power of two above every code].")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N", help="Optimizer steps [default: 1000].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, metavar="B", help="[default: 16]")
@click.option("--window", type=click.IntRange(min=2), default=None, metavar="F",
              help="Frames per training window (80 ms each) [default: 64].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate [default: 2e-3].")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--device", default=None, metavar="D", help="cpu, cuda or auto [default: cpu].")
@click.option("--eval-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of dialogues held out [default: 0.1].")
@click.option("--log-every", type=click.IntRange(min=1), default=None, metavar="N", help="[default: 10]")
@click.option("--eval-every", type=click.IntRange(min=1), default=None, metavar="N", help="[default: 100]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N", help="[default: 200]")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="CPU threads for torch [default: torch's choice]; 1 is best on a busy machine.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None, metavar="M",
              help="Stop after M minutes at a step boundary (checkpoint and final/ written); continue with --resume.")
@quiet_option
@reports_errors
def train(config_path: str | None, out_dir: str | None, resume_dir: str | None, preset: str | None,
          threads: int | None, max_minutes: float | None, quiet: bool, **options: Any) -> None:
    """Train a Moshi-style LM on two-speaker dialogues: Mimi tokens + Inner Monologue text.

    Speaker A's stream is the model's (text + audio), speaker B's the user's. Writes
    train.csv and eval.csv (loss beside the unigram baseline), checkpoints/ and final/
    (loadable by moshi_lm.load) into the run folder. CONFIG is a TOML file with the same keys
    as the options (underscores) and a [model] table; options override it.
    """
    import torch

    from mimi.errors import MimiError
    from moshi_lm.train import config_from_dict, latest_checkpoint, read_config_file
    from moshi_lm.train import train as run

    given = {k: v for k, v in options.items() if k in _OVERRIDES and v is not None}
    if resume_dir is not None:
        if out_dir is not None or config_path is not None:
            raise MimiError("--resume continues a run with its own config: give neither CONFIG nor --out")
        changed = sorted(k for k in given if k not in _RESUMABLE) + (["preset"] if preset else [])
        if changed:
            raise MimiError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} "
                            "when resuming (only --steps and --max-minutes)")
        folder = Path(resume_dir)
        resolved = folder / "config.resolved.json"
        if not resolved.is_file():
            raise MimiError(f"{folder} is not a run folder (no config.resolved.json)")
        data = read_config_file(resolved)
        data.pop("resolved_lm_config", None)
    else:
        if out_dir is None:
            raise MimiError("give --out RUN (a new run folder) or --resume RUN")
        folder = Path(out_dir)
        if latest_checkpoint(folder / "checkpoints") is not None:
            raise MimiError(f"{folder} already holds a run; continue it with --resume {folder} or choose another --out")
        data = read_config_file(config_path) if config_path else {}
        if preset is not None:
            data["model"] = {**data.get("model", {}), "preset": preset}
    data.update(given)
    cfg = config_from_dict(data, where=str(config_path) if config_path else "LM training config")
    if threads is not None:
        torch.set_num_threads(threads)
    report = run(cfg, folder, resume=resume_dir is not None, progress=not quiet and sys.stderr.isatty(),
                 time_limit_s=None if max_minutes is None else 60.0 * max_minutes)

    def fmt(name: str, loss: float | None, base: float | None) -> str:
        return f"{name} loss {loss:.3f} vs unigram {base:.3f}" if loss is not None and base is not None else ""

    figures = "; ".join(s for s in (fmt("train", report.train_loss, report.train_unigram),
                                    fmt("eval", report.eval_loss, report.eval_unigram)) if s)
    stop = " (time budget reached)" if report.stopped_early else ""
    best = (f"; best held-out loss {report.best_eval_loss:.3f} at step {report.best_step} ({folder / 'best'})"
            if report.best_step is not None else "")
    click.echo(f"trained to step {report.steps_done}{stop} (from {report.resumed_from}) in {report.seconds:.0f} s"
               + (f"; {figures}" if figures else "") + f"; final model: {report.final_dir}{best}")
