"""Transformer stacks: streaming equals offline; sin embedding; layer scale."""

from __future__ import annotations

import torch

from moshi_lm.transformer import Transformer, TransformerSpec, sin_embedding


def _run_both(spec: TransformerSpec, T: int, chunks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    tr = Transformer(spec).eval()
    x = torch.randn(2, T, spec.dim)
    with torch.no_grad():
        offline = tr(x)
        outs, start = [], 0
        with tr.streaming(2):
            for n in chunks:
                outs.append(tr(x[:, start:start + n]))
                start += n
    return offline, torch.cat(outs, 1)


def test_helium_stack_streams_like_offline():
    spec = TransformerSpec(dim=32, num_heads=4, num_layers=2, dim_feedforward=132, context=6)
    offline, streamed = _run_both(spec, 15, [1] * 15)
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


def test_depformer_like_stack_streams_like_offline():
    spec = TransformerSpec(dim=16, num_heads=2, num_layers=2, dim_feedforward=66, context=None,
                           positional_embedding="none", num_steps=5, cache_capacity=5, layer_scale=0.1)
    offline, streamed = _run_both(spec, 5, [1, 1, 1, 1, 1])
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


def test_sin_embedding_and_layer_norm_stack():
    spec = TransformerSpec(dim=16, num_heads=2, num_layers=1, dim_feedforward=64, context=4,
                           positional_embedding="sin", norm="layer_norm", gating="none")
    offline, streamed = _run_both(spec, 9, [2, 3, 4])
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)
    emb = sin_embedding(torch.arange(3), 8, 10000.0)
    assert emb.shape == (1, 3, 8)
    torch.testing.assert_close(emb[0, 0], torch.tensor([1.0] * 4 + [0.0] * 4))
