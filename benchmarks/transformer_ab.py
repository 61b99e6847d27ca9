"""The bottleneck transformer's RoPE and offline attention, against the ways they were done before.

    python benchmarks/transformer_ab.py [--seconds 20] [--repeats 21] [--threads 2]

Released-architecture transformer (8 layers, 512-d, 8 heads, 250-step context) on 25 Hz
latents of `--seconds` of audio, random weights (std 0.02), in one process, interleaved round by
round (median and minimum ms):

- RoPE of q and k for one layer: `rotate_qkv` (one complex multiply on both, in place of the
  projection's layout) against the four real products and a stack on q and k apart;
- offline sliding-window attention of one layer for several query blocks (`QUERY_BLOCK`;
  250 = the window, as before; masks cached in all);
- the whole transformer forward as it runs now, with the query block set to the window, and as
  it ran before (four-product RoPE, window-sized blocks, boolean masks built on every call).

Keep the machine otherwise quiet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mimi  # noqa: E402
from mimi.modules import kv_cache  # noqa: E402
from mimi.modules import transformer as transformer_module  # noqa: E402
from mimi.modules.kv_cache import sliding_window_attention, window_mask  # noqa: E402
from mimi.modules.rope import rope_frequencies, rope_rotation, rotate_qkv  # noqa: E402
from mimi.modules.transformer import Transformer  # noqa: E402


def four_product_rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The former RoPE: q and k [B, H, T, Dh] rotated apart, four products and a stack each."""
    out = []
    for x in qkv.permute(2, 0, 3, 1, 4).unbind(0)[:2]:
        B, H, T, Dh = x.shape
        pairs = x.float().reshape(B, H, T, Dh // 2, 2)  # a view: the features stay contiguous
        re, im = pairs[..., 0], pairs[..., 1]
        out.append(torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).view(B, H, T, Dh))
    return out[0], out[1]


def former_rotate_qkv(qkv: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, ...]:
    q, k = four_product_rope(qkv, rotation.real.contiguous(), rotation.imag.contiguous())
    return q, k, qkv[:, :, 2].transpose(1, 2)


def former_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """The former offline attention: window-sized query blocks, a boolean mask built per call."""
    T = q.shape[2]
    if T <= window:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    pos, blocks = torch.arange(T), []
    for start in range(0, T, window):
        end, k_start = min(start + window, T), max(0, start - window + 1)
        mask = window_mask(pos[start:end], pos[k_start:end], window)
        blocks.append(torch.nn.functional.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, k_start:end], v[:, :, k_start:end], attn_mask=mask))
    return torch.cat(blocks, dim=2)


def as_before(fn):
    def run():
        saved = transformer_module.rotate_qkv, transformer_module.sliding_window_attention
        transformer_module.rotate_qkv, transformer_module.sliding_window_attention = former_rotate_qkv, former_attention
        try:
            return fn()
        finally:
            transformer_module.rotate_qkv, transformer_module.sliding_window_attention = saved
    return run


class Ms:
    """Median and minimum ms of one function's calls (contention only adds time: the minimum is
    the steadier figure on a shared machine)."""

    def __init__(self, seconds: list[float]):
        ts = sorted(seconds)
        self.median, self.min = 1e3 * ts[len(ts) // 2], 1e3 * ts[0]

    def __format__(self, spec: str) -> str:
        return f"{format(self.median, spec)} (min {format(self.min, spec)})"


def interleaved(fns: dict, repeats: int) -> dict[str, Ms]:
    """Median and minimum ms of each function, called once per round in alternating order."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for r in range(repeats):
        for name, fn in items if r % 2 == 0 else items[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: Ms(ts) for name, ts in times.items()}


def with_block(block: int, fn):
    def run():
        saved, kv_cache.QUERY_BLOCK = kv_cache.QUERY_BLOCK, block
        try:
            return fn()
        finally:
            kv_cache.QUERY_BLOCK = saved
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.repeats < 1 or args.threads < 1 or round(args.seconds * 25) < 1:
        ap.error("--repeats and --threads must be at least 1, --seconds at least 0.04 (one 25 Hz step)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = mimi.MimiConfig.released().transformer
    T = round(args.seconds * 25)  # 25 Hz steps
    H, Dh = cfg.num_heads, cfg.head_dim
    print(f"{args.seconds:g} s = {T} steps at 25 Hz, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved rounds (medians, minimums in parentheses)")

    with torch.inference_mode():
        qkv = torch.randn(1, T, 3, H, Dh)
        freqs = rope_frequencies(Dh, cfg.max_period)
        rotation = rope_rotation(torch.arange(T), freqs)
        cos, sin = rotation.real.contiguous(), rotation.imag.contiguous()
        fast, old = rotate_qkv(qkv, rotation)[:2], four_product_rope(qkv, cos, sin)
        same = all(torch.equal(a, b) for a, b in zip(fast, old))
        diff = max((a - b).abs().max().item() for a, b in zip(fast, old))
        r = interleaved({"complex": lambda: rotate_qkv(qkv, rotation), "four products": lambda: four_product_rope(qkv, cos, sin)},
                        args.repeats)
        print(f"RoPE of q and k, one layer: rotate_qkv {r['complex']:.3f} ms, four products + stack "
              f"{r['four products']:.3f} ms ({r['four products'].median / r['complex'].median:.1f}x by medians); "
              f"{'bit-identical' if same else f'max |diff| {diff:.1e}'}")

        q, k = fast
        v = qkv[:, :, 2].transpose(1, 2)
        blocks = sorted({cfg.context, 128, 64, 32}, reverse=True)
        ref = with_block(cfg.context, lambda: sliding_window_attention(q, k, v, cfg.context))()
        fns = {b: with_block(b, lambda: sliding_window_attention(q, k, v, cfg.context)) for b in blocks}
        r = interleaved(fns, args.repeats)
        errs = {b: (fns[b]() - ref).abs().max().item() for b in blocks}
        print("attention, one layer, by query block: " + ", ".join(
            f"{b}{' (the window)' if b == cfg.context else ''} {r[b]:.2f} ms (max |diff| {errs[b]:.1e})" for b in blocks))

        model = Transformer(cfg).eval()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02)
        z = torch.randn(1, cfg.d_model, T)
        default = kv_cache.QUERY_BLOCK
        fns = {"now": lambda: model(z), "window": with_block(cfg.context, lambda: model(z)), "before": as_before(lambda: model(z))}
        r = interleaved(fns, args.repeats)
        err = (fns["before"]() - fns["now"]()).abs().max().item()
        flops = 2 * T * cfg.num_layers * (4 * cfg.d_model ** 2 + 2 * cfg.d_model * cfg.dim_feedforward)
        print(f"transformer forward ({cfg.num_layers} layers, {flops / 1e9:.1f} GFLOP in its linears): now (query block "
              f"{default}) {r['now']:.1f} ms, block = window {r['window']:.1f} ms, as before {r['before']:.1f} ms "
              f"(before / now {r['before'].median / r['now'].median:.2f}x by medians, "
              f"{r['before'].min / r['now'].min:.2f}x by minimums; max |diff| {err:.1e})")


if __name__ == "__main__":
    main()
