"""Parity with Kyutai's `moshi` (0.2.13) on identical random weights, tiny moshiko-shaped config.

`reference_moshi.py` runs in the peers environment (`.venv-peers`, see
benchmarks/peers/setup.sh): it builds moshi's LMModel with a seed, saves it in Kyutai's layout,
and records its training logits and 25 greedy LMGen steps. We load that directory with
`moshi_lm.load` and compare.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import moshi_lm
from moshi_lm import LMConfig
from tests.moshi_lm.helpers import random_codes

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SCRIPT = Path(__file__).with_name("reference_moshi.py")
STEPS = 25


def _peers_available() -> str | None:
    if not PEERS_PYTHON.exists():
        return f"{PEERS_PYTHON} not found (run `bash benchmarks/peers/setup.sh`)"
    probe = subprocess.run([str(PEERS_PYTHON), "-c", "import moshi.models.lm"], capture_output=True, text=True,
                           env={**os.environ, "NO_TORCH_COMPILE": "1"}, timeout=120)
    if probe.returncode != 0:
        return f"the peers environment cannot import moshi: {probe.stderr.strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    reason = _peers_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("moshi_ref")
    cfg = LMConfig.tiny()
    (work / "cfg.json").write_text(json.dumps(cfg.to_json_dict()))
    codes = random_codes(cfg, 2, 40, seed=11)  # 40 steps > context 16: the sliding window matters
    codes[0, 0, 5] = -1  # zero tokens: no input, masked out
    codes[1, 4, 20] = -1
    user = random_codes(cfg, 2, STEPS, seed=12)[:, 1 + cfg.dep_q:]
    save_file({"codes": codes.contiguous(), "user": user.contiguous()}, str(work / "inputs.safetensors"))
    run = subprocess.run(
        [str(PEERS_PYTHON), str(SCRIPT), "--config", str(work / "cfg.json"), "--inputs",
         str(work / "inputs.safetensors"), "--out", str(work / "out"), "--seed", "1234"],
        capture_output=True, text=True, env={**os.environ, "NO_TORCH_COMPILE": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return work / "out", codes, user, load_file(str(work / "out" / "outputs.safetensors"))


def test_logits_match_moshi(reference):
    folder, codes, _, ref = reference
    model = moshi_lm.load(folder)
    with torch.no_grad():
        out = model(codes)
    assert torch.equal(out.mask, ref["mask"]) and torch.equal(out.text_mask, ref["text_mask"])
    audio = (out.logits - ref["logits"])[out.mask].abs().max().item()
    text = (out.text_logits - ref["text_logits"])[out.text_mask].abs().max().item()
    print(f"\nmoshi parity: audio logits max|diff| {audio:.2e}, text logits max|diff| {text:.2e}")
    assert audio < 1e-4 and text < 1e-4


def test_greedy_generation_matches_moshi(reference):
    folder, _, user, ref = reference
    model = moshi_lm.load(folder)
    gen = moshi_lm.LMGen(model, use_sampling=False)
    outs = []
    with gen.streaming(user.shape[0]):
        for t in range(STEPS):
            outs.append(gen.step(user[:, :, t:t + 1]))
    assert [o is None for o in outs] == ref["gen_none"].bool().tolist()
    ours = torch.cat([o for o in outs if o is not None], dim=2)
    theirs = ref["gen_tokens"]
    assert ours.shape == theirs.shape
    same = (ours == theirs).all(dim=(0, 1))
    equal_steps = int(same.long().cumprod(0).sum())
    print(f"\nmoshi parity: {equal_steps}/{same.numel()} greedy frames identical")
    assert equal_steps == same.numel() >= 20
