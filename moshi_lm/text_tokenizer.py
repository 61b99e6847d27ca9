"""The text tokenizer of the Inner Monologue stream: a SentencePiece model.

    tok = load_tokenizer("tokenizer_spm_32k_3.model")     # Kyutai's, or one trained below
    tok.encode("hello world")                             # [ids], never PAD (3) or EPAD (0)
    tok = train_tokenizer(sentences, "tok.model", vocab_size=512)

Reserved ids. The text stream uses id 3 for PAD and id 0 for EPAD (Kyutai's convention), so
neither may be a real word piece:
- Kyutai's tokenizers have `<unk>` at 0 and the control symbol `<pad>` at 3; `encode` drops the
  (rare) `<unk>` it may produce, since id 0 means EPAD in the stream;
- `train_tokenizer` lays out ids 0..3 as `<epad>` (a control symbol: SentencePiece never emits
  it), `<unk>`, `<s>` and `<pad>` (control), and the learnt pieces from id 4.
`load_tokenizer` refuses a model where id 0 or 3 is an ordinary piece (e.g. a SentencePiece
model trained with the default ids, where id 3 is a word).

Training is deterministic: one thread, input in the given order (no sampling, no shuffle), a
fixed random seed; the same texts and settings give a byte-identical model file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable

from mimi.atomic import atomic_write_bytes
from mimi.errors import MimiError
from moshi_lm.inner_monologue import EPAD_ID, PAD_ID

RESERVED_PIECES = ("<epad>", "<unk>", "<s>", "<pad>")  # ids 0..3 of a model made by train_tokenizer
MODEL_TYPES = ("unigram", "bpe")


def _spm() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise MimiError("the sentencepiece package is not installed: pip install 'sentencepiece>=0.2'") from None
    return sentencepiece


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


class TextTokenizer:
    """A loaded SentencePiece model, with the Inner Monologue's reserved ids kept out of `encode`."""

    def __init__(self, processor: Any, source: str = "<memory>"):
        self.processor = processor
        self.source = source
        size = processor.get_piece_size()
        if size <= max(PAD_ID, EPAD_ID):
            raise MimiError(f"tokenizer {source}: only {size} pieces; ids 0 (EPAD) and 3 (PAD) must exist")
        for rid, name in ((EPAD_ID, "EPAD"), (PAD_ID, "PAD")):
            if not (processor.is_control(rid) or processor.is_unknown(rid)):
                raise MimiError(f"tokenizer {source}: id {rid} ({name} in the text stream) is the ordinary piece "
                                f"{processor.id_to_piece(rid)!r}; it must be a control or unknown symbol "
                                "(train one with moshi_lm.text_tokenizer.train_tokenizer)")

    @property
    def vocab_size(self) -> int:
        """Number of ids (the LM's `text_card` must be at least this)."""
        return int(self.processor.get_piece_size())

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def epad_id(self) -> int:
        return EPAD_ID

    def encode(self, text: str) -> list[int]:
        """Piece ids of `text`, without the reserved ids (0 and 3)."""
        return [i for i in self.processor.encode(text) if i not in (PAD_ID, EPAD_ID)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; PAD, EPAD, control ids and ids out of range are skipped."""
        n = self.vocab_size
        keep = [int(i) for i in ids if 0 <= int(i) < n and not self.processor.is_control(int(i))]
        return self.processor.decode(keep)

    def id_to_piece(self, i: int) -> str:
        return self.processor.id_to_piece(int(i)) if 0 <= int(i) < self.vocab_size else f"<{int(i)}>"

    def model_bytes(self) -> bytes:
        """The serialised model (what a `.model` file holds)."""
        return self.processor.serialized_model_proto()

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_bytes(path, self.model_bytes())
        return path


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Load a SentencePiece `.model` file."""
    spm = _spm()
    path = Path(path)
    if not path.exists():
        raise MimiError(f"no such tokenizer model: {path}")
    if not path.is_file():
        raise MimiError(f"tokenizer model {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MimiError(f"cannot read tokenizer model {path}: {exc.strerror or exc}") from None
    if not data:
        raise MimiError(f"tokenizer model {path} is empty")
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(data)
    except Exception as exc:  # sentencepiece raises RuntimeError (or OSError) on a bad file
        raise MimiError(f"{path} is not a SentencePiece model ({_reason(exc)})") from None
    if processor.get_piece_size() == 0:
        raise MimiError(f"{path} is not a SentencePiece model (no pieces)")
    return TextTokenizer(processor, str(path))


def train_tokenizer(texts: Iterable[str], path: str | os.PathLike | None = None, *, vocab_size: int = 512,
                    model_type: str = "unigram", seed: int = 0) -> TextTokenizer:
    """Train a SentencePiece model on `texts` (one sentence per item), deterministically, with
    ids 0..3 reserved (see the module docstring); write it atomically to `path` if given.

    `vocab_size` is an upper bound: a small corpus may yield fewer pieces."""
    spm = _spm()
    if model_type not in MODEL_TYPES:
        raise MimiError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 8:
        raise MimiError(f"vocab_size must be an integer >= 8, got {vocab_size!r}")
    lines = [" ".join(str(t).split()) for t in texts]
    lines = [t for t in lines if t]
    if not lines:
        raise MimiError("cannot train a tokenizer on no text")
    buffer = io.BytesIO()
    spm.set_random_generator_seed(int(seed))
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size, model_type=model_type,
            control_symbols=[RESERVED_PIECES[0]], unk_id=1, bos_id=2, eos_id=-1, pad_id=3,
            unk_piece=RESERVED_PIECES[1], bos_piece=RESERVED_PIECES[2], pad_piece=RESERVED_PIECES[3],
            character_coverage=1.0, split_digits=True, hard_vocab_limit=False, num_threads=1,
            input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    except Exception as exc:
        raise MimiError(f"SentencePiece training failed: {_reason(exc)}") from None
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(buffer.getvalue())
    tokenizer = TextTokenizer(processor, str(path) if path is not None else "<trained>")
    if path is not None:
        tokenizer.save(path)
    return tokenizer
