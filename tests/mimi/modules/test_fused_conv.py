"""The compiled time-major conv with its fused epilogue (`fused_cpu.conv_rows`, `fused_conv.c`)
against a float64 reference, and `time_major.conv1d_fused` with it against the BLAS path,
offline and streaming in chunks of every size."""

from __future__ import annotations

import itertools

import pytest
import torch

from mimi.modules import fused_cpu, time_major
from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d


def _width() -> int:
    width = fused_cpu.conv_vector_width()
    if width is None:
        pytest.skip("no C compiler (or MIMI_FUSED_CPU=0): the compiled conv is not in use")
    return width


def _reference(x, w, base, n_out, dilation=1, context=None, bias=None, add=None):
    """v[t] = bias + add[t] + sum_j x[t + base + j d] @ w[j] in float64; rows before x come from
    the context, rows outside both are zeros."""
    k = w.shape[0]
    ctx_rows = 0 if context is None else context.shape[0]
    rows = x.double() if context is None else torch.cat([context.double(), x.double()])  # row r at r + ctx_rows
    v = torch.zeros(n_out, w.shape[2], dtype=torch.float64)
    for t in range(n_out):
        for j in range(k):
            src = t + base + j * dilation + ctx_rows
            if 0 <= src < rows.shape[0] and t + base + j * dilation < x.shape[0]:
                v[t] += rows[src] @ w[j].double()
    if bias is not None:
        v += bias.double()
    if add is not None:
        v += add.double()
    return v


def _elu64(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v > 0, v, torch.expm1(v))


def _tol(x, w, bias=None, add=None, ctx=None) -> float:
    """Float32 rounding of sums of k * C_in products: a few ulp of their largest magnitude."""
    scale = x.abs().max().item() * w.abs().sum(dim=(0, 1)).max().item()
    if ctx is not None and ctx.numel():
        scale = max(scale, ctx.abs().max().item() * w.abs().sum(dim=(0, 1)).max().item())
    for extra in (bias, add):
        scale += 0 if extra is None or not extra.numel() else extra.abs().max().item()
    return 4e-7 * max(scale, 1.0)


# (C_in, C_out in vectors, taps, dilation, base, x rows, n_out, context rows)
GEOMETRIES = [
    (64, 2, 3, 1, -2, 200, 200, 0),  # a residual conv k3, offline (zeros before the input)
    (32, 4, 1, 1, 0, 257, 257, 0),  # a 1x1 conv, rows not a multiple of any tile
    (1, 4, 7, 1, -6, 130, 130, 6),  # the first encoder conv (one input channel), streaming context
    (64, 8, 2, 1, -1, 50, 50, 1),  # a strided conv as two block taps (rows of s samples)
    (16, 1, 3, 3, -6, 40, 40, 6),  # dilation 3, one vector of outputs
    (8, 2, 3, 1, -2, 5, 5, 2),  # fewer rows than one tile: every row on the edge path
    (8, 2, 3, 1, -2, 4, 0, 2),  # no output at all
    (24, 2, 5, 2, -8, 30, 30, 3),  # a context shorter than the reach: older rows are zeros
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "cin{}_v{}_k{}_d{}_b{}_n{}_ctx{}".format(*g[:5], g[6], g[7]))
@pytest.mark.parametrize("bias,add,elu,keep", [
    (False, False, False, False), (True, False, False, False), (True, False, True, False),
    (True, True, True, True), (False, True, False, False), (True, True, False, True)])
