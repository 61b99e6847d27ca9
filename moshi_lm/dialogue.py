"""Full-duplex dialogue: Mimi + `LMGen`, one 80 ms frame at a time.

    session = DialogueSession(mimi_model, LMGen(lm), batch_size=1)
    with session:                                   # opens both streaming states
        out = session.step(user_frame)              # [B, 1, 1920] -> DialogueFrame
        out.audio                                   # [B, 1, 1920] model audio (silence in the warm-up)
        out.tokens                                  # per item: TextToken, or None (PAD / EPAD / warm-up)
    run = run_dialogue(session, user_audio)         # a whole recording, frame by frame

Per frame: the user's audio goes through Mimi's streaming encoder (the user's `n_q - dep_q`
codes), `LMGen.step` reads them and, once its delay warm-up is over, returns one text token and
Moshi's `dep_q` audio codes, which go through Mimi's streaming decoder. During the warm-up
(`max_delay` frames) the model's audio is silence, so every input frame gives exactly one output
frame: the output is as long as the input and aligned with it (model frame i is played while
the user's frame i is heard). The algorithmic latency is one frame plus the acoustic delay.

Batch items are independent streams; `reset()` restarts all of them (every item of a batch
shares one step counter, so items cannot be restarted one by one: use one session per stream).
Text: the LM's padding tokens (PAD, `existing_text_padding_id`, 3; EPAD,
`existing_text_end_padding_id`, 0) are never shown. With a tokenizer, other tokens come with
their text piece; without one, with their id only.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from mimi.errors import MimiError
from mimi.model import MimiModel
from moshi_lm.generate import LMGen

TextDecoder = Callable[[int], str]


def as_text_decoder(tokenizer: Any) -> TextDecoder | None:
    """A function id -> text piece, from None, a callable, a SentencePiece processor (anything
    with `id_to_piece`; the word-start mark U+2581 becomes a space) or anything with `decode`."""
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "id_to_piece"):
        return lambda i: str(tokenizer.id_to_piece(int(i))).replace("\u2581", " ")
    if hasattr(tokenizer, "decode"):
        return lambda i: str(tokenizer.decode([int(i)]))
    if callable(tokenizer):
        return lambda i: str(tokenizer(int(i)))
    raise MimiError(f"unsupported tokenizer {type(tokenizer).__name__}: need a callable, "
                    "id_to_piece() or decode()")


@dataclass(frozen=True)
class TextToken:
    """A text token the model emitted (never PAD or EPAD)."""

    id: int
    text: str | None  # its piece, when the session has a tokenizer


def shown_tokens(text_ids: torch.Tensor, pad_ids: frozenset[int],
                 decode: TextDecoder | None) -> tuple[TextToken | None, ...]:
    """text_ids [B] -> per item the token to show, or None (padding, or -1: no token yet)."""
    tokens: list[TextToken | None] = []
    for i in text_ids.tolist():
        if i < 0 or i in pad_ids:
            tokens.append(None)
        else:
            tokens.append(TextToken(i, decode(i) if decode is not None else None))
    return tuple(tokens)


@dataclass(frozen=True)
class FrameTimings:
    """Wall-clock compute of one frame, in milliseconds (GPU work synchronised)."""

    encode_ms: float  # Mimi streaming encode
    lm_ms: float  # LMGen.step (temporal step + depth steps + sampling)
    decode_ms: float  # Mimi streaming decode (0 during the warm-up)
    total_ms: float


@dataclass(frozen=True)
class DialogueFrame:
    index: int  # frame number since the start (or the last reset)
    audio: torch.Tensor  # [B, 1, frame_size] float32 on the CPU: the model's audio for this frame
    text_ids: torch.Tensor  # [B] long on the CPU: the LM's raw text token, -1 during the warm-up
    tokens: tuple[TextToken | None, ...]  # per item; None for PAD, EPAD and the warm-up
    warmup: bool  # True while LMGen is still in its delay warm-up (audio is silence)
    timings: FrameTimings


class DialogueSession:
    """Mimi + LMGen streaming over `batch_size` independent dialogues.

    The session owns the streaming state of `mimi` and `lm_gen` while it is open (`with
    session:` or `start()` / `close()`): a model tree can serve one open session at a time.
    """

    def __init__(self, mimi: MimiModel, lm_gen: LMGen, batch_size: int = 1, tokenizer: Any = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise MimiError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        cfg = lm_gen.model.config
        n_user = cfg.num_user_codebooks
        if mimi.codebook_size != cfg.card:
            raise MimiError(f"the Mimi model has codebooks of {mimi.codebook_size} entries but the LM expects "
                            f"{cfg.card}: they do not belong together")
        if mimi.total_codebooks < max(n_user, cfg.dep_q):
            raise MimiError(f"the Mimi model has {mimi.total_codebooks} codebooks; the LM needs "
                            f"{max(n_user, cfg.dep_q)}")
        self.mimi = mimi
        self.lm_gen = lm_gen
        self.batch_size = batch_size
        self.decode_text = as_text_decoder(tokenizer)
        self.frame_size = mimi.frame_size
        self.sample_rate = mimi.sample_rate
        self.pad_ids = frozenset({cfg.existing_text_padding_id, cfg.existing_text_end_padding_id})
        self._n_user = n_user
        self._dep_q = cfg.dep_q
        self._stack: contextlib.ExitStack | None = None
        self._index = 0
        self._mimi_device = mimi.upsample.convtr.convtr.weight.device
        self._in_dtype = next(mimi.encoder.parameters()).dtype
        self._sync = self._mimi_device.type == "cuda" or lm_gen.model.device.type == "cuda"

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._stack is not None

    @property
    def frames_done(self) -> int:
        return self._index

    @property
    def frame_seconds(self) -> float:
        return self.frame_size / self.sample_rate

    def start(self) -> "DialogueSession":
        if self._stack is not None:
            raise MimiError("the dialogue session is already open")
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self.mimi.streaming(self.batch_size))
            stack.enter_context(self.lm_gen.streaming(self.batch_size))
        except RuntimeError as exc:  # a model tree already streaming for another session
            stack.close()
            raise MimiError(f"cannot open the dialogue session: {exc}") from None
        self._stack = stack
        self._index = 0
        return self

    def close(self) -> None:
        """Release the streaming state (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> "DialogueSession":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Start every item afresh (Mimi and LM states, frame counter); the batch size stays."""
        if self._stack is None:
            raise MimiError("reset() on a dialogue session that is not open")
        self.mimi.reset_streaming()
        self.lm_gen.reset_streaming()
        self._index = 0

    # -- one frame ----------------------------------------------------------------------------
    def _check_frame(self, frame: torch.Tensor) -> torch.Tensor:
        expected = [self.batch_size, 1, self.frame_size]
        if not isinstance(frame, torch.Tensor) or list(frame.shape) != expected:
            got = list(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
            raise MimiError(f"a dialogue frame must be {expected} (batch, mono, 80 ms at 24 kHz), got {got}")
        if not frame.is_floating_point():
            raise MimiError(f"a dialogue frame must hold float samples, got {frame.dtype}")
        if not bool(torch.isfinite(frame).all()):
            raise MimiError("a dialogue frame holds NaN or infinite samples")
        return frame.to(device=self._mimi_device, dtype=self._in_dtype)

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> DialogueFrame:
        """frame [B, 1, frame_size] of user audio (float, 24 kHz) -> the model's frame."""
        if self._stack is None:
            raise MimiError("step() on a dialogue session that is not open (use `with session:` or start())")
        x = self._check_frame(frame)  # [B, 1, frame_size]
        t0 = self._now()
        user = self.mimi.quantize(self.mimi.encode_to_latent(x), self._n_user)  # [B, n_user, 1]
        t1 = self._now()
        out = self.lm_gen.step(user)  # None | [B, 1 + dep_q, 1]
        t2 = self._now()
        if out is None:
            audio = torch.zeros(self.batch_size, 1, self.frame_size)  # [B, 1, frame_size]
            text_ids = torch.full((self.batch_size,), -1, dtype=torch.long)
        else:
            codes = out[:, 1:1 + self._dep_q].to(self._mimi_device)  # [B, dep_q, 1]
            audio = self.mimi.decode(codes).float().cpu()  # [B, 1, frame_size]
            text_ids = out[:, 0, 0].cpu()  # [B]
        t3 = self._now()
        timings = FrameTimings(encode_ms=(t1 - t0) * 1e3, lm_ms=(t2 - t1) * 1e3,
                               decode_ms=(t3 - t2) * 1e3 if out is not None else 0.0, total_ms=(t3 - t0) * 1e3)
        tokens = shown_tokens(text_ids, self.pad_ids, self.decode_text)
        result = DialogueFrame(index=self._index, audio=audio, text_ids=text_ids, tokens=tokens, warmup=out is None,
                               timings=timings)
        self._index += 1
        return result


@dataclass(frozen=True)
class AlgorithmicLatency:
    """The latency the design imposes, whatever the compute: one frame (the encoder needs a
    whole frame before it emits codes) plus the acoustic delay (Moshi's audio of a frame comes
    `max_delay` frames after its text and semantic token)."""

    frame_ms: float
    delay_frames: int
    total_ms: float

    @classmethod
    def of(cls, lm_config, frame_size: int = 1920, sample_rate: int = 24000) -> "AlgorithmicLatency":
        frame_ms = 1000.0 * frame_size / sample_rate
        return cls(frame_ms=frame_ms, delay_frames=lm_config.max_delay,
                   total_ms=frame_ms * (1 + lm_config.max_delay))

    def summary(self) -> str:
        return (f"algorithmic latency {self.total_ms:.0f} ms = {self.frame_ms:.0f} ms frame + "
                f"{self.delay_frames} x {self.frame_ms:.0f} ms acoustic delay")


# -- a whole recording ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TimedText:
    """A text token placed in time: when the model frame that carries it starts playing."""

    item: int  # batch item
    frame: int
    time_s: float
    id: int
    text: str | None


@dataclass(frozen=True)
class ComputeStats:
    """Per-frame compute time against the real-time budget (one frame duration)."""

    frames: int
    p50_ms: float
    p99_ms: float
    worst_ms: float
    mean_ms: float
    budget_ms: float
    over_budget: int  # frames whose compute took longer than the budget

    def summary(self) -> str:
        return (f"per-frame compute over {self.frames} frames: p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"worst {self.worst_ms:.1f} ms (budget {self.budget_ms:.0f} ms; {self.over_budget} over; "
                f"p50 at {100 * self.p50_ms / self.budget_ms:.0f}% of the budget)")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank (no interpolation)."""
    if not values:
        raise MimiError("no values to take a percentile of")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def compute_stats(times_ms: list[float], budget_ms: float) -> ComputeStats:
    return ComputeStats(frames=len(times_ms), p50_ms=percentile(times_ms, 50), p99_ms=percentile(times_ms, 99),
                        worst_ms=max(times_ms), mean_ms=sum(times_ms) / len(times_ms), budget_ms=budget_ms,
                        over_budget=sum(t > budget_ms for t in times_ms))


@dataclass(frozen=True)
class DialogueRun:
    user_audio: torch.Tensor  # [B, 1, T] as given
    model_audio: torch.Tensor  # [B, 1, T] aligned with the user's audio
    text: tuple[TimedText, ...]  # in time order, then by item
    timings: tuple[FrameTimings, ...]  # one per frame
    sample_rate: int
    frame_size: int

    @property
    def frames(self) -> int:
        return len(self.timings)

    def compute_stats(self) -> ComputeStats:
        budget = 1000.0 * self.frame_size / self.sample_rate
        return compute_stats([t.total_ms for t in self.timings], budget)


def run_dialogue(session: DialogueSession, user_audio: torch.Tensor,
                 on_frame: Callable[[DialogueFrame], None] | None = None) -> DialogueRun:
    """Run an open session over whole recordings, frame by frame in time order, from a fresh state.

    user_audio [B, 1, T] at 24 kHz -> model audio [B, 1, T]: the last partial frame is
    zero-padded for the models, and the output is cut back to T samples. No frame is dropped.
    `on_frame` sees every frame as it is produced (e.g. a progress bar)."""
    if user_audio.dim() != 3 or user_audio.shape[0] != session.batch_size or user_audio.shape[1] != 1:
        raise MimiError(f"user audio must be [{session.batch_size}, 1, T], got {list(user_audio.shape)}")
    T = user_audio.shape[-1]
    if T == 0:
        raise MimiError("user audio is empty")
    if session.frames_done:
        session.reset()
    fs = session.frame_size
    frames = math.ceil(T / fs)
    padded = torch.nn.functional.pad(user_audio.float(), (0, frames * fs - T))  # [B, 1, frames * fs]
    out = torch.zeros_like(padded)
    text: list[TimedText] = []
    timings: list[FrameTimings] = []
    for f in range(frames):
        result = session.step(padded[:, :, f * fs:(f + 1) * fs])
        out[:, :, f * fs:(f + 1) * fs] = result.audio
        timings.append(result.timings)
        for item, token in enumerate(result.tokens):
            if token is not None:
                text.append(TimedText(item, f, f * session.frame_seconds, token.id, token.text))
        if on_frame is not None:
            on_frame(result)
    return DialogueRun(user_audio=user_audio, model_audio=out[:, :, :T], text=tuple(text), timings=tuple(timings),
                       sample_rate=session.sample_rate, frame_size=fs)


def format_text_stream(text: tuple[TimedText, ...] | list[TimedText], items: int = 1) -> str:
    """One line per token: `time_s<TAB>id<TAB>text` (`item<TAB>` first when there are several
    items); tabs and newlines inside a piece are written as spaces."""
    lines = []
    for t in text:
        piece = "" if t.text is None else t.text.replace("\t", " ").replace("\n", " ")
        prefix = f"{t.item}\t" if items > 1 else ""
        lines.append(f"{prefix}{t.time_s:.3f}\t{t.id}\t{piece}")
    return "\n".join(lines) + ("\n" if lines else "")


def read_user_audio(path: str, sample_rate: int = 24000) -> torch.Tensor:
    """An audio file (any format soundfile reads, any rate, any channels) as the user's side
    of a dialogue: [1, 1, T] float32 mono at `sample_rate` (channels averaged, soxr resampling)."""
    from mimi.audio import read_audio, resample  # soundfile / soxr: only where files are read

    audio = read_audio(path)
    mono = audio.samples.mean(dim=0, keepdim=True)  # [1, T]
    mono = resample(mono, audio.sample_rate, sample_rate)
    if mono.shape[-1] == 0:
        raise MimiError(f"{path}: too short to hold any audio at {sample_rate} Hz")
    return mono[None]  # [1, 1, T]
