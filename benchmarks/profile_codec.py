"""Where encode/decode time goes: torch.profiler on our Mimi (released architecture).

    python benchmarks/profile_codec.py [--seconds 20] [--weights FILE] [--rows 15]

Without --weights, a random model with the released architecture is used (the cost does not
depend on the weights). Prints the top operators by self CPU time for encode and decode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mimi  # noqa: E402
from tests.helpers import make_model, speechlike  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--rows", type=int, default=15)
    args = ap.parse_args()
    model = mimi.load(args.weights) if args.weights else make_model(mimi.MimiConfig.released(), calibrate_seconds=1.0)
    wav = torch.from_numpy(speechlike(args.seconds, seed=0))[None, None]
    with torch.inference_mode():
        codes = model.encode(wav)
        model.decode(codes)  # warm-up
        for name, fn in (("encode", lambda: model.encode(wav)), ("decode", lambda: model.decode(codes))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            print(f"== {name} {args.seconds:g} s, {torch.get_num_threads()} threads")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
