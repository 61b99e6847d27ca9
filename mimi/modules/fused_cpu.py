"""One-pass `add + bias + ELU` for SEANet inference on CPU, compiled at first use.

Why. Between its GEMMs, a SEANet stack on CPU spends a fifth of its time in elementwise passes
over large activations: ELU as four vectorised torch ops (`elu` below), the
bias of each conv, the skip add of each residual unit. One C loop does all of them in a single
read and write: 2-4x the torch ops it replaces, and the SEANet stacks ~1.2x faster
(`benchmarks/fused_cpu_ab.py`).

What. `add_elu(a, b, bias, sum_out=..., elu_out=...)` computes v = a + b + bias (b and bias
optional, bias per channel) and writes v and/or elu(v). The kernel (`fused_cpu.c`, ~110 lines
of C without dependencies) is compiled with the system C compiler (`$CC`, else `cc`) the first
time it is needed, for the host's instruction set, with OpenMP when the compiler has it, into
`$MIMI_KERNEL_CACHE` (default `~/.cache/mimi/kernels`), and loaded with ctypes; later processes
load the cached library (keyed by the source, the compiler and the CPU; a damaged file is
rebuilt). Its ELU is exp(v) - 1 for v <= 0 (a polynomial exp within 2 ulp), v otherwise, NaN
passing through: it differs from `F.elu` by at most ~6e-8, as the torch-op `elu` does (tests
compare all three).

Without a compiler (or with `MIMI_FUSED_CPU=0`), the same function runs as torch ops: same
results to float rounding, only slower. `available()` says which one is in use.
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

__all__ = ["add_elu", "available", "elu", "library_path"]

_SOURCE = Path(__file__).with_name("fused_cpu.c")
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
        _SOURCE.read_bytes(), compiler, version, _cpu_flags(), platform.machine()))).hexdigest()[:16]
    return _cache_dir() / f"fused_cpu-{key}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile into a temporary file next to `target`, then rename: concurrent builds are safe."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
        os.close(fd)
        cmd = [compiler, "-O3", "-std=c11", "-shared", "-fPIC", *flags, str(_SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            os.replace(tmp, target)
            return
        os.unlink(tmp)
        errors.append(done.stderr.strip().splitlines()[-1:] or [""])
    raise OSError(f"could not compile {_SOURCE.name}: {errors[-1][0]}")


def _load():
    """The compiled kernel, building it if needed; None when it cannot be had."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        fn = None
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
                fn = lib.mimi_fused_add_elu
                p = ctypes.c_void_p
                fn.argtypes = [p, p, p, ctypes.c_int64, ctypes.c_int64, p, p, ctypes.c_int]
                fn.restype = None
            except (OSError, subprocess.SubprocessError):
                fn = None  # no compiler that works here: the torch ops below do the same
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


def elu(x: torch.Tensor, inplace: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """ELU (alpha 1) as torch ops: max(x, exp(min(x, 0)) - 1), four vectorised passes that run
    about 1.5x faster than `F.elu` on CPU (whose expm1 is slow). Differs from `F.elu` by at most
    ~5e-8 in absolute value (exp(x) - 1 near 0, where both are ~1e-7 from the exact value):
    rounding noise at the scale of the activations, as the GEMM order is. Writes into `out`
    (which may be x) if given, else into x if `inplace`."""
    y = torch.clamp_max(x, 0.0).exp_().sub_(1.0)  # exp(min(x, 0)) - 1
    return torch.maximum(x, y, out=out if out is not None else x if inplace else y)


def _add_elu_torch(a, b, bias, sum_out, elu_out) -> None:
    """The same as torch ops (no compiler, other dtypes or layouts)."""
    v = a if b is None else a + b
    if bias is not None:
        v = v + bias if v is a else v.add_(bias)
    if sum_out is not None:
        sum_out.copy_(v)
    if elu_out is not None:
        elu(v, out=elu_out)
