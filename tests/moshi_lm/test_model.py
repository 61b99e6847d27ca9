"""LMModel training forward: shapes, masks, and causality in delayed time."""

from __future__ import annotations

import pytest
import torch

from mimi.errors import MimiError
from tests.moshi_lm.helpers import random_codes, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def forward(model, codes):
    with torch.no_grad():
        return model(codes)


def test_shapes_and_masks(model):
    cfg = model.config
    codes = random_codes(cfg, 2, 10)
    codes[0, 3, 4] = -1
    codes[1, 0, 2] = -1
    out = forward(model, codes)
    assert out.logits.shape == (2, cfg.dep_q, 10, cfg.card)
    assert out.text_logits.shape == (2, 1, 10, cfg.text_card)
    assert out.mask.shape == (2, cfg.dep_q, 10) and out.text_mask.shape == (2, 1, 10)
    # semantic level (delay 0) valid everywhere; acoustic levels lose their last step
    assert out.mask[:, 0].all() and out.text_mask[0].all()
    assert not out.mask[:, 1:, -1].any() and out.mask[1, 1:, :-1].all()
    assert not out.mask[0, 2, 4] and not out.text_mask[1, 0, 2]
    assert torch.isnan(out.logits[:, 1:, -1]).all() and torch.isfinite(out.logits[out.mask]).all()
    assert torch.isfinite(out.text_logits[out.text_mask]).all()


def _allowed(cfg, j: int, tp: int, k: int, t: int) -> bool:
    """May output stream k (0 text, 1.. dep_q audio) at time t depend on codes[j, tp]?

    In delayed time codes[j, tp] is input frame p = tp + d_j + 1; output (k, t) is computed at
    step s = t + d_k from frames <= s (temporal) and from frame s + 1 of the streams below k
    (the depformer's lower levels)."""
    d = cfg.delays
    p, s = tp + d[j] + 1, t + d[k]
    return p <= s or (p == s + 1 and 0 < k and j < k)


def test_no_logit_depends_on_what_it_may_not_see(model):
    """Perturb single codes; every logit that moves must be allowed to (and some must)."""
    cfg = model.config
    T = 6
    codes = random_codes(cfg, 1, T, seed=3)
    base = forward(model, codes)
    for j in range(cfg.num_codebooks):
        for tp in (1, 3):
            c = codes.clone()
            c[0, j, tp] = (c[0, j, tp] + 1) % (cfg.text_card if j == 0 else cfg.card)
            out = forward(model, c)
            moved = 0
            for k in range(1 + cfg.dep_q):
                ref = base.text_logits[0, 0] if k == 0 else base.logits[0, k - 1]
                new = out.text_logits[0, 0] if k == 0 else out.logits[0, k - 1]
                for t in range(T):
                    if torch.isnan(ref[t]).any():
                        continue
                    changed = not torch.equal(ref[t], new[t])
                    moved += changed
                    if changed:
                        assert _allowed(cfg, j, tp, k, t), f"logit ({k}, t={t}) depends on code ({j}, t={tp})"
            assert moved > 0


def test_future_codes_leave_earlier_logits_unchanged(model):
    cfg = model.config
    codes = random_codes(cfg, 2, 12, seed=4)
    t0 = 7
    future = codes.clone()
    future[:, :, t0:] = random_codes(cfg, 2, 12 - t0, seed=5)
    a, b = forward(model, codes), forward(model, future)
    # text and the semantic level (delay 0): nothing before t0 moves
    assert torch.equal(a.text_logits[:, :, :t0], b.text_logits[:, :, :t0])
    assert torch.equal(a.logits[:, 0, :t0], b.logits[:, 0, :t0])
    # acoustic levels are one frame late: they see text + semantic of the next frame
    assert torch.equal(a.logits[:, 1:, :t0 - 1], b.logits[:, 1:, :t0 - 1])
    assert not torch.equal(a.logits[:, 1:, t0 - 1], b.logits[:, 1:, t0 - 1])


def test_bad_codes_raise(model):
    cfg = model.config
    with pytest.raises(MimiError, match="text first"):
        model(torch.zeros(1, cfg.n_q, 4, dtype=torch.long))
    bad = random_codes(cfg, 1, 4)
    bad[0, 2, 1] = cfg.card + 1
    with pytest.raises(MimiError, match="audio codes"):
        model(bad)
    with pytest.raises(MimiError, match="integer"):
        model(random_codes(cfg, 1, 4).float())


def test_training_forward_has_gradients(model):
    import moshi_lm

    m = tiny_model(seed=1).train()
    codes = random_codes(m.config, 2, 8)
    loss = moshi_lm.lm_loss(m(codes), codes)
    loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["depformer.heads.0.weight"].abs().sum() > 0 and grads["text_head.weight"].abs().sum() > 0
