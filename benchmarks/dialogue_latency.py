"""Latency of full-duplex dialogue: algorithmic latency and per-frame compute.

Algorithmic latency (from the configs): one frame (Mimi emits a frame's codes once the whole
80 ms frame is in) plus the acoustic delay (Moshi's audio for a frame comes `max_delay` frames
after its text and semantic tokens). Compute latency: one dialogue frame exactly as
`moshi_lm.dialogue.DialogueSession` runs it (Mimi streaming encode, `LMGen.step`, Mimi
streaming decode), timed part by part with the LM step split into its main temporal step
(+ text sampling and bookkeeping) and its depth steps (depformer + audio sampling), over
`--steps` frames after `--warmup` frames; p50 / p99 / worst per part against the 80 ms budget.

CPU, a tiny random LM and the tiny Mimi (seconds):

    python benchmarks/dialogue_latency.py --preset tiny --random-weights --mimi-preset tiny \\
        --threads 1 --out benchmarks/results/dialogue_latency_cpu_tiny.md

A trained pair:  --lm runs/lm/final --mimi path/to/mimi.safetensors
GPU, a 7B-shaped moshiko LM (random weights, built directly on the GPU in bf16) with a
released-shaped random Mimi:

    python benchmarks/dialogue_latency.py --preset 7b --random-weights --device cuda --dtype bf16 \\
        --out benchmarks/results/dialogue_latency_h200_7b_bf16.md

Needs only torch and this repository (when `safetensors` is missing, a stand-in lets the
packages import; loading checkpoint files then fails with a clear message).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _stand_in_for_safetensors() -> None:
    """Let `mimi` / `moshi_lm` import where only torch is installed (random weights need no files)."""
    if importlib.util.find_spec("safetensors") is not None:
        return

    class SafetensorError(Exception):
        pass

    def unavailable(*args: object, **kwargs: object) -> None:
        raise SafetensorError("safetensors is not installed: checkpoint files cannot be read or written")

    top = types.ModuleType("safetensors")
    top.SafetensorError = SafetensorError  # type: ignore[attr-defined]
    top.safe_open = unavailable  # type: ignore[attr-defined]
    sub = types.ModuleType("safetensors.torch")
    for name in ("save_file", "load_file", "save", "load"):
        setattr(sub, name, unavailable)
    top.torch = sub  # type: ignore[attr-defined]
    sys.modules["safetensors"] = top
    sys.modules["safetensors.torch"] = sub


_stand_in_for_safetensors()

from mimi.config import MimiConfig  # noqa: E402
from mimi.model import MimiModel, build_mimi  # noqa: E402
from moshi_lm.config import LMConfig  # noqa: E402
from moshi_lm.dialogue import AlgorithmicLatency, percentile  # noqa: E402
from moshi_lm.generate import LMGen  # noqa: E402
from moshi_lm.model import LMModel, build_lm  # noqa: E402

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
PARTS = ("mimi_encode", "lm_main", "lm_depth", "mimi_decode", "frame_total")
LABELS = {"mimi_encode": "Mimi encode (streaming, 1 frame)", "lm_main": "LM main step (temporal + text)",
          "lm_depth": "LM depth steps (all of them)", "lm_depth_step": "LM one depth step (mean of the frame's)",
          "mimi_decode": "Mimi decode (streaming, 1 frame)", "frame_total": "whole frame"}


# -- models --------------------------------------------------------------------------------------
def _lm_config(preset: str, card: int) -> LMConfig:
    if preset == "7b":
        cfg = LMConfig.moshiko_7b()
    else:
        cfg = LMConfig.tiny()
    if cfg.card != card:  # random weights: make the LM's audio vocabulary match the codec
        cfg = LMConfig(**{**cfg.to_json_dict(), "card": card})
    return cfg


def build_random_lm(cfg: LMConfig, device: torch.device, dtype: torch.dtype, seed: int) -> LMModel:
    """Random weights created directly on `device` in `dtype` (no CPU copy of a 7B model)."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = build_lm(cfg, init=True)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def build_random_mimi(preset: str, device: torch.device, dtype: torch.dtype, seed: int) -> MimiModel:
    torch.manual_seed(seed)
    with device:
        model = build_mimi(MimiConfig.preset(preset), num_codebooks=8)
    model = model.eval()
    if dtype != torch.float32:
        model.set_dtype(dtype)
    model.requires_grad_(False)
    return model


