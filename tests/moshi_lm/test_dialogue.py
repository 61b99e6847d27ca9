"""DialogueSession and run_dialogue: lengths, alignment, batch independence, reset, text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

import mimi
from mimi.errors import MimiError
from moshi_lm import LMGen
from moshi_lm.dialogue import (AlgorithmicLatency, DialogueSession, TextToken, compute_stats, format_text_stream,
                               read_user_audio, run_dialogue, shown_tokens)
from tests.helpers import make_model, speech_tensor, speechlike
from tests.moshi_lm.helpers import tiny_model

FS = 1920


def dialogue_models(seed: int = 0):
    """A tiny Mimi (8 codebooks of 64) and a tiny moshiko-shaped LM over the same vocabulary."""
    codec = make_model(mimi.MimiConfig.tiny(), num_codebooks=8, seed=seed, calibrate_seconds=2.0)
    lm = tiny_model(seed=seed, card=codec.codebook_size)
    lm.requires_grad_(False)
    return codec, lm


@pytest.fixture(scope="module")
def models():
    return dialogue_models()


def test_session_over_a_file_keeps_every_frame(models, tmp_path):
    codec, lm = models
    path = tmp_path / "user.wav"
    T = 23 * FS + 777  # not a whole number of frames
    sf.write(path, speechlike(T / 24000, seed=1)[:T], 24000, subtype="FLOAT")
    user = read_user_audio(path)
    assert user.shape == (1, 1, T)
    with DialogueSession(codec, LMGen(lm, use_sampling=False)) as session:
        run = run_dialogue(session, user)
    assert run.model_audio.shape == user.shape
    assert run.frames == math.ceil(T / FS) == 24
    delay = lm.config.max_delay
    assert torch.count_nonzero(run.model_audio[..., :delay * FS]) == 0  # warm-up: silence
    for f in range(delay, run.frames):  # afterwards every frame carries decoded audio
        assert torch.count_nonzero(run.model_audio[..., f * FS:(f + 1) * FS]) > 0, f
    assert all(t.frame >= delay and abs(t.time_s - t.frame * 0.08) < 1e-9 for t in run.text)
    stats = run.compute_stats()
    assert stats.frames == 24 and stats.budget_ms == pytest.approx(80.0)
    assert 0 < stats.p50_ms <= stats.p99_ms <= stats.worst_ms


def test_other_sample_rates_and_channels_are_resampled(tmp_path):
    path = tmp_path / "user16k.wav"
    x = speechlike(1.0, sr=16000, seed=2)
    sf.write(path, np.stack([x, 0.5 * x], axis=1), 16000)
    user = read_user_audio(path)
    assert user.shape == (1, 1, 24000)


def test_frame_by_frame_equals_run_dialogue(models):
    codec, lm = models
    user = speech_tensor(0.8, seed=3)  # 10 frames
    with DialogueSession(codec, LMGen(lm, use_sampling=False)) as session:
        run = run_dialogue(session, user)
        session.reset()
        frames = [session.step(chunk) for chunk in user.split(FS, dim=-1)]
    assert [f.index for f in frames] == list(range(10))
    assert [f.warmup for f in frames] == [True] * lm.config.max_delay + [False] * (10 - lm.config.max_delay)
    assert torch.equal(torch.cat([f.audio for f in frames], -1), run.model_audio)
    assert all(f.audio.dtype == torch.float32 and f.audio.shape == (1, 1, FS) for f in frames)
    assert frames[0].text_ids.tolist() == [-1]


def test_batch_items_are_independent(models):
    codec, lm = models
    a, b, c = speech_tensor(1.2, batch=3, seed=10).unbind(0)
    runs = []
    for other in (b, c):
        with DialogueSession(codec, LMGen(lm, use_sampling=False), batch_size=2) as session:
            runs.append(run_dialogue(session, torch.stack([a, other])))
    first, second = runs
    assert torch.equal(first.model_audio[0], second.model_audio[0])
    assert [(t.frame, t.id) for t in first.text if t.item == 0] == [(t.frame, t.id) for t in second.text if t.item == 0]
    assert not torch.equal(first.model_audio[1], second.model_audio[1])


def test_reset_starts_afresh(models):
    codec, lm = models
    user = speech_tensor(0.64, seed=4)  # 8 frames
    gen = LMGen(lm, use_sampling=True, generator=torch.Generator().manual_seed(7))
    with DialogueSession(codec, gen) as session:
        first = [session.step(x) for x in user.split(FS, -1)]
        session.reset()
        assert session.frames_done == 0
        gen.generator.manual_seed(7)
        second = [session.step(x) for x in user.split(FS, -1)]
    for x, y in zip(first, second):
        assert x.index == y.index
        assert torch.equal(x.audio, y.audio) and torch.equal(x.text_ids, y.text_ids)


def test_padding_tokens_are_not_shown():
    decode = {7: " hello", 9: " world"}.get
    ids = torch.tensor([3, 0, 7, -1, 9])
    assert shown_tokens(ids, frozenset({3, 0}), decode) == (
        None, None, TextToken(7, " hello"), None, TextToken(9, " world"))
    assert shown_tokens(ids, frozenset({3, 0}), None)[2] == TextToken(7, None)


def test_a_model_that_only_pads_shows_no_text(models):
    codec, _ = models
    lm = tiny_model(seed=5, card=codec.codebook_size)
    with torch.no_grad():
        lm.text_head.weight.zero_()  # all text logits equal: argmax is id 0, EPAD
    with DialogueSession(codec, LMGen(lm, use_sampling=False), tokenizer=lambda i: f"<{i}>") as session:
        run = run_dialogue(session, speech_tensor(0.48, seed=5))
    assert run.text == ()


def test_tokenizer_pieces(models):
    codec, lm = models

    class Pieces:
        def id_to_piece(self, i: int) -> str:
            return f"\u2581w{i}"

    with DialogueSession(codec, LMGen(lm, use_sampling=False), tokenizer=Pieces()) as session:
        run = run_dialogue(session, speech_tensor(0.48, seed=6))
    assert run.text and all(t.text == f" w{t.id}" and t.id not in (0, 3) for t in run.text)
    lines = format_text_stream(run.text).splitlines()
    assert lines[0] == f"{run.text[0].time_s:.3f}\t{run.text[0].id}\t w{run.text[0].id}"


def test_errors_are_one_line(models):
    codec, lm = models
    session = DialogueSession(codec, LMGen(lm, use_sampling=False), batch_size=2)
    with pytest.raises(MimiError, match="not open"):
        session.step(torch.zeros(2, 1, FS))
    with session:
        with pytest.raises(MimiError, match=r"\[2, 1, 1920\]"):
            session.step(torch.zeros(1, 1, FS))
        with pytest.raises(MimiError, match="NaN"):
            session.step(torch.full((2, 1, FS), float("nan")))
        other = DialogueSession(codec, LMGen(lm))
        with pytest.raises(MimiError, match="cannot open"):
            other.start()  # the same model trees are already streaming
    with pytest.raises(MimiError, match="codebooks of 64 entries"):
        DialogueSession(codec, LMGen(tiny_model(seed=1)))  # card 32
    with pytest.raises(MimiError, match="batch_size"):
        DialogueSession(codec, LMGen(lm), batch_size=0)


def test_latency_and_stats_helpers(models):
    _, lm = models
    latency = AlgorithmicLatency.of(lm.config)
    assert (latency.frame_ms, latency.delay_frames, latency.total_ms) == (80.0, 1, 160.0)
    stats = compute_stats([float(i) for i in range(1, 101)], 80.0)
    assert (stats.p50_ms, stats.p99_ms, stats.worst_ms, stats.over_budget) == (50.0, 99.0, 100.0, 20)
