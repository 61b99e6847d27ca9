"""Causal (transposed) convolutions: streaming == offline, output lengths, streaming state API."""

from __future__ import annotations

import math

import pytest
import torch

from mimi.modules.conv import ConvState, StreamingConv1d, StreamingConvTranspose1d
from mimi.modules.streaming import StreamingContainer, StreamingSnapshot


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _conv(kernel, stride, dilation=1, pad_mode="constant", groups=1, channels=6, out=6, bias=True, seed=0):
    torch.manual_seed(seed)
    conv = StreamingConv1d(channels, out, kernel, stride=stride, dilation=dilation, groups=groups,
                           bias=bias, pad_mode=pad_mode)
    if bias:
        conv.conv.bias.normal_()  # a visible bias, so bias handling is exercised
    return conv


def _stream(module, x, chunks, batch_size=None):
    """Feed x [B, C, T] in chunks of the given lengths (summing to T) inside one stream."""
    assert sum(chunks) == x.shape[-1]
    outs, pos = [], 0
    with module.streaming(batch_size=batch_size or x.shape[0]):
        for n in chunks:
            outs.append(module(x[..., pos:pos + n]))
            pos += n
    return torch.cat(outs, dim=-1)


# (kernel, stride, dilation, pad_mode, groups)
CONV_CASES = [
    (3, 1, 1, "constant", 1),
    (3, 1, 2, "replicate", 1),
    (7, 1, 1, "constant", 3),
    (3, 1, 4, "constant", 6),
    (4, 2, 1, "constant", 1),
    (4, 2, 1, "replicate", 1),
    (8, 4, 1, "replicate", 2),
    (10, 5, 1, "constant", 1),
    (5, 3, 2, "replicate", 3),
    (2, 2, 1, "constant", 1),  # kernel == stride: no left context at all
    (16, 8, 1, "replicate", 1),
]


