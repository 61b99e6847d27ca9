"""Reference outputs from Kyutai's `moshi` package, for the parity tests.

Run with the peers interpreter (`.venv-peers/bin/python`), which has moshi==0.2.13:

    .venv-peers/bin/python tests/moshi_lm/reference_moshi.py \
        --config cfg.json --inputs inputs.safetensors --out DIR [--seed 0]

`cfg.json` holds LM constructor arguments; `inputs.safetensors` holds `codes` [B, 1 + n_q, T]
(for the training forward) and `user` [B, n_q - dep_q, S] (for greedy LMGen, one step per
column). It builds moshi's LMModel with a fixed seed (norm / layer-scale weights randomised too,
so that loading them is tested), and writes into DIR:
  config.json, model.safetensors   the model, in Kyutai's layout
  outputs.safetensors              logits, mask, text_logits, text_mask, gen_tokens
                                   [B, 1 + dep_q, S - warm-up], gen_none [S] (1 where step() gave None)
This file imports nothing from this project: it only talks to moshi.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from moshi.models.lm import LMGen, LMModel

    torch.set_num_threads(1)
    kwargs = json.loads(Path(args.config).read_text())
    torch.manual_seed(args.seed)
    model = LMModel(device="cpu", dtype=torch.float32, **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".alpha") or name.endswith(".scale"):
                p.uniform_(0.5, 1.5)  # default ones: randomise so a wrong mapping shows
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "out_norm.weight":
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.uniform_(-0.1, 0.1)
    model.eval()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(kwargs, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))

    inputs = load_file(args.inputs)
    codes, user = inputs["codes"].long(), inputs["user"].long()
    with torch.no_grad():
        res = model(codes)
    outputs = {"logits": res.logits, "mask": res.mask, "text_logits": res.text_logits, "text_mask": res.text_mask}

    gen = LMGen(model, use_sampling=False)
    tokens, none = [], []
    with gen.streaming(user.shape[0]):
        for t in range(user.shape[2]):
            frame = gen.step(user[:, :, t:t + 1])
            none.append(frame is None)
            if frame is not None:
                tokens.append(frame)
    outputs["gen_tokens"] = torch.cat(tokens, dim=2)
    outputs["gen_none"] = torch.tensor(none, dtype=torch.int64)
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(out / "outputs.safetensors"))


if __name__ == "__main__":
    main()
