"""SEANet inference in time-major layout: every convolution as a few large matrix products.

Why. On CPU, PyTorch's `conv1d` on Mimi's high-rate layers (64-128 channels over 480 k / 120 k
samples for 20 s of audio) reaches only a few to a few tens of GFLOP/s. The same sums written
as GEMMs on activations laid out [B, T, C] (time-major) run at BLAS speed, need no im2col copy
and no padding copy, and make the phase interleave of the transposed convs free.

How. With x time-major, one tap j of a causal conv (kernel k, stride s, dilation d, left
padding P = (k - 1) d + 1 - s) adds `x[t s + j d - P] @ W_j` to output t: a strided row view
of x (row stride s * C_in, a valid BLAS leading dimension) times W_j [C_in, C_out]. Rows whose
source sample falls in the padding are zeros: those rows are simply skipped. When d = 1 and
s divides k (the strided downsampling convs, kernel 2s), s consecutive taps read s consecutive
samples, i.e. one contiguous block of s * C_in values per output: the conv is k / s GEMMs with
an inner dimension s * C_in. A causal transposed conv (kernel n S, stride S) in polyphase form
is `y[m S + p] = sum_j x[m - j] @ V_j[:, p]`: n GEMMs whose [T, S * C_out] result, read as
[T * S, C_out], is already the interleaved output.

Same sums as the channels-first convs, in another order. Each conv's bias, the ELU that
follows it and the residual skip add run as its epilogue (`conv1d_fused`): inside the compiled
conv kernel for the thin high-rate convs (`fused_cpu.conv_rows`, register tiles, weights up to
`KERNEL_MAX_WEIGHT_BYTES`), else as one fused pass after the BLAS GEMMs (`fused_cpu.add_elu`);
without a compiler, the same as torch ops. ELU from `exp` instead of the slow `expm1`: outputs
agree to float rounding (tests compare them). Offline or one
streaming chunk at a time (the convs' states are shared with the channels-first path).
Inference only (no autograd through the cached weights), `pad_mode="constant"` and `groups=1`
only: `supports` says whether a SEANet stack can take this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from mimi.modules import fused_cpu
from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from mimi.modules.fused_cpu import add_elu, elu
from mimi.modules.tensor_key import tensor_key

__all__ = ["supports", "seanet_time_major", "conv1d_time_major", "conv1d_fused", "conv_transpose1d_time_major",
           "conv_transpose1d_fused", "elu"]


def _conv_ok(m: nn.Module) -> bool:
    if isinstance(m, StreamingConv1d):
        return m.pad_mode == "constant" and m.conv.groups == 1
    if isinstance(m, StreamingConvTranspose1d):
        return m.convtr.groups == 1
    return True


def supports(layers: nn.Sequential) -> bool:
    """Whether every conv of this SEANet stack can run time-major (constant padding, groups=1)."""
    return all(_conv_ok(m) for m in layers.modules())


def _cached(module: nn.Module, build) -> tuple[torch.Tensor, ...]:
    """GEMM-ready weights of `module`, rebuilt when its parameters change (in-place updates bump
    `_version`, `load_state_dict(assign=True)` and `.to()` change the tensors themselves; see
    `mimi.modules.tensor_key`)."""
    params = tuple(module.parameters(recurse=True))
    key = tuple(tensor_key(p) for p in params)
    cache = getattr(module, "_time_major_cache", None)
    if cache is not None and cache[0] == key:
        return cache[1]
    with torch.no_grad():
        value = build()
    module._time_major_cache = (key, value)
    return value


# Streaming chunks of at most SMALL_CHUNK x the context rows are computed from [context; chunk]
# (one copy of a small chunk, one set of GEMMs); larger ones (offline stages) compute the
# chunk in place and redo only the outputs that read the context.
SMALL_CHUNK = 8


def _conv_weights(m: StreamingConv1d) -> tuple[torch.Tensor, torch.Tensor | None]:
    def build():
        w = m.conv.weight  # [C_out, C_in, k]
        # [k * C_in, C_out], rows (tap, c_in), as the transposed view of a contiguous [C_out, k * C_in]:
        # the same speed for long inputs, ~1.8x faster when a streaming step has 1-4 rows
        rows = w.permute(0, 2, 1).reshape(w.shape[0], -1).contiguous().t()
        return rows, None if m.conv.bias is None else m.conv.bias.detach().clone()

    return _cached(m, build)


def _convtr_weights(m: StreamingConvTranspose1d) -> tuple[torch.Tensor, torch.Tensor | None]:
    def build():
        w = m.convtr.weight  # [C_in, C_out, K]
        c_in, c_out, k = w.shape
        S, n = m.stride, m.taps
        w = F.pad(w, (0, n * S - k)).view(c_in, c_out, n, S)  # tap j * S + p: frame lag j, phase p
        # V_j [C_in, S * C_out], cols (p, o), stored transposed as for the convs
        v = w.permute(2, 3, 1, 0).reshape(n, S * c_out, c_in).contiguous().transpose(1, 2)
        bias = None if m.convtr.bias is None else m.convtr.bias.detach().repeat(S)  # [S * C_out]
        return v, bias

    return _cached(m, build)


def _output_rows(x_rows: int, n_out: int, stride: int, offset: int) -> tuple[int, int, int]:
    """Outputs t in [lo, hi) whose source sample t * stride + offset lies in [0, x_rows), and
    the source sample of output lo."""
    lo = max(0, -(offset // stride))  # ceil(-offset / stride), at least 0
    hi = min(n_out, (x_rows - 1 - offset) // stride + 1) if x_rows - 1 - offset >= 0 else 0
    return lo, max(lo, hi), lo * stride + offset


def conv1d_time_major(m: StreamingConv1d, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
    """The causal conv of `m` on time-major x [B, T, C_in] -> [B, ceil(T / s), C_out]: offline,
    or one streaming chunk (T a multiple of s) when `m` is streaming (its state holds the left
    context, channels-first as in the channels-first path, so both paths share states).
    `with_bias=False` leaves the bias out (the caller adds it in a fused pass)."""
    state = m.state
    if state is None:
        return _conv_rows(m, x.contiguous(), m.output_length(x.shape[1]), -m.padding_total, with_bias)
    T = x.shape[1]
    if T % m.stride:
        raise ValueError(f"streaming chunks must be multiples of the stride {m.stride}, got {T}")
    state.started = True
    pad, s, n_out = m.padding_total, m.stride, T // m.stride
    x = x.contiguous()
    if 0 < T <= SMALL_CHUNK * pad:  # a few rows (streaming frame by frame): one pass over [context; chunk]
        full = torch.cat([state.previous.transpose(1, 2), x], dim=1)  # [B, pad + T, C_in]
        state.previous.copy_(full[:, T:].transpose(1, 2))
        return _conv_rows(m, full, n_out, 0, with_bias)
    out = _conv_rows(m, x, n_out, -pad, with_bias)  # as if the stream started here (zero context)...
    if pad > 0 and n_out > 0:
        # ...then the first outputs, which read the carried context, again from a small
        # [B, pad + span, C_in] piece: no copy of the whole chunk
        # (T > SMALL_CHUNK * pad here, so the chunk holds all `edge` of them and the last pad rows)
        edge = -(-pad // s)  # outputs that read the context
        piece = torch.cat([state.previous.transpose(1, 2), x[:, :edge * s]], dim=1)  # their inputs
        out[:, :edge] = _conv_rows(m, piece, edge, 0, with_bias)
        state.previous.copy_(x[:, T - pad:].transpose(1, 2))
    return out


def _conv_rows(m: StreamingConv1d, x: torch.Tensor, n_out: int, base: int, with_bias: bool) -> torch.Tensor:
    """out[t] = bias + sum_j x[t s + j d + base] @ W_j over the taps j (samples outside x are
    zeros); x [B, T, C_in] contiguous -> [B, n_out, C_out]."""
    B, T, c_in = x.shape
    k, s, d = m.conv.kernel_size[0], m.stride, m.conv.dilation[0]
    rows, bias = _conv_weights(m)  # [k * C_in, C_out]
    bias = bias if with_bias else None
    c_out = rows.shape[1]
    out = x.new_empty(B, n_out, c_out)
    if n_out == 0:  # (an empty streaming chunk)
        return out
    if c_in * k <= 16:  # e.g. the first encoder conv (1 channel): an explicit im2col is tiny
        right = max(0, (n_out - 1) * s + (k - 1) * d + base + 1 - T)
        xp = F.pad(x.transpose(1, 2), (-base, right)).transpose(1, 2)  # [B, >= span, C_in]
        cols = xp.unfold(1, (k - 1) * d + 1, s)[:, :n_out, :, ::d].transpose(2, 3).reshape(B, n_out, k * c_in)
        for b in range(B):
            torch.mm(cols[b], rows, out=out[b]) if bias is None else torch.addmm(bias, cols[b], rows, out=out[b])
        return out
    if c_out * k <= 16:  # e.g. the last decoder conv (1 channel): one GEMM reads x once for all taps
        return _shifted_tap_sums(x, rows.reshape(k, c_in, c_out), bias, s, d, base, out)
    if d == 1 and s > 1 and k % s == 0 and T % s == 0 and base % s == 0:
        # k / s GEMMs over blocks of s samples: tap group g of output t is block t + g + base / s
        blocks = x.view(B, T // s, s * c_in)
        terms = [(g * s * c_in, (g + 1) * s * c_in, g + base // s) for g in range(k // s)]
        sources = [(blocks, lo_row, hi_row, off, 1) for lo_row, hi_row, off in terms]
    else:  # one GEMM per tap: output t reads sample t s + j d + base
        sources = [(x, j * c_in, (j + 1) * c_in, j * d + base, s) for j in range(k)]
    for b in range(B):
        _accumulate(out[b], [(src[b], rows[lo:hi], off, step) for src, lo, hi, off, step in sources], bias)
    return out


def _shifted_tap_sums(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, s: int, d: int, base: int,
                      out: torch.Tensor) -> torch.Tensor:
    """A conv with few outputs: y = x @ [W_0 ... W_{k-1}] ([T, k * C_out], one pass over x instead
    of one GEMM per tap with a handful of columns), then out[t] = bias + sum_j y[t s + j d + base, j]."""
    k, c_in, c_out = w.shape  # taps, [C_in, C_out] each
    stacked = w.permute(1, 0, 2).reshape(c_in, k * c_out)  # columns (tap, c_out)
    n = out.shape[1]
    for b in range(x.shape[0]):
        y = x[b] @ stacked  # [T, k * C_out]
        out[b].zero_() if bias is None else out[b].copy_(bias.expand(n, c_out))
        for j in range(k):
            lo, hi, first = _output_rows(y.shape[0], n, s, j * d + base)
            if hi > lo:
                out[b, lo:hi].add_(y[first: first + (hi - lo - 1) * s + 1: s, j * c_out:(j + 1) * c_out])
    return out


def _accumulate(out: torch.Tensor, terms: list, bias: torch.Tensor | None) -> None:
    """out [n, C_out] = bias + sum over terms (src [R, K], W [K, C_out], offset, step) of
    src[t * step + offset] @ W for the rows t whose source row exists."""
    n = out.shape[0]
    if n == 0:  # (an empty streaming chunk)
        return
    ranges = []
    for src, w, offset, step in terms:
        lo, hi, first = _output_rows(src.shape[0], n, step, offset)
        ranges.append((lo, hi, src[first: first + (hi - lo - 1) * step + 1: step] if hi > lo else None, w))
    full = next((i for i, (lo, hi, _, _) in enumerate(ranges) if lo == 0 and hi == n), None)
    if full is None:  # no term covers every output: start from the bias
        out.zero_() if bias is None else out.copy_(bias.expand_as(out))
    else:  # the covering term first, written (not added) with the bias
        _, _, a, w = ranges[full]
        torch.mm(a, w, out=out) if bias is None else torch.addmm(bias, a, w, out=out)
    for i, (lo, hi, a, w) in enumerate(ranges):
        if i != full and hi > lo:
            out[lo:hi].addmm_(a, w)


def conv_transpose1d_time_major(m: StreamingConvTranspose1d, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
    """The causal transposed conv of `m`: x [B, T, C_in] -> [B, T * S, C_out], offline or one
    streaming chunk (the state holds the last taps - 1 input frames, channels-first).
    `with_bias=False` leaves the bias out (the caller adds it in a fused pass)."""
    B, T, _ = x.shape
    v, bias = _convtr_weights(m)  # [n, C_in, S * C_out]
    bias = bias if with_bias else None
    n, _, width = v.shape
    if T == 0:  # (an empty streaming chunk: the state stays)
        return x.new_empty(B, 0, width // m.stride)
    x = x.contiguous()
    state = m.state
    if state is not None and n > 1 and T <= SMALL_CHUNK * (n - 1):  # a few frames: one pass over [context; chunk]
        full = torch.cat([state.previous.transpose(1, 2), x], dim=1)  # [B, n - 1 + T, C_in]
        state.previous.copy_(full[:, T:].transpose(1, 2))
        return _phase_rows(full, v, bias, n - 1).view(B, T * m.stride, width // m.stride)
    out = _phase_rows(x, v, bias, 0)  # [B, T, S * C_out], as if the stream started here
    if state is not None and n > 1:  # the first n - 1 frames read the carried frames: redo them
        piece = torch.cat([state.previous.transpose(1, 2), x[:, : n - 1]], dim=1)  # [B, 2 (n - 1), C_in]
        out[:, : n - 1] = _phase_rows(piece, v, bias, n - 1)  # (T > SMALL_CHUNK * (n - 1) here)
        state.previous.copy_(x[:, T - (n - 1):].transpose(1, 2))  # the last n - 1 frames
    return out.view(B, T * m.stride, width // m.stride)  # phases interleaved for free


def _phase_rows(x: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, base: int) -> torch.Tensor:
    """out[t] = bias + sum_j x[t + base - j] @ V_j (frames outside x are zeros) for the
    T - base frames after the first `base`; x [B, T, C_in] -> [B, T - base, S * C_out]."""
    B, T, _ = x.shape
    out = x.new_empty(B, T - base, v.shape[2])
    for b in range(B):  # output frame t reads input frame t - j (lag j) with V_j
        _accumulate(out[b], [(x[b], v[j], base - j, 1) for j in range(v.shape[0])], bias)
    return out


def seanet_time_major(layers: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run a SEANet stack (`SeanetEncoder.layers` / `SeanetDecoder.layers`, or a run of its
    layers) on time-major x [B, T, C] -> [B, T', C']. Call under no_grad; see `supports`."""
    return _run(list(layers), x, owned=False)


