"""The fused `add + bias + ELU` pass (`mimi.modules.fused_cpu`): the compiled kernel and its
torch-op fallback against a float64 reference, aliasing, the inputs only the fallback takes,
how the kernel is built and cached, and SEANet end to end with either."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimi.config import MimiConfig
from mimi.modules import fused_cpu, time_major
from mimi.modules.seanet import SeanetDecoder, SeanetEncoder
from tests.helpers import speech_tensor

REPO = Path(__file__).resolve().parents[3]
HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))


# -- helpers -----------------------------------------------------------------------------------

def _kernel():
    """The loaded compiled function; skips the test when the fallback is in use."""
    if not fused_cpu.available():
        pytest.skip("no C compiler (or MIMI_FUSED_CPU=0): the compiled kernel is not in use")
    return fused_cpu._load()


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the compiled kernel's calls (n_rows * c and threads of each), when it is in use."""
    calls: list[tuple[int, int]] = []
    real = fused_cpu._load()
    if real is not None:
        def counting(*args):
            calls.append((args[3] * args[4], args[7]))
            return real(*args)
        monkeypatch.setitem(fused_cpu._state, "lib", counting)
    return calls


@contextlib.contextmanager
def _threads(n: int):
    """torch.set_num_threads(n) around the calls under test only: the references and the rest
    run on the suite's one thread (torch ops on two threads stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _reference(a, b=None, bias=None):
    """v = a + b + bias and elu(v) in float64."""
    v = a.double()
    if b is not None:
        v = v + b.double()
    if bias is not None:
        v = v + bias.double()
    return v, torch.where(v > 0, v, torch.expm1(v))


def _tolerance(a, b=None, bias=None, rel=2e-7):
    """Float32 rounding of the partial sums (a + b, then + bias) and of exp: relative to the
    magnitudes added, at least `rel` in absolute value."""
    mag = a.double().abs()
    if b is not None:
        mag = mag + b.double().abs()
    if bias is not None:
        mag = mag + bias.double().abs()
    return rel * mag.clamp(min=1.0)


def _call(impl: str, a, b, bias, sum_out, elu_out):
    if impl == "add_elu":
        fused_cpu.add_elu(a, b, bias, sum_out=sum_out, elu_out=elu_out)
    else:
        fused_cpu._add_elu_torch(a, b, bias, sum_out, elu_out)


def _inputs(rows: int, c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, c, generator=g) * 3, torch.randn(rows, c, generator=g) * 3,
            torch.randn(c, generator=g) * 3)


# (C, rows): numel below _MIN_PARALLEL and above it (the multi-thread branch); without a bias,
# 64 x 4 and 64 x 600 are multiples of 256 (flat rows in the kernel), 7 x 5000 is not
SHAPES = [(1, 5), (7, 3), (64, 4), (300, 2), (1, 40_000), (7, 5_000), (64, 600), (300, 120)]
COMBOS = [(has_b, has_bias, outs) for has_b in (True, False) for has_bias in (True, False)
          for outs in (("sum",), ("elu",), ("sum", "elu"))]


# -- 1. against the float64 reference ----------------------------------------------------------

@pytest.mark.parametrize("impl", ["add_elu", "torch"])
@pytest.mark.parametrize("has_b,has_bias,outs", COMBOS, ids=lambda v: str(v))
def test_matches_float64_reference(impl, has_b, has_bias, outs, kernel_calls):
    assert sum(c * rows >= fused_cpu._MIN_PARALLEL for c, rows in SHAPES) == 4  # both branches
    for i, (c, rows) in enumerate(SHAPES):
        a, b, bias = _inputs(rows, c, seed=i)
        b, bias = (b if has_b else None), (bias if has_bias else None)
        keep = [t.clone() for t in (a, b, bias) if t is not None]
        sum_out = torch.full_like(a, float("nan")) if "sum" in outs else None
        elu_out = torch.full_like(a, float("nan")) if "elu" in outs else None
        with _threads(2):
            _call(impl, a, b, bias, sum_out, elu_out)
        v, e = _reference(a, b, bias)
        tol = _tolerance(a, b, bias)
        if sum_out is not None:
            assert ((sum_out.double() - v).abs() <= tol).all(), (c, rows, (sum_out.double() - v).abs().max())
        if elu_out is not None:
            assert ((elu_out.double() - e).abs() <= tol).all(), (c, rows, (elu_out.double() - e).abs().max())
        # inputs untouched
        assert all(torch.equal(t, k) for t, k in zip([t for t in (a, b, bias) if t is not None], keep))
    if impl == "add_elu" and fused_cpu.available():  # every call ran the kernel, large ones on 2 threads
        assert [n for n, _ in kernel_calls] == [c * rows for c, rows in SHAPES]
        assert [t for _, t in kernel_calls] == [2 if c * rows >= fused_cpu._MIN_PARALLEL else 1
                                                for c, rows in SHAPES]
    else:
        assert kernel_calls == []


EXTREMES = [-1e4, -100.0, -87.5, -87.0, -50.0, -1.0, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 1.0, 50.0, 1e4]


@pytest.mark.parametrize("impl", ["add_elu", "torch"])
@pytest.mark.parametrize("repeat", [1, 4_000], ids=["one-thread", "parallel"])
def test_extreme_values(impl, repeat):
    x = torch.tensor(EXTREMES).repeat(repeat)
    assert (repeat == 1) == (x.numel() < fused_cpu._MIN_PARALLEL)
    for bias in (None, torch.zeros(1)):  # (a [N, 1] with a zero bias: the kernel's bias loop too)
        a = x[:, None] if bias is not None else x
        s, e = torch.empty_like(a), torch.empty_like(a)
        with _threads(2):
            _call(impl, a, None, bias, s, e)
        v, ref = _reference(a)
        assert torch.isfinite(e).all()
        assert torch.equal(s, a)
        assert ((e.double() - ref).abs() <= 2e-7 * v.abs().clamp(min=1.0)).all()
        e = e.flatten()[: len(EXTREMES)]
        assert (e[:3] + 1).abs().max() <= 1e-7  # elu(-1e4), elu(-100), elu(-87.5): -1
        assert e[EXTREMES.index(1e4)] == 1e4 and e[EXTREMES.index(50.0)] == 50.0
        assert e[EXTREMES.index(0.0)] == 0.0


def test_infinities():
    x = torch.tensor([float("-inf"), float("inf"), -3.0])
    for impl in ("add_elu", "torch"):
        e = torch.empty_like(x)
        _call(impl, x, None, None, None, e)
        assert e[0] == -1 and e[1] == float("inf")
        assert abs(e[2].item() - torch.expm1(torch.tensor(-3.0, dtype=torch.float64)).item()) < 1e-7


def test_kernel_propagates_nan():
    """NaN stays NaN (as in F.elu): a broken input must not come out as silence."""
    _kernel()
    x = torch.tensor([float("nan"), 1.0, -1.0])
    e = torch.empty_like(x)
    fused_cpu.add_elu(x, elu_out=e)
    assert torch.isnan(e[0]) and e[1] == 1.0


# -- 2. aliasing: outputs that are inputs ------------------------------------------------------

ALIASES = ["elu_out=a", "sum_out=a", "elu_out=b", "sum_out=b", "sum_out=a,elu_out=b", "elu_out=a,no_b"]


@pytest.mark.parametrize("impl", ["add_elu", "torch"])
@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("c,rows", [(7, 3), (64, 600)])
def test_outputs_may_alias_the_inputs(impl, alias, has_bias, c, rows, kernel_calls):
    a0, b0, bias = _inputs(rows, c, seed=3)
    bias = bias if has_bias else None
    b0 = None if alias.endswith("no_b") else b0
    # out of place
    want_sum, want_elu = torch.empty_like(a0), torch.empty_like(a0)
    _call(impl, a0, b0, bias, want_sum, want_elu)
    a, b = a0.clone(), None if b0 is None else b0.clone()
    outs = {"a": a, "b": b}
    sum_out, elu_out = None, None
    for part in alias.split(","):
        if part.startswith("sum_out="):
            sum_out = outs[part.split("=")[1]]
        elif part.startswith("elu_out="):
            elu_out = outs[part.split("=")[1]]
    if elu_out is None:  # sum in place, ELU into a fresh tensor
        elu_out = torch.empty_like(a0)
    with _threads(2 if impl == "add_elu" else 1):  # (64 x 600: the kernel's parallel branch)
        _call(impl, a, b, bias, sum_out, elu_out)
    if sum_out is not None:
        assert torch.equal(sum_out, want_sum)
    assert torch.equal(elu_out, want_elu)
    # the input not written is untouched
    for name, t, t0 in (("a", a, a0), ("b", b, b0)):
        if t is not None and t is not sum_out and t is not elu_out:
            assert torch.equal(t, t0), name
    if impl == "add_elu" and fused_cpu.available():
        assert [t for _, t in kernel_calls] == [1, 2 if a.numel() >= fused_cpu._MIN_PARALLEL else 1]


# -- 3. compiled kernel against the torch-op fallback ------------------------------------------

@pytest.mark.parametrize("has_b,has_bias,outs", COMBOS, ids=lambda v: str(v))
def test_kernel_agrees_with_fallback(has_b, has_bias, outs):
    _kernel()
    for i, (c, rows) in enumerate(SHAPES):
        a, b, bias = _inputs(rows, c, seed=10 + i)
        b, bias = (b if has_b else None), (bias if has_bias else None)
        got = [torch.empty_like(a) if o in outs else None for o in ("sum", "elu")]
        want = [torch.empty_like(a) if o in outs else None for o in ("sum", "elu")]
        with _threads(2):
            fused_cpu.add_elu(a, b, bias, sum_out=got[0], elu_out=got[1])
        fused_cpu._add_elu_torch(a, b, bias, *want)
        if got[0] is not None:  # the same two float32 additions, in the same order
            assert torch.equal(got[0], want[0]), (c, rows)
        if got[1] is not None:
            tol = 2e-7 * want[1].abs().clamp(min=1.0)
            assert ((got[1] - want[1]).abs() <= tol).all(), (c, rows, (got[1] - want[1]).abs().max())


def test_kernel_elu_across_the_exp_range():
    """Dense sweep of the kernel's exp (range reduction and polynomial) against float64."""
    _kernel()
    x = torch.cat([torch.linspace(-90, 5, 400_001), torch.linspace(-1e-3, 1e-3, 100_001)])
    e = torch.empty_like(x)
    fused_cpu.add_elu(x, elu_out=e)
    _, ref = _reference(x)
    assert (e.double() - ref).abs().max() < 6e-8 * 1.5
    assert torch.equal(e[x > 0], x[x > 0])


