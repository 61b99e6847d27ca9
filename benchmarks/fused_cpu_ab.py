"""The compiled CPU kernels (`mimi.modules.fused_cpu`) against what runs without them.

    python benchmarks/fused_cpu_ab.py [--threads 2] [--seconds 20] [--repeats 7] [--model default]

First each kernel alone: `add_elu` on activations of the sizes a SEANet chunk has (ELU only,
and skip + bias + ELU) in G values/s against torch ops, and the conv kernel with its epilogue
(`time_major.conv1d_fused`) on the high-rate SEANet convs against BLAS GEMMs + `add_elu`, in
GFLOP/s. Then, in one process on the same random released-architecture weights
(`tests.helpers.make_model`; `--model` loads another, e.g. `default`, the bundled small model)
and speech-like input: the SEANet encoder and decoder alone, then
the whole offline encode (audio -> codes, 8 levels) and decode, with both kernels, with the
elementwise kernel only (convs as BLAS GEMMs), and with neither (torch ops), interleaved round
by round (medians). Checks that all give the same codes and prints the largest differences of
the latent and the audio from the torch-op run.
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
from mimi.modules import fused_cpu, time_major  # noqa: E402
from mimi.modules.conv import StreamingConv1d  # noqa: E402
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


def conv_rates(use, repeats: int = 20) -> None:
    """GFLOP/s of the high-rate SEANet convs with their epilogues, conv kernel vs BLAS + add_elu."""
    print("conv + epilogue alone (GFLOP/s, median of", repeats, "calls; one rate-stage chunk):")
    for rows, c_in, c_out, k, s, epilogue in [(16320, 1, 64, 7, 1, "bias, ELU, keep v"), (16320, 64, 32, 3, 1, "bias, ELU"),
                                             (16320, 32, 64, 1, 1, "bias, skip, ELU"), (8160, 128, 64, 3, 1, "bias, ELU"),
                                             (8160, 64, 128, 1, 1, "bias, skip, ELU")]:
        m = StreamingConv1d(c_in, c_out, k, stride=s).eval()
        x, skip = torch.randn(1, rows, c_in), torch.randn(1, rows // s, c_out)
        kwargs = {"bias, ELU, keep v": {"elu": True, "keep_pre": True}, "bias, ELU": {"elu": True},
                  "bias, skip, ELU": {"add": skip, "elu": True}}[epilogue]
        flop = 2 * rows // s * k * c_in * c_out
        line = []
        for name, setting in (("kernel", "both kernels"), ("BLAS + add_elu", "elementwise only")):
            use(setting)
            with torch.no_grad():
                t = median_seconds(lambda: time_major.conv1d_fused(m, x, **kwargs), repeats)
            line.append(f"{name} {flop / t / 1e9:4.0f}")
        use("both kernels")
        weights_kb = 4 * k * c_in * c_out / 1024
        print(f"  {c_in:3d}->{c_out:3d} k{k} s{s} x {rows} rows ({weights_kb:.0f} KB of weights), {epilogue}: "
              + ", ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", default=None, help="a checkpoint for mimi.load ('default': the bundled model); "
                    "default: random weights with the released architecture")
    ap.add_argument("--skip-alone", action="store_true", help="skip the kernels-alone measurements")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not fused_cpu.available() or fused_cpu.conv_vector_width() is None:
        sys.exit("the compiled kernels are not available here (no C compiler?): nothing to compare")
    compiled, conv = fused_cpu._load(), fused_cpu._state["conv"]
    settings = {"both kernels": (compiled, conv), "elementwise only": (compiled, None), "torch ops": (None, None)}

    def use(setting: str) -> None:
        fused_cpu._state["lib"], fused_cpu._state["conv"] = settings[setting]

    print(f"conv kernel vector width: {conv[1]} floats; time_major takes convs with up to "
          f"{time_major.KERNEL_MAX_WEIGHT_BYTES // 1024} KB of weights when it is >= {time_major.KERNEL_VECTOR_WIDTH}")
    if not args.skip_alone:
        kernel_rates(compiled, use_kernel=lambda k: fused_cpu._state.__setitem__("lib", k))
        conv_rates(use)
    if args.model is None:
        model = make_model(mimi.MimiConfig.released())
    else:
        model = mimi.load(None if args.model == "default" else args.model)
        print(f"model: {args.model} (SEANet {model.config.seanet.n_filters} filters)")
    wav = torch.from_numpy(speechlike(args.seconds))[None, None]  # [1, 1, T]
    with torch.no_grad():
        latent = model.encoder(wav)
        codes = model.encode(wav)

    jobs = {
        "encoder (SEANet)": lambda: model.encoder(wav),
        "decoder (SEANet)": lambda: model.decoder(latent),
        "encode (audio -> codes)": lambda: model.encode(wav),
        "decode (codes -> audio)": lambda: model.decode(codes),
    }
    times = {(job, k): [] for job in jobs for k in settings}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first round warms up (not counted)
            for job, fn in jobs.items():
                for name in settings:
                    use(name)
                    start = time.perf_counter()
                    outputs[job, name] = fn()
                    times[job, name].append(time.perf_counter() - start)
    use("both kernels")
    print(f"{args.seconds:g} s of audio, {args.threads} threads, {args.repeats} interleaved rounds (medians)")
    for job in jobs:
        t = {k: statistics.median(times[job, k][1:]) for k in settings}
        parts = [f"{k} {t[k]:.3f} s ({args.seconds / t[k]:5.1f}x RT)" for k in settings]
        base = outputs[job, "torch ops"]
        diffs = []
        for k in ("both kernels", "elementwise only"):
            a = outputs[job, k]
            diffs.append("codes equal" if a.dtype == torch.long and torch.equal(a, base) else (
                f"codes differ at {(a != base).float().mean():.4%}" if a.dtype == torch.long
                else f"max |diff| {(a - base).abs().max():.2e}"))
        print(f"{job:25s} " + "  ".join(parts) + f"  speed-up {t['torch ops'] / t['both kernels']:.2f}x "
              f"(conv kernel alone {t['elementwise only'] / t['both kernels']:.2f}x)  vs torch ops: both "
              f"{diffs[0]}, elementwise only {diffs[1]} (max |x| {base.abs().max() if base.dtype != torch.long else 0:.2e})")


if __name__ == "__main__":
    main()