# The compiled conv (`fused_cpu.conv_rows`) takes the convs whose weights stay in L2 (the
# 32-128 channel layers at 6-24 kHz and the first conv); larger ones (down to 25 Hz, up to 1024
# channels) run faster as BLAS GEMMs, which block their weights better.
KERNEL_MAX_WEIGHT_BYTES = 128 * 1024
KERNEL_VECTOR_WIDTH = 16  # AVX-512; narrower vectors (not measured here) leave these convs to BLAS


@dataclass(frozen=True)
class Fused:
    """A conv's output after its epilogue."""

    out: torch.Tensor  # [B, T', C_out]: elu(v) when the ELU was fused, else v
    pre: torch.Tensor | None  # [B, T', C_out]: v itself, when asked for (the skip of a residual unit)


def _kernel_takes(x: torch.Tensor, c_out: int, weight_floats: int) -> bool:
    """Whether the compiled conv should run a conv with these outputs and weights on x."""
    width = fused_cpu.conv_vector_width()
    return (width is not None and width >= KERNEL_VECTOR_WIDTH and c_out % width == 0
            and x.dtype == torch.float32 and x.device.type == "cpu" and 4 * weight_floats <= KERNEL_MAX_WEIGHT_BYTES)


def _packed(m: nn.Module, source: torch.Tensor, pack) -> torch.Tensor:
    """pack(source), cached on m for as long as `source` (its cached GEMM weights) stays the same."""
    cache = getattr(m, "_kernel_cache", None)
    if cache is None or cache[0] is not source:  # rebuilt with the GEMM weights
        cache = (source, pack(source))
        m._kernel_cache = cache
    return cache[1]


