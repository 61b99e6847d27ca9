"""`moshi-lm dialogue`: run a dialogue model over a recording of the user, offline but frame by
frame in real-time order, and write what the model says (audio and text).

Also holds what `moshi-lm serve` shares with it: the model options (`--lm`, `--mimi`,
`--tokenizer`, `--device`, `--dtype`), the sampling options and `load_dialogue_models`.
Registered on the `moshi-lm` group by `cli/lm_main.py`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from mimi.devices import resolve_device
from mimi.errors import MimiError
from mimi_cli.common import checked_device, progress_enabled, quiet_option, reports_errors

__all__ = ["DialogueModels", "dialogue", "load_dialogue_models", "model_options", "sampling_options"]

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class SamplingSettings:
    greedy: bool
    temp: float
    temp_text: float
    top_k: int
    top_k_text: int
    seed: int | None


@dataclass(frozen=True)
class DialogueModels:
    mimi: Any  # MimiModel (eval, no gradients)
    lm: Any  # LMModel
    tokenizer: Any  # None, or something moshi_lm.dialogue.as_text_decoder accepts
    sampling: SamplingSettings

    def make_gen(self, seed_offset: int = 0):
        """A fresh LMGen over `lm` with these sampling settings (its own generator when seeded)."""
        import torch

        from moshi_lm import LMGen

        s = self.sampling
        generator = None
        if s.seed is not None:
            generator = torch.Generator(device=self.lm.device).manual_seed(s.seed + seed_offset)
        return LMGen(self.lm, use_sampling=not s.greedy, temp=s.temp, temp_text=s.temp_text, top_k=s.top_k,
                     top_k_text=s.top_k_text, generator=generator)


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--lm", "lm_source", required=True, metavar="SRC",
                     help="Moshi LM: a folder with config.json + model.safetensors, or a hub id."),
        click.option("--mimi", "mimi_source", default=None, metavar="SRC",
                     help="Mimi codec: Kyutai .safetensors file, transformers folder or hub id "
                          "[default: the bundled model]."),
        click.option("--tokenizer", "tokenizer_path", default=None, metavar="FILE",
                     help="SentencePiece model to show text pieces [default: the LM folder's "
                          "tokenizer_name or tokenizer.model, if present; else token ids]."),
        click.option("--device", default="cpu", show_default=True, callback=checked_device,
                     help="torch device: cpu, cuda, cuda:N or auto."),
        click.option("--dtype", "dtype_name", type=click.Choice(DTYPES), default="float32", show_default=True,
                     help="Weights dtype (Mimi's quantizer stays float32)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def sampling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--greedy", is_flag=True, help="Argmax decoding instead of sampling."),
        click.option("--temp", type=click.FloatRange(min=0.0), default=0.8, show_default=True,
                     help="Audio sampling temperature."),
        click.option("--temp-text", type=click.FloatRange(min=0.0), default=0.7, show_default=True,
                     help="Text sampling temperature."),
        click.option("--top-k", type=click.IntRange(min=0), default=250, show_default=True,
                     help="Audio top-k (0: no cut)."),
        click.option("--top-k-text", type=click.IntRange(min=0), default=25, show_default=True,
                     help="Text top-k (0: no cut)."),
        click.option("--seed", type=int, default=None, help="Seed of the sampling generator (reproducible runs)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def audio_io_options(output_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--input, --output (described by `output_help`) and --text-out: the files of one dialogue
    (`moshi-lm dialogue` and `moshi-lm client`)."""
    options = [
        click.option("--input", "input_path", required=True, metavar="WAV",
                     help="The user's side: any audio file (downmixed to mono, resampled to 24 kHz)."),
        click.option("--output", "output_path", required=True, metavar="WAV", help=output_help),
        click.option("--text-out", "text_path", default=None, metavar="TXT",
                     help="The model's text: one token per line, `time_s<TAB>id<TAB>text`."),
    ]

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _load_tokenizer(path: str | None, lm_source: str) -> Any:
    if path is None:  # the LM folder may name its tokenizer (Kyutai's `tokenizer_name`)
        folder = Path(lm_source)
        try:
            raw = json.loads((folder / "config.json").read_text()) if folder.is_dir() else {}
        except (OSError, ValueError):
            raw = {}
        name = raw.get("tokenizer_name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            name = "tokenizer.model"  # what `moshi-lm train` exports beside its weights
        if not (folder / name).is_file():
            return None
        path = str(folder / name)
    if not Path(path).is_file():
        raise MimiError(f"no such tokenizer file: {path}")
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MimiError(f"{path}: not a SentencePiece model ({reason})") from None


def _load_mimi(source: str | None, device, dtype):
    import mimi
    from mimi.defaults import default_model_path

    if source is None:
        try:
            source = str(default_model_path())
        except MimiError:
            raise MimiError("no default Mimi model is bundled with this installation; pass --mimi (a Kyutai "
                            ".safetensors file, a transformers folder or a hub id such as kyutai/mimi)") from None
    return mimi.load(source, device=device, dtype=dtype)


def load_dialogue_models(lm_source: str, mimi_source: str | None, tokenizer_path: str | None, device: Any,
                         dtype_name: str, sampling: SamplingSettings) -> DialogueModels:
    import torch

    import moshi_lm

    dev = resolve_device(device)
    dtype = getattr(torch, dtype_name)
    codec = _load_mimi(mimi_source, dev, dtype)  # the small one first: a bad --mimi fails fast
    lm = moshi_lm.load(lm_source, device=dev, dtype=dtype)
    tokenizer = _load_tokenizer(tokenizer_path, lm_source)
    if tokenizer is not None and tokenizer.get_piece_size() < lm.config.text_card:
        raise MimiError(f"the tokenizer has {tokenizer.get_piece_size()} pieces; the LM emits "
                        f"{lm.config.text_card} text tokens")
    return DialogueModels(mimi=codec, lm=lm, tokenizer=tokenizer, sampling=sampling)


def _check_output(path: str, option: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise MimiError(f"{option}: folder {parent} does not exist")


@click.command("dialogue")
@model_options
@audio_io_options("Stereo file: the user on the left, the model on the right, aligned.")
@sampling_options
@quiet_option
@reports_errors
def dialogue(lm_source: str, mimi_source: str | None, tokenizer_path: str | None, device: Any, dtype_name: str,
             input_path: str, output_path: str, text_path: str | None, greedy: bool, temp: float,
             temp_text: float, top_k: int, top_k_text: int, seed: int | None, quiet: bool) -> None:
    """Talk to a dialogue model with a recording: the model listens and speaks at the same time.

    Every 80 ms frame of the input goes through Mimi's streaming encoder, one step of the LM
    and Mimi's streaming decoder, in time order, exactly as live. The reply is as long as the
    input (silence during the model's delay warm-up; no frame is dropped). Reports the
    per-frame compute time against the 80 ms real-time budget.
    """
    import torch

    from mimi.atomic import atomic_write_bytes
    from mimi.audio import AudioWriter
    from moshi_lm.dialogue import AlgorithmicLatency, DialogueSession, format_text_stream, percentile, \
        read_user_audio, run_dialogue

    _check_output(output_path, "--output")
    if text_path is not None:
        _check_output(text_path, "--text-out")
    user = read_user_audio(input_path)  # [1, 1, T] at 24 kHz
    models = load_dialogue_models(lm_source, mimi_source, tokenizer_path, device, dtype_name,
                                  SamplingSettings(greedy, temp, temp_text, top_k, top_k_text, seed))
    session = DialogueSession(models.mimi, models.make_gen(), batch_size=1, tokenizer=models.tokenizer)
    frames = -(-user.shape[-1] // session.frame_size)
    bar = None
    if progress_enabled(quiet):
        from tqdm import tqdm

        bar = tqdm(total=frames, unit="frame", file=sys.stderr, leave=False)
    with session:
        run = run_dialogue(session, user, on_frame=(lambda _: bar.update(1)) if bar is not None else None)
    if bar is not None:
        bar.close()

    stereo = torch.cat([run.user_audio[0], run.model_audio[0]], dim=0)  # [2, T]
    with AudioWriter(output_path, run.sample_rate, channels=2) as writer:
        writer.write(stereo)
    seconds = user.shape[-1] / run.sample_rate
    click.echo(f"wrote {output_path}: {seconds:.2f} s, {run.frames} frames (user left, model right; "
               f"none dropped)")
    if text_path is not None:
        header = "# time_s\tid\ttext (time: start of the model frame carrying the token)\n"
        atomic_write_bytes(text_path, (header + format_text_stream(run.text)).encode())
        click.echo(f"wrote {text_path}: {len(run.text)} text tokens")
    click.echo(AlgorithmicLatency.of(models.lm.config, session.frame_size, session.sample_rate).summary())
    stats = run.compute_stats()
    click.echo(stats.summary())
    live = [t for t in run.timings if t.decode_ms > 0] or list(run.timings)  # decode: after the warm-up
    parts = {"encode": [t.encode_ms for t in run.timings], "lm": [t.lm_ms for t in run.timings],
             "decode": [t.decode_ms for t in live]}
    click.echo("  p50 by part: " + ", ".join(f"{name} {percentile(v, 50):.1f} ms" for name, v in parts.items()))