# -- 4. inputs only the fallback takes ---------------------------------------------------------

@pytest.mark.parametrize("case", ["transposed_a", "transposed_out", "bias_view", "bfloat16", "float64",
                                  "broadcast_b"])
def test_other_layouts_and_dtypes(case, kernel_calls):
    g = torch.Generator().manual_seed(5)
    rows, c = 40, 9
    a = torch.randn(rows, c, generator=g) * 3
    b = torch.randn(rows, c, generator=g) * 3
    bias = torch.randn(c, generator=g)
    sum_out, elu_out = torch.empty(rows, c), torch.empty(rows, c)
    rel, abs_ = 2e-7, 2e-7
    if case == "transposed_a":
        a = torch.randn(c, rows, generator=g).t()
    elif case == "transposed_out":
        sum_out, elu_out = torch.empty(c, rows).t(), torch.empty(c, rows).t()
    elif case == "bias_view":
        bias = torch.randn(2 * c, generator=g)[::2]
    elif case in ("bfloat16", "float64"):
        dtype = getattr(torch, case)
        a, b, bias = a.to(dtype), b.to(dtype), bias.to(dtype)
        sum_out, elu_out = sum_out.to(dtype), elu_out.to(dtype)
        rel, abs_ = (2e-2, 2e-2) if dtype == torch.bfloat16 else (1e-14, 1e-15)
    elif case == "broadcast_b":
        b = torch.randn(1, c, generator=g)
    assert not (a.is_contiguous() and b.is_contiguous() and sum_out.is_contiguous() and bias.is_contiguous()
                and a.dtype == torch.float32 and b.shape == a.shape)
    fused_cpu.add_elu(a, b, bias, sum_out=sum_out, elu_out=elu_out)
    # strided float32 inputs are copied and go to the kernel; other dtypes, strided outputs and
    # broadcast operands never reach it
    assert len(kernel_calls) == (1 if case in ("transposed_a", "bias_view") and fused_cpu.available() else 0)
    v, ref = _reference(a, b, bias)
    mag = (a.double().abs() + b.double().abs() + bias.double().abs()).clamp(min=1.0)
    assert sum_out.dtype == a.dtype and elu_out.dtype == a.dtype
    assert ((sum_out.double() - v).abs() <= rel * mag + abs_).all()
    assert ((elu_out.double() - ref).abs() <= rel * mag + abs_).all()


