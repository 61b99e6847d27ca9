"""Thin helpers around Kyutai's reference Mimi (the `moshi` package).

Run ONLY inside the peers venv (see benchmarks/peers/README.md):

    .venv-peers/bin/python benchmarks/peers/kyutai_mimi.py        # self-check

Nothing here copies moshi code: the model is built by moshi's own
``moshi.models.loaders.get_mimi`` with its released architecture
(``_seanet_kwargs`` / ``_quantizer_kwargs`` / ``_transformer_kwargs``);
``get_mimi(None, ...)`` gives a randomly initialised model without any download.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from moshi.models import loaders
from moshi.models.compression import MimiModel
from moshi.quantization.core_vq import EuclideanCodebook

__all__ = [
    "FRAME_SIZE",
    "SAMPLE_RATE",
    "build_kyutai_mimi",
    "randomize_codebooks",
    "save_kyutai_weights",
    "kyutai_state_dict",
    "load_kyutai_weights",
    "key_diff_vs_tsv",
    "encode",
    "decode",
    "encode_streaming",
    "decode_streaming",
]

SAMPLE_RATE = 24000
FRAME_SIZE = 1920  # samples per 12.5 Hz frame

_DEFAULT_TSV = Path("/work/shared/reference/mimi_kyutai_checkpoint_keys.tsv")


def build_kyutai_mimi(
    num_codebooks: int = 8,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> MimiModel:
    """Kyutai's MimiModel (released architecture), in eval mode.

    weights: a Kyutai-layout ``.safetensors`` file, loaded with strict key
    checking; None -> moshi's random init (``seed`` makes it deterministic).
    Note: moshi's random init leaves every codebook at zero (all codes decode to
    the same vector); call :func:`randomize_codebooks` for a usable random model.
    """
    if seed is not None:
        torch.manual_seed(seed)
    model = loaders.get_mimi(None, device=device, num_codebooks=num_codebooks)
    if weights is not None:
        load_kyutai_weights(model, weights)
    return model.eval()


def load_kyutai_weights(model: MimiModel, path: str | Path) -> MimiModel:
    """Load a Kyutai-layout safetensors file into ``model`` (strict keys)."""
    device = next(model.parameters()).device
    state = load_file(str(path), device=str(device))
    model.load_state_dict(state, strict=True)  # raises on missing/unexpected keys
    _reset_codebook_caches(model)
    return model


def _reset_codebook_caches(model: torch.nn.Module) -> None:
    # EuclideanCodebook caches embedding_sum / cluster_usage in a non-persistent
    # `_embedding` buffer and `_initialized` in a python bool; drop both.
    for m in model.modules():
        if isinstance(m, EuclideanCodebook):
            m._embedding = None
            m._cached_initialized = False


@torch.no_grad()
def randomize_codebooks(model: MimiModel, seed: int = 0, scale: float = 1.0) -> MimiModel:
    """Give every codebook (all 32, also the unused ones) a random centroid table:
    embedding_sum = scale * randn(bins, dim), cluster_usage = 1, _initialized = 1.

    Caveat: with randomly initialised weights the projected latent entering the
    quantizer is tiny (norm ~0.16, nearly constant over time), so with
    scale=1.0 every frame picks the same code in every codebook.  scale=0.01
    puts the centroids on the latent's scale and gives varied codes."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, EuclideanCodebook):
            emb = scale * torch.randn(m.codebook_size, m.dim, generator=gen)
            m.embedding_sum.copy_(emb.to(m.embedding_sum))
            m.cluster_usage.fill_(1.0)
            m._initialized.fill_(1.0)
    _reset_codebook_caches(model)
    return model


# moshi >= 0.2 splits attention projections per step (`in_projs.{i}.weight`);
# the released checkpoint (and rustymimi / candle) use the fused torch names.
# Mimi has one step (mult == 1), so this is a pure rename. moshi's own
# load pre-hook maps the released names back when loading.
_RELEASED_NAMES = {
    ".self_attn.in_projs.0.weight": ".self_attn.in_proj_weight",
    ".self_attn.out_projs.0.weight": ".self_attn.out_proj.weight",
}


