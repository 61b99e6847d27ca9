"""The SentencePiece text tokenizer: deterministic training, reserved ids, loading errors."""

from __future__ import annotations

import io
import random

import pytest

from mimi.errors import MimiError
from moshi_lm.inner_monologue import EPAD_ID, PAD_ID, align_words
from moshi_lm.text_tokenizer import RESERVED_PIECES, load_tokenizer, train_tokenizer

spm = pytest.importorskip("sentencepiece")

WORDS = ("the cat sat on a mat and the dog ate my red hat while Anna went to Paris on Monday at 5:30 "
         "please call Ben at 212 4567 tomorrow morning").split()


def texts(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "." for _ in range(n)]


def test_training_is_deterministic_and_reserves_ids(tmp_path):
    a = train_tokenizer(texts(), tmp_path / "a.model", vocab_size=64)
    b = train_tokenizer(texts(), tmp_path / "b.model", vocab_size=64)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert [a.id_to_piece(i) for i in range(4)] == list(RESERVED_PIECES)
    assert a.processor.is_control(EPAD_ID) and a.processor.is_control(PAD_ID)
    assert a.pad_id == 3 and a.epad_id == 0 and 8 < a.vocab_size <= 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.model", "b.model"]  # no temporary left
    assert a.encode("the cat") == b.encode("the cat")


def test_encode_never_emits_reserved_ids_and_decodes_back(tmp_path):
    tok = train_tokenizer(texts(), tmp_path / "t.model", vocab_size=64)
    for text in texts(50, seed=1) + ["<pad> <epad> <unk> ~~ ü 9999"]:
        ids = tok.encode(text)
        assert ids and PAD_ID not in ids and EPAD_ID not in ids
    assert tok.decode(tok.encode("Anna went to Paris.")) == "Anna went to Paris."
    assert tok.decode([EPAD_ID, *tok.encode("the dog"), PAD_ID, 10_000]) == "the dog"  # specials skipped


def test_load_round_trip(tmp_path):
    trained = train_tokenizer(texts(), tmp_path / "t.model", vocab_size=64)
    loaded = load_tokenizer(tmp_path / "t.model")
    assert loaded.vocab_size == trained.vocab_size
    assert loaded.encode("the red hat") == trained.encode("the red hat")
    assert loaded.model_bytes() == (tmp_path / "t.model").read_bytes()
    # and it drives the alignment
    out = align_words([("hat", 0.4, 0.6)], loaded, num_frames=10)
    assert out.tokens[4] == EPAD_ID and out.tokens[5] == loaded.encode("hat")[0]


def test_kyutai_layout_loads_and_its_unk_is_dropped(tmp_path):
    """Kyutai's tokenizers: <unk> 0, <s> 1, </s> 2, <pad> 3 (control). id 0 (EPAD) is the unknown
    piece: accepted, and never emitted by encode."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts()), model_writer=buf, vocab_size=60, unk_id=0,
                                   bos_id=1, eos_id=2, pad_id=3, hard_vocab_limit=False, minloglevel=2,
                                   num_threads=1)
    (tmp_path / "k.model").write_bytes(buf.getvalue())
    tok = load_tokenizer(tmp_path / "k.model")
    assert tok.processor.encode("Zürich ©").count(0) > 0  # unknown characters -> <unk> (id 0)
    assert 0 not in tok.encode("Zürich ©")


def test_model_with_ordinary_piece_at_a_reserved_id_is_refused(tmp_path):
    buf = io.BytesIO()  # SentencePiece's default ids: unk 0, bos 1, eos 2, no pad: id 3 is a word piece
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts()), model_writer=buf, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2, num_threads=1)
    (tmp_path / "plain.model").write_bytes(buf.getvalue())
    with pytest.raises(MimiError, match=r"id 3 \(PAD in the text stream\) is the ordinary piece"):
        load_tokenizer(tmp_path / "plain.model")


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such tokenizer model"),
    (lambda p: p.mkdir(), "is not a file"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(b"\x00\x01garbage" * 50), "is not a SentencePiece model"),
    (lambda p: p.write_text("just some text\n"), "is not a SentencePiece model"),
])
def test_load_errors_are_one_line(tmp_path, make, message):
    path = tmp_path / "tok.model"
    make(path)
    with pytest.raises(MimiError, match=message) as info:
        load_tokenizer(path)
    assert "\n" not in str(info.value)


def test_training_errors(tmp_path):
    with pytest.raises(MimiError, match="no text"):
        train_tokenizer(["", "   "], tmp_path / "t.model")
    with pytest.raises(MimiError, match="vocab_size"):
        train_tokenizer(texts(), tmp_path / "t.model", vocab_size=4)
    with pytest.raises(MimiError, match="model_type"):
        train_tokenizer(texts(), tmp_path / "t.model", model_type="word2vec")
    assert not (tmp_path / "t.model").exists()
