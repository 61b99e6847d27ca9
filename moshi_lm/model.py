"""`LMModel`: Moshi's hierarchical RQ-Transformer with Inner Monologue.

Streams (K = 1 + n_q, text first): the text stream (Inner Monologue), Moshi's dep_q audio
codebooks, then the user's n_q - dep_q codebooks. Per time step the temporal transformer
(Helium-shaped) reads the sum of the embeddings of all K streams and outputs a hidden state;
`text_head` turns it into text logits, and the depformer predicts Moshi's dep_q codebooks of
that step from it, level by level.

Training (`model(codes)`): the codes [B, K, T] are delayed per stream (`config.delays`), a
start frame of initial tokens (text `text_card`, audio `card`) is prepended, the temporal
transformer runs on delayed steps 0 .. T-1 and predicts delayed steps 1 .. T, and the logits are
shifted back so that `logits[:, k, t]` predicts `codes[:, 1 + k, t]` and `text_logits[:, 0, t]`
predicts `codes[:, 0, t]` (no further shift needed for the loss). Positions with no valid
prediction (the tail cut off by a delay, or a target equal to the zero token -1) are False in
`mask` / `text_mask` and hold NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mimi.errors import MimiError
from mimi.modules.streaming import StreamingContainer
from moshi_lm.config import LMConfig
from moshi_lm.delays import apply_delays, undo_delays
from moshi_lm.depformer import Depformer
from moshi_lm.embeddings import ZERO_TOKEN, StreamEmbeddings
from moshi_lm.norm import make_norm
from moshi_lm.transformer import Transformer, TransformerSpec

UNGENERATED_TOKEN = -2


@dataclass(frozen=True)
class LMOutput:
    """Training outputs, aligned with the input codes."""

    logits: torch.Tensor  # [B, dep_q, T, card]
    mask: torch.Tensor  # [B, dep_q, T] bool
    text_logits: torch.Tensor  # [B, 1, T, text_card]
    text_mask: torch.Tensor  # [B, 1, T] bool


class LMModel(StreamingContainer):
    """Composed from its parts; `build_lm(config)` makes them from a config."""

    def __init__(self, config: LMConfig, embeddings: StreamEmbeddings, transformer: Transformer,
                 out_norm: nn.Module, text_head: nn.Linear, depformer: Depformer):
        super().__init__()
        self.config = config
        self.embeddings = embeddings
        self.transformer = transformer
        self.out_norm = out_norm
        self.text_head = text_head
        self.depformer = depformer

    # -- conventions ------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def device(self) -> torch.device:
        return self.text_head.weight.device

    def initial_tokens(self) -> torch.Tensor:
        """[K] long: the start token of each stream (text_card for text, card for audio)."""
        cfg = self.config
        ids = [cfg.text_initial_token_id] + [cfg.initial_token_id] * cfg.n_q
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def check_codes(self, codes: torch.Tensor, what: str = "codes") -> None:
        cfg = self.config
        if codes.dim() != 3 or codes.shape[1] != cfg.num_codebooks:
            raise MimiError(f"{what} must be [B, {cfg.num_codebooks}, T] (text first), got {list(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32):
            raise MimiError(f"{what} must be integer tensors, got {codes.dtype}")
        if codes.numel():
            text, audio = codes[:, 0], codes[:, 1:]
            if int(text.min()) < ZERO_TOKEN or int(text.max()) > cfg.text_card:
                raise MimiError(f"text {what} must be in [-1, {cfg.text_card}]")
            if int(audio.min()) < ZERO_TOKEN or int(audio.max()) > cfg.card:
                raise MimiError(f"audio {what} must be in [-1, {cfg.card}]")

    # -- the two levels -----------------------------------------------------------------
    def temporal(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sequence [B, K, S] (delayed, model input) -> hidden [B, S, dim], text_logits [B, 1, S, text_card].

        Streams step by step inside `streaming()`."""
        x = self.embeddings(sequence)  # [B, S, dim]
        hidden = self.out_norm(self.transformer(x))  # [B, S, dim]
        return hidden, self.text_head(hidden)[:, None]

    def forward(self, codes: torch.Tensor) -> LMOutput:
        """codes [B, 1 + n_q, T] (text first) -> logits aligned with `codes` (training)."""
        if self.transformer.is_streaming:
            raise MimiError("model(codes) is the offline (training) forward: call it outside streaming()")
        self.check_codes(codes)
        cfg = self.config
        codes = codes.long()
        B, K, T = codes.shape
        initial = self.initial_tokens()
        delayed = apply_delays(codes, cfg.delays, initial)  # [B, K, T]
        delayed = torch.cat([initial.view(1, K, 1).expand(B, K, 1), delayed], dim=2)  # [B, K, T + 1]
        hidden, text_logits = self.temporal(delayed[:, :, :-1])  # [B, T, dim], [B, 1, T, text_card]
        logits = self.depformer(delayed[:, :cfg.dep_q, 1:], hidden)  # [B, dep_q, T, card]
        logits, mask = undo_delays(logits, cfg.delays[1:1 + cfg.dep_q])
        mask = mask & (codes[:, 1:1 + cfg.dep_q] != ZERO_TOKEN)
        text_logits, text_mask = undo_delays(text_logits, cfg.delays[:1])
        text_mask = text_mask & (codes[:, :1] != ZERO_TOKEN)
        return LMOutput(logits, mask, text_logits, text_mask)


