"""Depformer: streaming depth steps equal the teacher-forced forward; per-codebook weights."""

from __future__ import annotations

import pytest
import torch

from mimi.errors import MimiError
from tests.moshi_lm.helpers import tiny_model


@pytest.mark.parametrize("per_step,multi_linear", [(True, True), (False, False)])
def test_streaming_steps_match_training_forward(per_step, multi_linear):
    model = tiny_model(depformer_weights_per_step=per_step, depformer_multi_linear=multi_linear)
    dep, cfg = model.depformer, model.config
    assert len(dep.in_projs) == (cfg.dep_q if multi_linear else 1)
    assert len(dep.transformer.layers[0].self_attn.in_projs) == (cfg.dep_q if per_step else 1)
    assert len(dep.audio_emb) == cfg.dep_q - 1 and len(dep.heads) == cfg.dep_q
    torch.manual_seed(1)
    B, T = 2, 3
    tokens = torch.randint(0, cfg.card, (B, cfg.dep_q, T))
    tokens[:, 0] = torch.randint(0, cfg.text_card, (B, T))
    context = torch.randn(B, T, cfg.dim)
    with torch.no_grad():
        offline = dep(tokens, context)  # [B, dep_q, T, card]
        assert offline.shape == (B, cfg.dep_q, T, cfg.card)
        with model.streaming(B):
            for t in range(T):
                dep.start_frame()
                for k in range(cfg.dep_q):
                    logits = dep.step(k, tokens[:, k, t], context[:, t:t + 1])
                    torch.testing.assert_close(logits, offline[:, k, t], rtol=1e-5, atol=1e-5)
            with pytest.raises(MimiError, match="out of order"):
                dep.step(3, tokens[:, 0, 0], context[:, :1])


def test_depth_step_k_ignores_higher_levels():
    model = tiny_model()
    cfg = model.config
    tokens = torch.randint(0, cfg.card, (1, cfg.dep_q, 2))
    tokens[:, 0] = 5
    context = torch.randn(1, 2, cfg.dim)
    with torch.no_grad():
        a = model.depformer(tokens, context)
        tokens2 = tokens.clone()
        tokens2[:, 4:] = (tokens2[:, 4:] + 1) % cfg.card
        b = model.depformer(tokens2, context)
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.equal(a[:, 4:], b[:, 4:])
