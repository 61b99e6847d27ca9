#!/usr/bin/env python
"""CPU speed and agreement of our Mimi vs Kyutai's reference Mimi (moshi) and rustymimi.

Run inside the peers venv (see benchmarks/peers/README.md):

    bash benchmarks/peers/setup.sh
    .venv-peers/bin/python benchmarks/speed_vs_moshi.py [--threads N] [--repeats R] [--input x.wav]

What it does:

* builds (or reuses, cached under /tmp) one random Kyutai-layout weights file with
  ``benchmarks/peers/kyutai_mimi.py`` (moshi's own random init, random codebooks
  calibrated to the scale of the residual each level sees, so codes are diverse),
  and loads that same file in ours (``mimi.load``), in moshi (strict keys) and in
  rustymimi;
* input: 20 s of speech-like audio at 24 kHz (``tests.helpers.speechlike``) or
  ``--input`` (a sound file; mixed to mono, resampled to 24 kHz if needed);
* fp32, batch 1, ``torch.inference_mode()``, ``torch.set_num_threads(N)``;
* warm-up (1 call per implementation and op), then ``--repeats`` rounds; each
  round times every (implementation, op) once, on the same input, in an order
  that is reversed every other round so that slow drift cancels out;
* code agreement per level (ours vs moshi, rustymimi vs moshi) and decode SNR
  on the same codes;
* streaming step at batch 1 (encode one 1920-sample frame + decode one frame),
  interleaved frame by frame between implementations: p50 / p99 in ms;
* writes ``benchmarks/results/speed_cpu_fp32.md`` and ``.json``.

No moshi code is copied here; moshi is only imported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers"

SAMPLE_RATE = 24000
FRAME_SIZE = 1920
# Compute model of the comparison (see the results file): Mimi costs ~5.3 GFLOP
# per audio-second in each direction (conv + matmul FLOPs, 2 per MAC); a 2-core
# machine of this kind peaks at ~348 GFLOP/s fp32, so ~65x real time is the limit.
GFLOP_PER_AUDIO_SECOND = 5.3
PEAK_GFLOPS = 348.0

CALIB_VERSION = "v1"  # bump when the weight recipe below changes (cache key)


# --------------------------------------------------------------------------- args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (and RAYON_NUM_THREADS for rustymimi); "
                         "default: all usable cores")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic input")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic input")
    ap.add_argument("--input", type=str, default=None, help="a sound file to use instead")
    ap.add_argument("--num-codebooks", type=int, default=8)
    ap.add_argument("--weights", type=str, default=None,
                    help="Kyutai-layout .safetensors to use (default: build/reuse a random one under /tmp)")
    ap.add_argument("--weights-seed", type=int, default=0)
    ap.add_argument("--rebuild-weights", action="store_true", help="ignore the cached weights file")
    ap.add_argument("--with-rustymimi", action=argparse.BooleanOptionalAction, default=None,
                    help="also time rustymimi (default: on when importable)")
    ap.add_argument("--clean-threshold", type=float, default=0.25,
                    help="a round is clean when other processes used fewer cores than this during "
                         "each of its timed calls")
    ap.add_argument("--max-rounds", type=int, default=None,
                    help="run extra rounds (up to this many in all) until --repeats rounds are clean "
                         "(default: 2 x --repeats; set to --repeats to disable)")
    ap.add_argument("--wait-quiet", type=float, default=120.0,
                    help="before each round and the streaming run, wait up to this many seconds for "
                         "other processes to go quiet (0: never wait)")
    ap.add_argument("--stream-frames", type=int, default=100, help="timed streaming frames")
    ap.add_argument("--stream-warmup", type=int, default=10, help="untimed streaming frames first")
    ap.add_argument("--no-streaming", action="store_true", help="skip the streaming measurement")
    ap.add_argument("--out-dir", type=str, default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--name", type=str, default="speed_cpu_fp32", help="basename of the result files")
    args = ap.parse_args(argv)
    if args.max_rounds is None:
        args.max_rounds = 2 * args.repeats
    return args


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


ARGS = parse_args()
THREADS = ARGS.threads or usable_cores()
# rustymimi (candle) parallelises with rayon; pin it to the same thread count.
# Must be set before rustymimi is imported.
os.environ.setdefault("RAYON_NUM_THREADS", str(THREADS))

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(PEERS))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import kyutai_mimi as km  # noqa: E402  (imports moshi)
import mimi  # noqa: E402

try:
    import rustymimi  # noqa: E402
except ImportError:  # pragma: no cover
    rustymimi = None


# --------------------------------------------------------------------------- machine info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def top_processes(n: int = 5) -> list[str]:
    """Busiest other processes (pid %cpu elapsed command), this one excluded."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,etime,comm", "--sort=-pcpu"],
                             capture_output=True, text=True, timeout=10).stdout
        rows = [ln.split(None, 3) for ln in out.splitlines()[1:]]
        rows = [r for r in rows if len(r) == 4 and int(r[0]) != os.getpid()]
        return [" ".join(r) for r in rows[:n]]
    except Exception:  # pragma: no cover
        return []


