"""Inner Monologue alignment: PAD fills, EPAD before each word, shift / truncate on overflow."""

from __future__ import annotations

import random

import pytest
import torch

from mimi.errors import MimiError
from moshi_lm.inner_monologue import EPAD_ID, PAD_ID, TimedWord, align_words, frame_of, render

P, E = PAD_ID, EPAD_ID


class FakeTokenizer:
    """Word -> fixed ids: 'a'..'z' words give one piece per character (ids 10 + letter index)."""

    def encode(self, text: str) -> list[int]:
        return [10 + (ord(c) - ord("a")) for c in text.strip().lower() if c.isalpha()]


TOK = FakeTokenizer()


def test_frame_of_uses_80ms_frames():
    assert frame_of(0.0) == 0 and frame_of(0.0799) == 0 and frame_of(0.08) == 1 and frame_of(0.16) == 2
    assert frame_of(0.24) == 3  # 0.24 * 12.5 = 2.9999999999999996 in floats: still frame 3


def test_basic_layout_pad_epad_pieces():
    # "ab" starts at 0.24 s (frame 3), "c" at 0.8 s (frame 10)
    out = align_words([("ab", 0.24, 0.5), ("c", 0.8, 0.9)], TOK, num_frames=13)
    assert out.tokens.tolist() == [P, P, E, 10, 11, P, P, P, P, E, 12, P, P]
    assert out.tokens.dtype == torch.long and out.num_frames == 13
    assert out.word_frames == (3, 10) and out.shifted_words == 0 and out.dropped_tokens == 0


def test_word_at_time_zero_is_shifted_one_frame_for_its_epad():
    out = align_words([("ab", 0.0, 0.3)], TOK, num_frames=5)
    assert out.tokens.tolist() == [E, 10, 11, P, P]
    assert out.word_frames == (1,) and out.shifted_words == 1


def test_empty_input():
    assert align_words([], TOK).tokens.tolist() == []
    assert align_words([], TOK, num_frames=4).tokens.tolist() == [P] * 4
    out = align_words([("", 0.5, 0.6), ("123", 0.1, 0.2)], TOK, num_frames=4)  # words without pieces
    assert out.tokens.tolist() == [P] * 4 and out.word_frames == (-1, -1)


def test_overlapping_words_are_shifted_in_start_order():
    # "bb" starts inside "aaa"; both start in frame 2: "aaa" (earlier end... same start) first
    words = [("bb", 0.17, 0.4), ("aaa", 0.16, 0.5)]
    out = align_words(words, TOK, num_frames=10)
    # aaa: EPAD 1, pieces 2..4; bb: EPAD 5, pieces 6..7
    assert out.tokens.tolist() == [P, E, 10, 10, 10, E, 11, 11, P, P]
    assert out.word_frames == (6, 2)  # input order
    assert out.shifted_words == 1


def test_word_longer_than_its_slot_shift_vs_truncate():
    # "abcdef" at frame 2 has 6 pieces; "g" starts at frame 5
    words = [("abcdef", 0.16, 0.3), ("g", 0.4, 0.5)]
    shifted = align_words(words, TOK, num_frames=12)
    assert shifted.tokens.tolist() == [P, E, 10, 11, 12, 13, 14, 15, E, 16, P, P]
    assert shifted.word_frames == (2, 9) and shifted.dropped_tokens == 0 and shifted.shifted_words == 1
    cut = align_words(words, TOK, num_frames=12, overflow="truncate")
    # pieces must end before frame 4, the EPAD frame of "g": 2 pieces kept
    assert cut.tokens.tolist() == [P, E, 10, 11, E, 16, P, P, P, P, P, P]
    assert cut.word_frames == (2, 5) and cut.dropped_tokens == 4 and cut.shifted_words == 0