def kyutai_state_dict(model: MimiModel) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` renamed to the released checkpoint layout."""
    out = {}
    for k, v in model.state_dict().items():
        for new, old in _RELEASED_NAMES.items():
            if k.endswith(new):
                k = k[: -len(new)] + old
                break
        out[k] = v.detach().contiguous().cpu().clone()
    return out


def save_kyutai_weights(model: MimiModel, path: str | Path) -> None:
    """Write the weights as safetensors in the released Kyutai layout
    (same key names as tokenizer-e351c8d8-checkpoint125.safetensors)."""
    save_file(kyutai_state_dict(model), str(path))


def key_diff_vs_tsv(model: MimiModel, tsv: str | Path = _DEFAULT_TSV) -> dict:
    """Compare kyutai_state_dict(model) with the reference key/shape/dtype TSV.

    Returns {"only_in_tsv": [...], "only_in_model": [...], "shape_or_dtype": [...]}."""
    ref = {}
    for line in Path(tsv).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")[:3]
        ref[key] = (shape.strip(), dtype.strip())
    sd = kyutai_state_dict(model)
    mine = {k: (str(list(v.shape)), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}
    return {
        "only_in_tsv": sorted(set(ref) - set(mine)),
        "only_in_model": sorted(set(mine) - set(ref)),
        "shape_or_dtype": sorted(
            (k, ref[k], mine[k]) for k in set(ref) & set(mine) if ref[k] != mine[k]
        ),
    }


@torch.no_grad()
def encode(model: MimiModel, wav: torch.Tensor) -> torch.Tensor:
    """[B, 1, T] float waveform (24 kHz) -> [B, K, ceil(T / 1920)] int64 codes."""
    return model.encode(wav)


@torch.no_grad()
def decode(model: MimiModel, codes: torch.Tensor) -> torch.Tensor:
    """[B, K, S] codes -> [B, 1, S * 1920] waveform."""
    return model.decode(codes)


@torch.no_grad()
def encode_streaming(model: MimiModel, wav: torch.Tensor) -> torch.Tensor:
    """Encode frame by frame (1920-sample chunks) inside ``model.streaming``.

    The tail is zero-padded to a multiple of 1920 samples."""
    B, _, T = wav.shape
    n = math.ceil(T / FRAME_SIZE)
    if n * FRAME_SIZE != T:
        wav = torch.nn.functional.pad(wav, (0, n * FRAME_SIZE - T))
    out = []
    with model.streaming(batch_size=B):
        for i in range(n):
            out.append(model.encode(wav[:, :, i * FRAME_SIZE:(i + 1) * FRAME_SIZE]))
    return torch.cat(out, dim=-1)


@torch.no_grad()
def decode_streaming(model: MimiModel, codes: torch.Tensor) -> torch.Tensor:
    """Decode one code frame at a time inside ``model.streaming``."""
    B = codes.shape[0]
    out = []
    with model.streaming(batch_size=B):
        for i in range(codes.shape[-1]):
            out.append(model.decode(codes[:, :, i:i + 1]))
    return torch.cat(out, dim=-1)


def _test_signal(seconds: float, seed: int = 0) -> torch.Tensor:
    """Linear chirp 100 Hz -> 4 kHz plus light noise, shape [1, 1, T]."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    f0, f1 = 100.0, 4000.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    gen = torch.Generator().manual_seed(seed)
    wav = 0.5 * torch.sin(phase) + 0.05 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return wav.float()[None, None]


def _self_check(path: str = "/tmp/kyutai_rand.safetensors", scale: float = 0.01) -> None:
    m = build_kyutai_mimi(seed=0)
    raw = set(m.state_dict())
    diff = key_diff_vs_tsv(m) if _DEFAULT_TSV.exists() else None
    print("key diff vs TSV:", diff if diff else "TSV not found")
    print("raw moshi state_dict keys differing from saved layout:",
          len(raw - set(kyutai_state_dict(m))))
    wav = _test_signal(2.0)
    randomize_codebooks(m, seed=0, scale=1.0)
    print("distinct codes/codebook, scale=1.0:", [int(c.unique().numel()) for c in encode(m, wav)[0]])
    randomize_codebooks(m, seed=0, scale=scale)
    print(f"distinct codes/codebook, scale={scale}:", [int(c.unique().numel()) for c in encode(m, wav)[0]])
    save_kyutai_weights(m, path)
    m2 = build_kyutai_mimi(weights=path)
    codes = encode(m2, wav)
    rec = decode(m2, codes)
    print("2 s:", tuple(wav.shape), "-> codes", tuple(codes.shape), "-> wav", tuple(rec.shape))
    assert torch.equal(codes, encode(m, wav)), "reloaded model gives different codes"
    assert torch.equal(rec, decode(m, codes)), "reloaded model decodes differently"
    print("reloaded model: identical codes and decoded audio")
    sc = encode_streaming(m2, wav)
    print("streaming codes == batch codes:", bool(torch.equal(sc, codes)),
          f"(match fraction {(sc == codes).float().mean().item():.3f})")
    sr = decode_streaming(m2, codes)
    print("streaming decode max |diff| vs batch:", float((sr - rec).abs().max()))
    wav10 = _test_signal(10.0)
    t0 = time.perf_counter(); c10 = encode(m2, wav10); t1 = time.perf_counter()
    decode(m2, c10); t2 = time.perf_counter()
    print(f"10 s audio, {torch.get_num_threads()} threads: encode {t1 - t0:.2f} s, "
          f"decode {t2 - t1:.2f} s (informational, single run)")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="self-check of Kyutai's Mimi with random weights")
    ap.add_argument("--out", default="/tmp/kyutai_rand.safetensors")
    ap.add_argument("--codebook-scale", type=float, default=0.01)
    args = ap.parse_args()
    _self_check(args.out, args.codebook_scale)
