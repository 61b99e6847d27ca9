"""The time-major CPU path against the channels-first convs, in one process on the same weights.

    python benchmarks/time_major_ab.py [--threads 2] [--seconds 20] [--repeats 5] [--stages] [--layers]

Prints encode/decode seconds and real-time factors for `time_major=False` and for time-major
runs with several per-stage chunk budgets (`chunk_bytes`, see `mimi.modules.rate_stages`; the
largest, 1 GB, runs each rate stage over the whole 20 s at once), interleaved round by round
(medians), with the relative error of each against the channels-first latent/audio. `--layers`
adds the per-conv times of the SEANet encoder (one call each, median of 3), both paths; `--stages` the time
and GFLOP/s of each rate stage of the encoder and decoder at the default budget. Random
released-architecture weights (`tests.helpers.make_model`); keep the machine otherwise quiet.
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
from mimi.modules.conv import StreamingConv1d, StreamingConvTranspose1d  # noqa: E402
from mimi.modules.seanet import ResidualUnit  # noqa: E402
from mimi.modules.rate_stages import plan_stages, run_stages  # noqa: E402
from mimi.modules.time_major import conv1d_time_major, seanet_time_major  # noqa: E402
from tests.helpers import make_model, speechlike  # noqa: E402
from timing import median_seconds  # noqa: E402 (benchmarks/timing.py)


def layers(model, wav: torch.Tensor) -> None:
    """Per-conv times of the encoder: time-major GEMMs vs channels-first conv1d."""
    x = wav.transpose(1, 2)  # [B, T, 1] time-major
    for i, layer in enumerate(model.encoder.layers):
        convs = [layer] if isinstance(layer, StreamingConv1d) else (
            [layer.block[1], layer.block[3]] if isinstance(layer, ResidualUnit) else [])
        h = torch.nn.functional.elu(x) if isinstance(layer, ResidualUnit) else x
        for conv in convs:
            cf = h.transpose(1, 2).contiguous()
            tm_ms, cf_ms = (1000 * median_seconds(fn, 3) for fn in (lambda: conv1d_time_major(conv, h), lambda: conv(cf)))
            out = conv1d_time_major(conv, h)
            c = conv.conv
            gflop = 2 * out.shape[1] * c.kernel_size[0] * c.in_channels * c.out_channels / 1e9
            print(f"layer {i:2d} conv {c.in_channels}->{c.out_channels} k{c.kernel_size[0]} s{conv.stride} "
                  f"T={h.shape[1]}: time-major {tm_ms:7.1f} ms ({gflop / tm_ms * 1e3:5.0f} GFLOP/s), "
                  f"conv1d {cf_ms:7.1f} ms ({gflop / cf_ms * 1e3:5.0f} GFLOP/s)")
            h = torch.nn.functional.elu(out) if conv is not convs[-1] else out
        if isinstance(layer, StreamingConv1d):
            x = h
        elif isinstance(layer, ResidualUnit):
            x = x + h
        else:
            x = torch.nn.functional.elu(x)


def _stage_gflop(layers, rows: int) -> float:
    """Multiply-add FLOPs of a stage's convs for `rows` input rows, in GFLOP."""
    flop = 0
    for layer in layers:
        for m in layer.modules():
            if isinstance(m, StreamingConv1d):
                rows //= m.stride
                c = m.conv
                flop += 2 * rows * c.kernel_size[0] * c.in_channels * c.out_channels
            elif isinstance(m, StreamingConvTranspose1d):
                c = m.convtr
                flop += 2 * rows * c.in_channels * c.out_channels * c.kernel_size[0]
                rows *= m.stride
    return flop / 1e9


def stages(model, wav: torch.Tensor, codes: torch.Tensor) -> None:
    """Time and GFLOP/s of each rate stage (summed over its chunks) of the encoder and decoder
    SEANet at the default chunk budget; median of 3 calls after a warm-up."""
    latent = model.decoder_transformer(model.upsample(model.dequantize(codes)))
    for side, stack, x, rows in (("encoder", model.encoder, wav.transpose(1, 2), model.encoder._input_per_frame),
                                 ("decoder", model.decoder, latent.transpose(1, 2), 1)):
        plan = plan_stages(stack.layers, rows, stack.chunk_bytes)
        spent: list[list[float]] = [[] for _ in plan]
        for rep in range(4):
            acc = [0.0] * len(plan)

            def run(layers, chunk, acc=acc):
                i = next(j for j, st in enumerate(plan) if st.layers is layers)
                start = time.perf_counter()
                out = seanet_time_major(layers, chunk)
                acc[i] += time.perf_counter() - start
                return out

            with stack.streaming(x.shape[0]):
                run_stages(plan, run, x)
            if rep:  # the first call warms up
                for i, t in enumerate(acc):
                    spent[i].append(t)
        frames = x.shape[1] // rows
        for i, st in enumerate(plan):
            t, gflop = statistics.median(spent[i]), _stage_gflop(st.layers, frames * st.rows_per_frame)
            print(f"{side} stage {i}: {st.rows_per_frame:4d} rows/frame, chunks of "
                  f"{st.chunk_rows // st.rows_per_frame:3d} frames: {1000 * t:6.1f} ms, {gflop:5.1f} GFLOP "
                  f"({gflop / t:4.0f} GFLOP/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk-kb", default="1024,2048,4096,8192,1048576",
                    help="per-stage chunk budgets to compare, KB (the default is 4096)")
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--stages", action="store_true", help="per rate stage times and GFLOP/s")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = make_model(mimi.MimiConfig.released(), num_codebooks=8, calibrate_seconds=1.0)
    wav = torch.from_numpy(speechlike(args.seconds, seed=0))[None, None]
    variants = [("channels-first", False, None)] + [
        (f"time-major, stage chunks {int(kb)} KB", True, int(kb) << 10) for kb in args.chunk_kb.split(",")]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    with torch.inference_mode():
        codes = model.encode(wav)
        model.encoder.time_major = model.decoder.time_major = False
        ref_latent, ref_audio = model.encode_to_latent(wav), model.decode(codes)
        errors = {}
        for _ in range(args.repeats):
            for name, time_major, chunk in variants:
                model.encoder.time_major = model.decoder.time_major = time_major
                if chunk is not None:
                    model.encoder.chunk_bytes = model.decoder.chunk_bytes = chunk
                start = time.perf_counter()
                latent = model.encode_to_latent(wav)
                model.quantize(latent)
                mid = time.perf_counter()
                audio = model.decode(codes)
                end = time.perf_counter()
                times[name].append((mid - start, end - mid))
                errors[name] = (float((latent - ref_latent).abs().max() / ref_latent.abs().max()),
                                float((audio - ref_audio).abs().max() / ref_audio.abs().max()))
        print(f"{args.seconds:g} s, {args.threads} threads, {args.repeats} interleaved rounds (medians)")
        for name, _, _ in variants:
            enc = statistics.median(t[0] for t in times[name])
            dec = statistics.median(t[1] for t in times[name])
            lat_err, audio_err = errors[name]
            print(f"{name:36s} encode {enc:.3f} s ({args.seconds / enc:5.1f}x RT)  decode {dec:.3f} s "
                  f"({args.seconds / dec:5.1f}x RT)  rel. err latent {lat_err:.1e} audio {audio_err:.1e}")
        if args.stages:
            model.encoder.time_major = model.decoder.time_major = True
            del model.encoder.chunk_bytes, model.decoder.chunk_bytes  # back to the class default
            stages(model, wav, codes)
        if args.layers:
            layers(model, wav)


if __name__ == "__main__":
    main()
