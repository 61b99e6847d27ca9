"""LMGen: warm-up, output shape, greedy determinism, sampling, snapshot / restore."""

from __future__ import annotations

import pytest
import torch

from mimi.errors import MimiError
from moshi_lm import LMGen
from moshi_lm.sampling import sample_token
from tests.moshi_lm.helpers import random_codes, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def _user(model, B, S, seed=0):
    return random_codes(model.config, B, S, seed=seed)[:, 1 + model.config.dep_q:]  # [B, 8, S]


def _run(gen, user):
    outs = []
    for t in range(user.shape[2]):
        outs.append(gen.step(user[:, :, t:t + 1]))
    return outs


def test_warm_up_then_frames(model):
    cfg = model.config
    gen = LMGen(model, use_sampling=False)
    user = _user(model, 2, 6)
    with gen.streaming(2):
        outs = _run(gen, user)
    assert all(o is None for o in outs[:cfg.max_delay])
    for o in outs[cfg.max_delay:]:
        assert o.shape == (2, 1 + cfg.dep_q, 1) and o.dtype == torch.long
        assert (o[:, 0] >= 0).all() and (o[:, 0] < cfg.text_card).all()
        assert (o[:, 1:] >= 0).all() and (o[:, 1:] < cfg.card).all()


def test_greedy_is_deterministic_and_batch_independent(model):
    user = _user(model, 2, 8)
    gen = LMGen(model, use_sampling=False)
    with gen.streaming(2):
        a = torch.cat(_run(gen, user)[1:], 2)
    with gen.streaming(1):
        b = torch.cat(_run(gen, user[1:])[1:], 2)
    assert torch.equal(a[1:], b)


def test_greedy_matches_the_training_forward(model):
    """Teacher-forcing check: feed the generated frames back through model(codes); the greedy
    tokens are the argmax of the training logits at the same positions."""
    S = 7
    user = _user(model, 1, S + 1, seed=4)
    gen = LMGen(model, use_sampling=False)
    with gen.streaming(1):
        frames = torch.cat(_run(gen, user)[1:], 2)  # [1, 9, S]: original frames 0 .. S-1
    codes = torch.cat([frames, user[:, :, 1:]], dim=1)  # user at step t is original frame t - 1
    with torch.no_grad():
        out = model(codes)
    assert torch.equal(out.text_logits[0, 0].argmax(-1), frames[0, 0])
    greedy_audio = out.logits[0].argmax(-1)  # [dep_q, S]
    valid = out.mask[0]
    assert torch.equal(greedy_audio[valid], frames[0, 1:][valid])


def test_sampling_with_a_generator_and_snapshot_restore(model):
    user = _user(model, 1, 10, seed=5)
    gen = LMGen(model, generator=torch.Generator().manual_seed(0))
    with gen.streaming(1):
        _run(gen, user[:, :, :4])
        snap = gen.snapshot()
        gen.generator.manual_seed(7)
        first = _run(gen, user[:, :, 4:])
        gen.restore(snap)
        gen.generator.manual_seed(7)
        second = _run(gen, user[:, :, 4:])
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_step_errors(model):
    gen = LMGen(model)
    with pytest.raises(MimiError, match="streaming"):
        gen.step(torch.zeros(1, 8, 1, dtype=torch.long))
    with gen.streaming(1):
        with pytest.raises(MimiError, match=r"user codes must be \[1, 8, 1\]"):
            gen.step(torch.zeros(1, 7, 1, dtype=torch.long))
        with pytest.raises(MimiError, match="user codes must be in"):
            gen.step(torch.full((1, 8, 1), model.config.card))


def test_sample_token_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, -3.0]])
    assert sample_token(logits, use_sampling=False).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_token(logits, True, 1.0, 2, g)) for _ in range(50)}
    assert draws == {1, 2}


def test_bfloat16_generation_runs():
    model = tiny_model(seed=4).to(torch.bfloat16)
    gen = LMGen(model, use_sampling=False)
    with gen.streaming(1):
        outs = _run(gen, _user(model, 1, 3))
    assert outs[0] is None and outs[2].shape == (1, 9, 1)
