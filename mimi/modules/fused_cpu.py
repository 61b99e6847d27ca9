"""Fused CPU kernels for SEANet inference, compiled at first use: one-pass `add + bias + ELU`,
and a time-major conv with that epilogue built in.

Why. Between its GEMMs, a SEANet stack on CPU spends a fifth of its time in elementwise passes
over large activations: ELU as four vectorised torch ops (`elu` below), the
bias of each conv, the skip add of each residual unit. One C loop does all of them in a single
read and write: 2-4x the torch ops it replaces, and the SEANet stacks ~1.2x faster
(`benchmarks/fused_cpu_ab.py`). The thin high-rate convs (32-128 channels at 6-24 kHz) are
GEMMs too narrow for BLAS's full speed, and their outputs then went through memory once more
for that pass: `conv_rows` sums them in register tiles and runs the epilogue on the tile.

What. `add_elu(a, b, bias, sum_out=..., elu_out=...)` computes v = a + b + bias (b and bias
optional, bias per channel) and writes v and/or elu(v) (`fused_cpu.c`). `conv_rows(x, w, ...)`
computes a causal conv on time-major rows plus bias and a skip term, and its ELU
(`fused_conv.c`; `mimi.modules.time_major` decides which convs it takes). Both are ~100-170
lines of C without dependencies, compiled together with the system C compiler (`$CC`, else
`cc`) the first time they are needed, for the host's instruction set, with OpenMP when the
compiler has it, into `$MIMI_KERNEL_CACHE` (default `~/.cache/mimi/kernels`), and loaded with
ctypes; later processes load the cached library (keyed by the sources, the compiler and the
CPU; a damaged file is rebuilt). Their ELU is exp(v) - 1 for v <= 0 (a polynomial exp within
2 ulp, `fused_cpu.h`), v otherwise, NaN passing through: it differs from `F.elu` by at most
~6e-8, as the torch-op `elu` does (tests compare all three).

Without a compiler (or with `MIMI_FUSED_CPU=0`), `add_elu` runs as torch ops and the convs as
BLAS GEMMs: same results to float rounding, only slower. `available()` and
`conv_vector_width()` say what is in use.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["add_elu", "available", "conv_rows", "conv_vector_width", "elu", "library_path"]

_HERE = Path(__file__).parent
_SOURCE = _HERE / "fused_cpu.c"
_SOURCES = (_SOURCE, _HERE / "fused_conv.c", _HERE / "fused_cpu.h")  # one library; the key covers all
# flag sets tried in order: the host's instruction set with OpenMP first, plain C last
_FLAG_SETS = (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], [])
_MIN_PARALLEL = 1 << 15  # values: below this one thread is faster (the streaming step's tiny tensors)

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded function or None once tried


def _cache_dir() -> Path:
    if os.environ.get("MIMI_KERNEL_CACHE"):
        return Path(os.environ["MIMI_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mimi" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def library_path(compiler: str) -> Path:
    """Where the library for this source, compiler and CPU lives (built or not)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(b"\0".join(s.encode() if isinstance(s, str) else s for s in (
        *(f.read_bytes() for f in _SOURCES), compiler, version, _cpu_flags(), platform.machine()))).hexdigest()[:16]
    return _cache_dir() / f"fused_cpu-{key}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile into a temporary file next to `target`, then rename: concurrent builds are safe."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
        os.close(fd)
        cmd = [compiler, "-O3", "-std=c11", "-shared", "-fPIC", *flags,
               *(str(f) for f in _SOURCES if f.suffix == ".c"), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            os.replace(tmp, target)
            return
        os.unlink(tmp)
        errors.append(done.stderr.strip().splitlines()[-1:] or [""])
    raise OSError(f"could not compile {_SOURCE.name}: {errors[-1][0]}")


def _load():
    """The compiled `add_elu` kernel, building the library if needed; None when it cannot be had.
    (The same library's conv kernel goes to `_state["conv"]`.)"""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        fn = conv = None
        compiler = _compiler()
        if os.environ.get("MIMI_FUSED_CPU", "1") != "0" and compiler is not None:
            try:
                path = library_path(compiler)
                if not path.exists():
                    _build(compiler, path)
                try:
                    lib = ctypes.CDLL(str(path))
                except OSError:  # a damaged cache entry (a truncated file...): build it again, once
                    _build(compiler, path)
                    lib = ctypes.CDLL(str(path))
                p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
                fn = lib.mimi_fused_add_elu
                fn.argtypes = [p, p, p, i64, i64, p, p, i32]
                fn.restype = None
                conv = lib.mimi_conv_rows
                conv.argtypes = [p, i64, i64, p, i64, i64, i64, p, i64, i64, i64, i64, p, p, p, p, i64, i32, i32]
                conv.restype = i32
                lib.mimi_conv_vector_width.restype = i32
                conv = (conv, int(lib.mimi_conv_vector_width()))
            except (OSError, AttributeError, subprocess.SubprocessError):
                fn = conv = None  # no compiler that works here: the torch ops below do the same
        _state["conv"] = conv
        _state["lib"] = fn
        return fn


def available() -> bool:
    """Whether the compiled kernel is in use (else `add_elu` runs as torch ops)."""
    return _load() is not None


def _fits(*tensors: torch.Tensor | None, shape: torch.Size, contiguous: bool) -> bool:
    return all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu" and t.shape == shape
                             and (t.is_contiguous() or not contiguous)) for t in tensors)