def _carry(previous: torch.Tensor, context: torch.Tensor, x: torch.Tensor) -> None:
    """previous [B, C, P] <- the last P rows of [context; x] (context [B, P, C], x [B, T, C]),
    after the kernel read the old ones."""
    P, T = previous.shape[2], x.shape[1]
    if P:
        previous.copy_((torch.cat([context, x], dim=1)[:, T:] if T < P else x[:, T - P:]).transpose(1, 2))


def _kernel_weights(m: StreamingConv1d, x: torch.Tensor) -> torch.Tensor | None:
    """[k', C_in', C_out] weights for `fused_cpu.conv_rows` when it should run this conv on x
    (block taps of s samples for a strided conv), else None."""
    k, s, d = m.conv.kernel_size[0], m.stride, m.conv.dilation[0]
    c_in, c_out = m.conv.in_channels, m.conv.out_channels
    if not _kernel_takes(x, c_out, k * c_in * c_out):
        return None
    if s > 1 and not (d == 1 and k % s == 0 and x.shape[1] % s == 0 and m.padding_total % s == 0):
        return None
    rows, _ = _conv_weights(m)  # [k * C_in, C_out], rows (tap, c_in)
    return _packed(m, rows, lambda r: r.contiguous().view(k // s, s * c_in, c_out))


def conv1d_fused(m: StreamingConv1d, x: torch.Tensor, add: torch.Tensor | None = None, elu: bool = False,
                 keep_pre: bool = False) -> Fused:
    """v = conv(x) + bias (+ add [B, T', C_out]) on time-major x [B, T, C_in], and its ELU if
    `elu`, offline or one streaming chunk (as `conv1d_time_major`). `keep_pre` keeps v too when
    the ELU is fused. One compiled pass where `_kernel_weights` says so, else BLAS GEMMs and a
    fused elementwise pass."""
    w = _kernel_weights(m, x)
    if w is None:
        plain = not elu and add is None  # the GEMMs add the bias themselves
        return _epilogue(conv1d_time_major(m, x, with_bias=plain), None if plain else _bias(m), add, elu, keep_pre)
    B, T, c_in = x.shape
    s, pad = m.stride, m.padding_total
    x = x.contiguous()
    state = m.state
    if state is not None and T % s:
        raise ValueError(f"streaming chunks must be multiples of the stride {s}, got {T}")
    n_out = T // s  # (T is a multiple of s here, offline too)
    rows = x.view(B, T // s, s * c_in)  # blocks of s samples (s = 1: the samples)
    # [B, pad, C_in]: the carried samples (read before the state takes the new ones, below)
    context = None if state is None else state.previous.transpose(1, 2).contiguous()
    out = x.new_empty(B, n_out, w.shape[2])
    pre = torch.empty_like(out) if keep_pre and elu else None
    bias = _bias(m)
    for b in range(B):
        fused_cpu.conv_rows(rows[b], w, base=-pad // s, n_out=n_out, dilation=m.conv.dilation[0],
                            context=None if context is None else context[b].view(pad // s, s * c_in),
                            bias=bias, add=None if add is None else add[b], elu=elu,
                            sum_out=None if pre is None else pre[b], out=out[b])
    if state is not None:
        state.started = True
        _carry(state.previous, context, x)
    return Fused(out, pre if elu else out if keep_pre else None)


def _epilogue(v: torch.Tensor, bias: torch.Tensor | None, add: torch.Tensor | None, elu: bool,
              keep_pre: bool) -> Fused:
    """v + bias + add and its ELU (`conv1d_fused`'s epilogue), in place in v (a conv's fresh
    output), in one fused pass."""
    if elu and keep_pre:  # v (in place) and a new tensor for its ELU, as the skip path had it
        h = torch.empty_like(v)
        add_elu(v, add, bias, sum_out=v, elu_out=h)
        return Fused(h, v)
    if elu:
        add_elu(v, add, bias, elu_out=v)
        return Fused(v, None)
    if bias is not None or add is not None:
        add_elu(v, add, bias, sum_out=v)
    return Fused(v, v if keep_pre else None)


def _bias(m: StreamingConv1d | StreamingConvTranspose1d) -> torch.Tensor | None:
    conv = m.conv if isinstance(m, StreamingConv1d) else m.convtr
    return None if conv.bias is None else conv.bias.detach()  # [C_out]


def _fusable_elu(m: nn.Module | None) -> bool:
    return isinstance(m, nn.ELU) and m.alpha == 1.0


def _fusable_residual(m: nn.Module | None) -> bool:
    """A unit ELU, conv, ELU, conv (with a skip): its elementwise work runs as fused passes."""
    from mimi.modules.seanet import ResidualUnit  # noqa: PLC0415 (seanet imports this module)

    if not isinstance(m, ResidualUnit) or len(m.block) != 4:
        return False
    e1, c1, e2, c2 = m.block
    return _fusable_elu(e1) and _fusable_elu(e2) and isinstance(c1, StreamingConv1d) and isinstance(c2, StreamingConv1d)


def _convtr_kernel_weights(m: StreamingConvTranspose1d, x: torch.Tensor) -> torch.Tensor | None:
    """[taps, C_in, S * C_out] weights for `fused_cpu.conv_rows` when it should run this
    transposed conv (in polyphase form: taps in input order, oldest first), else None."""
    phases = m.stride * m.convtr.out_channels
    if not _kernel_takes(x, phases, m.taps * m.convtr.in_channels * phases):
        return None
    v, _ = _convtr_weights(m)  # [n, C_in, S * C_out], V_j for lag j
    # tap j' = n - 1 - lag reads input frame t - n + 1 + j'
    return _packed(m, v, lambda v: v.flip(0).contiguous())


def conv_transpose1d_fused(m: StreamingConvTranspose1d, x: torch.Tensor, elu: bool = False,
                           keep_pre: bool = False) -> Fused:
    """`conv_transpose1d_time_major` plus bias, and its ELU if `elu` (`conv1d_fused`'s epilogue):
    x [B, T, C_in] -> [B, T * S, C_out], offline or one streaming chunk."""
    w = _convtr_kernel_weights(m, x)
    if w is None:
        return _epilogue(conv_transpose1d_time_major(m, x, with_bias=not elu), _bias(m) if elu else None, None,
                         elu, keep_pre)
    B, T, _ = x.shape
    n, S, width = w.shape[0], m.stride, w.shape[2]
    x = x.contiguous()
    state = m.state
    context = None if state is None else state.previous.transpose(1, 2).contiguous()  # [B, n - 1, C_in]
    _, bias = _convtr_weights(m)  # [S * C_out]
    out = x.new_empty(B, T, width)  # phases (p, o) of each input frame: [B, T * S, C_out] as a view
    pre = torch.empty_like(out) if keep_pre and elu else None
    for b in range(B):
        fused_cpu.conv_rows(x[b], w, base=-(n - 1), n_out=T, context=None if context is None else context[b],
                            bias=bias, elu=elu, sum_out=None if pre is None else pre[b], out=out[b])
    if state is not None:
        _carry(state.previous, context, x)  # the last n - 1 frames
    view = (B, T * S, width // S)
    out = out.view(view)
    return Fused(out, pre.view(view) if pre is not None else out if keep_pre else None)


def _fused(layer: StreamingConv1d | StreamingConvTranspose1d, x: torch.Tensor, add: torch.Tensor | None = None,
           elu: bool = False, keep_pre: bool = False) -> Fused:
    if isinstance(layer, StreamingConv1d):
        return conv1d_fused(layer, x, add, elu, keep_pre)
    assert add is None  # (no skip ends on a transposed conv)
    return conv_transpose1d_fused(layer, x, elu, keep_pre)


def _run(layers: list[nn.Module], x: torch.Tensor, owned: bool) -> torch.Tensor:
    # `owned`: x is a temporary of this pass, so it may be overwritten. New tensors for every
    # result, not reused buffers: the allocator hands back the memory just freed, still in cache
    # (per-layer buffers measured ~8% slower). A conv takes the ELU or the residual unit's first
    # ELU that follows it into its epilogue (`conv1d_fused`), so no activation is read twice.
    from mimi.modules.seanet import ResidualUnit  # noqa: PLC0415 (seanet imports this module)

    i = 0
    while i < len(layers):
        layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        i += 1
        if isinstance(layer, (StreamingConv1d, StreamingConvTranspose1d)):
            if _fusable_residual(after):  # the conv's epilogue makes the unit's skip and first ELU
                then_elu = _fusable_elu(layers[i + 1] if i + 1 < len(layers) else None)
                x, owned = _residual(after, x, then_elu, conv=layer), True
                i += 1 + then_elu
            else:
                elu_next = _fusable_elu(after)
                x, owned = _fused(layer, x, elu=elu_next).out, True
                i += elu_next
        elif _fusable_elu(layer):
            y = x if owned else torch.empty_like(x)
            add_elu(x, elu_out=y)
            x, owned = y, True
        elif _fusable_residual(layer):  # (first in a run of layers: no conv before it to fuse with)
            then_elu = _fusable_elu(after)
            x, owned = _residual(layer, x, then_elu), True
            i += then_elu
        elif isinstance(layer, nn.ELU):  # alpha != 1: torch's ELU
            x, owned = F.elu_(x, layer.alpha) if owned else F.elu(x, layer.alpha), True
        elif isinstance(layer, ResidualUnit):
            y = _run(list(layer.block), x, owned=False)  # the skip keeps x
            x, owned = y.add_(x), True
        else:
            raise TypeError(f"no time-major path for {type(layer).__name__}")
    return x


def _residual(unit: nn.Module, x: torch.Tensor, then_elu: bool,
              conv: StreamingConv1d | StreamingConvTranspose1d | None = None) -> torch.Tensor:
    """skip + block(skip) for a unit ELU, conv k, ELU, conv 1 (and its ELU when `then_elu`),
    skip = x [B, T, C], or conv(x) + bias when `conv` precedes the unit (its epilogue then
    makes the unit's first ELU too). Each conv of the unit has its epilogue fused."""
    _, conv1, _, conv2 = unit.block
    if conv is None:
        skip, h = x, torch.empty_like(x)
        add_elu(x, elu_out=h)
    else:
        f = _fused(conv, x, elu=True, keep_pre=True)
        skip, h = f.pre, f.out
        del f
    y = conv1d_fused(conv1, h, elu=True).out  # [B, T, C / compress]
    del h  # (its memory, still in cache, can take the next output)
    return conv1d_fused(conv2, y, add=skip, elu=then_elu).out  # [B, T, C]
