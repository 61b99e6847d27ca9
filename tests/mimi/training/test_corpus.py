"""Synthetic speech corpus: layout, determinism, resume, reserved evaluation voices, CLI."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from mimi.errors import MimiError
from mimi.training import corpus as C

needs_engines = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                                   reason="espeak-ng and flite are not installed")

HOURS = 0.005  # 18 s: a few utterances
FIELDS = {"id", "path", "engine", "voice", "variant", "language", "rate", "pitch", "amplitude", "text", "duration_s"}


def records(split_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (split_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def digests(split_dir: Path) -> dict[str, str]:
    return {r["path"]: hashlib.sha256((split_dir / r["path"]).read_bytes()).hexdigest() for r in records(split_dir)}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    C.build_corpus(out, hours=HOURS, seed=0, workers=2)
    C.build_eval_set(out, minutes=0.3, seed=1, workers=1)
    return out


@needs_engines
def test_train_files_and_manifest(built):
    train = built / "train"
    recs = records(train)
    assert len(recs) >= 2
    assert [r["id"] for r in recs] == [f"{i:07d}" for i in range(len(recs))]
    total = sum(r["duration_s"] for r in recs)
    assert total >= HOURS * 3600 > total - recs[-1]["duration_s"]  # stops right after the target
    for r in recs:
        assert set(r) == FIELDS
        assert r["path"] == f"{r['engine']}/{r['voice']}/{r['id']}.wav"
        assert r["engine"] in ("espeak", "flite") and not C.is_reserved_voice(r["engine"], r["voice"])
        assert C.MIN_SECONDS <= r["duration_s"] <= C.MAX_SECONDS and r["text"].strip()
        info = sf.info(str(train / r["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
        assert info.frames == round(r["duration_s"] * 24000)
    wavs = sorted(p.relative_to(train).as_posix() for p in train.rglob("*.wav"))
    assert wavs == sorted(r["path"] for r in recs)  # nothing beyond the manifest, no temp files
    assert not [p for p in train.rglob("*") if p.name.endswith(".tmp")]


@needs_engines
def test_same_seed_same_corpus_whatever_workers(built, tmp_path):
    report = C.build_corpus(tmp_path, hours=HOURS, seed=0, workers=1)
    assert records(tmp_path / "train") == records(built / "train")
    assert digests(tmp_path / "train") == digests(built / "train")
    assert report.new_utterances == report.utterances == len(records(built / "train"))


@needs_engines
def test_resume_extends_and_repairs_a_torn_manifest(built, tmp_path):
    ref = records(built / "train")
    small = C.build_corpus(tmp_path, hours=0.001, seed=0, workers=1)  # 3.6 s: one or two utterances
    assert 1 <= small.utterances < len(ref)
    with open(tmp_path / "train" / "manifest.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "00000')  # an append interrupted mid-line
    again = C.build_corpus(tmp_path, hours=HOURS, seed=0, workers=1)
    assert again.new_utterances == len(ref) - small.utterances  # ids already there are skipped
    assert records(tmp_path / "train") == ref
    assert C.build_corpus(tmp_path, hours=HOURS, seed=0, workers=1).new_utterances == 0
    with pytest.raises(MimiError, match="different seed"):
        C.build_corpus(tmp_path, hours=HOURS, seed=7, workers=1)


def test_reserved_voices_are_refused():
    for engine, voice in [("flite", "slt"), ("festival", "ked_diphone"), ("festival", "kal_diphone"),
                          ("festival", "cmu_us_slt_arctic_hts"), ("flite", "kal16")]:
        with pytest.raises(C.ReservedVoiceError, match="reserved"):
            C.check_training_voice(engine, voice)
    for engine, voice in [("flite", "kal"), ("flite", "awb"), ("flite", "rms"), ("espeak", "en-us")]:
        C.check_training_voice(engine, voice)


@needs_engines
def test_build_refuses_a_reserved_voice_in_the_training_list(monkeypatch, tmp_path):
    monkeypatch.setattr(C, "TRAIN_FLITE_VOICES", ("kal", "slt"))
    with pytest.raises(C.ReservedVoiceError):
        C.build_corpus(tmp_path, hours=HOURS, workers=1)
    assert not (tmp_path / "train" / "manifest.jsonl").exists()


def test_training_specs_never_pick_reserved_voices_and_cover_the_inventory():
    inventory = {"espeak_languages": sorted(C.ENGLISH_ESPEAK_VOICES + tuple(C.OTHER_ESPEAK_VOICES)),
                 "espeak_variants": ["croak", "f2", "m3", "whisper"], "flite_voices": list(C.TRAIN_FLITE_VOICES)}
    specs = [C._train_spec(0, i, inventory) for i in range(1500)]
    used = {(s.engine, s.voice) for s in specs}
    assert not any(C.is_reserved_voice(e, v) for e, v in used)
    assert {v for e, v in used if e == "flite"} == set(C.TRAIN_FLITE_VOICES)
    assert {v for e, v in used if e == "espeak"} == set(inventory["espeak_languages"])
    assert {s.variant for s in specs} == {None, *inventory["espeak_variants"]}
    assert min(s.rate for s in specs) >= 120 and max(s.rate for s in specs) <= 260
    assert all(20 <= s.pitch <= 80 for s in specs if s.pitch is not None)
    texts = [" ".join(s.sentences) for s in specs]
    assert len(set(texts)) == len(texts)
    assert any("?" in t for t in texts) and any("!" in t for t in texts) and any(c.isdigit() for c in "".join(texts))
    assert specs[7] == C._train_spec(0, 7, inventory) and specs[7] != C._train_spec(1, 7, inventory)


def test_eval_text_never_occurs_in_training_text():
    vocabulary = {w.strip(".,?!").lower() for words in C._FOREIGN_WORDS.values() for w in words}
    for pool in (C._NOUNS, C._NAMES, C._ADJECTIVES, C._PLACES, C._CITIES, C._TIMES, C._RELATIVES, C._ROOMS):
        vocabulary |= {w.lower() for item in pool for w in item.split()}
    vocabulary |= {w.strip(".,?!{}").lower() for t in C._TRAIN_TEMPLATES for w in t.split()}
    assert not vocabulary & set(C.EVAL_ONLY_WORDS)
    rng = random.Random(0)
    for _ in range(300):
        sentence = C.generate_sentence(rng, "en-us", "eval")
        assert set(w.strip(".,?!").lower() for w in sentence.split()) & set(C.EVAL_ONLY_WORDS), sentence


@needs_engines
def test_eval_set_uses_only_reserved_voices_and_new_text(built):
    ev, train = records(built / "eval"), records(built / "train")
    assert ev and all(r["id"].startswith("e") for r in ev)
    assert all(C.is_reserved_voice(r["engine"], r["voice"]) for r in ev)
    assert "festival/kal_diphone" not in {f"{r['engine']}/{r['voice']}" for r in ev}
    voices, skipped = C.eval_voices()  # flite/slt, then the festival voices: used in turn
    assert voices[0] == "flite/slt" and (skipped == ["festival"]) == (len(voices) == 1)
    assert [f"{r['engine']}/{r['voice']}" for r in ev] == [voices[i % len(voices)] for i in range(len(ev))]
    train_text = " ".join(r["text"] for r in train).lower()
    assert not any(w in train_text for w in C.EVAL_ONLY_WORDS)
    assert not {r["text"] for r in ev} & {r["text"] for r in train}
    for r in ev:
        info = sf.info(str(built / "eval" / r["path"]))
        assert (info.samplerate, info.channels) == (24000, 1)


def test_missing_engine_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MimiError, match=r"^espeak-ng not found: apt-get install espeak-ng$"):
        C.build_corpus(tmp_path / "out", hours=0.001)
    with pytest.raises(MimiError, match=r"^flite not found: apt-get install flite$"):
        C.build_eval_set(tmp_path / "out", minutes=0.1)


def test_bad_arguments(tmp_path):
    with pytest.raises(MimiError, match="hours"):
        C.build_corpus(tmp_path, hours=-1)
    with pytest.raises(MimiError, match="workers"):
        C.build_eval_set(tmp_path, minutes=1, workers=0)


@needs_engines
def test_cli(tmp_path):
    from mimi_cli.corpus import corpus

    result = CliRunner().invoke(corpus, [str(tmp_path), "--hours", "0.001", "--eval-minutes", "0.05",
                                         "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "train: " in result.output and "eval: " in result.output
    assert records(tmp_path / "train") and records(tmp_path / "eval")
    result = CliRunner().invoke(corpus, [str(tmp_path), "--hours", "0.001", "--seed", "3", "--quiet"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "different seed" in result.output
    assert len(result.output.strip().splitlines()) == 1