def test_truncate_keeps_at_least_the_first_piece():
    words = [("abc", 0.16, 0.2), ("d", 0.17, 0.3)]  # same start frame
    out = align_words(words, TOK, num_frames=8, overflow="truncate")
    assert out.tokens.tolist() == [P, E, 10, E, 13, P, P, P]
    assert out.dropped_tokens == 2


def test_end_of_stream_drops_pieces_and_words():
    words = [("abc", 0.24, 0.4), ("de", 0.4, 0.5)]
    out = align_words(words, TOK, num_frames=5)
    # abc: EPAD 2, pieces 3, 4 (c dropped); de: EPAD would be frame 5: dropped whole
    assert out.tokens.tolist() == [P, P, E, 10, 11]
    assert out.word_frames == (3, -1) and out.dropped_tokens == 1 + 2
    # one more frame: there is room for the EPAD of "de" but not for its first piece: no lone EPAD
    out = align_words(words, TOK, num_frames=6)
    assert out.tokens.tolist() == [P, P, E, 10, 11, 12] and out.word_frames == (3, -1)


def test_num_frames_none_fits_everything():
    out = align_words([("abcdef", 0.0, 0.2)], TOK)
    assert out.tokens.tolist() == [E, 10, 11, 12, 13, 14, 15] and out.dropped_tokens == 0
    out = align_words([("a", 0.0, 1.0)], TOK)  # the end time sets the length: ceil(12.5)
    assert out.num_frames == 13


def test_reserved_ids_from_the_encoder_are_removed():
    class Reserved:
        def encode(self, text):
            return [E, 7, P, 8]

    out = align_words([("x", 0.16, 0.3)], Reserved(), num_frames=5)
    assert out.tokens.tolist() == [P, E, 7, 8, P]


def test_timed_word_objects_and_render():
    out = align_words([TimedWord("ab", 0.08, 0.2)], TOK, num_frames=4)
    assert render(out.tokens, lambda i: chr(ord("a") + i - 10)) == "|ab."


@pytest.mark.parametrize("words", [
    [("a", -0.1, 0.2)], [("a", 0.5, 0.4)], [("a", float("nan"), 0.4)], [("a", 0.0, float("inf"))],
    [("a", 0.1)], [(3, 0.1, 0.2)], ["abc"],
])
def test_bad_words_raise_one_line_errors(words):
    with pytest.raises(MimiError) as info:
        align_words(words, TOK, num_frames=5)
    assert "\n" not in str(info.value)


def test_bad_arguments():
    with pytest.raises(MimiError, match="overflow"):
        align_words([], TOK, overflow="squeeze")  # type: ignore[arg-type]
    with pytest.raises(MimiError, match="num_frames"):
        align_words([], TOK, num_frames=-1)


@pytest.mark.parametrize("overflow", ["shift", "truncate"])
def test_invariants_on_random_words(overflow):
    rng = random.Random(0)
    for trial in range(200):
        words = []
        for _ in range(rng.randint(0, 12)):
            start = rng.uniform(0, 4)
            word = "".join(rng.choice("abcdef") for _ in range(rng.randint(0, 7)))
            words.append((word, start, start + rng.uniform(0, 0.8)))
        T = rng.randint(0, 60)
        out = align_words(words, TOK, num_frames=T, overflow=overflow)
        t = out.tokens.tolist()
        assert len(t) == T
        for i, tok in enumerate(t):
            if tok == E:  # an EPAD is always followed by a piece
                assert i + 1 < T and t[i + 1] not in (P, E)
            elif tok != P:  # a piece follows an EPAD or another piece
                assert i > 0 and t[i - 1] != P
        placed = sum(1 for x in t if x not in (P, E))
        total = sum(len(TOK.encode(w)) for w, _, _ in words)
        assert placed + out.dropped_tokens == total
        starts = [frame_of(s) for _, s, _ in words]
        for frame, start in zip(out.word_frames, starts):
            assert frame == -1 or frame >= max(start, 1)  # never before its speech