@pytest.mark.parametrize("kernel,stride,dilation,pad_mode,groups", CONV_CASES)
def test_conv1d_streaming_matches_offline(kernel, stride, dilation, pad_mode, groups):
    conv = _conv(kernel, stride, dilation, pad_mode, groups)
    g = torch.Generator().manual_seed(1)
    frames = [1, 3, 0, 2, 5, 1, 4]  # chunk sizes in strides, including an empty chunk
    x = torch.randn(2, 6, sum(frames) * stride, generator=g) + 0.5  # offset: replicate != zero padding
    offline = conv(x)
    streamed = _stream(conv, x, [f * stride for f in frames])
    assert offline.shape == (2, 6, sum(frames))
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_conv1d_replicate_padding_differs_from_zero_padding():
    """Sanity check that the replicate cases above actually test something different."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 16, generator=g) + 3.0
    a = _conv(4, 2, pad_mode="replicate")(x)
    b = _conv(4, 2, pad_mode="constant")(x)
    assert not torch.allclose(a[..., :1], b[..., :1])
    torch.testing.assert_close(a[..., 1:], b[..., 1:])  # only the first frame sees the padding


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 1, 1), (4, 2, 1), (10, 5, 1), (5, 3, 2), (2, 2, 1)])
@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_conv1d_offline_length_is_ceil(kernel, stride, dilation, pad_mode):
    conv = _conv(kernel, stride, dilation, pad_mode)
    assert conv.output_length(1) == 1
    for T in range(1, 4 * stride + 2):
        y = conv(torch.randn(1, 6, T))
        assert y.shape[-1] == math.ceil(T / stride) == conv.output_length(T)


def test_conv1d_offline_is_causal():
    conv = _conv(6, 2, 1, "constant")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 20, generator=g)
    x2 = x.clone()
    x2[..., 10:] = torch.randn(1, 6, 10, generator=g)
    y, y2 = conv(x), conv(x2)
    torch.testing.assert_close(y[..., :5], y2[..., :5], atol=1e-6, rtol=0)  # frames ending before 10
    assert not torch.allclose(y[..., 5:], y2[..., 5:])


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_conv1d_streaming_chunk_not_multiple_of_stride_raises(stride):
    conv = _conv(2 * stride, stride)
    with conv.streaming(batch_size=1):
        conv(torch.randn(1, 6, stride))
        with pytest.raises(ValueError):
            conv(torch.randn(1, 6, stride + 1))


def test_conv1d_bad_pad_mode_raises():
    with pytest.raises(ValueError):
        StreamingConv1d(2, 2, 3, pad_mode="reflect")


@pytest.mark.parametrize("kernel,stride", [(1, 2), (3, 4)])
def test_conv1d_stride_larger_than_kernel_is_refused(kernel, stride):
    """Offline and streaming would disagree on which samples to skip: refuse at construction."""
    with pytest.raises(ValueError, match="larger than the effective kernel"):
        _conv(kernel, stride)


# -- transposed conv ------------------------------------------------------------------------

def _convtr(kernel, stride, groups=1, bias=True, channels=6, out=6, seed=0):
    torch.manual_seed(seed)
    convtr = StreamingConvTranspose1d(channels, out, kernel, stride=stride, groups=groups, bias=bias)
    if bias:
        convtr.convtr.bias.normal_()
    return convtr


# (kernel, stride, groups, bias)
CONVTR_CASES = [
    (4, 2, 1, True),
    (4, 2, 1, False),
    (4, 2, 6, False),  # depthwise, as the released upsampler
    (6, 3, 6, True),
    (16, 8, 2, True),
    (10, 5, 1, True),
    (3, 1, 1, True),
    (5, 5, 1, True),  # kernel == stride: no overlap-add tail
    (12, 2, 3, True),  # tail longer than one chunk's output
]


@pytest.mark.parametrize("kernel,stride,groups,bias", CONVTR_CASES)
def test_convtr_streaming_matches_offline(kernel, stride, groups, bias):
    convtr = _convtr(kernel, stride, groups, bias)
    g = torch.Generator().manual_seed(5)
    chunks = [1, 2, 1, 0, 5, 3, 1]
    x = torch.randn(2, 6, sum(chunks), generator=g)
    offline = convtr(x)
    assert offline.shape == (2, 6, sum(chunks) * stride)
    streamed = _stream(convtr, x, chunks)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel,stride,groups,bias", CONVTR_CASES)
def test_convtr_offline_length_and_causality(kernel, stride, groups, bias):
    convtr = _convtr(kernel, stride, groups, bias)
    for T in range(1, 6):
        assert convtr(torch.randn(1, 6, T)).shape == (1, 6, T * stride)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 6, 8, generator=g)
    x2 = x.clone()
    x2[..., 4:] += 1.0
    y, y2 = convtr(x), convtr(x2)
    torch.testing.assert_close(y[..., :4 * stride], y2[..., :4 * stride], atol=1e-6, rtol=0)
    assert not torch.allclose(y[..., 4 * stride:], y2[..., 4 * stride:])


def test_convtr_offline_equals_trimmed_torch_convtr():
    convtr = _convtr(8, 4, 1, True)
    x = torch.randn(2, 6, 5)
    full = torch.nn.functional.conv_transpose1d(x, convtr.convtr.weight, convtr.convtr.bias, stride=4)
    torch.testing.assert_close(convtr(x), full[..., :20])


def test_convtr_kernel_smaller_than_stride_raises():
    with pytest.raises(ValueError):
        StreamingConvTranspose1d(2, 2, 2, stride=3)


# -- streaming state API --------------------------------------------------------------------

class _Stack(StreamingContainer):
    """conv -> convtr -> conv, to exercise tree-wide snapshot / restore."""

    def __init__(self):
        super().__init__()
        self.a = _conv(4, 2, pad_mode="replicate", seed=1)
        self.b = _convtr(4, 2, seed=2)
        self.c = _conv(3, 1, dilation=2, seed=3)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


@pytest.mark.parametrize("make", [lambda: _conv(6, 2, pad_mode="replicate"), lambda: _convtr(6, 2), _Stack],
                         ids=["conv", "convtr", "stack"])
def test_snapshot_restore_replays_identically(make):
    module = make()
    g = torch.Generator().manual_seed(7)
    x0, a, b = (torch.randn(2, 6, 8, generator=g) for _ in range(3))
    with module.streaming(batch_size=2):
        module(x0)
        snap = module.snapshot()
        assert isinstance(snap, StreamingSnapshot)
        ya1 = module(a)
        yb1 = module(b)
        module.restore(snap)
        ya2 = module(a)
        yb2 = module(b)
        # the snapshot is a copy: continuing the stream did not alter it, so it can be used twice
        module.restore(snap)
        ya3 = module(a)
    assert torch.equal(ya1, ya2) and torch.equal(yb1, yb2) and torch.equal(ya1, ya3)
    # and the replay is the real continuation, not e.g. a fresh stream
    with module.streaming(batch_size=2):
        fresh = module(a)
    assert not torch.allclose(fresh, ya1)


def test_snapshot_before_first_chunk_restores_replicate_start():
    """Restoring a snapshot taken before any input must bring back the 'not started' flag, so the
    replicate padding is taken from the next first sample again."""
    conv = _conv(6, 2, pad_mode="replicate")
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(1, 6, 8, generator=g) + 2, torch.randn(1, 6, 8, generator=g) - 2
    with conv.streaming(batch_size=1):
        snap = conv.snapshot()
        conv(a)
        assert conv.state.started
        conv.restore(snap)
        assert not conv.state.started
        yb = conv(b)
    torch.testing.assert_close(yb, conv(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [lambda: _conv(6, 2, pad_mode="replicate"), lambda: _convtr(6, 2), _Stack],
                         ids=["conv", "convtr", "stack"])
def test_reset_streaming_restarts(make):
    module = make()
    g = torch.Generator().manual_seed(9)
    x0, x1 = torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    with module.streaming(batch_size=2):
        first = module(x0)
        second = module(x0)
        module.reset_streaming()
        again = module(x0)
        assert module._batch_size == 2
        module(x1)
    assert not torch.allclose(first, second)  # the state matters
    assert torch.equal(first, again)


def test_nested_streaming_raises_and_state_lifecycle():
    stack = _Stack()
    assert stack.a.state is None and stack.b.state is None and not stack.is_streaming
    with stack.streaming(batch_size=3):
        assert isinstance(stack.a.state, ConvState)
        assert stack.a.state.previous.shape == (3, 6, 2)
        assert stack.b.state.previous.shape == (3, 6, 1)  # taps - 1 = kernel / stride - 1 input frames
        with pytest.raises(RuntimeError):
            with stack.streaming(batch_size=3):
                pass
        with pytest.raises(RuntimeError):  # nesting on a submodule is refused too
            with stack.a.streaming(batch_size=1):
                pass
        assert stack.a.is_streaming  # the failed nested call did not clear the outer stream
    assert all(m.state is None for m in (stack, stack.a, stack.b, stack.c))
    # an exception inside the context clears the state as well
    with pytest.raises(KeyError):
        with stack.streaming(batch_size=1):
            raise KeyError("boom")
    assert stack.a.state is None


def test_state_api_errors_outside_or_across_streams():
    conv, other = _conv(4, 2), _Stack()
    with pytest.raises(RuntimeError):
        conv.snapshot()
    with pytest.raises(RuntimeError):
        conv.reset_streaming()
    with pytest.raises(ValueError):
        with conv.streaming(batch_size=0):
            pass
    with other.streaming(batch_size=1):
        foreign = other.snapshot()
    with conv.streaming(batch_size=1):
        with pytest.raises(ValueError):
            conv.restore(foreign)


@pytest.mark.parametrize("kernel,stride,groups,bias", CONVTR_CASES)
def test_convtr_polyphase_equals_torch_conv_transpose(kernel, stride, groups, bias):
    """The polyphase computation gives nn.ConvTranspose1d's output, causally trimmed."""
    convtr = _convtr(kernel, stride, groups, bias)
    x = torch.randn(2, 6, 13, generator=torch.Generator().manual_seed(9))
    reference = convtr.convtr(x)[..., : 13 * stride]
    torch.testing.assert_close(convtr(x), reference, atol=1e-5, rtol=1e-5)


