"""Offline SEANet inference as a stream whose chunk size changes with the sample rate.

Why. A SEANet stack runs at rates from 24 kHz (64 channels) down to 25 Hz (1024 channels).
One chunk size cannot suit every layer: at the high rates an activation of 20 s is 120 MB, so
whole-input passes stream every elementwise op through DRAM and freshly faulted pages, while at
the low rates the weights are large (33 MB for the last downsampling conv) and a GEMM over a
few dozen rows spends its time reading them. So the stack is cut into *rate stages* at its
strided layers, and each stage runs on chunks sized for it: a few MB of activations for the
high-rate stages (they stay in cache), hundreds of frames for the low-rate ones (large GEMMs).

How. Inside `streaming(batch)`, every conv carries its left context across calls, so feeding
the layers any sequence of chunks (multiples of their strides) gives the outputs of one
whole-input pass. `run_stages` pushes the input through the stages: stage g collects the
outputs of stage g - 1 until it has `chunk_rows` rows, runs them, and passes its own outputs
on; at the end every stage runs what it still holds. The sums are the same as those of a
whole-input pass, in the same order within each output row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d

__all__ = ["RateStage", "plan_stages", "run_stages"]

MAX_STAGE_FRAMES = 512  # low-rate stages: at most this many 25 Hz frames per chunk


@dataclass(frozen=True)
class RateStage:
    layers: tuple[nn.Module, ...]  # consecutive top-level layers of the stack
    rows_per_frame: int  # input rows (samples) of this stage per 25 Hz frame of the stack
    chunk_rows: int  # run once this many input rows have arrived (a multiple of rows_per_frame)


def _floats_per_frame(layers: list[nn.Module], rows: int) -> tuple[int, int]:
    """The widest activation inside these layers (floats per 25 Hz frame, inputs at `rows`
    rows per frame), and the rows per frame after them."""
    widest = 0
    for m in layers:
        for sub in m.modules():
            if isinstance(sub, StreamingConv1d):
                widest = max(widest, sub.conv.in_channels * rows)
                rows //= sub.stride
                widest = max(widest, sub.conv.out_channels * rows)
            elif isinstance(sub, StreamingConvTranspose1d):
                widest = max(widest, sub.convtr.in_channels * rows)
                rows *= sub.stride
                widest = max(widest, sub.convtr.out_channels * rows)
    return max(widest, 1), rows


def plan_stages(layers: nn.Sequential, rows_per_frame: int, chunk_bytes: int) -> tuple[RateStage, ...]:
    """Cut a SEANet stack into rate stages and size their chunks.

    Cuts go where the data is smallest: after each strided conv (encoder: it halves the data)
    and before each transposed conv (decoder: it doubles it). `rows_per_frame` is the stack's
    input rows per 25 Hz frame (the encoder's hop, or 1 for the decoder). A stage's chunk holds
    about `chunk_bytes` of its widest float32 activation, between 1 and `MAX_STAGE_FRAMES`
    frames."""
    groups: list[list[nn.Module]] = [[]]
    for layer in layers:
        if isinstance(layer, StreamingConvTranspose1d) and groups[-1]:
            groups.append([])
        groups[-1].append(layer)
        if isinstance(layer, StreamingConv1d) and layer.stride > 1:
            groups.append([])
    stages, rows = [], rows_per_frame
    for group in filter(None, groups):
        floats, after = _floats_per_frame(group, rows)
        frames = max(1, min(MAX_STAGE_FRAMES, chunk_bytes // (4 * floats)))
        stages.append(RateStage(tuple(group), rows, frames * rows))
        rows = after
    return tuple(stages)


def run_stages(stages: tuple[RateStage, ...], run: Callable[[tuple[nn.Module, ...], torch.Tensor], torch.Tensor],
               x: torch.Tensor) -> torch.Tensor:
    """Push time-major x [B, T, C] (T a multiple of the first stage's `rows_per_frame`) through
    the stages, `run(layers, chunk)` computing one chunk of one stage; the layers must be
    streaming. Returns the concatenated outputs [B, T', C']."""
    pending: list[list[torch.Tensor]] = [[] for _ in stages]
    outputs: list[torch.Tensor] = []

    def take(g: int, rows: int | None) -> torch.Tensor:
        """The first `rows` (None: all) pending rows of stage g; the rest stay pending."""
        held = pending[g][0] if len(pending[g]) == 1 else torch.cat(pending[g], dim=1)
        head = held if rows is None else held[:, :rows]
        pending[g] = [held[:, rows:]] if rows is not None and held.shape[1] > rows else []
        return head

    def push(g: int, y: torch.Tensor) -> None:
        if g == len(stages):
            outputs.append(y)
            return
        pending[g].append(y)
        while sum(p.shape[1] for p in pending[g]) >= stages[g].chunk_rows:
            push(g + 1, run(stages[g].layers, take(g, stages[g].chunk_rows)))

    first = stages[0].chunk_rows
    for start in range(0, x.shape[1], first):
        push(0, x[:, start:start + first])
    for g in range(len(stages)):  # the tails, in stage order
        if pending[g]:
            push(g + 1, run(stages[g].layers, take(g, None)))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