# -- 5. empty tensors --------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["add_elu", "torch"])
@pytest.mark.parametrize("shape", [(0, 8), (4, 0)])
def test_empty_tensors(impl, shape):
    a, b = torch.empty(shape), torch.empty(shape)
    bias = torch.zeros(shape[-1])
    for args in ((None, None), (b, None), (None, bias), (b, bias)):
        s, e = torch.empty(shape), torch.empty(shape)
        _call(impl, a, *args, s, e)
        _call(impl, a, *args, None, e)
        _call(impl, a, *args, s, None)
        assert s.shape == e.shape == a.shape
    # a neighbour of an empty view is not written
    big = torch.full((3, 8), 7.0)
    _call(impl, big[1:1], None, None, big[1:1], big[1:1])
    assert (big == 7.0).all()


# -- 6. build, cache, fallback (fresh processes) -----------------------------------------------

_PROBE = r"""
import json, os, time
from pathlib import Path
import torch
from mimi.modules import fused_cpu, time_major
if os.environ.get("PROBE_WAIT_FOR"):  # imported in parallel with the first process; run after it
    while not Path(os.environ["PROBE_WAIT_FOR"]).exists():
        time.sleep(0.01)
if os.environ.get("PROBE_FORBID_BUILD"):
    def _forbidden(*args):
        raise AssertionError("the cached library was rebuilt")
    fused_cpu._build = _forbidden
available = fused_cpu.available()
compiler = fused_cpu._compiler()
torch.manual_seed(0)
a, b, bias = torch.randn(300, 7) * 3, torch.randn(300, 7) * 3, torch.randn(7)
s, e = torch.empty_like(a), torch.empty_like(a)
fused_cpu.add_elu(a, b, bias, sum_out=s, elu_out=e)
v = a.double() + b.double() + bias.double()
ref = torch.where(v > 0, v, torch.expm1(v))
tol = 2e-7 * (a.double().abs() + b.double().abs() + bias.double().abs()).clamp(min=1.0)
width = fused_cpu.conv_vector_width()
conv_ok = None
if width is not None:  # the conv kernel of the same library: a k3 conv against conv1d
    x, w, cb = torch.randn(40, 5), torch.randn(3, 5, width), torch.randn(width)
    got = fused_cpu.conv_rows(x, w, base=-2, n_out=40, bias=cb)
    want = torch.nn.functional.conv1d(torch.nn.functional.pad(x.t()[None], (2, 0)), w.permute(2, 1, 0), cb)[0].t()
    conv_ok = bool(torch.allclose(got, want, atol=1e-5, rtol=1e-5))
print(json.dumps({
    "available": available,
    "conv_width": width,
    "conv_ok": conv_ok,
    "compiler": compiler,
    "library": str(fused_cpu.library_path(compiler)) if compiler and available else None,
    "sum_ok": bool(((s.double() - v).abs() <= tol).all()),
    "elu_ok": bool(((e.double() - ref).abs() <= tol).all()),
}))
"""