def test_convtr_polyphase_weights_follow_weight_updates():
    convtr = _convtr(4, 2).requires_grad_(False)
    x = torch.randn(1, 6, 5)
    before = convtr(x)
    with torch.no_grad():
        convtr.convtr.weight.mul_(2.0)  # in place: the cached polyphase weights must refresh
    torch.testing.assert_close(convtr(x) - convtr.convtr.bias[:, None], 2 * (before - convtr.convtr.bias[:, None]))


def test_convtr_polyphase_weights_cached_under_no_grad_only():
    """Trainable weights under `torch.no_grad()` (inference with a freshly built model) reuse the
    polyphase weights; a grad-enabled forward recomputes them so gradients flow."""
    convtr = _convtr(4, 2)  # requires_grad parameters
    with torch.no_grad():
        first, _ = convtr.polyphase_weights()
        assert convtr.polyphase_weights()[0] is first  # cached
        convtr.convtr.weight.add_(1.0)  # an optimizer step: the cache refreshes
        assert not torch.equal(convtr.polyphase_weights()[0], first)
    with torch.enable_grad():  # this module's tests otherwise run under no_grad
        v, _ = convtr.polyphase_weights()
        assert v.requires_grad and v.grad_fn is not None
        convtr(torch.randn(1, 6, 5)).sum().backward()
    assert convtr.convtr.weight.grad is not None and convtr.convtr.weight.grad.abs().sum() > 0
