"""Peak memory of `mimi encode` / `mimi decode` on a one-hour file (released architecture).

Makes a one-hour 24 kHz mono WAV (a 60 s speech-like clip tiled), a model with the released
architecture and random weights, then runs the real CLI under `/usr/bin/time -v` and records
the peak resident set size (RSS) and the wall time of each command.

    python benchmarks/memory_one_hour.py [--minutes 60] [--workdir /tmp/mimi-mem]

Writes benchmarks/results/memory_one_hour.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mimi  # noqa: E402
from tests.helpers import make_model, speechlike  # noqa: E402


def timed(cmd: list[str]) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"command": " ".join(cmd), "peak_rss_mib": rss_kb / 1024, "wall_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--workdir", default="/tmp/mimi-mem")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    model_path = work / "mimi-random-released.safetensors"
    if not model_path.exists():
        mimi.save(make_model(mimi.MimiConfig.released(), num_codebooks=8), model_path)
    wav = work / f"speech_{args.minutes:g}min.wav"
    if not wav.exists():
        clip = speechlike(60.0, seed=3)
        reps = int(np.ceil(args.minutes))
        with sf.SoundFile(wav, "w", samplerate=24000, channels=1, subtype="PCM_16") as f:
            for _ in range(reps):
                f.write(clip)
        if args.minutes != reps:  # cut to the exact duration
            data, sr = sf.read(wav, frames=int(args.minutes * 60 * 24000))
            sf.write(wav, data, sr, subtype="PCM_16")

    exe = [sys.executable, "-m", "mimi_cli.main"]
    results = {
        "encode": timed([*exe, "encode", str(wav), str(work / "out.mimi"), "--model", str(model_path), "-q"]),
        "decode": timed([*exe, "decode", str(work / "out.mimi"), str(work / "out.wav"), "-q"]),
    }
    duration = sf.info(wav).duration
    record = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([sys.executable, *sys.argv]),
        "audio_seconds": duration,
        "input_bytes": wav.stat().st_size,
        "mimi_bytes": (work / "out.mimi").stat().st_size,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "model": "released architecture (79M parameters), random weights, 8 codebooks",
        **results,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_one_hour.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Peak memory on a one-hour file",
        "",
        f"Measured {record['date']} with `python benchmarks/memory_one_hour.py --minutes {args.minutes:g}` "
        f"(each command run under `/usr/bin/time -v`).",
        f"Input: {duration / 3600:.2f} h of 24 kHz mono 16-bit WAV ({record['input_bytes'] / 2**20:.0f} MiB); "
        f"output .mimi: {record['mimi_bytes'] / 2**10:.0f} KiB. Model: {record['model']}. "
        f"Machine: {record['machine']['cores']} threads, torch {record['machine']['torch']}.",
        "",
        "| command | peak RSS (MiB) | wall time (s) | real-time factor |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| `mimi {name}` | {r['peak_rss_mib']:.0f} | {r['wall_seconds']:.0f} | "
                     f"{duration / r['wall_seconds']:.1f}x |")
    lines += ["", "Both commands stream: 2 s chunks through the model in streaming mode, blockwise audio "
              "reading and writing, streaming soxr resampling. Memory does not grow with duration."]
    (out / "memory_one_hour.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
