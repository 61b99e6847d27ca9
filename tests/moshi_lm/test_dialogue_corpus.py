"""The synthetic two-speaker dialogue set: determinism, exact word timings, reserved voices."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from mimi.errors import MimiError
from mimi.training.corpus import ReservedVoiceError
from moshi_lm.dialogue_corpus import (
    FRAME_SIZE,
    SAMPLE_RATE,
    DialogueConfig,
    Voice,
    build_dialogues,
    dialogue_spec,
    read_dialogues,
    tokenizer_texts,
    voice_inventory,
)

needs_tts = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                               reason="espeak-ng and flite are needed")

SHORT = DialogueConfig(min_turns=2, max_turns=3, max_sentences_per_turn=1, backchannel_prob=0.5)
INVENTORY = {"espeak_languages": ["en-gb", "en-us"], "espeak_variants": ["f2", "m3"],
             "flite_voices": ["awb", "kal", "rms"]}


def test_reserved_voices_are_refused():
    for engine, voice in (("flite", "slt"), ("festival", "ked_diphone"), ("festival", "kal_diphone"),
                          ("flite", "unknown")):
        with pytest.raises(ReservedVoiceError):
            Voice(engine, voice)
    Voice("flite", "kal")
    Voice("espeak", "en-us", "m3")


def test_an_inventory_with_a_reserved_voice_never_reaches_synthesis():
    inventory = {"espeak_languages": [], "espeak_variants": [], "flite_voices": ["slt"]}
    with pytest.raises(ReservedVoiceError):
        dialogue_spec(0, 0, inventory)


@needs_tts
def test_installed_inventory_has_training_voices_only():
    inv = voice_inventory()
    assert "slt" not in inv["flite_voices"] and set(inv["flite_voices"]) <= {"kal", "awb", "rms"}
    assert inv["espeak_languages"] and all(v.startswith("en") for v in inv["espeak_languages"])


def test_specs_are_deterministic_with_two_voices_and_alternating_turns():
    for i in range(30):
        spec = dialogue_spec(7, i, INVENTORY)
        assert spec == dialogue_spec(7, i, INVENTORY)
        a, b = spec.voices
        assert (a.engine, a.voice, a.variant) != (b.engine, b.voice, b.variant)
        main = [t.speaker for t in spec.turns if t.kind == "turn"]
        assert all(x != y for x, y in zip(main, main[1:]))
        assert 4 <= len(main) <= 6
        for k, t in enumerate(spec.turns):
            if t.kind == "backchannel":  # said by the listener of the turn just before
                assert spec.turns[k - 1].kind == "turn" and spec.turns[k - 1].speaker != t.speaker
    assert dialogue_spec(7, 0, INVENTORY) != dialogue_spec(8, 0, INVENTORY)
    assert tokenizer_texts(5, seed=1) == tokenizer_texts(5, seed=1)


@needs_tts
def test_build_is_deterministic_with_exact_timings(tmp_path):
    r1 = build_dialogues(tmp_path / "one", 1, seed=3, config=SHORT)
    build_dialogues(tmp_path / "two", 1, seed=3, config=SHORT)
    assert r1.dialogues == 1 and r1.new_dialogues == 1
    for rel in ("words.jsonl", "audio/d00000/A.wav", "audio/d00000/B.wav"):
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    (d,) = read_dialogues(tmp_path / "one")
    assert [c.speaker for c in d.channels] == ["A", "B"]
    assert [c.role for c in d.channels] == ["model", "user"]
    lengths = set()
    for ch in d.channels:
        x, rate = sf.read(tmp_path / "one" / "audio" / ch.audio, dtype="float32")
        assert rate == SAMPLE_RATE and x.ndim == 1 and x.size == ch.samples and x.size % FRAME_SIZE == 0
        lengths.add(x.size)
        assert ch.words, "each speaker says something"
        starts = [w.start_s for w in ch.words]
        assert starts == sorted(starts)
        inside = np.zeros(x.size, bool)
        for w in ch.words:
            assert 0 <= w.start_s < w.end_s <= x.size / SAMPLE_RATE
            inside[int(w.start_s * SAMPLE_RATE):int(np.ceil(w.end_s * SAMPLE_RATE))] = True
        energy = x.astype(np.float64) ** 2
        assert energy[~inside].sum() <= 1e-6 * energy.sum()  # all the speech lies inside the word spans
        for w in ch.words:  # and every word span holds speech
            seg = x[int(w.start_s * SAMPLE_RATE):int(w.end_s * SAMPLE_RATE)]
            assert np.abs(seg).max() > 0.01
    assert len(lengths) == 1  # both channels have the same length


@needs_tts
def test_extending_keeps_existing_dialogues_and_refuses_other_settings(tmp_path):
    build_dialogues(tmp_path, 1, seed=0, config=SHORT)
    first = (tmp_path / "audio/d00000/A.wav").stat().st_mtime_ns
    report = build_dialogues(tmp_path, 2, seed=0, config=SHORT)
    assert report.new_dialogues == 1 and (tmp_path / "audio/d00000/A.wav").stat().st_mtime_ns == first
    lines = [json.loads(x) for x in (tmp_path / "words.jsonl").read_text().splitlines()]
    assert [(r["dialogue"], r["speaker"]) for r in lines] == [("d00000", "A"), ("d00000", "B"),
                                                              ("d00001", "A"), ("d00001", "B")]
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(MimiError, match="different seed"):
        build_dialogues(tmp_path, 2, seed=1, config=SHORT)
    with pytest.raises(MimiError, match="different config"):
        build_dialogues(tmp_path, 2, seed=0)


def test_bad_arguments_and_folders(tmp_path):
    with pytest.raises(MimiError, match="count"):
        build_dialogues(tmp_path, 0)
    with pytest.raises(MimiError, match="min_turns"):
        DialogueConfig(min_turns=3, max_turns=2)
    with pytest.raises(MimiError, match="no words.jsonl"):
        read_dialogues(tmp_path)
    (tmp_path / "words.jsonl").write_text('{"dialogue": "d0"}\n')
    with pytest.raises(MimiError, match="line 1: not a dialogue channel record"):
        read_dialogues(tmp_path)
    (tmp_path / "words.jsonl").write_text("not json\n")
    with pytest.raises(MimiError, match="line 1 is not JSON"):
        read_dialogues(tmp_path)