class OthersCpu:
    """CPU time used by *other* processes over an interval, in cores:
    (machine busy time from /proc/stat - this process's CPU time) / wall time."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_s() -> float:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
        total = sum(f[:8])  # guest time is already counted in user
        return (total - idle) / OthersCpu.HZ

    def __enter__(self):
        try:
            self.b0 = self._busy_s()
        except (OSError, ValueError, IndexError):
            self.b0 = None
        t = os.times()
        self.own0, self.w0 = t.user + t.system, time.perf_counter()
        return self

    def __exit__(self, *exc):
        t = os.times()
        wall = time.perf_counter() - self.w0
        own = t.user + t.system - self.own0
        if self.b0 is None or wall <= 0:
            self.cores = None
        else:
            self.cores = max(0.0, (self._busy_s() - self.b0 - own) / wall)
        return False


def wait_quiet(max_wait_s: float, threshold: float, window_s: float = 2.0) -> float:
    """Sleep until other processes use < `threshold` cores over a `window_s` window
    (this process is idle meanwhile, so all busy time is theirs), at most `max_wait_s`.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    while max_wait_s > 0:
        with OthersCpu() as oc:
            time.sleep(window_s)
        if oc.cores is None or oc.cores < threshold or time.perf_counter() - t0 >= max_wait_s:
            break
    return time.perf_counter() - t0


def git_info() -> dict:
    """Git HEAD, uncommitted changes under mimi/, and a hash of the mimi/ sources as they
    were when this process started (the package was imported then)."""
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:  # pragma: no cover
            return ""
    h = hashlib.sha256()
    for f in sorted((REPO / "mimi").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return {"head": run("rev-parse", "HEAD"), "head_subject": run("log", "-1", "--format=%s"),
            "status_mimi": run("status", "--porcelain", "--", "mimi").splitlines(),
            "mimi_sources_sha256": h.hexdigest()}


def pkg_version(name: str) -> str | None:
    import importlib.metadata as md
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def machine_info(git: dict) -> dict:
    return {
        "cpu_model": cpu_model(),
        "cpu_flags_simd": cpu_flags(),
        "os_cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS"),
        "torch": torch.__version__,
        "torch_parallel_info": torch.__config__.parallel_info(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "moshi": pkg_version("moshi"),
        "rustymimi": pkg_version("rustymimi"),
        "mimi": getattr(mimi, "__version__", None),
        "git": git,
    }


# --------------------------------------------------------------------------- weights


@torch.no_grad()
def calibrate_moshi_codebooks(model, wav: torch.Tensor, seed: int) -> None:
    """Random Gaussian codebooks at the scale of the residual each level sees on `wav`.

    With moshi's random init the latent is tiny and nearly constant over time, so
    plain ``randomize_codebooks(scale=...)`` gives very few distinct codes at the
    first levels (2 distinct level-0 codes over 20 s of speech at scale 0.01).
    Here every level gets entries ``mean + std * randn`` of its residual, which
    makes codes diverse at every level (as with trained weights)."""
    g = torch.Generator().manual_seed(seed)
    latent = model.encode_to_latent(wav, quantize=False)  # [B, D, F]
    q = model.quantizer
    for rvq in (q.rvq_first, q.rvq_rest):
        res = rvq.input_proj(latent).transpose(1, 2).reshape(-1, rvq.dimension)
        for layer in rvq.vq.layers:
            cb = layer._codebook
            mean, std = res.mean(0), res.std(0)
            emb = mean + std * torch.randn(cb.codebook_size, cb.dim, generator=g)
            cb.embedding_sum.copy_(emb)
            cb.cluster_usage.fill_(1.0)
            cb._initialized.fill_(1.0)
            cb._embedding = None  # drop moshi's cached embedding
            cb._cached_initialized = False
            res = res - cb.decode(cb.encode(res))


def build_weights(path: Path, seed: int) -> dict:
    """moshi's random init + randomize_codebooks(0.01) + calibration; Kyutai layout."""
    from tests.helpers import speechlike

    t0 = time.perf_counter()
    model = km.build_kyutai_mimi(num_codebooks=8, seed=seed)
    km.randomize_codebooks(model, seed=seed, scale=0.01)
    calib = torch.stack([torch.from_numpy(speechlike(4.0, seed=1000 + seed + b))[None]
                         for b in range(2)])  # not the benchmark input
    calibrate_moshi_codebooks(model, calib, seed=seed)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    km.save_kyutai_weights(model, tmp)
    os.replace(tmp, path)
    return {"built": True, "build_s": time.perf_counter() - t0}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- input


def load_input() -> tuple[torch.Tensor, dict]:
    if ARGS.input is None:
        from tests.helpers import speechlike
        wav = torch.from_numpy(speechlike(ARGS.seconds, seed=ARGS.seed))[None, None]
        return wav.contiguous(), {"kind": "tests.helpers.speechlike", "seconds": ARGS.seconds,
                                  "seed": ARGS.seed}
    import soundfile as sf
    data, sr = sf.read(ARGS.input, dtype="float32", always_2d=True)  # [T, C]
    mono = data.mean(axis=1)
    if sr != SAMPLE_RATE:
        import soxr
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="VHQ").astype(np.float32)
    wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None, None]
    return wav, {"kind": "file", "path": str(Path(ARGS.input).resolve()), "file_rate": sr,
                 "channels": data.shape[1], "seconds": wav.shape[-1] / SAMPLE_RATE}