def _start(cache: Path, **env_updates: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "MIMI_FUSED_CPU")}
    env.update(MIMI_KERNEL_CACHE=str(cache), **env_updates)
    return subprocess.Popen([sys.executable, "-c", _PROBE], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _files(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} if folder.exists() else {}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The probe in fresh processes, started together (importing torch takes ~2 s each): a
    normal build, a second process on the same cache once the first is done, CC=/bin/false,
    MIMI_FUSED_CPU=0."""
    caches = {name: tmp_path_factory.mktemp(name) / "kernels" for name in ("normal", "cc_false", "disabled")}
    go = tmp_path_factory.mktemp("go") / "first-done"
    running = {"normal": _start(caches["normal"]),
               "again": _start(caches["normal"], PROBE_FORBID_BUILD="1", PROBE_WAIT_FOR=str(go)),
               "cc_false": _start(caches["cc_false"], CC="/bin/false"),
               "disabled": _start(caches["disabled"], MIMI_FUSED_CPU="0")}
    try:
        results = {"normal": _finish(running.pop("normal"))}
        results["files_after_first"] = _files(caches["normal"])
    finally:
        go.touch()
    results.update({name: _finish(p) for name, p in running.items()})
    results["files_after_second"] = _files(caches["normal"])
    results["caches"] = caches
    return results


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler (cc/gcc)")
def test_build_writes_the_library_to_the_cache_and_a_second_process_reuses_it(builds):
    first, again = builds["normal"], builds["again"]
    assert first["available"] and first["sum_ok"] and first["elu_ok"]
    files = builds["files_after_first"]
    assert len(files) == 1  # the library and nothing else (no temporary left behind)
    (name,) = files
    assert name.startswith("fused_cpu-") and name.endswith(".so")
    assert Path(first["library"]) == builds["caches"]["normal"] / name
    # the second process loads the same file without building it (its _build raises)
    assert again["available"] and again["sum_ok"] and again["elu_ok"]
    assert again["library"] == first["library"]
    # the conv kernel comes with it
    assert first["conv_width"] in (8, 16) and first["conv_ok"] and again["conv_ok"]
    assert builds["files_after_second"] == files  # same file, same mtime


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler (cc/gcc)")
def test_a_damaged_cached_library_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMI_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("MIMI_FUSED_CPU", raising=False)
    monkeypatch.setattr(fused_cpu, "_state", {})  # as in a fresh process
    path = fused_cpu.library_path(fused_cpu._compiler())
    path.write_bytes(b"\x7fELF truncated")  # what an interrupted copy could leave
    assert fused_cpu.available()
    a, out = torch.randn(50, 3), torch.empty(50, 3)
    fused_cpu.add_elu(a, elu_out=out)
    torch.testing.assert_close(out, torch.nn.functional.elu(a), atol=1e-7, rtol=0)
    assert path.stat().st_size > 1000


def test_a_failing_compiler_falls_back_to_torch_ops(builds):
    result = builds["cc_false"]
    assert result["compiler"] == "/bin/false", result  # $CC is the compiler tried...
    assert not result["available"], result  # ...every flag set fails: the fallback is in use
    assert result["conv_width"] is None, result  # (so the convs run as BLAS GEMMs)
    assert result["sum_ok"] and result["elu_ok"], result
    leftover = _files(builds["caches"]["cc_false"])
    assert leftover == {}, leftover  # no library, no temporary left behind


def test_mimi_fused_cpu_0_disables_the_kernel(builds):
    result = builds["disabled"]
    assert not result["available"] and result["conv_width"] is None
    assert result["sum_ok"] and result["elu_ok"]
    assert _files(builds["caches"]["disabled"]) == {}  # nothing was built


# -- 7. SEANet end to end ----------------------------------------------------------------------

def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.fixture(scope="module")
def seanet():
    cfg = MimiConfig.tiny().seanet
    torch.manual_seed(0)
    enc, dec = SeanetEncoder(cfg).eval(), SeanetDecoder(cfg).eval()
    with torch.no_grad():  # non-trivial biases everywhere (they are what the fused passes add)
        for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape))
    wav = speech_tensor(0.4, batch=2, seed=3)  # [2, 1, 9600]: 10 frames
    with torch.no_grad():
        enc.time_major = False
        z = enc(wav)
        enc.time_major = True
    return cfg, enc, dec, wav, z


def _encode_decode(cfg, enc, dec, wav, z, streaming: bool):
    if not streaming:
        return enc(wav), dec(z)
    hop, batch = cfg.hop_length, wav.shape[0]
    with enc.streaming(batch):
        latent = torch.cat([enc(wav[..., i:i + hop]) for i in range(0, wav.shape[-1], hop)], dim=-1)
    with dec.streaming(batch):
        audio = torch.cat([dec(z[..., f:f + 1]) for f in range(z.shape[-1])], dim=-1)
    return latent, audio


@pytest.mark.parametrize("streaming", [False, True], ids=["offline", "streaming"])
def test_seanet_kernel_fallback_and_channels_first_agree(seanet, streaming, monkeypatch):
    """SEANet with both compiled kernels (every conv the conv kernel can take on it), with the
    elementwise kernel alone, with neither, and channels-first: the same outputs."""
    real = _kernel()
    real_conv = fused_cpu._state["conv"]
    cfg, enc, dec, wav, z = seanet
    calls: list[tuple[int, int]] = []
    conv_calls: list[int] = []

    def kernel(*args):  # counts the calls; the large (offline) passes on two OpenMP threads
        args = list(args)
        if args[3] * args[4] >= fused_cpu._MIN_PARALLEL:
            args[7] = 2
        calls.append((args[3] * args[4], args[7]))
        return real(*args)

    def conv(*args):
        conv_calls.append(args[16])  # n_out
        return real_conv[0](*args)

    def run(elementwise, conv_kernel):
        with monkeypatch.context() as m:
            m.setitem(fused_cpu._state, "lib", elementwise)
            m.setitem(fused_cpu._state, "conv", conv_kernel)
            m.setattr(time_major, "KERNEL_VECTOR_WIDTH", 0)  # whatever this machine's vectors
            m.setattr(time_major, "KERNEL_MAX_WEIGHT_BYTES", 1 << 40)
            return _encode_decode(cfg, enc, dec, wav, z, streaming)

    with torch.no_grad():
        compiled = run(kernel, None if real_conv is None else (conv, real_conv[1]))
        both_calls, calls[:] = len(calls), []
        elementwise = run(kernel, None)
        fallback = run(None, None)
        enc.time_major = dec.time_major = False
        try:
            channels_first = _encode_decode(cfg, enc, dec, wav, z, streaming)
        finally:
            enc.time_major = dec.time_major = True
    # without the conv kernel, the elementwise kernel ran every fused pass: per stack, 3 passes
    # per residual unit (the ELU after each stage's last unit fused into its skip add) and 1
    # for the ELU that follows a conv
    per_stack = 3 * cfg.n_residual_layers * len(cfg.ratios) + 1
    if streaming:
        assert len(calls) == 2 * per_stack * z.shape[-1]  # every frame, both stacks
    else:
        assert len(calls) >= 2 * per_stack
        assert any(t == 2 for _, t in calls)  # the high-rate passes ran in parallel
    if real_conv is not None:  # with it, the convs it took did their epilogues themselves
        assert conv_calls and both_calls < len(calls)
    for outs in (compiled, elementwise, fallback):
        assert outs[0].shape == channels_first[0].shape == (2, cfg.dimension, 10)
        assert outs[1].shape == channels_first[1].shape == (2, 1, 10 * cfg.hop_length)
    for got, el, fb, cf in zip(compiled, elementwise, fallback, channels_first):
        assert cf.abs().max() > 1e-3  # a non-trivial signal
        assert _rel_err(el, fb) < 1e-6
        assert _rel_err(got, fb) < 2e-6
        for outs in (got, el, fb):
            assert _rel_err(outs, cf) < 1e-5
