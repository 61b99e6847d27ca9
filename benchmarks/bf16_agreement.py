"""How far bf16 codes and audio are from fp32 on CPU (released architecture, random weights
calibrated on speech-like audio), and how fast each is.

    python benchmarks/bf16_agreement.py [--seconds 20] [--weights FILE]

Writes benchmarks/results/bf16_agreement.md and .json: per-level code agreement of bf16 against
fp32 encoding (same input), the SNR of bf16 decoding against fp32 decoding of the same codes,
and the median encode/decode real-time factors of both (batch 1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mimi  # noqa: E402
from tests.helpers import make_model, speechlike  # noqa: E402
from timing import median_seconds  # noqa: E402 (benchmarks/timing.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.weights:
        fp32 = mimi.load(args.weights, num_codebooks=32)
    else:
        fp32 = make_model(mimi.MimiConfig.released(), num_codebooks=32)
    bf16 = mimi.build_mimi(fp32.config, num_codebooks=32)
    bf16.load_state_dict(fp32.state_dict())
    bf16 = bf16.set_dtype(torch.bfloat16).eval().requires_grad_(False)  # quantizer stays float32
    wav = torch.from_numpy(speechlike(args.seconds, seed=0))[None, None]
    with torch.inference_mode():
        codes32 = fp32.encode(wav)
        codes16 = bf16.encode(wav.to(torch.bfloat16))
        agree = (codes32 == codes16).float().mean(dim=(0, 2)).tolist()
        audio32 = fp32.decode(codes32)
        audio16 = bf16.decode(codes32).float()
        snr = float(10 * torch.log10(audio32.pow(2).sum() / (audio32 - audio16).pow(2).sum()))
        rtf = {}
        for name, model, x in (("fp32", fp32, wav), ("bf16", bf16, wav.to(torch.bfloat16))):
            model.set_num_codebooks(8)
            c = model.encode(x)
            rtf[name] = {"encode": args.seconds / median_seconds(lambda: model.encode(x), args.repeats),
                         "decode": args.seconds / median_seconds(lambda: model.decode(c), args.repeats)}
    record = {"date": datetime.date.today().isoformat(), "command": " ".join([sys.executable, *sys.argv]),
              "seconds": args.seconds, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "agreement_per_level": agree, "decode_snr_db": snr, "rtf_batch1_8codebooks": rtf}
    out = ROOT / "benchmarks" / "results"
    (out / "bf16_agreement.json").write_text(json.dumps(record, indent=2) + "\n")
    levels = " | ".join(f"{100 * a:.1f}" for a in agree[:8])
    lines = [
        "# bf16 against fp32 on CPU",
        "",
        f"Measured {record['date']} with `python benchmarks/bf16_agreement.py --seconds {args.seconds:g}` "
        f"({record['threads']} threads, torch {record['torch']}); released architecture, random weights "
        "calibrated on speech-like audio, batch 1.",
        "",
        "Code agreement of bf16 encoding with fp32 encoding, per level (%):",
        "",
        "| L0 | L1 | L2 | L3 | L4 | L5 | L6 | L7 | all 32 levels |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {levels} | {100 * sum(agree) / len(agree):.1f} |",
        "",
        f"bf16 decoding of the same codes against fp32 decoding: SNR {snr:.1f} dB.",
        "",
        "| dtype | encode RTF | decode RTF |",
        "|---|---:|---:|",
        *(f"| {k} | {v['encode']:.1f}x | {v['decode']:.1f}x |" for k, v in rtf.items()),
        "",
        "bf16 is opt-in (`mimi.load(..., dtype=torch.bfloat16)`, `--dtype bfloat16` in `mimi bench speed`); "
        "the parity guarantees hold for fp32 only.",
    ]
    (out / "bf16_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
