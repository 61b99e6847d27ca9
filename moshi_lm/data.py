"""Training data of a Moshi-style dialogue LM: Mimi tokens of both speakers + the aligned text.

    examples = load_examples("dialogues/", "tokens/", load_tokenizer("tok.model"))
    batch = WindowSampler(examples, window=64, batch_size=16, generator=g).sample()   # [16, 17, 64]

One `DialogueExample` per dialogue holds codes `[1 + 2K, T]` in the LM's stream order: the
Inner Monologue text of the model's speaker (A), then its K codebooks, then the user's (B) K
codebooks. The audio codes come from the output folder of `mimi tokens` run on the
dialogues' `audio/` folder (names `<id>/A.wav`, `<id>/B.wav`); the text is aligned from the
exact word timings of `words.jsonl` (`moshi_lm.inner_monologue.align_words`).

Training samples random windows; a window running past a dialogue's end holds the zero token
-1 there, which the LM neither reads nor scores. `UnigramModel` is the baseline the loss is
compared with: each stream's token frequencies on the training examples.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from mimi.errors import MimiError
from mimi.tokens import TokenDataset
from moshi_lm.dialogue_corpus import SPEAKERS, read_dialogues
from moshi_lm.embeddings import ZERO_TOKEN
from moshi_lm.inner_monologue import AlignedText, WordEncoder, align_words
from moshi_lm.model import LMOutput

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class DialogueExample:
    id: str
    codes: torch.Tensor  # [1 + 2K, T] long: text, model's K codebooks, user's K codebooks
    text: AlignedText | None = None  # how the text stream was made (None for hand-made examples)

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def num_codebooks(self) -> int:
        """K, codebooks per speaker."""
        return (int(self.codes.shape[0]) - 1) // 2


def _tokens_of(ds: TokenDataset, name: str) -> torch.Tensor | None:
    for candidate in (name, f"audio/{name}"):  # `mimi tokens DIALOGUES/audio` or `mimi tokens DIALOGUES`
        if candidate in ds:
            return ds.get(candidate).codes
    return None


def load_examples(dialogues: PathLike, tokens: PathLike, tokenizer: WordEncoder, *, num_codebooks: int = 8,
                  model_speaker: str = "A", overflow: str = "shift") -> list[DialogueExample]:
    """Every dialogue of `dialogues` (a `build_dialogues` folder) with its tokens from `tokens`."""
    if model_speaker not in SPEAKERS:
        raise MimiError(f"model_speaker must be one of {', '.join(SPEAKERS)}, got {model_speaker!r}")
    user_speaker = SPEAKERS[1 - SPEAKERS.index(model_speaker)]
    records = read_dialogues(dialogues)
    if not records:
        raise MimiError(f"{dialogues}: holds no dialogue")
    ds = TokenDataset(tokens)
    if len(ds) == 0:
        raise MimiError(f"{tokens}: holds no tokens")
    if ds.codebooks is not None and ds.codebooks < num_codebooks:
        raise MimiError(f"{tokens} has {ds.codebooks} codebooks per frame, fewer than the {num_codebooks} asked for")
    examples, missing = [], []
    for rec in records:
        channels = {}
        for speaker in (model_speaker, user_speaker):
            name = rec.channel(speaker).audio
            codes = _tokens_of(ds, name)
            if codes is None:
                missing.append(name)
            else:
                channels[speaker] = codes[:num_codebooks].long()  # [K, F]
        if len(channels) < 2:
            continue
        T = min(c.shape[1] for c in channels.values())
        aligned = align_words(rec.channel(model_speaker).words, tokenizer, T, overflow=overflow)  # type: ignore
        codes = torch.cat([aligned.tokens[None], channels[model_speaker][:, :T], channels[user_speaker][:, :T]])
        examples.append(DialogueExample(rec.id, codes, aligned))
    if missing:
        raise MimiError(f"{len(missing)} dialogue channel(s) have no tokens in {tokens} (first: {missing[0]}); "
                        f"run: mimi tokens {os.path.join(os.fspath(dialogues), 'audio')} {tokens}")
    return examples


def split_examples(examples: Sequence[DialogueExample], eval_fraction: float
                   ) -> tuple[list[DialogueExample], list[DialogueExample]]:
    """(train, eval): the last ceil(fraction * n) examples are held out (none if n < 2)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise MimiError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n = len(examples)
    n_eval = min(n - 1, math.ceil(eval_fraction * n)) if n >= 2 and eval_fraction > 0 else 0
    return list(examples[:n - n_eval]), list(examples[n - n_eval:])