def _trunc_normal_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        fan_in = module.in_features
    elif isinstance(module, nn.Embedding):
        fan_in = module.embedding_dim
    else:
        return
    std = 1 / math.sqrt(fan_in)
    nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


def init_weights(model: LMModel) -> None:
    """Kyutai's training initialisation: truncated normal, std 1 / sqrt(fan_in) (embeddings:
    1 / sqrt(dim)) for embeddings, the temporal layers, the text head and the codebook heads;
    everything else keeps PyTorch's default."""
    model.embeddings.apply(_trunc_normal_init)
    model.transformer.apply(_trunc_normal_init)
    model.text_head.apply(_trunc_normal_init)
    model.depformer.text_emb.apply(_trunc_normal_init)
    model.depformer.audio_emb.apply(_trunc_normal_init)
    model.depformer.heads.apply(_trunc_normal_init)


def temporal_spec(cfg: LMConfig) -> TransformerSpec:
    return TransformerSpec(
        dim=cfg.dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers, dim_feedforward=cfg.dim_feedforward,
        causal=cfg.causal, context=cfg.context, positional_embedding=cfg.positional_embedding,
        max_period=cfg.max_period, gating=cfg.gating, norm=cfg.norm, layer_scale=cfg.layer_scale, num_steps=1)


def depformer_spec(cfg: LMConfig) -> TransformerSpec:
    # Kyutai's depformer attends over all depth steps of the frame: its `depformer_context`
    # is not applied (the streaming cache holds dep_q steps).
    return TransformerSpec(
        dim=cfg.depformer_dim, num_heads=cfg.depformer_num_heads, num_layers=cfg.depformer_num_layers,
        dim_feedforward=cfg.depformer_feedforward, causal=cfg.causal, context=None,
        positional_embedding=cfg.depformer_pos_emb, max_period=cfg.depformer_max_period,
        gating=cfg.depformer_gating, norm=cfg.norm, layer_scale=cfg.depformer_layer_scale,
        num_steps=cfg.depformer_num_steps, cache_capacity=cfg.dep_q)


def build_lm(config: LMConfig, *, init: bool = True) -> LMModel:
    """A freshly initialised LMModel for `config` (set init=False to skip the initialisation,
    e.g. on the meta device before loading weights)."""
    depformer = Depformer(dim=config.dim, depformer_dim=config.depformer_dim, dep_q=config.dep_q,
                          card=config.card, text_card=config.text_card,
                          multi_linear=config.depformer_multi_linear, spec=depformer_spec(config))
    model = LMModel(
        config,
        embeddings=StreamEmbeddings(config.dim, config.text_card, config.card, config.n_q),
        transformer=Transformer(temporal_spec(config)),
        out_norm=make_norm(config.norm, config.dim),
        text_head=nn.Linear(config.dim, config.text_card, bias=False),
        depformer=depformer,
    )
    if init:
        init_weights(model)
    return model
