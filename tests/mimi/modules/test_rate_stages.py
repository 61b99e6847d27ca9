"""Offline SEANet inference in rate stages: where the stack is cut, how chunks are sized, and
that any chunk plan computes the whole-input pass."""

from __future__ import annotations

import pytest
import torch

from mimi.config import MimiConfig
from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from mimi.modules.rate_stages import MAX_STAGE_FRAMES, plan_stages, run_stages
from mimi.modules.seanet import SeanetDecoder, SeanetEncoder
from mimi.modules.time_major import seanet_time_major


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_released_encoder_is_cut_after_each_downsampling_conv():
    enc = SeanetEncoder(MimiConfig.released().seanet)
    stages = plan_stages(enc.layers, 960, chunk_bytes=4 << 20)
    assert [s.rows_per_frame for s in stages] == [960, 240, 48, 8, 1]
    assert sum(len(s.layers) for s in stages) == len(enc.layers)
    for s in stages[:-1]:
        assert isinstance(s.layers[-1], StreamingConv1d) and s.layers[-1].stride > 1
    # chunks: ~4 MB of the widest activation (64 channels at 24 kHz: 17 frames), capped at 512 frames
    assert [s.chunk_rows // s.rows_per_frame for s in stages] == [17, 34, 85, 256, MAX_STAGE_FRAMES]


def test_released_decoder_is_cut_before_each_transposed_conv():
    dec = SeanetDecoder(MimiConfig.released().seanet)
    stages = plan_stages(dec.layers, 1, chunk_bytes=4 << 20)
    assert [s.rows_per_frame for s in stages] == [1, 1, 8, 48, 240]  # each stage's input rate
    for s in stages[1:]:
        assert isinstance(s.layers[0], StreamingConvTranspose1d)
    # sized by the widest activation, the upsampled output of the transposed conv
    assert [s.chunk_rows // s.rows_per_frame for s in stages] == [MAX_STAGE_FRAMES, 256, 85, 34, 17]


def test_a_tiny_budget_still_runs_one_frame_per_chunk():
    enc = SeanetEncoder(MimiConfig.tiny().seanet)
    hop = MimiConfig.tiny().seanet.hop_length
    stages = plan_stages(enc.layers, hop, chunk_bytes=1)
    assert all(s.chunk_rows == s.rows_per_frame for s in stages)


def _whole_pass(layers, x):
    return seanet_time_major(layers, x)  # offline: zero left context, no states


@pytest.mark.parametrize("chunk_bytes", [1, 3000, 20000, 1 << 30])
@pytest.mark.parametrize("frames", [1, 7, 23])
def test_stages_compute_the_whole_input_pass(chunk_bytes, frames):
    cfg = MimiConfig.tiny().seanet
    torch.manual_seed(0)
    enc, dec = SeanetEncoder(cfg).eval(), SeanetDecoder(cfg).eval()
    x = torch.randn(2, frames * cfg.hop_length, 1)  # time-major audio [B, T, 1]
    want = _whole_pass(enc.layers, x)  # [B, frames, D]
    with enc.streaming(2):
        got = run_stages(plan_stages(enc.layers, cfg.hop_length, chunk_bytes), seanet_time_major, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    z = torch.randn(2, frames, cfg.dimension)
    want = _whole_pass(dec.layers, z)  # [B, frames * hop, 1]
    with dec.streaming(2):
        got = run_stages(plan_stages(dec.layers, 1, chunk_bytes), seanet_time_major, z)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_every_stage_sees_chunks_of_its_size_and_then_its_tail():
    cfg = MimiConfig.tiny().seanet
    enc = SeanetEncoder(cfg).eval()
    stages = plan_stages(enc.layers, cfg.hop_length, chunk_bytes=20000)
    seen: dict[int, list[int]] = {}

    def run(layers, chunk):
        seen.setdefault(id(layers), []).append(chunk.shape[1])
        return seanet_time_major(layers, chunk)

    frames = 13
    with enc.streaming(1):
        run_stages(stages, run, torch.randn(1, frames * cfg.hop_length, 1))
    for s in stages:
        sizes = seen[id(s.layers)]
        assert sum(sizes) == frames * s.rows_per_frame  # every row once
        assert all(n == s.chunk_rows for n in sizes[:-1]) and 0 < sizes[-1] <= s.chunk_rows
