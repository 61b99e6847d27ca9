"""The depth transformer ("depformer") of Moshi's RQ-Transformer.

For one time step it predicts the `dep_q` audio codebooks of Moshi's own stream one after the
other. Its input at depth step k is

    in_projs[k](h) + emb_k(previous token)

where h [B, T, dim] is the temporal transformer's output for that time step, `in_projs` holds
one projection per codebook ("multi-linear"; a single shared one otherwise), and the previous
token is the text token for k = 0 and audio codebook k - 1 for k >= 1. The depformer itself is a
small causal transformer over the dep_q depth steps, without positional embedding, with one
weight set per step when `depformer_weights_per_step`; head k gives the logits of codebook k.
"""

from __future__ import annotations

import torch
from torch import nn

from mimi.errors import MimiError
from moshi_lm.embeddings import ZeroableEmbedding
from moshi_lm.transformer import Transformer, TransformerSpec


class Depformer(nn.Module):
    def __init__(self, *, dim: int, depformer_dim: int, dep_q: int, card: int, text_card: int,
                 multi_linear: bool, spec: TransformerSpec):
        super().__init__()
        if spec.dim != depformer_dim:
            raise MimiError(f"depformer spec has dim {spec.dim}, expected {depformer_dim}")
        self.dep_q = dep_q
        self.card = card
        self.in_projs = nn.ModuleList(nn.Linear(dim, depformer_dim, bias=False)
                                      for _ in range(dep_q if multi_linear else 1))
        self.text_emb = ZeroableEmbedding(text_card + 1, depformer_dim)
        self.audio_emb = nn.ModuleList(ZeroableEmbedding(card + 1, depformer_dim) for _ in range(dep_q - 1))
        self.transformer = Transformer(spec)
        self.heads = nn.ModuleList(nn.Linear(depformer_dim, card, bias=False) for _ in range(dep_q))

    def _input(self, k: int, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (the input of depth step k), context [B, T, dim] -> [B, T, depformer_dim]."""
        proj = self.in_projs[k if len(self.in_projs) > 1 else 0](context)
        emb = self.text_emb(tokens) if k == 0 else self.audio_emb[k - 1](tokens)
        return proj + emb

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Teacher-forced, all depth steps at once (training).

        tokens [B, dep_q, T]: text, then audio codebooks 0 .. dep_q - 2, of each time step;
        context [B, T, dim] -> logits [B, dep_q, T, card] (codebook k predicted at depth step k).
        """
        if self.transformer.is_streaming:
            raise MimiError("the depformer is streaming: use step() inside a streaming context")
        B, K, T = tokens.shape
        if K != self.dep_q:
            raise MimiError(f"depformer expects {self.dep_q} token streams, got {K}")
        x = torch.stack([self._input(k, tokens[:, k], context) for k in range(K)], dim=2)  # [B, T, K, Dd]
        y = self.transformer(x.reshape(B * T, K, -1))  # [B * T, K, Dd]
        logits = torch.stack([self.heads[k](y[:, k]) for k in range(K)], dim=1)  # [B * T, K, card]
        return logits.view(B, T, K, -1).transpose(1, 2)  # [B, K, T, card]

    def start_frame(self) -> None:
        """Streaming: forget the previous time step's depth steps (the depformer's own cycle)."""
        if not self.transformer.is_streaming:
            raise MimiError("depformer start_frame() outside a streaming context")
        self.transformer.reset_streaming()

    def step(self, k: int, token: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Streaming depth step k: token [B] (text for k = 0, else codebook k - 1),
        context [B, 1, dim] -> logits [B, card] of codebook k."""
        state = self.transformer.state
        if state is None or state.offset != k:
            raise MimiError(f"depformer step {k} out of order (call start_frame() then steps 0 .. {self.dep_q - 1})")
        y = self.transformer(self._input(k, token[:, None], context))  # [B, 1, Dd]
        return self.heads[k](y[:, 0])  # [B, card]