# -- timing ----------------------------------------------------------------------------------------
class Marks:
    """Named points in time: CUDA events on a GPU (no sync between marks), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.points: list[tuple[str, object]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append((name, event))
        else:
            self.points.append((name, time.perf_counter()))

    def elapsed_ms(self, a: str, b: str) -> float:
        pa = dict(self.points)[a]
        pb = dict(self.points)[b]
        if self.cuda:
            return float(pa.elapsed_time(pb))  # type: ignore[union-attr]
        return (pb - pa) * 1e3  # type: ignore[operator]

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.points)

    def finish(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass(frozen=True)
class PartStats:
    p50: float
    p99: float
    worst: float
    mean: float


def part_stats(values: list[float]) -> PartStats:
    return PartStats(percentile(values, 50), percentile(values, 99), max(values), sum(values) / len(values))


@torch.no_grad()
def run(mimi: MimiModel, lm: LMModel, *, steps: int, warmup: int, batch_size: int, greedy: bool,
        seed: int) -> dict[str, list[float]]:
    cfg = lm.config
    device = lm.device
    gen = LMGen(lm, use_sampling=not greedy, generator=torch.Generator(device=device).manual_seed(seed))
    marks_box: list[Marks] = []
    original_depth = gen._depth_frame

    def timed_depth(text: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        marks_box[-1].mark("depth_start")
        out = original_depth(text, hidden)
        marks_box[-1].mark("depth_end")
        return out

    gen._depth_frame = timed_depth  # type: ignore[method-assign]  # instance attribute: times the depth loop
    in_dtype = next(mimi.encoder.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    frames = (0.1 * torch.randn(warmup + steps, batch_size, 1, mimi.frame_size, generator=g)).to(device, in_dtype)
    times: dict[str, list[float]] = {p: [] for p in PARTS + ("lm_depth_step",)}
    n_user = cfg.num_user_codebooks
    with mimi.streaming(batch_size), gen.streaming(batch_size):
        for i in range(warmup + steps):
            marks = Marks(device)
            marks_box.append(marks)
            marks.mark("start")
            user = mimi.quantize(mimi.encode_to_latent(frames[i]), n_user)  # [B, n_user, 1]
            marks.mark("encoded")
            out = gen.step(user)  # None | [B, 1 + dep_q, 1]
            marks.mark("stepped")
            if out is not None:
                audio = mimi.decode(out[:, 1:1 + cfg.dep_q].to(device))  # [B, 1, frame_size]
                audio.float().cpu()
            marks.mark("decoded")
            marks.finish()
            marks_box.clear()
            if i < warmup or out is None:
                continue
            depth = marks.elapsed_ms("depth_start", "depth_end")
            times["mimi_encode"].append(marks.elapsed_ms("start", "encoded"))
            times["lm_main"].append(marks.elapsed_ms("encoded", "stepped") - depth)
            times["lm_depth"].append(depth)
            times["lm_depth_step"].append(depth / cfg.dep_q)
            times["mimi_decode"].append(marks.elapsed_ms("stepped", "decoded"))
            times["frame_total"].append(marks.elapsed_ms("start", "decoded"))
    return times


# -- report ------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"


def params(module: torch.nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def report(args: argparse.Namespace, mimi: MimiModel, lm: LMModel, times: dict[str, list[float]],
           lm_name: str, mimi_name: str, wall_s: float) -> str:
    cfg = lm.config
    device = lm.device
    latency = AlgorithmicLatency.of(cfg, mimi.frame_size, mimi.sample_rate)
    budget = latency.frame_ms
    total = part_stats(times["frame_total"])
    lines = [
        f"# Dialogue latency: {lm_name} + {mimi_name}",
        "",
        f"- Device: **{device_name(device)}**"
        + (f" ({torch.get_num_threads()} torch threads)" if device.type == "cpu" else ""),
        f"- torch {torch.__version__}, dtype {str(next(lm.parameters()).dtype).replace('torch.', '')}"
        f" (Mimi's quantizer float32), batch {args.batch_size}, {'greedy' if args.greedy else 'sampling'}",
        f"- LM: {params(lm)} parameters (dim {cfg.dim}, {cfg.num_layers} layers, depformer {cfg.depformer_dim} x "
        f"{cfg.depformer_num_layers} layers, {cfg.dep_q} depth steps, context {cfg.context}); "
        f"Mimi: {params(mimi)} parameters ({mimi.config.name})",
        *([f"- Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
           f"({os.cpu_count()} CPUs); other processes inflate CPU timings"] if device.type == "cpu" else []),
        f"- {len(times['frame_total'])} timed frames after {args.warmup} warm-up frames; "
        f"{'CUDA events' if device.type == 'cuda' else 'perf_counter'}; run took {wall_s:.1f} s",
        f"- Date: {datetime.date.today().isoformat()}; command: `python benchmarks/dialogue_latency.py "
        f"{' '.join(sys.argv[1:])}`",
        "",
        f"**Algorithmic latency: {latency.total_ms:.0f} ms** = {latency.frame_ms:.0f} ms frame + "
        f"{latency.delay_frames} x {latency.frame_ms:.0f} ms acoustic delay (delays {list(cfg.delays)}).",
        "",
        f"**Compute per frame: p50 {total.p50:.2f} ms, p99 {total.p99:.2f} ms, worst {total.worst:.2f} ms** "
        f"against the {budget:.0f} ms real-time budget "
        f"({'real time' if total.p99 <= budget else 'NOT real time'} at p99; p50 uses "
        f"{100 * total.p50 / budget:.1f}% of it). Latency heard = algorithmic + compute "
        f"= {latency.total_ms + total.p50:.0f} ms at p50.",
        "",
        "| part | p50 ms | p99 ms | worst ms | mean ms | p50 share of 80 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for part in ("mimi_encode", "lm_main", "lm_depth", "lm_depth_step", "mimi_decode", "frame_total"):
        s = part_stats(times[part])
        lines.append(f"| {LABELS[part]} | {s.p50:.2f} | {s.p99:.2f} | {s.worst:.2f} | {s.mean:.2f} | "
                     f"{100 * s.p50 / budget:.1f}% |")
    lines += ["", "The LM main step includes the text sampling and the token bookkeeping of `LMGen.step`; "
              "the depth steps include the audio sampling (top-k). Frames during the LM's delay warm-up "
              "(no decode) are not timed.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm", help="LM checkpoint folder (config.json + model.safetensors)")
    ap.add_argument("--preset", choices=("tiny", "7b"), help="random LM of this shape (needs --random-weights)")
    ap.add_argument("--random-weights", action="store_true", help="build the --preset LM with random weights")
    ap.add_argument("--mimi", help="Mimi checkpoint (else a random --mimi-preset)")
    ap.add_argument("--mimi-preset", choices=("tiny", "small", "released"),
                    help="random Mimi of this shape [default: released for 7b, tiny for tiny]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--steps", type=int, default=100, help="timed frames")
    ap.add_argument("--warmup", type=int, default=10, help="untimed frames first")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--greedy", action="store_true", help="argmax instead of top-k sampling")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="markdown file to write")
    args = ap.parse_args(argv)
    if (args.lm is None) == (args.preset is None):
        ap.error("give exactly one of --lm and --preset")
    if args.preset is not None and not args.random_weights:
        ap.error("--preset builds random weights: add --random-weights")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        ap.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    dtype = DTYPES[args.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    t0 = time.perf_counter()
    if args.mimi is not None:
        import mimi as mimi_pkg

        codec = mimi_pkg.load(args.mimi, device=device, dtype=dtype)
        mimi_name = f"Mimi {args.mimi}"
    else:
        preset = args.mimi_preset or ("released" if args.preset == "7b" else "tiny")
        codec = build_random_mimi(preset, device, dtype, args.seed)
        mimi_name = f"random {preset}-shaped Mimi"
    if args.lm is not None:
        import moshi_lm

        lm = moshi_lm.load(args.lm, device=device, dtype=dtype)
        lm_name = f"LM {args.lm}"
    else:
        lm = build_random_lm(_lm_config(args.preset, codec.codebook_size), device, dtype, args.seed)
        lm_name = "random 7B-shaped moshiko LM" if args.preset == "7b" else "random tiny LM"
    if lm.config.card != codec.codebook_size:
        print(f"error: the LM's card ({lm.config.card}) differs from Mimi's codebook size "
              f"({codec.codebook_size})", file=sys.stderr)
        return 1
    built = time.perf_counter()
    print(f"built models in {built - t0:.1f} s; running {args.warmup} + {args.steps} frames", file=sys.stderr)
    times = run(codec, lm, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, greedy=args.greedy,
                seed=args.seed)
    text = report(args, codec, lm, times, lm_name, mimi_name, time.perf_counter() - t0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
