"""Embeddings: card + 1 rows, the zero token -1 contributes nothing."""

from __future__ import annotations

import torch

from moshi_lm.embeddings import StreamEmbeddings, ZeroableEmbedding


def test_zero_token_embeds_to_zero():
    emb = ZeroableEmbedding(5, 4)
    out = emb(torch.tensor([[-1, 0, 4]]))
    assert torch.equal(out[0, 0], torch.zeros(4))
    assert torch.equal(out[0, 2], emb.weight[4])


def test_zero_stream_contributes_nothing_to_the_sum():
    torch.manual_seed(0)
    emb = StreamEmbeddings(dim=8, text_card=10, card=6, n_q=3)
    assert emb.text.num_embeddings == 11 and all(e.num_embeddings == 7 for e in emb.audio)
    codes = torch.tensor([[[2, 10], [6, 1], [-1, 3], [4, -1]]])  # [1, 4, 2]; 10 and 6: initial tokens
    out = emb(codes)
    expected0 = emb.text.weight[2] + emb.audio[0].weight[6] + emb.audio[2].weight[4]
    torch.testing.assert_close(out[0, 0], expected0)
    expected1 = emb.text.weight[10] + emb.audio[0].weight[1] + emb.audio[1].weight[3]
    torch.testing.assert_close(out[0, 1], expected1)
    # gradients do not reach the clamped row through a zero token
    out.sum().backward()
    assert emb.audio[1].weight.grad[0].abs().sum() == 0