def test_matches_float64_reference(geometry, bias, add, elu, keep):
    width = _width()
    c_in, vectors, k, d, base, rows, n_out, ctx_rows = geometry
    c_out = vectors * width
    g = torch.Generator().manual_seed(sum(geometry))
    x = torch.randn(rows, c_in, generator=g)
    w = torch.randn(k, c_in, c_out, generator=g) / (k * c_in) ** 0.5
    ctx = torch.randn(ctx_rows, c_in, generator=g) if ctx_rows else None
    b = torch.randn(c_out, generator=g) if bias else None
    a = torch.randn(n_out, c_out, generator=g) if add else None
    pre = torch.full((n_out, c_out), float("nan")) if keep else None
    out = fused_cpu.conv_rows(x, w, base=base, n_out=n_out, dilation=d, context=ctx, bias=b, add=a, elu=elu,
                              sum_out=pre)
    v = _reference(x, w, base, n_out, d, ctx, b, a)
    tol = _tol(x, w, b, a, ctx)
    assert out.shape == (n_out, c_out) and out.dtype == torch.float32
    if n_out:
        assert (out.double() - (_elu64(v) if elu else v)).abs().max().item() <= tol
        if keep:
            assert (pre.double() - v).abs().max().item() <= tol


def test_block_rows_of_a_strided_conv_equal_conv1d():
    """A causal strided conv, kernel 2s, as two block taps on rows of s samples: the sums of
    torch's conv1d on the left-padded input."""
    width = _width()
    s, c_in, c_out, T = 4, 16, 2 * width, 96
    x = torch.randn(T, c_in)
    weight = torch.randn(c_out, c_in, 2 * s) / (2 * s * c_in) ** 0.5  # nn.Conv1d layout
    bias = torch.randn(c_out)
    w = weight.permute(2, 1, 0).reshape(2, s * c_in, c_out).contiguous()  # rows (tap, c_in) per block
    got = fused_cpu.conv_rows(x.view(T // s, s * c_in), w, base=-1, n_out=T // s, bias=bias)
    want = torch.nn.functional.conv1d(torch.nn.functional.pad(x.t()[None], (s, 0)), weight, bias, stride=s)[0].t()
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_large_inputs_on_one_or_two_threads_agree_exactly(threads):
    """The rows are split between OpenMP threads by whole tiles: the sums are the same."""
    width = _width()
    x, w, b = torch.randn(5000, 64), torch.randn(3, 64, 2 * width) / 14, torch.randn(2 * width)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused_cpu.conv_rows(x, w, base=-2, n_out=5000, bias=b, elu=True)
        torch.set_num_threads(threads)
        again = fused_cpu.conv_rows(x, w, base=-2, n_out=5000, bias=b, elu=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, again)
    v = _reference(x[:300], w, -2, 300, bias=b)
    assert (one[:300].double() - _elu64(v)).abs().max() <= _tol(x, w, b)


def test_elu_epilogue_matches_f_elu_and_passes_nan():
    width = _width()
    x = torch.linspace(-100, 20, 3 * width).view(3 * width, 1)  # the whole exp range, and positives
    w = torch.ones(1, 1, width)
    out = fused_cpu.conv_rows(x, w, base=0, n_out=x.shape[0], elu=True)
    torch.testing.assert_close(out, torch.nn.functional.elu(x.expand(-1, width)), atol=6e-8, rtol=1e-6)
    x[5, 0] = float("nan")
    out = fused_cpu.conv_rows(x, w, base=0, n_out=x.shape[0], elu=True)
    assert out[5].isnan().all() and not out[6:].isnan().any()


def test_bad_arguments_are_value_errors():
    width = _width()
    x, w = torch.randn(10, 4), torch.randn(3, 4, width)
    with pytest.raises(ValueError, match="output channels"):
        fused_cpu.conv_rows(x, torch.randn(3, 4, width + 1), base=-2, n_out=10)
    with pytest.raises(ValueError, match="x must be"):
        fused_cpu.conv_rows(torch.randn(10, 5), w, base=-2, n_out=10)
    with pytest.raises(ValueError, match="x must be"):
        fused_cpu.conv_rows(x.double(), w, base=-2, n_out=10)
    with pytest.raises(ValueError, match="w must be"):
        fused_cpu.conv_rows(x, w.transpose(0, 1).contiguous().transpose(0, 1), base=-2, n_out=10)
    with pytest.raises(ValueError, match="add must be"):
        fused_cpu.conv_rows(x, w, base=-2, n_out=10, add=torch.randn(9, width))
    with pytest.raises(ValueError, match="bias must be"):
        fused_cpu.conv_rows(x, w, base=-2, n_out=10, bias=torch.randn(width, dtype=torch.float64))
    with pytest.raises(ValueError, match="context must be"):
        fused_cpu.conv_rows(x, w, base=-2, n_out=10, context=torch.randn(2, 3))


# -- conv1d_fused: the kernel against the BLAS path -------------------------------------------

@pytest.fixture
def kernel_everywhere(monkeypatch):
    """Every eligible conv on the compiled kernel, whatever the vector width or weight size."""
    _width()
    monkeypatch.setattr(time_major, "KERNEL_VECTOR_WIDTH", 0)
    monkeypatch.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 1 << 40)


def _conv(c_in, c_out, k, s, d=1, seed=0) -> StreamingConv1d:
    torch.manual_seed(seed)
    m = StreamingConv1d(c_in, c_out, k, stride=s, dilation=d).eval()
    with torch.no_grad():
        m.conv.bias.normal_()
    return m


CONVS = [(64, 32, 3, 1, 1), (32, 64, 1, 1, 1), (1, 64, 7, 1, 1), (64, 128, 8, 4, 1), (16, 32, 3, 1, 2),
         (8, 16, 10, 5, 1)]


def _chunks(T: int, s: int, sizes):
    """Cut [0, T) into chunks of the given sizes (multiples of s), cycling."""
    bounds, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= T:
            return bounds
        bounds.append((start, min(T, start + size * s)))
        start += size * s


@pytest.mark.parametrize("spec", CONVS, ids=lambda c: "{}to{}_k{}_s{}_d{}".format(*c))
@pytest.mark.parametrize("streaming", [False, True], ids=["offline", "streaming"])
def test_conv1d_fused_kernel_equals_blas_path(spec, streaming, kernel_everywhere, monkeypatch):
    c_in, c_out, k, s, d = spec
    if c_out % _width():
        pytest.skip(f"{c_out} channels are not whole vectors of {_width()}")
    m = _conv(c_in, c_out, k, s, d)
    T, B = 120 * s, 2
    x = torch.randn(B, T, c_in)
    add = torch.randn(B, T // s, c_out)
    assert time_major._kernel_weights(m, x) is not None

    def run(kernel: bool, elu: bool, with_add: bool):
        if not kernel:
            monkeypatch.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 0)
        try:
            if not streaming:
                f = time_major.conv1d_fused(m, x, add if with_add else None, elu=elu, keep_pre=True)
                return f.out, f.pre
            outs, pres = [], []
            with m.streaming(B):  # chunks shorter than the context, of one stride, and long ones
                for lo, hi in _chunks(T, s, [1, 3, 0, 40, 2, 17]):
                    f = time_major.conv1d_fused(m, x[:, lo:hi], add[:, lo // s:hi // s] if with_add else None,
                                                elu=elu, keep_pre=True)
                    outs.append(f.out)
                    pres.append(f.pre)
            return torch.cat(outs, 1), torch.cat(pres, 1)
        finally:
            monkeypatch.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 1 << 40)

    with torch.no_grad():
        for elu, with_add in [(False, False), (True, False), (True, True)]:
            got, want = run(True, elu, with_add), run(False, elu, with_add)
            scale = want[1].abs().max()
            assert got[0].shape == want[0].shape == (B, T // s, c_out)
            assert ((got[0] - want[0]).abs().max() / scale).item() < 2e-6
            assert ((got[1] - want[1]).abs().max() / scale).item() < 2e-6
            if not elu and not streaming:
                assert got[1] is got[0]  # without the ELU, v is the output


def test_streaming_state_after_the_kernel_is_the_blas_paths(kernel_everywhere, monkeypatch):
    """Both paths leave the same carried samples, so a stream may switch between them."""
    m = _conv(64, 32, 3, 1)
    x = torch.randn(1, 50, 64)
    with torch.no_grad():
        with m.streaming(1):
            time_major.conv1d_fused(m, x[:, :1])  # shorter than the context
            time_major.conv1d_fused(m, x[:, 1:30])
            kernel_state = m.state.previous.clone()
        monkeypatch.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 0)
        with m.streaming(1):
            time_major.conv1d_fused(m, x[:, :1])
            time_major.conv1d_fused(m, x[:, 1:30])
            assert torch.equal(m.state.previous, kernel_state)
            assert torch.equal(kernel_state, x[:, 28:30].transpose(1, 2))


def test_which_convs_take_the_kernel(monkeypatch):
    """By default: weights up to KERNEL_MAX_WEIGHT_BYTES, whole vectors of outputs, float32,
    strided convs only as block taps, and only with AVX-512-wide vectors."""
    width = _width()
    x = torch.randn(1, 64, 64)
    monkeypatch.setattr(time_major, "KERNEL_VECTOR_WIDTH", width)  # whatever this machine has
    assert time_major._kernel_weights(_conv(64, 32, 3, 1), x) is not None
    assert time_major._kernel_weights(_conv(64, 128, 8, 4), x) is None  # 256 KB of weights: BLAS
    assert time_major._kernel_weights(_conv(64, width + 1, 3, 1), x) is None
    assert time_major._kernel_weights(_conv(64, 32, 3, 1), x.double()) is None
    assert time_major._kernel_weights(_conv(64, 32, 6, 4), x) is None  # kernel 6, stride 4: no blocks
    assert time_major._kernel_weights(_conv(64, 32, 8, 4), x[:, :62]) is None  # a partial last block
    monkeypatch.setattr(time_major, "KERNEL_VECTOR_WIDTH", width + 1)
    assert time_major._kernel_weights(_conv(64, 32, 3, 1), x) is None


@pytest.mark.parametrize("spec", [(32, 16, 8, 4), (16, 32, 10, 5), (32, 16, 4, 4)], ids=lambda c: "{}to{}_k{}_s{}".format(*c))
@pytest.mark.parametrize("streaming", [False, True], ids=["offline", "streaming"])
def test_conv_transpose1d_fused_kernel_equals_blas_path(spec, streaming, kernel_everywhere, monkeypatch):
    """A causal transposed conv in polyphase form (S phases of C_out per input frame) on the
    kernel, with its bias and ELU, against the BLAS GEMMs and the fused pass."""
    c_in, c_out, k, s = spec
    if (s * c_out) % _width():
        pytest.skip(f"{s * c_out} phase channels are not whole vectors of {_width()}")
    torch.manual_seed(1)
    m = StreamingConvTranspose1d(c_in, c_out, k, stride=s).eval()
    with torch.no_grad():
        m.convtr.bias.normal_()
    B, T = 2, 60
    x = torch.randn(B, T, c_in)
    assert time_major._convtr_kernel_weights(m, x) is not None

    def run(kernel: bool, elu: bool):
        if not kernel:
            monkeypatch.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 0)
        try:
            if not streaming:
                f = time_major.conv_transpose1d_fused(m, x, elu=elu, keep_pre=True)
                return f.out, f.pre
            outs, pres = [], []
            with m.streaming(B):
                for lo, hi in _chunks(T, 1, [1, 0, 7, 2, 30]):
                    f = time_major.conv_transpose1d_fused(m, x[:, lo:hi], elu=elu, keep_pre=True)
                    outs.append(f.out)
                    pres.append(f.pre)
                state = m.state.previous.clone()
            return torch.cat(outs, 1), torch.cat(pres, 1), state
        finally:
            monkeypatch.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 1 << 40)

    with torch.no_grad():
        for elu in (False, True):
            got, want = run(True, elu), run(False, elu)
            scale = want[1].abs().max()
            assert got[0].shape == want[0].shape == (B, T * s, c_out)
            assert ((got[0] - want[0]).abs().max() / scale).item() < 2e-6
            assert ((got[1] - want[1]).abs().max() / scale).item() < 2e-6
            if streaming:
                assert torch.equal(got[2], want[2])  # the same carried frames
    # and against torch's own transposed conv, trimmed causally
    with torch.no_grad():
        ref = m.convtr(x.transpose(1, 2))[..., :T * s].transpose(1, 2)
        torch.testing.assert_close(time_major.conv_transpose1d_fused(m, x).out, ref, atol=2e-5, rtol=1e-5)
