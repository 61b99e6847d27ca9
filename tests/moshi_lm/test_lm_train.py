"""LM training: data loading, unigram baseline, learning below it, checkpoints and resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import moshi_lm
from mimi.audio import write_audio
from mimi.errors import MimiError
from mimi.tokens import extract_tokens
from moshi_lm.data import (DialogueExample, WindowSampler, fit_unigram, fixed_windows, load_examples,
                           split_examples)
from moshi_lm.inner_monologue import EPAD_ID, PAD_ID
from moshi_lm.loss import lm_loss_parts
from moshi_lm.text_tokenizer import train_tokenizer
from moshi_lm.train import LMTrainConfig, lr_at, train, train_on_examples
from tests.helpers import speechlike




def structured_examples(n: int = 6, frames: int = 120, K: int = 2, card: int = 16, seed: int = 0
                        ) -> list[DialogueExample]:
    """Dialogues with learnable structure: each speaker's codes hold a value for 4 frames, the
    model's acoustic level follows its semantic one, and the text stream has PAD runs with
    EPAD + a two-piece word whenever the model's semantic code changes to an even value."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        rows = []
        for _speaker in range(2):
            values = torch.randint(0, card, (frames // 4 + 1,), generator=g).repeat_interleave(4)[:frames]
            rows.append(values)
            for k in range(1, K):
                rows.append((values + k) % card)
        text = torch.full((frames,), PAD_ID)
        sem = rows[0]
        for t in range(1, frames - 2):
            if sem[t] != sem[t - 1] and int(sem[t]) % 2 == 0:
                text[t - 1], text[t], text[t + 1] = EPAD_ID, 4 + int(sem[t]) // 2, 12
        out.append(DialogueExample(f"d{i:05d}", torch.cat([text[None], torch.stack(rows)])))
    return out


def micro_config(**overrides) -> LMTrainConfig:
    base = dict(dialogues="-", tokens="-", tokenizer="-", num_codebooks=2, model={"preset": "micro"}, steps=40,
                batch_size=8, window=32, lr=3e-3, warmup_steps=5, log_every=10, eval_every=20,
                checkpoint_every=20, eval_fraction=0.2)
    return LMTrainConfig(**{**base, **overrides})


def read_csv(path):
    import csv

    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_loss_drops_below_the_unigram_baseline(tmp_path):
    examples = structured_examples()
    report = train_on_examples(micro_config(steps=40), examples, tmp_path / "run", text_card=16)
    rows = read_csv(tmp_path / "run" / "train.csv")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    first, last = rows[0], rows[-1]
    assert last["loss"] < first["loss"]
    assert last["loss"] < last["unigram"] - 0.3, rows
    assert report.train_loss == pytest.approx(last["loss"], rel=1e-4)
    evals = read_csv(tmp_path / "run" / "eval.csv")
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["loss"] < evals[-1]["unigram"]  # also on held-out dialogues
    best = min(evals[1:], key=lambda r: r["loss"])
    assert report.best_step == best["step"] and report.best_eval_loss == pytest.approx(best["loss"], rel=1e-4)
    best_info = json.loads((tmp_path / "run/best/training.json").read_text())
    assert best_info["steps"] == best["step"] and moshi_lm.load(tmp_path / "run/best").config.dep_q == 2
    # the final model loads and generates with LMGen
    lm = moshi_lm.load(report.final_dir)
    gen = moshi_lm.LMGen(lm, use_sampling=False)
    with gen.streaming(1):
        outs = [gen.step(torch.zeros(1, 2, 1, dtype=torch.long)) for _ in range(3)]
    assert outs[0] is None and outs[-1].shape == (1, 3, 1)
    info = json.loads((report.final_dir / "training.json").read_text())
    assert info["num_codebooks"] == 2 and info["card"] == 16 and info["steps"] == 40


def test_unigram_baseline_uses_the_loss_weighting():
    examples = structured_examples(n=2, frames=40)
    uni = fit_unigram(examples, text_card=16, card=16, dep_q=2)
    assert torch.allclose(uni.text_logp.exp().sum(), torch.tensor(1.0)) and uni.audio_logp.shape == (2, 16)
    codes = torch.stack([examples[0].codes[:, :32]])  # [1, 5, 32]
    lm = moshi_lm.build_lm(micro_config().lm_config(16, 16)).eval()
    with torch.no_grad():
        out = lm(codes)
    base = lm_loss_parts(uni.output_like(out), codes, semantic_weight=100.0, pad_weight=0.5)
    # by hand: weighted mean of -log p over the valid positions
    audio_nll = -uni.audio_logp.gather(1, codes[0, 1:3])  # [2, T]
    w = torch.ones(2, 32)
    w[0] = 100.0
    w = w * out.mask[0]
    assert float(base.audio) == pytest.approx(float((audio_nll * w).sum() / w.sum()), rel=1e-5)
    text = codes[0, 0]
    tw = torch.where((text == PAD_ID) | (text == EPAD_ID), 0.5, 1.0) * out.text_mask[0, 0]
    expected_text = float((-uni.text_logp[text] * tw).sum() / tw.sum())
    assert float(base.text) == pytest.approx(expected_text, rel=1e-5)


def test_resume_continues_exactly(tmp_path):
    examples = structured_examples(n=4, frames=64)
    cfg = dict(steps=6, warmup_steps=0, min_lr_ratio=1.0, log_every=1, checkpoint_every=3, eval_every=3)
    train_on_examples(micro_config(**cfg), examples, tmp_path / "straight", text_card=16)
    train_on_examples(micro_config(**{**cfg, "steps": 3}), examples, tmp_path / "split", text_card=16)
    assert (tmp_path / "split/checkpoints/latest").read_text().strip() == "step_0000003"
    report = train_on_examples(micro_config(**cfg), examples, tmp_path / "split", text_card=16, resume=True)
    assert report.resumed_from == 3 and report.steps_done == 6
    straight_best = json.loads((tmp_path / "straight/best/training.json").read_text())
    assert report.best_step == straight_best["steps"]
    assert report.best_eval_loss == pytest.approx(straight_best["eval_loss"])
    a = load_file(tmp_path / "straight/final/model.safetensors")
    b = load_file(tmp_path / "split/final/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = read_csv(tmp_path / "split/train.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    straight = read_csv(tmp_path / "straight/train.csv")
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight]
    # checkpoints are safetensors + JSON only, the oldest pruned (keep 2)
    ckpts = sorted(p.name for p in (tmp_path / "split/checkpoints").glob("step_*"))
    assert ckpts == ["step_0000003", "step_0000006"]
    assert sorted(p.name for p in (tmp_path / "split/checkpoints/step_0000006").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "state.json"]


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    report = train_on_examples(micro_config(steps=10_000), structured_examples(n=3, frames=40),
                               tmp_path / "run", text_card=16, time_limit_s=1e-3)
    assert report.stopped_early and report.steps_done == 1
    assert (tmp_path / "run/checkpoints/step_0000001/state.json").is_file()
    assert (tmp_path / "run/final/model.safetensors").is_file()


def test_sampler_windows_and_eval_split():
    examples = structured_examples(n=5, frames=20)
    train_set, held = split_examples(examples, 0.2)
    assert [e.id for e in held] == ["d00004"] and len(train_set) == 4
    assert split_examples(examples[:1], 0.5) == (examples[:1], [])
    g = torch.Generator().manual_seed(0)
    batch = WindowSampler(train_set, window=32, batch_size=3, generator=g).sample()
    assert batch.shape == (3, 5, 32)
    assert (batch[:, :, 20:] == -1).all() and (batch[:, :, :20] >= 0).all()  # past the end: zero token
    windows = fixed_windows(examples, 8)
    assert len(windows) == 5 * 3 and windows[2].shape == (5, 8) and (windows[2][:, 4:] == -1).all()


def test_config_errors():
    with pytest.raises(MimiError, match="dialogues is required"):
        LMTrainConfig(tokens="t", tokenizer="x")
    with pytest.raises(MimiError, match="unknown model preset"):
        micro_config(model={"preset": "huge"})
    with pytest.raises(MimiError, match="come from the data"):
        micro_config(model={"card": 7})
    with pytest.raises(MimiError, match="unknown \\[model\\] key"):
        micro_config(model={"preset": "micro", "width": 3})
    with pytest.raises(MimiError, match="steps"):
        micro_config(steps=0)
    with pytest.raises(MimiError, match="does not fit card"):
        train_on_examples(micro_config(card=8), structured_examples(n=2), "unused", text_card=16)


def test_lr_schedule():
    cfg = micro_config(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0) and lr_at(cfg, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


# -- from disk: dialogues folder + `mimi tokens` output + tokenizer ---------------------------------
def write_dialogue_folder(root, n: int = 3, seconds: float = 2.4) -> None:
    """A dialogue folder as build_dialogues lays it out, with speech-like audio (no TTS needed)."""
    lines = []
    for i in range(n):
        did = f"d{i:05d}"
        for j, speaker in enumerate("AB"):
            x = speechlike(seconds, seed=10 * i + j)
            (root / "audio" / did).mkdir(parents=True, exist_ok=True)
            write_audio(root / "audio" / did / f"{speaker}.wav", torch.from_numpy(x)[None], 24000)
            words = [["the", 0.3, 0.5], ["red", 0.6, 0.9], ["hat", 1.2, 1.5]] if speaker == "A" else \
                [["mhm", 0.1, 0.4]]
            lines.append({"dialogue": did, "speaker": speaker, "role": "model" if speaker == "A" else "user",
                          "audio": f"{did}/{speaker}.wav", "voice": "espeak/en-us", "samples": x.size,
                          "duration_s": x.size / 24000, "text": "", "words": words})
    (root / "words.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture(scope="module")
def disk_data(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("lmdata")
    write_dialogue_folder(root / "dialogues")
    extract_tokens(root / "dialogues" / "audio", root / "tokens", tiny_model, batch_size=6)
    tok = train_tokenizer(["the red hat", "mhm", "a red cat sat on the hat"] * 20, root / "tok.model", vocab_size=30)
    return root, tok


def test_load_examples_from_disk(disk_data):
    root, tok = disk_data
    examples = load_examples(root / "dialogues", root / "tokens", tok, num_codebooks=4)
    assert [e.id for e in examples] == ["d00000", "d00001", "d00002"]
    ex = examples[0]
    assert ex.codes.shape == (9, 30) and ex.num_codebooks == 4  # 2.4 s = 30 frames
    assert ex.text is not None and ex.codes[0].tolist() == ex.text.tokens.tolist()
    assert ex.codes[0, 2] == EPAD_ID and ex.codes[0, 3] == tok.encode("the")[0]  # "the" at 0.3 s: frame 3
    from mimi.tokens import TokenDataset

    ds = TokenDataset(root / "tokens")
    assert torch.equal(ex.codes[1:5], ds.get("d00000/A.wav").codes[:4].long())
    assert torch.equal(ex.codes[5:9], ds.get("d00000/B.wav").codes[:4].long())
    with pytest.raises(MimiError, match="fewer than the 16"):
        load_examples(root / "dialogues", root / "tokens", tok, num_codebooks=16)


def test_missing_tokens_name_the_command_to_run(disk_data, tmp_path):
    root, tok = disk_data
    write_dialogue_folder(tmp_path / "dialogues", n=4)  # one dialogue more than tokenized
    with pytest.raises(MimiError, match=r"2 dialogue channel\(s\) have no tokens .*run: mimi tokens"):
        load_examples(tmp_path / "dialogues", root / "tokens", tok, num_codebooks=4)


def test_train_from_disk_writes_a_loadable_run(disk_data, tmp_path):
    root, tok = disk_data
    cfg = LMTrainConfig(dialogues=str(root / "dialogues"), tokens=str(root / "tokens"),
                        tokenizer=str(root / "tok.model"), num_codebooks=4, model={"preset": "micro"}, steps=4,
                        batch_size=2, window=16, log_every=2, eval_every=2, checkpoint_every=2, eval_fraction=0.34)
    report = train(cfg, tmp_path / "run")
    final = report.final_dir
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors", "tokenizer.model",
                                                        "training.json"]
    lm = moshi_lm.load(final)
    assert lm.config.text_card == tok.vocab_size and lm.config.card == 64 and lm.config.dep_q == 4
    assert lm.config.delays == (0, 0, 1, 1, 1, 0, 1, 1, 1)
    info = json.loads((final / "training.json").read_text())
    assert info["mimi_fingerprint"] and info["model_speaker"] == "A"
    resolved = json.loads((tmp_path / "run/config.resolved.json").read_text())
    assert resolved["steps"] == 4 and resolved["resolved_lm_config"]["card"] == 64
    assert np.isfinite([r["loss"] for r in read_csv(tmp_path / "run/train.csv")]).all()