# --------------------------------------------------------------------------- helpers


def timed(fn):
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    ref = ref.double().flatten()
    x = x.double().flatten()
    n = min(ref.numel(), x.numel())
    ref, x = ref[:n], x[:n]
    noise = float(((x - ref) ** 2).sum())
    sig = float((ref ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(sig / noise)


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """a, b: [1, K, F] codes. Per-level and overall fraction of equal codes."""
    a = a.long().cpu()
    b = b.long().cpu()
    eq = (a == b).double()
    per_level = eq.mean(dim=(0, 2)).tolist()
    return {
        "per_level": per_level,
        "levels_0_1": float(eq[:, :2].mean()),
        "overall": float(eq.mean()),
        "frames": int(a.shape[-1]),
        "pass_levels_0_1_ge_99.9": float(eq[:, :2].mean()) >= 0.999,
        "pass_overall_ge_98": float(eq.mean()) >= 0.98,
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def fmt_db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f}"


# --------------------------------------------------------------------------- main


GIT_AT_START = git_info()


def main() -> int:
    torch.set_num_threads(THREADS)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    procs_start = top_processes()
    print(f"threads={THREADS}  torch {torch.__version__}  cpu: {cpu_model()}  "
          f"load avg {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)

    # ---- weights
    if ARGS.weights:
        wpath = Path(ARGS.weights)
        winfo = {"built": False, "given": True}
    else:
        wpath = Path(f"/tmp/mimi_speed_bench_kyutai_rand_seed{ARGS.weights_seed}_{CALIB_VERSION}.safetensors")
        if ARGS.rebuild_weights or not wpath.exists():
            print(f"building random Kyutai-layout weights -> {wpath}", flush=True)
            with torch.inference_mode():
                winfo = build_weights(wpath, ARGS.weights_seed)
        else:
            winfo = {"built": False, "cached": True}
    winfo.update({"path": str(wpath), "sha256": sha256(wpath), "bytes": wpath.stat().st_size,
                  "recipe": "moshi loaders.get_mimi(None) random init (torch seed "
                            f"{ARGS.weights_seed}), randomize_codebooks(scale=0.01), then every "
                            "codebook = mean + std * randn of the residual it sees on 2 x 4 s of "
                            "speechlike audio (seeds 1000+); saved by kyutai_mimi.save_kyutai_weights"})

    K = ARGS.num_codebooks
    ours = mimi.load(wpath, num_codebooks=K)
    ours.eval()
    mo = km.build_kyutai_mimi(num_codebooks=K, weights=wpath)  # strict key check
    use_rusty = ARGS.with_rustymimi if ARGS.with_rustymimi is not None else rustymimi is not None
    if use_rusty and rustymimi is None:
        print("rustymimi requested but not importable", file=sys.stderr)
        return 2
    tok = rustymimi.Tokenizer(str(wpath), num_codebooks=K) if use_rusty else None

    wav, input_info = load_input()
    audio_s = wav.shape[-1] / SAMPLE_RATE
    wav_np = wav.numpy().astype(np.float32, copy=False)
    print(f"input: {input_info}  -> {tuple(wav.shape)} = {audio_s:.2f} s", flush=True)

    results: dict = {}
    with torch.inference_mode():
        # ---- warm-up: one call per implementation and op; also the agreement data
        t_w = {}
        t_w["ours.encode"], codes_ours = timed(lambda: ours.encode(wav))
        t_w["moshi.encode"], codes_mo = timed(lambda: mo.encode(wav))
        ref_codes = codes_mo.clone()  # every decoder decodes moshi's codes
        ref_codes_np = np.ascontiguousarray(ref_codes.numpy().astype(np.uint32))
        t_w["ours.decode"], dec_ours = timed(lambda: ours.decode(ref_codes))
        t_w["moshi.decode"], dec_mo = timed(lambda: mo.decode(ref_codes))
        if tok is not None:
            t_w["rustymimi.encode"], codes_rs = timed(lambda: tok.encode(wav_np))
            t_w["rustymimi.decode"], dec_rs = timed(lambda: tok.decode(ref_codes_np))
        print("warm-up:", {k: round(v, 3) for k, v in t_w.items()}, flush=True)

        # ---- agreement
        check = {
            "codes_shape": list(codes_ours.shape),
            "ours_vs_moshi": agreement(codes_ours, codes_mo),
            "distinct_codes_per_level_moshi": [int(c.unique().numel()) for c in codes_mo[0]],
            "decode_snr_db_ours_vs_moshi_same_codes": snr_db(dec_mo, dec_ours),
            "decode_max_abs_diff_ours_vs_moshi": float((dec_ours - dec_mo).abs().max()),
            "decode_shapes": {"ours": list(dec_ours.shape), "moshi": list(dec_mo.shape)},
        }
        # ours decoding its own codes vs moshi decoding its own codes (end to end)
        if not torch.equal(codes_ours, codes_mo):
            check["decode_snr_db_end_to_end"] = snr_db(dec_mo, ours.decode(codes_ours))
        if tok is not None:
            check["rustymimi_vs_moshi"] = agreement(torch.from_numpy(codes_rs.astype(np.int64)), codes_mo)
            check["decode_snr_db_rustymimi_vs_moshi_same_codes"] = snr_db(dec_mo, torch.from_numpy(dec_rs))
        a = check["ours_vs_moshi"]
        print(f"codes ours vs moshi: levels 0-1 {fmt_pct(a['levels_0_1'])}, overall {fmt_pct(a['overall'])}, "
              f"per level {[round(100 * x, 2) for x in a['per_level']]}; decode SNR "
              f"{fmt_db(check['decode_snr_db_ours_vs_moshi_same_codes'])} dB", flush=True)
        results["check"] = check
        del dec_ours, dec_mo

        # ---- interleaved rounds
        tasks = [("ours", "encode", lambda: ours.encode(wav)),
                 ("moshi", "encode", lambda: mo.encode(wav))]
        if tok is not None:
            tasks.append(("rustymimi", "encode", lambda: tok.encode(wav_np)))
        tasks += [("ours", "decode", lambda: ours.decode(ref_codes)),
                  ("moshi", "decode", lambda: mo.decode(ref_codes))]
        if tok is not None:
            tasks.append(("rustymimi", "decode", lambda: tok.decode(ref_codes_np)))
        times: dict[str, list[float]] = {f"{i}.{o}": [] for i, o, _ in tasks}
        orders, loads, others, others_calls, waited, clean = [], [], [], [], [], []
        max_rounds = max(ARGS.repeats, ARGS.max_rounds or 0)
        r = 0
        while r < ARGS.repeats or (sum(clean) < ARGS.repeats and r < max_rounds):
            waited.append(wait_quiet(ARGS.wait_quiet, ARGS.clean_threshold))
            order = tasks if r % 2 == 0 else tasks[::-1]
            orders.append([f"{i}.{o}" for i, o, _ in order])
            loads.append(os.getloadavg()[0])
            line, per_call = [], {}
            with OthersCpu() as oc:
                for impl, op, fn in order:
                    with OthersCpu() as occ:
                        dt, _ = timed(fn)
                    times[f"{impl}.{op}"].append(dt)
                    per_call[f"{impl}.{op}"] = occ.cores
                    line.append(f"{impl}.{op}={dt:.3f}")
            others.append(oc.cores)
            others_calls.append(per_call)
            # clean: other processes stayed under the threshold during *every* timed call
            worst = max((c for c in per_call.values() if c is not None), default=None)
            clean.append(worst is None or worst < ARGS.clean_threshold)
            r += 1
            print(f"round {r}: " + "  ".join(line) +
                  (f"  [others used {oc.cores:.2f} cores, worst call {worst:.2f}"
                   f"{'' if clean[-1] else ' -> not clean'}]" if worst is not None else ""), flush=True)
        results["batch"] = {"times_s": times, "round_orders": orders, "load1_before_round": loads,
                            "other_processes_cores_per_round": others,
                            "other_processes_cores_per_call": others_calls, "round_clean": clean,
                            "waited_for_quiet_s": waited, "clean_threshold_cores": ARGS.clean_threshold,
                            "warmup_s": t_w}

        # ---- streaming
        if not ARGS.no_streaming:
            w = wait_quiet(ARGS.wait_quiet, ARGS.clean_threshold)
            with OthersCpu() as oc:
                results["streaming"] = run_streaming(ours, mo, tok, wav)
            results["streaming"]["other_processes_cores"] = oc.cores
            results["streaming"]["waited_for_quiet_s"] = w

    # ---- summary: statistics over the clean rounds when there are >= 3 of them
    use = [i for i, c in enumerate(clean) if c]
    if len(use) < 3:
        use = list(range(len(clean)))
    results["batch"]["rounds_used"] = use
    summary = {}
    for key, ts_all in times.items():
        ts = [ts_all[i] for i in use]
        med, mn = statistics.median(ts), min(ts)
        summary[key] = {"median_s": med, "min_s": mn, "max_s": max(ts), "rtf_median": audio_s / med,
                        "rtf_best": audio_s / mn, "gflops_median": GFLOP_PER_AUDIO_SECOND * audio_s / med,
                        "median_s_all_rounds": statistics.median(ts_all)}
    for op in ("encode", "decode"):
        o, m = summary[f"ours.{op}"], summary[f"moshi.{op}"]
        o["ratio_vs_moshi_rtf_median"] = m["median_s"] / o["median_s"]
        o["ratio_vs_moshi_rtf_best"] = m["min_s"] / o["min_s"]
        # paired: moshi time / ours time within the same round, median over rounds used
        o["ratio_vs_moshi_paired_median"] = statistics.median(
            times[f"moshi.{op}"][i] / times[f"ours.{op}"][i] for i in use)
    results["summary"] = summary

    # FLOPs actually counted on ours (conv + matmul, torch.utils.flop_counter), 4 s input
    results["flops_counted"] = count_flops(ours)

    finished = datetime.datetime.now(datetime.timezone.utc)
    load_end = os.getloadavg()
    meta = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "argv": sys.argv,
        "args": vars(ARGS),
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": finished.isoformat(timespec="seconds"),
        "duration_s": (finished - started).total_seconds(),
        "load_avg_start": list(load_start),
        "load_avg_end": list(load_end),
        "top_processes_start": procs_start,
        "top_processes_end": top_processes(),
        "machine": machine_info(GIT_AT_START),
        "settings": {"dtype": "float32", "batch": 1, "inference_mode": True, "threads": THREADS,
                     "num_codebooks": K, "audio_seconds": audio_s, "repeats": ARGS.repeats},
        "input": input_info,
        "weights": winfo,
        "compute_model": {"gflop_per_audio_second_each_way": GFLOP_PER_AUDIO_SECOND,
                          "peak_gflops_fp32_2core": PEAK_GFLOPS,
                          "rtf_limit": PEAK_GFLOPS / GFLOP_PER_AUDIO_SECOND},
    }
    results = {"meta": meta, **results}

    md = render_markdown(results)
    print()
    print(md)
    out_dir = Path(ARGS.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{ARGS.name}.md").write_text(md)
    (out_dir / f"{ARGS.name}.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {out_dir / (ARGS.name + '.md')} and .json")
    return 0


def run_streaming(ours, mo, tok, wav: torch.Tensor) -> dict:
    """Per frame: encode one 1920-sample chunk, decode the frame's codes; frame by frame
    interleaved between implementations (order rotates every frame)."""
    n_total = ARGS.stream_warmup + ARGS.stream_frames
    n_avail = wav.shape[-1] // FRAME_SIZE
    chunks = [wav[:, :, (i % n_avail) * FRAME_SIZE:(i % n_avail + 1) * FRAME_SIZE].contiguous()
              for i in range(n_total)]
    impls = ["ours", "moshi"] + (["rustymimi"] if tok is not None else [])
    rec = {k: {"encode_ms": [], "decode_ms": [], "step_ms": []} for k in impls}
    codes = {k: [] for k in impls}
    outs = {k: [] for k in impls}

    def step_torch(model, chunk):
        t0 = time.perf_counter()
        c = model.encode(chunk)
        t1 = time.perf_counter()
        y = model.decode(c)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, c, y

    def step_rusty(chunk):
        x = chunk.numpy()
        t0 = time.perf_counter()
        c = tok.encode_step(x)
        t1 = time.perf_counter()
        y = tok.decode_step(np.ascontiguousarray(c)) if c is not None else None
        t2 = time.perf_counter()
        c = torch.from_numpy(c.astype(np.int64)) if c is not None else None
        y = torch.from_numpy(y) if y is not None else None
        return t1 - t0, t2 - t1, c, y

    steppers = {"ours": lambda ch: step_torch(ours, ch), "moshi": lambda ch: step_torch(mo, ch),
                "rustymimi": step_rusty}
    if tok is not None:
        tok.reset()
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(ours.streaming(batch_size=1))
            stack.enter_context(mo.streaming(batch_size=1))
            for i, chunk in enumerate(chunks):
                k = i % len(impls)
                for impl in impls[k:] + impls[:k]:
                    te, td, c, y = steppers[impl](chunk)
                    if c is not None:
                        codes[impl].append(c)
                    if y is not None:
                        outs[impl].append(y)
                    if i >= ARGS.stream_warmup:
                        rec[impl]["encode_ms"].append(1e3 * te)
                        rec[impl]["decode_ms"].append(1e3 * td)
                        rec[impl]["step_ms"].append(1e3 * (te + td))
    finally:
        if gc_was:
            gc.enable()
        if tok is not None:
            tok.reset()

    out: dict = {"frames_timed": ARGS.stream_frames, "frames_warmup": ARGS.stream_warmup,
                 "frame_ms_audio": 1e3 * FRAME_SIZE / SAMPLE_RATE, "raw_ms": rec, "stats": {}}
    for impl in impls:
        s = {}
        for part in ("step_ms", "encode_ms", "decode_ms"):
            v = rec[impl][part]
            s[part] = {"p50": pct(v, 50), "p99": pct(v, 99), "mean": float(np.mean(v)), "max": max(v)}
        out["stats"][impl] = s
    # streaming codes agreement (on the same chunks) and streaming decode SNR
    cat = {k: torch.cat(v, dim=-1) for k, v in codes.items() if v}
    if "ours" in cat and "moshi" in cat:
        n = min(cat["ours"].shape[-1], cat["moshi"].shape[-1])
        out["codes_ours_vs_moshi"] = agreement(cat["ours"][..., :n], cat["moshi"][..., :n])
    if "rustymimi" in cat and "moshi" in cat:
        n = min(cat["rustymimi"].shape[-1], cat["moshi"].shape[-1])
        out["codes_rustymimi_vs_moshi"] = agreement(cat["rustymimi"][..., :n], cat["moshi"][..., :n])
    # note: each implementation decodes its *own* streaming codes, so the SNR is
    # meaningful only when the codes agree (which the line above reports)
    if outs["ours"] and outs["moshi"]:
        out["decode_snr_db_ours_vs_moshi"] = snr_db(torch.cat(outs["moshi"], -1), torch.cat(outs["ours"], -1))
    for impl in impls:
        s = out["stats"][impl]["step_ms"]
        print(f"streaming {impl}: step p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms", flush=True)
    return out


def count_flops(model) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    secs = 4.0
    x = torch.zeros(1, 1, int(secs * SAMPLE_RATE))
    x[..., ::7] = 0.1
    # counted on the channels-first convs: the counter does not see the in-place GEMMs
    # (addmm_) of the time-major path, which does the same multiply-adds
    before = model.encoder.time_major, model.decoder.time_major
    model.encoder.time_major = model.decoder.time_major = False
    try:
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                c = model.encode(x)
            enc = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                model.decode(c)
            dec = fc.get_total_flops()
    finally:
        model.encoder.time_major, model.decoder.time_major = before
    return {"implementation": "ours", "audio_seconds": secs,
            "encode_gflop_per_audio_second": enc / secs / 1e9,
            "decode_gflop_per_audio_second": dec / secs / 1e9}


def render_markdown(res: dict) -> str:
    meta, summ, chk = res["meta"], res["summary"], res["check"]
    mach, st = meta["machine"], meta["settings"]
    audio_s = st["audio_seconds"]
    L = []
    L.append("# Mimi speed on CPU, fp32: ours vs Kyutai's moshi" +
             (" vs rustymimi" if "rustymimi.encode" in summ else ""))
    L.append("")
    L.append(f"- Date (UTC): {meta['started_utc']} (took {meta['duration_s']:.0f} s)")
    L.append(f"- Command: `{meta['command']}` (cwd: repo root)")
    L.append(f"- Machine: {mach['cpu_model']}, {mach['usable_cores']} usable cores "
             f"(os.cpu_count {mach['os_cpu_count']}), SIMD: {' '.join(mach['cpu_flags_simd']) or '?'}")
    L.append(f"- Software: torch {mach['torch']}, python {mach['python']}, moshi {mach['moshi']}, "
             f"rustymimi {mach['rustymimi']}, mimi {mach['mimi']} (git {mach['git']['head'][:10] or '?'}"
             f"{', mimi/ has uncommitted changes' if mach['git']['status_mimi'] else ''}; mimi/ sources "
             f"sha256 {mach['git']['mimi_sources_sha256'][:12]} at start)")
    L.append(f"- Settings: fp32, batch 1, `torch.inference_mode()`, torch threads = {st['threads']} "
             f"(RAYON_NUM_THREADS = {mach['rayon_num_threads']} for rustymimi), {st['num_codebooks']} codebooks")
    inp = meta["input"]
    if inp["kind"] == "file":
        L.append(f"- Input: `{inp['path']}` ({audio_s:.2f} s at 24 kHz)")
    else:
        L.append(f"- Input: {audio_s:.2f} s of `tests.helpers.speechlike(seconds, seed={inp['seed']})` at 24 kHz")
    w = meta["weights"]
    L.append(f"- Weights: random, Kyutai layout, `{w['path']}` (sha256 {w['sha256'][:16]}…), "
             "the same file loaded by every implementation (moshi with strict keys). Recipe: "
             f"{w['recipe']}.")
    ls, le = meta["load_avg_start"], meta["load_avg_end"]
    lr = res["batch"]["load1_before_round"]
    L.append(f"- Load average (1/5/15 min): start {ls[0]:.2f}/{ls[1]:.2f}/{ls[2]:.2f}, "
             f"end {le[0]:.2f}/{le[1]:.2f}/{le[2]:.2f}; 1-min load before each round: "
             + ", ".join(f"{x:.2f}" for x in lr)
             + " (includes the benchmark itself, ~threads cores)")
    b = res["batch"]
    oth = b["other_processes_cores_per_round"]
    n_rounds, used = len(oth), b["rounds_used"]
    if all(x is not None for x in oth):
        L.append("- CPU used by *other* processes during each round (cores, from /proc/stat minus this "
                 "process): " + ", ".join(f"{x:.2f}" + ("" if c else "*") for x, c in zip(oth, b["round_clean"]))
                 + f" (* = not clean: >= {b['clean_threshold_cores']} cores during at least one timed call)"
                 + (f"; during streaming: {res['streaming']['other_processes_cores']:.2f}"
                    if res.get("streaming", {}).get("other_processes_cores") is not None else ""))
    L.append(f"- Method: 1 warm-up call each, then rounds; each round times every "
             "implementation/op once on the same input, order reversed every other round "
             "(drift cancels). Before each round the script waits (up to "
             f"{meta['args']['wait_quiet']:.0f} s) for other processes to go quiet; a round is not clean "
             f"when others used >= {b['clean_threshold_cores']} cores during any of its timed calls, and extra rounds are run "
             f"(up to {meta['args']['max_rounds']}) until {st['repeats']} are clean. "
             f"Rounds run: {n_rounds}; statistics below use {len(used)} "
             f"{'clean rounds' if len(used) < n_rounds or all(b['round_clean']) else 'rounds (all; too few clean)'}"
             f" (all raw times are in the JSON). RTF = audio seconds / wall seconds (higher is faster).")
    L.append("")
    L.append(f"## Batch (offline) encode / decode of {audio_s:.0f} s")
    L.append("")
    L.append("| impl | op | median s | min s | RTF (median) | RTF (best) | GFLOP/s (median) | ours/moshi RTF (median) | ours/moshi RTF (best) | ours/moshi paired per round (median) |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op in ("encode", "decode"):
        for impl in ("ours", "moshi", "rustymimi"):
            k = f"{impl}.{op}"
            if k not in summ:
                continue
            s = summ[k]
            r1 = f"{s['ratio_vs_moshi_rtf_median']:.2f}x" if "ratio_vs_moshi_rtf_median" in s else ""
            r2 = f"{s['ratio_vs_moshi_rtf_best']:.2f}x" if "ratio_vs_moshi_rtf_best" in s else ""
            r3 = f"{s['ratio_vs_moshi_paired_median']:.2f}x" if "ratio_vs_moshi_paired_median" in s else ""
            L.append(f"| {impl} | {op} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['rtf_median']:.1f}x | "
                     f"{s['rtf_best']:.1f}x | {s['gflops_median']:.0f} | {r1} | {r2} | {r3} |")
    L.append("")
    cm = meta["compute_model"]
    fc = res.get("flops_counted", {})
    L.append(f"Compute limit: Mimi needs ~{cm['gflop_per_audio_second_each_way']} GFLOP per audio-second "
             f"each way (counted on ours with `torch.utils.flop_counter`: "
             f"encode {fc.get('encode_gflop_per_audio_second', float('nan')):.2f}, "
             f"decode {fc.get('decode_gflop_per_audio_second', float('nan')):.2f} GFLOP/audio-s). "
             f"These 2-core machines reach ~{cm['peak_gflops_fp32_2core']:.0f} GFLOP/s fp32, so "
             f"~{cm['rtf_limit']:.0f}x real time is the ceiling. Achieved GFLOP/s = "
             f"{cm['gflop_per_audio_second_each_way']} x RTF: "
             + ", ".join(f"{k} {v['gflops_median']:.0f} ({100 * v['gflops_median'] / cm['peak_gflops_fp32_2core']:.0f}% of peak)"
                         for k, v in summ.items())
             + ". ours/moshi > 1 means ours is faster.")
    L.append("")
    L.append("## Code agreement and decode fidelity (batch, same input)")
    L.append("")
    a = chk["ours_vs_moshi"]
    L.append("| pair | " + " | ".join(f"L{i}" for i in range(len(a["per_level"]))) +
             " | levels 0-1 | overall | criterion (>=99.9% L0-1, >=98% overall) |")
    L.append("|---|" + "---:|" * len(a["per_level"]) + "---:|---:|---|")

    def agr_row(name, a):
        ok = a["pass_levels_0_1_ge_99.9"] and a["pass_overall_ge_98"]
        return (f"| {name} | " + " | ".join(fmt_pct(x) for x in a["per_level"]) +
                f" | {fmt_pct(a['levels_0_1'])} | {fmt_pct(a['overall'])} | {'PASS' if ok else 'FAIL'} |")
    L.append(agr_row("ours vs moshi", a))
    if "rustymimi_vs_moshi" in chk:
        L.append(agr_row("rustymimi vs moshi", chk["rustymimi_vs_moshi"]))
    strm = res.get("streaming", {})
    if "codes_ours_vs_moshi" in strm:
        L.append(agr_row(f"streaming ours vs moshi ({strm['codes_ours_vs_moshi']['frames']} frames)",
                         strm["codes_ours_vs_moshi"]))
    L.append("")
    L.append(f"- Codes {chk['codes_shape']}; distinct codes per level (moshi): {chk['distinct_codes_per_level_moshi']} "
             f"of {chk['codes_shape'][-1]} frames.")
    L.append(f"- Decode of the same codes (moshi's), ours vs moshi: SNR "
             f"{fmt_db(chk['decode_snr_db_ours_vs_moshi_same_codes'])} dB, max |diff| "
             f"{chk['decode_max_abs_diff_ours_vs_moshi']:.2e}.")
    if "decode_snr_db_rustymimi_vs_moshi_same_codes" in chk:
        L.append(f"- Decode of the same codes, rustymimi vs moshi: SNR "
                 f"{fmt_db(chk['decode_snr_db_rustymimi_vs_moshi_same_codes'])} dB.")
    if "decode_snr_db_end_to_end" in chk:
        L.append(f"- End to end (each decodes its own codes), ours vs moshi: SNR "
                 f"{fmt_db(chk['decode_snr_db_end_to_end'])} dB.")
    if strm:
        L.append("")
        L.append(f"## Streaming step, batch 1 ({strm['frames_timed']} frames after {strm['frames_warmup']} "
                 f"warm-up frames; one frame = {strm['frame_ms_audio']:.0f} ms of audio)")
        L.append("")
        L.append("Per frame: encode one 1920-sample chunk, then decode that frame's codes, inside "
                 "`streaming(batch_size=1)`; implementations interleaved frame by frame.")
        L.append("")
        L.append("| impl | step p50 ms | step p99 ms | encode p50 ms | decode p50 ms | step mean ms | RTF (80 ms / p50) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for impl, s in strm["stats"].items():
            L.append(f"| {impl} | {s['step_ms']['p50']:.2f} | {s['step_ms']['p99']:.2f} | "
                     f"{s['encode_ms']['p50']:.2f} | {s['decode_ms']['p50']:.2f} | {s['step_ms']['mean']:.2f} | "
                     f"{strm['frame_ms_audio'] / s['step_ms']['p50']:.1f}x |")
        if "decode_snr_db_ours_vs_moshi" in strm:
            L.append("")
            L.append(f"Streaming decode SNR, ours vs moshi (each decodes its own streaming codes): "
                     f"{fmt_db(strm['decode_snr_db_ours_vs_moshi'])} dB.")
    L.append("")
    L.append(f"Busiest other processes at start (pid %cpu elapsed command): "
             f"{'; '.join(meta['top_processes_start'][:4])}")
    L.append("")
    L.append(f"Raw timings: `{ARGS.name}.json` (same folder).")
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
