"""Inner Monologue: the text stream, time-aligned with the speech at the audio frame rate.

    aligned = align_words([("hello", 0.0, 0.4), ("world", 0.5, 0.9)], tokenizer, num_frames=13)
    aligned.tokens          # [13] long: EPAD, ▁hello, PAD, PAD, PAD, EPAD, ▁world, PAD, ...

Conventions (DESIGN.md §4, Kyutai's ids):
- one text token per 80 ms audio frame (12.5 Hz); frame f covers [f / 12.5, (f + 1) / 12.5) s;
- PAD (id 3) fills every frame that holds no word piece;
- EPAD (id 0) ends the padding before a word: it sits in the frame just before the word's first
  piece, which goes in the frame holding the word's start time, the next pieces in the
  following frames (one piece per frame).

What happens when there is no room (all deterministic, in the order of the words' start times,
ties in input order):
- a word whose EPAD frame is taken (a word starting at t < 80 ms, whose EPAD would be frame -1;
  or a word starting while the previous word's pieces or EPAD still occupy the frames) is
  **shifted** later, to the first frame that leaves room for its EPAD: text may then lag its
  speech by a few frames, and catches up at the next pause;
- with `overflow="truncate"`, a word's pieces are also cut so that they end before the frame
  where the next word's EPAD belongs (at least the first piece is kept): text stays within a
  frame or two of its speech (unless words start in the same frame), at the price of dropped
  pieces;
- pieces that would fall past the end of the stream (`num_frames`) are dropped (counted in
  `dropped_tokens`); a word whose first piece falls past the end is dropped whole, EPAD
  included (`word_frames` -1): an EPAD is always followed by a piece.

Words that encode to no piece (empty strings, or only reserved ids) take no frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Protocol, Sequence

import torch

from mimi.errors import MimiError

FRAME_RATE = 12.5
PAD_ID = 3
EPAD_ID = 0
OVERFLOW_POLICIES = ("shift", "truncate")


class WordEncoder(Protocol):
    """Anything that turns one word into text token ids (`moshi_lm.text_tokenizer.TextTokenizer`)."""

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class TimedWord:
    """A word and its time span in seconds."""

    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class AlignedText:
    """The Inner Monologue text stream of one speaker."""

    tokens: torch.Tensor  # [T] long: PAD, EPAD or word pieces
    word_frames: tuple[int, ...]  # per input word: frame of its first piece, -1 if it has none
    shifted_words: int  # words placed later than the frame of their start time
    dropped_tokens: int  # pieces cut (end of the stream, or overflow="truncate")
    frame_rate: float = FRAME_RATE

    @property
    def num_frames(self) -> int:
        return int(self.tokens.shape[0])


def frame_of(seconds: float, frame_rate: float = FRAME_RATE) -> int:
    """The frame holding time `seconds` (a tiny tolerance absorbs float error at frame edges)."""
    return int(math.floor(seconds * frame_rate + 1e-6))


def _check_words(words: Iterable[TimedWord | Sequence]) -> list[TimedWord]:
    out = []
    for i, w in enumerate(words):
        if not isinstance(w, TimedWord):
            try:
                word, start, end = w
            except (TypeError, ValueError):
                raise MimiError(f"word {i}: expected (word, start_s, end_s), got {w!r}") from None
            w = TimedWord(word, start, end)
        if not isinstance(w.word, str):
            raise MimiError(f"word {i}: the word must be a string, got {type(w.word).__name__}")
        for name in ("start_s", "end_s"):
            value = getattr(w, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MimiError(f"word {i} ({w.word!r}): {name} must be a finite number, got {value!r}")
        if w.start_s < 0 or w.end_s < w.start_s:
            raise MimiError(f"word {i} ({w.word!r}): need 0 <= start_s <= end_s, got {w.start_s}..{w.end_s}")
        out.append(TimedWord(w.word, float(w.start_s), float(w.end_s)))
    return out


def align_words(words: Iterable[TimedWord | Sequence], tokenizer: WordEncoder, num_frames: int | None = None, *,
                frame_rate: float = FRAME_RATE, overflow: Literal["shift", "truncate"] = "shift",
                pad_id: int = PAD_ID, epad_id: int = EPAD_ID) -> AlignedText:
    """The aligned text stream of `words` ((word, start_s, end_s) triples or `TimedWord`s).

    `num_frames`: length of the stream (the speaker's audio frames); None: long enough for the
    last word's end time and every piece (nothing is dropped at the end)."""
    if overflow not in OVERFLOW_POLICIES:
        raise MimiError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int)
                                   or num_frames < 0):
        raise MimiError(f"num_frames must be a non-negative integer or None, got {num_frames!r}")
    if not frame_rate > 0:
        raise MimiError(f"frame_rate must be positive, got {frame_rate}")
    timed = _check_words(words)
    order = sorted(range(len(timed)), key=lambda i: (timed[i].start_s, timed[i].end_s, i))
    pieces = [[t for t in tokenizer.encode(timed[i].word) if t not in (pad_id, epad_id)] for i in order]
    starts = [frame_of(timed[i].start_s, frame_rate) for i in order]
    limit = math.inf if num_frames is None else num_frames

    placed: dict[int, int] = {}  # frame -> token
    word_frames = [-1] * len(timed)
    shifted = dropped = 0
    cursor = 0  # first frame not taken by an EPAD or a piece
    for j, i in enumerate(order):
        ids = pieces[j]
        if not ids:
            continue
        first = max(starts[j], cursor + 1)  # the frame before it holds the EPAD
        if first >= limit:  # not even its first piece fits: no EPAD either
            dropped += len(ids)
            continue
        shifted += first > starts[j]
        keep = len(ids)
        if overflow == "truncate":
            nxt = next((starts[k] for k in range(j + 1, len(order)) if pieces[k]), None)
            if nxt is not None:
                keep = min(keep, max(1, nxt - 1 - first))
        keep = int(min(keep, max(0, limit - first)))
        dropped += len(ids) - keep
        placed[first - 1] = epad_id
        for k in range(keep):
            placed[first + k] = ids[k]
        word_frames[i] = first if keep else -1
        cursor = first + keep

    if num_frames is None:
        ends = [math.ceil(w.end_s * frame_rate - 1e-6) for w in timed]
        num_frames = max([cursor, *ends]) if timed else 0
    tokens = torch.full((num_frames,), pad_id, dtype=torch.long)  # [T]
    for frame, token in placed.items():
        tokens[frame] = token
    return AlignedText(tokens, tuple(word_frames), shifted, dropped, frame_rate)


def render(tokens: torch.Tensor | Sequence[int], id_to_piece, *, pad: str = ".", epad: str = "|",
           pad_id: int = PAD_ID, epad_id: int = EPAD_ID) -> str:
    """A text stream as one line, one symbol per frame: `pad` for PAD, `epad` for EPAD, the
    piece otherwise (e.g. "|▁hello...|▁world."); `id_to_piece` maps an id to its piece."""
    out = []
    for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens):
        out.append(pad if t == pad_id else epad if t == epad_id else id_to_piece(int(t)))
    return "".join(out)