def _window(codes: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """codes [S, T] -> [S, window] from `start`, ZERO_TOKEN past the end."""
    out = torch.full((codes.shape[0], window), ZERO_TOKEN, dtype=torch.long)
    piece = codes[:, start:start + window]
    out[:, :piece.shape[1]] = piece
    return out


class WindowSampler:
    """Random windows: a dialogue drawn with probability proportional to its length, then a
    uniform start. All randomness comes from `generator` (its state is what a checkpoint saves)."""

    def __init__(self, examples: Sequence[DialogueExample], window: int, batch_size: int,
                 generator: torch.Generator):
        if not examples:
            raise MimiError("no training example")
        if window < 2 or batch_size < 1:
            raise MimiError(f"need window >= 2 and batch_size >= 1, got {window}, {batch_size}")
        self.examples = list(examples)
        self.window, self.batch_size, self.generator = window, batch_size, generator
        self.weights = torch.tensor([max(1, e.num_frames) for e in self.examples], dtype=torch.float64)

    def sample(self) -> torch.Tensor:
        """[B, 1 + 2K, window] long."""
        picks = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)
        rows = []
        for i in picks.tolist():
            ex = self.examples[i]
            span = max(0, ex.num_frames - self.window)
            start = int(torch.randint(0, span + 1, (1,), generator=self.generator))
            rows.append(_window(ex.codes, start, self.window))
        return torch.stack(rows)


def fixed_windows(examples: Sequence[DialogueExample], window: int, max_windows: int | None = None
                  ) -> list[torch.Tensor]:
    """Consecutive windows [1 + 2K, window] covering each example in turn (for evaluation)."""
    out = []
    for ex in examples:
        for start in range(0, max(1, ex.num_frames), window):
            out.append(_window(ex.codes, start, window))
            if max_windows is not None and len(out) >= max_windows:
                return out
    return out


@dataclass(frozen=True)
class UnigramModel:
    """Token log-frequencies of the predicted streams, with add-`smoothing` counts."""

    text_logp: torch.Tensor  # [text_card]
    audio_logp: torch.Tensor  # [dep_q, card]

    def output_like(self, output: LMOutput) -> LMOutput:
        """An LMOutput with the same shape and masks whose logits are the unigram log-probs: the
        LM loss of it is the unigram baseline's cross-entropy, weighted exactly like the LM's."""
        B, dep_q, T, card = output.logits.shape
        dev = output.logits.device
        audio = self.audio_logp.to(dev)[None, :, None, :].expand(B, dep_q, T, card)
        text = self.text_logp.to(dev)[None, None, None, :].expand(B, 1, T, self.text_logp.shape[0])
        return LMOutput(audio, output.mask, text, output.text_mask)


def fit_unigram(examples: Sequence[DialogueExample], text_card: int, card: int, dep_q: int,
                smoothing: float = 0.01) -> UnigramModel:
    text = torch.full((text_card,), smoothing, dtype=torch.float64)
    audio = torch.full((dep_q, card), smoothing, dtype=torch.float64)
    for ex in examples:
        t = ex.codes[0]
        text += torch.bincount(t[t >= 0], minlength=text_card)[:text_card].double()
        for k in range(dep_q):
            a = ex.codes[1 + k]
            audio[k] += torch.bincount(a[a >= 0], minlength=card)[:card].double()
    text_logp = (text / text.sum()).log().float()
    audio_logp = (audio / audio.sum(dim=1, keepdim=True)).log().float()
    return UnigramModel(text_logp, audio_logp)