def add_elu(a: torch.Tensor, b: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
            sum_out: torch.Tensor | None = None, elu_out: torch.Tensor | None = None) -> None:
    """v = a + b + bias over [..., C] (b: same shape as a, bias: [C], both optional); writes v to
    `sum_out` and/or elu(v) (ELU, alpha 1) to `elu_out`. Outputs may be a or b themselves.

    The kernel takes float32 CPU tensors with contiguous outputs; strided inputs (a batch's rows
    of a rate-stage chunk) are copied first, one pass instead of the torch ops' several."""
    fn = _load()
    c = a.shape[-1]
    if (fn is not None and _fits(sum_out, elu_out, shape=a.shape, contiguous=True)
            and _fits(a, b, shape=a.shape, contiguous=False)
            and (bias is None or _fits(bias, shape=torch.Size([c]), contiguous=False))):
        a = a.contiguous()  # (outputs are contiguous, so a non-contiguous input is not one of them)
        b = None if b is None else b.contiguous()
        bias = None if bias is None else bias.contiguous()
        n = a.numel()
        threads = torch.get_num_threads() if n >= _MIN_PARALLEL else 1
        ptr = (lambda t: None if t is None else t.data_ptr())
        fn(ptr(a), ptr(b), ptr(bias), n // max(c, 1), c, ptr(sum_out), ptr(elu_out), threads)
        return
    _add_elu_torch(a, b, bias, sum_out, elu_out)


def conv_vector_width() -> int | None:
    """Floats per vector of the compiled conv kernel (16 with AVX-512, else 8); None without it."""
    _load()
    conv = _state.get("conv")
    return None if conv is None else conv[1]


def conv_rows(x: torch.Tensor, w: torch.Tensor, *, base: int, n_out: int, dilation: int = 1,
              context: torch.Tensor | None = None, bias: torch.Tensor | None = None,
              add: torch.Tensor | None = None, elu: bool = False,
              sum_out: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """A causal conv on time-major rows, with its epilogue, in one compiled pass (`fused_conv.c`):

        v[t] = bias + add[t] + sum_j x[t + base + j * dilation] @ w[j]     -> [n_out, C_out]

    x [R, C_in] float32 (rows may be strided, values within a row contiguous), w [k, C_in, C_out]
    contiguous; `context` [P, C_in]: the rows just before x (a stream's carried samples), rows
    outside x and the context count as zeros. Writes v to `sum_out` [n_out, C_out] if given and
    returns elu(v) if `elu`, else v (in `out` [n_out, C_out] if given). A strided conv with
    kernel 2s is this on rows of s samples (x viewed [R / s, s * C_in], w [2, s * C_in, C_out]).
    Needs the compiled kernel and C_out a multiple of `conv_vector_width()` (`ValueError`
    otherwise: callers check first)."""
    _load()
    conv = _state.get("conv")
    k, c_in, c_out = w.shape
    if conv is None or c_out % conv[1]:
        raise ValueError(f"no compiled conv kernel for {c_out} output channels")
    for name, t in (("x", x), ("context", context)):
        if t is not None and (t.dim() != 2 or t.shape[1] != c_in or (t.stride(1) != 1 and c_in > 1)
                              or t.dtype != torch.float32 or t.device.type != "cpu"):
            raise ValueError(f"{name} must be float32 CPU rows [R, {c_in}] with contiguous values, got {tuple(t.shape)}")
    for name, t, shape in (("w", w, (k, c_in, c_out)), ("bias", bias, (c_out,)), ("add", add, (n_out, c_out)),
                           ("sum_out", sum_out, (n_out, c_out)), ("out", out, (n_out, c_out))):
        if t is not None and (tuple(t.shape) != shape or not t.is_contiguous() or t.dtype != torch.float32
                              or t.device.type != "cpu"):
            raise ValueError(f"{name} must be a contiguous float32 CPU tensor {shape}, got {tuple(t.shape)}")
    out = x.new_empty(n_out, c_out) if out is None else out
    threads = torch.get_num_threads() if n_out * c_out >= _MIN_PARALLEL else 1
    ptr = (lambda t: None if t is None else t.data_ptr())
    ctx_rows = 0 if context is None else context.shape[0]
    ld_ctx = 0 if context is None else context.stride(0)
    conv[0](ptr(x), x.shape[0], x.stride(0), ptr(context), ctx_rows, ld_ctx, c_in, ptr(w), k, dilation, base,
            c_out, ptr(bias), ptr(add), ptr(sum_out), ptr(out), n_out, int(elu), threads)
    return out


def elu(x: torch.Tensor, inplace: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """ELU (alpha 1) as torch ops: max(x, exp(min(x, 0)) - 1), four vectorised passes that run
    about 1.5x faster than `F.elu` on CPU (whose expm1 is slow). Differs from `F.elu` by at most
    ~5e-8 in absolute value (exp(x) - 1 near 0, where both are ~1e-7 from the exact value):
    rounding noise at the scale of the activations, as the GEMM order is. Writes into `out`
    (which may be x) if given, else into x if `inplace`."""
    y = torch.clamp_max(x, 0.0).exp_().sub_(1.0)  # exp(min(x, 0)) - 1
    return torch.maximum(x, y, out=out if out is not None else x if inplace else y)


def _add_elu_torch(a, b, bias, sum_out, elu_out) -> None:
    """The same as torch ops (no compiler, other dtypes or layouts). The sum is taken in place in
    an input that is also an output when all share a dtype (a temporary measured ~7% slower on
    bf16 SEANet stacks), else in a new tensor."""
    outputs = [t for t in (sum_out, elu_out) if t is not None]
    one_dtype = all(t is None or t.dtype == a.dtype for t in (b, bias, *outputs))
    v = next((t for t in (a, b) if one_dtype and t is not None and any(t is o for o in outputs)), None)
    if v is not None:  # an input that is overwritten anyway: a + b there (sums commute)
        if b is not None:
            v.add_(b if v is a else a)
    elif b is not None:
        v = a + b
    elif bias is not None:
        v = a + bias
        bias = None
    else:
        v = a
    if bias is not None:
        v.add_(bias)
    if sum_out is not None and sum_out is not v:
        sum_out.copy_(v)
    if elu_out is not None:
        elu(v, out=elu_out)
