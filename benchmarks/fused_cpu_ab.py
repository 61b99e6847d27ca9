"""The compiled one-pass `add + bias + ELU` kernel against the same passes as torch ops.

    python benchmarks/fused_cpu_ab.py [--threads 2] [--seconds 20] [--repeats 7]

First the kernel alone (`add_elu` on activations of the sizes a SEANet chunk has: ELU only, and
skip + bias + ELU), in G values/s. Then, in one process on the same random released-architecture
weights (`tests.helpers.make_model`) and speech-like input: the SEANet encoder and decoder
alone, then the whole offline encode (audio -> codes, 8 levels) and decode, each with
`mimi.modules.fused_cpu`'s compiled kernel and with its torch-op fallback, interleaved round by
round (medians). Checks that both give the same codes and prints the largest differences of the
latent and the audio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mimi  # noqa: E402
from mimi.modules import fused_cpu  # noqa: E402
from tests.helpers import make_model, speechlike  # noqa: E402
from timing import median_seconds  # noqa: E402 (benchmarks/timing.py)


def kernel_rates(compiled, use_kernel, calls: int = 100) -> None:
    """G values/s of `add_elu` alone, compiled vs torch ops."""
    print("kernel alone (G values/s, median of 5 x", calls, "calls):")
    for rows, c in [(16384, 64), (4096, 256), (512, 1024), (1, 512)]:
        a, b, bias, out = torch.randn(rows, c), torch.randn(rows, c), torch.randn(c), torch.empty(rows, c)
        line = []
        for label, kwargs in (("ELU", {}), ("skip + bias + ELU", {"b": b, "bias": bias})):
            for name, kernel in (("compiled", compiled), ("torch ops", None)):
                use_kernel(kernel)
                t = median_seconds(lambda: [fused_cpu.add_elu(a, elu_out=out, **kwargs) for _ in range(calls)], 5)
                line.append(f"{label} {name} {a.numel() * calls / t / 1e9:5.2f}")
        use_kernel(compiled)
        print(f"  [{rows:5d}, {c:4d}]: " + ", ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not fused_cpu.available():
        sys.exit("the compiled kernel is not available here (no C compiler?): nothing to compare")
    compiled = fused_cpu._load()
    kernel_rates(compiled, use_kernel=lambda k: fused_cpu._state.__setitem__("lib", k))
    model = make_model(mimi.MimiConfig.released())
    wav = torch.from_numpy(speechlike(args.seconds))[None, None]  # [1, 1, T]
    with torch.no_grad():
        latent = model.encoder(wav)
        codes = model.encode(wav)

    def use(kernel) -> None:
        fused_cpu._state["lib"] = kernel

    jobs = {
        "encoder (SEANet)": lambda: model.encoder(wav),
        "decoder (SEANet)": lambda: model.decoder(latent),
        "encode (audio -> codes)": lambda: model.encode(wav),
        "decode (codes -> audio)": lambda: model.decode(codes),
    }
    times = {(job, k): [] for job in jobs for k in ("compiled", "torch ops")}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first round warms up (not counted)
            for job, fn in jobs.items():
                for name, kernel in (("compiled", compiled), ("torch ops", None)):
                    use(kernel)
                    start = time.perf_counter()
                    outputs[job, name] = fn()
                    times[job, name].append(time.perf_counter() - start)
    use(compiled)
    print(f"{args.seconds:g} s of audio, {args.threads} threads, {args.repeats} interleaved rounds (medians)")
    for job in jobs:
        t_c, t_t = (statistics.median(times[job, k][1:]) for k in ("compiled", "torch ops"))
        a, b = outputs[job, "compiled"], outputs[job, "torch ops"]
        diff = "codes equal" if a.dtype == torch.long and torch.equal(a, b) else (
            f"codes differ at {(a != b).float().mean():.4%}" if a.dtype == torch.long
            else f"max |diff| {(a - b).abs().max():.2e} (max |x| {b.abs().max():.2e})")
        print(f"{job:25s} compiled {t_c:.3f} s ({args.seconds / t_c:5.1f}x RT)  torch ops {t_t:.3f} s "
              f"({args.seconds / t_t:5.1f}x RT)  speed-up {t_t / t_c:.2f}x  {diff}")


if __name__ == "__main__":
    main()
