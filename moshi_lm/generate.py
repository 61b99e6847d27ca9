"""`LMGen`: streaming generation, one 80 ms frame per `step`.

    gen = LMGen(model)                      # sampling: temp 0.8 audio / 0.7 text, top-k 250 / 25
    with gen.streaming(batch_size):
        out = gen.step(user_codes)          # [B, n_q - dep_q, 1] -> None, or [B, 1 + dep_q, 1]

Each step reads the user's codes for this frame, runs the temporal transformer one step on the
current (delayed) frame of all streams, samples a text token, then Moshi's dep_q audio codes one
by one with the depformer. Generation happens in delayed time, so the output of a step is the
frame `max_delay` steps back, re-aligned across streams: the first `max_delay` steps (the
delay warm-up) return None.

Frame bookkeeping (Kyutai's semantics, kept exactly): a small ring `cache` [B, K, max_delay + 2]
holds delayed frames. At step t the model input is delayed frame t (a stream's initial token
while t <= its delay); the user's codes of step t land in delayed frame t + delay; the sampled
text + audio tokens form delayed frame t + 1. So the user's codes given at step 0 are never
seen (delayed frame 0 is all initial tokens), and the output of step t (t >= max_delay) is
original frame t - 1 of Moshi's streams, aligned with the user's codes given at step t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mimi.errors import MimiError
from mimi.modules.streaming import StreamingModule, StreamingState
from moshi_lm.model import UNGENERATED_TOKEN, LMModel
from moshi_lm.sampling import sample_token


@dataclass
class LMGenState(StreamingState):
    cache: torch.Tensor  # [B, K, max_delay + 2] long: delayed frames, UNGENERATED_TOKEN (-2) if unset
    offset: int  # steps taken


class LMGen(StreamingModule[LMGenState]):
    def __init__(self, model: LMModel, use_sampling: bool = True, temp: float = 0.8, temp_text: float = 0.7,
                 top_k: int = 250, top_k_text: int = 25, generator: torch.Generator | None = None):
        super().__init__()
        self.model = model
        self.use_sampling = use_sampling
        self.temp = temp
        self.temp_text = temp_text
        self.top_k = top_k
        self.top_k_text = top_k_text
        self.generator = generator
        self._delays = list(model.config.delays)

    def init_state(self, batch_size: int) -> LMGenState:
        cfg = self.model.config
        cache = torch.full((batch_size, cfg.num_codebooks, cfg.max_delay + 2), UNGENERATED_TOKEN,
                           dtype=torch.long, device=self.model.device)
        return LMGenState(cache=cache, offset=0)

    def _check_user(self, user_codes: torch.Tensor, batch_size: int) -> torch.Tensor:
        cfg = self.model.config
        n_user = cfg.num_user_codebooks
        if user_codes.dim() != 3 or user_codes.shape[0] != batch_size or user_codes.shape[2] != 1 \
                or user_codes.shape[1] < n_user:
            raise MimiError(f"user codes must be [{batch_size}, {n_user}, 1], got {list(user_codes.shape)}")
        user_codes = user_codes[:, :n_user, 0].long().to(self.model.device)  # [B, n_user]
        if user_codes.numel() and (int(user_codes.min()) < -1 or int(user_codes.max()) >= cfg.card):
            raise MimiError(f"user codes must be in [-1, {cfg.card - 1}]")
        return user_codes

    @torch.no_grad()
    def step(self, user_codes: torch.Tensor) -> torch.Tensor | None:
        """user_codes [B, n_q - dep_q, 1] -> None during the warm-up, else [B, 1 + dep_q, 1]
        (text token, then Moshi's dep_q audio codes)."""
        state = self._state
        if state is None:
            raise MimiError("LMGen.step() must run inside `with gen.streaming(batch_size):`")
        cfg = self.model.config
        B, K, CT = state.cache.shape
        user = self._check_user(user_codes, B)
        t = state.offset
        first_user = 1 + cfg.dep_q
        for j in range(user.shape[1]):
            k = first_user + j
            state.cache[:, k, (t + self._delays[k]) % CT] = user[:, j]

        frame = state.cache[:, :, t % CT].clone()  # [B, K]: delayed frame t
        initial = self.model.initial_tokens()
        for k in range(K):
            if t <= self._delays[k]:
                frame[:, k] = initial[k]

        hidden, text_logits = self.model.temporal(frame[:, :, None])  # [B, 1, dim], [B, 1, 1, text_card]
        text = sample_token(text_logits[:, 0, 0], self.use_sampling, self.temp_text, self.top_k_text,
                            self.generator)  # [B]
        audio = self._depth_frame(text, hidden)  # [B, dep_q]

        state.offset = t = t + 1
        state.cache[:, 0, t % CT] = text
        state.cache[:, 1:1 + cfg.dep_q, t % CT] = audio
        if t <= cfg.max_delay:
            return None
        index = torch.tensor([(t - cfg.max_delay + d) % CT for d in self._delays[:1 + cfg.dep_q]],
                             device=state.cache.device)  # [1 + dep_q]
        out = state.cache[:, :1 + cfg.dep_q].gather(2, index.view(1, -1, 1).expand(B, -1, 1))
        return out  # [B, 1 + dep_q, 1]

    def _depth_frame(self, text: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """text [B], hidden [B, 1, dim] -> Moshi's audio codes of this step [B, dep_q]."""
        depformer = self.model.depformer
        depformer.start_frame()
        previous, tokens = text, []
        for k in range(depformer.dep_q):
            logits = depformer.step(k, previous, hidden)  # [B, card]
            previous = sample_token(logits, self.use_sampling, self.temp, self.top_k, self.generator)
            tokens.append(previous)
        return torch.stack(tokens, dim=1)
