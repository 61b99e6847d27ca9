"""Steps of the dialogue-LM demonstration (run.sh calls them in order; see README.md).

    python examples/dialogue_lm/pipeline.py dialogues WORK/dialogues --count 40
    python examples/dialogue_lm/pipeline.py tokenizer WORK/dialogues WORK/tokenizer.model
    python examples/dialogue_lm/pipeline.py align WORK/dialogues WORK/tokenizer.model OUT/aligned_text.txt
    python examples/dialogue_lm/pipeline.py plot WORK/run OUT/loss.png
    python examples/dialogue_lm/pipeline.py generate WORK/run WORK/dialogues WORK/tokens OUT/samples
    python examples/dialogue_lm/pipeline.py tiny-mimi WORK/dialogues WORK/tiny-mimi.safetensors   # checks only

`mimi tokens` and `moshi-lm train` are the package's own commands (run.sh).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import torch

from mimi.errors import MimiError


def cmd_dialogues(args: argparse.Namespace) -> None:
    from moshi_lm.dialogue_corpus import build_dialogues

    report = build_dialogues(args.out, args.count, seed=args.seed, workers=args.workers,
                             progress=sys.stderr.isatty())
    print(f"{args.out}: {report.summary()}")


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from moshi_lm.dialogue_corpus import read_dialogues, tokenizer_texts
    from moshi_lm.text_tokenizer import train_tokenizer

    texts = tokenizer_texts(args.sentences, seed=args.seed)
    texts += [c.text for d in read_dialogues(args.dialogues) for c in d.channels]
    tok = train_tokenizer(texts, args.out, vocab_size=args.vocab_size, seed=args.seed)
    print(f"{args.out}: {tok.vocab_size} pieces, trained on {len(texts)} sentences")


def cmd_align(args: argparse.Namespace) -> None:
    """The Inner Monologue stream of speaker A for the first dialogues, one symbol per 80 ms frame."""
    from moshi_lm.dialogue_corpus import read_dialogues
    from moshi_lm.inner_monologue import align_words, render
    from moshi_lm.text_tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    lines = ["Inner Monologue text streams (speaker A), one symbol per 80 ms frame: '.' = PAD (3), "
             "'|' = EPAD (0), otherwise the SentencePiece piece ('▁' starts a word).", ""]
    for d in read_dialogues(args.dialogues)[:args.count]:
        ch = d.channel("A")
        aligned = align_words(ch.words, tok, ch.samples // 1920)
        lines.append(f"== {d.id} ({ch.voice}, {aligned.num_frames} frames, {aligned.shifted_words} words shifted, "
                     f"{aligned.dropped_tokens} pieces dropped)")
        lines.append("words: " + " ".join(f"{w.word}@{w.start_s:.2f}" for w in ch.words))
        symbols = [render([t], tok.id_to_piece) for t in aligned.tokens.tolist()]
        for i in range(0, len(symbols), 25):
            lines.append(f"  {i * 0.08:6.2f}s  " + " ".join(symbols[i:i + 25]))
        lines.append("")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(args.run)
    train, evals = _read_csv(run / "train.csv"), _read_csv(run / "eval.csv")
    if not train:
        raise MimiError(f"{run / 'train.csv'} has no rows")
    best = int(min(evals[1:], key=lambda r: r["loss"])["step"]) if len(evals) > 1 else None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in zip(axes, ("", "text_", "audio_"), ("total (text + audio)", "text stream",
                                                               "audio (semantic x100 + acoustic)")):
        loss_key = f"{key}loss" if key else "loss"
        base_key = f"unigram_{key[:-1]}" if key else "unigram"
        steps = [r["step"] for r in train]
        ax.plot(steps, [r[loss_key] for r in train], label="LM, train batches", color="C0")
        ax.plot(steps, [r[base_key] for r in train], "--", label="unigram, same batches", color="C0", alpha=0.6)
        if evals:
            es = [r["step"] for r in evals]
            ax.plot(es, [r[loss_key] for r in evals], "o-", label="LM, held-out", color="C3", markersize=3)
            ax.plot(es, [r[base_key] for r in evals], "--", label="unigram, held-out", color="C3", alpha=0.6)
        if best is not None:
            ax.axvline(best, color="gray", linestyle=":", linewidth=1, label=f"best held-out (step {best})")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Tiny Moshi-style LM on synthetic two-speaker dialogues: loss vs unigram baseline")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    last = train[-1]
    summary = (f"step {int(last['step'])}: train loss {last['loss']:.3f} vs unigram {last['unigram']:.3f} "
               f"(text {last['text_loss']:.3f} vs {last['unigram_text']:.3f}, audio {last['audio_loss']:.3f} vs "
               f"{last['unigram_audio']:.3f})")
    if evals:
        for label, e in (("held-out loss", evals[-1]),
                         (f"best held-out loss (step {best})", min(evals[1:] or evals, key=lambda r: r["loss"]))):
            summary += (f"; {label} {e['loss']:.3f} vs unigram {e['unigram']:.3f} (text {e['text_loss']:.3f} vs "
                        f"{e['unigram_text']:.3f}, audio {e['audio_loss']:.3f} vs {e['unigram_audio']:.3f})")
    print(f"wrote {args.out}; {summary}")


@torch.no_grad()
def _generate(lm, user: torch.Tensor, sampling: bool, seed: int) -> torch.Tensor:
    """user [K, T] codes -> the model's stream [1 + K, T] (text, audio), frame i alongside user frame i.

    LMGen reads the user's codes of step t as those of frame t - 1 (the codes given at step 0 are
    never seen) and returns frame t - 1 of its own stream at step t, after the delay warm-up."""
    from moshi_lm import LMGen

    gen = LMGen(lm, use_sampling=sampling, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25,
                generator=torch.Generator().manual_seed(seed))
    K, T = user.shape
    frames = []
    with gen.streaming(batch_size=1):
        for t in range(T + lm.config.max_delay):
            u = user[:, min(max(t - 1, 0), T - 1)]
            out = gen.step(u.view(1, K, 1))
            if out is not None:
                frames.append(out[0, :, 0])
    return torch.stack(frames[:T], dim=1)  # [1 + K, T]


def cmd_generate(args: argparse.Namespace) -> None:
    import moshi_lm
    from mimi.audio import write_audio
    from mimi.defaults import resolve_model
    from moshi_lm.data import load_examples, split_examples
    from moshi_lm.inner_monologue import render
    from moshi_lm.text_tokenizer import load_tokenizer

    run = Path(args.run)
    final = run / args.checkpoint
    if args.checkpoint == "best" and not final.is_dir():
        final = run / "final"
    lm = moshi_lm.load(final)
    info = json.loads((final / "training.json").read_text())
    cfg = json.loads((run / "config.resolved.json").read_text())
    tok = load_tokenizer(final / "tokenizer.model")
    loaded = resolve_model(args.model, num_codebooks=info["num_codebooks"])
    if info.get("mimi_fingerprint") and loaded.fingerprint != info["mimi_fingerprint"]:
        raise MimiError(f"the Mimi model {loaded.model_id} is not the one that made the training tokens "
                        f"({info.get('mimi_model_id')}); pass it with --model")
    examples = load_examples(args.dialogues, args.tokens, tok, num_codebooks=info["num_codebooks"])
    _, held_out = split_examples(examples, cfg["eval_fraction"])
    # the held-out dialogue where the model's speaker (A) starts talking earliest
    ex = min(held_out or examples, key=lambda e: int((e.codes[0] != 3).float().argmax()))
    K = info["num_codebooks"]
    T = min(ex.num_frames, args.frames)
    user = ex.codes[1 + K:1 + 2 * K, :T]  # [K, T]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mimi_model = loaded.model

    def decode(codes: torch.Tensor) -> torch.Tensor:  # [K, T] -> [1, T * 1920]
        return mimi_model.decode(codes[None].clamp(0, mimi_model.quantizer.bins - 1))[0]

    user_audio = decode(user)
    lines = [f"Model: {final} (step {info['steps']}). Held-out dialogue {ex.id}: the user's (B) tokens are fed "
             f"frame by frame to LMGen; the model speaks as A. {T} frames ({T * 0.08:.1f} s). "
             "'.' = PAD, '|' = EPAD.", ""]
    ref = ex.codes[0, :T]
    lines += ["reference text stream (A, aligned from the true word timings):",
              "  " + tok.decode(ref.tolist()), "  " + render(ref, tok.id_to_piece), ""]
    write_audio(out / "user.wav", user_audio, 24000)
    for mode, sampling in (("greedy", False), ("sampled", True)):
        stream = _generate(lm, user, sampling, args.seed)  # [1 + K, T]
        audio = decode(stream[1:])
        write_audio(out / f"{mode}.wav", audio, 24000)
        text = stream[0]
        lines += [f"{mode} ({'temp 0.8 audio / 0.7 text, top-k 250 / 25' if sampling else 'argmax'}):",
                  "  text: " + (tok.decode(text.tolist()) or "(no word, only PAD/EPAD)"),
                  "  stream: " + render(text, tok.id_to_piece),
                  f"  PAD {int((text == 3).sum())}, EPAD {int((text == 0).sum())}, word pieces "
                  f"{int(((text != 3) & (text != 0)).sum())} of {T} frames", ""]
    (out / "text_streams.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}: user.wav, greedy.wav, sampled.wav (the model's side), text_streams.txt")


def cmd_tiny_mimi(args: argparse.Namespace) -> None:
    """A random tiny Mimi whose codebooks are k-means fitted on the dialogues' latents: its codes
    mean something about the audio, enough to check the pipeline (not to hear anything)."""
    import soundfile as sf

    import mimi
    from mimi.checkpoint import save_state
    from mimi.quantization.training import kmeans_init_

    torch.manual_seed(args.seed)
    model = mimi.build_mimi(mimi.MimiConfig.tiny(), num_codebooks=8).eval()
    wavs = sorted(Path(args.dialogues, "audio").rglob("*.wav"))[:8]
    if not wavs:
        raise MimiError(f"{args.dialogues}/audio holds no wav")
    with torch.no_grad():
        latents = [model.encode_to_latent(torch.from_numpy(sf.read(w, dtype="float32")[0])[None, None])
                   for w in wavs]
        latent = torch.cat(latents, dim=2)  # [1, D, F]
        g = torch.Generator().manual_seed(args.seed)
        for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
            residual = rvq.project_in(latent).transpose(1, 2).reshape(-1, rvq.input_proj.out_channels)
            for layer in rvq.layers:
                kmeans_init_(layer, residual, iters=10, generator=g)
                residual = residual - layer.decode(layer.encode(residual))
    save_state({k: v.float() for k, v in model.state_dict().items()}, model.config, args.out)
    print(f"wrote {args.out} (tiny random Mimi, k-means codebooks; for pipeline checks only)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("dialogues")
    s.add_argument("out")
    s.add_argument("--count", type=int, default=40)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    s.set_defaults(fn=cmd_dialogues)
    s = sub.add_parser("tokenizer")
    s.add_argument("dialogues")
    s.add_argument("out")
    s.add_argument("--vocab-size", type=int, default=1000)
    s.add_argument("--sentences", type=int, default=20000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_tokenizer)
    s = sub.add_parser("align")
    s.add_argument("dialogues")
    s.add_argument("tokenizer")
    s.add_argument("out")
    s.add_argument("--count", type=int, default=2)
    s.set_defaults(fn=cmd_align)
    s = sub.add_parser("plot")
    s.add_argument("run")
    s.add_argument("out")
    s.set_defaults(fn=cmd_plot)
    s = sub.add_parser("generate")
    s.add_argument("run")
    s.add_argument("dialogues")
    s.add_argument("tokens")
    s.add_argument("out")
    s.add_argument("--model", default=None, help="Mimi model that made the tokens [default: the bundled one]")
    s.add_argument("--frames", type=int, default=75, help="frames to generate (80 ms each)")
    s.add_argument("--checkpoint", choices=("best", "final"), default="best",
                   help="the weights with the best held-out loss, or the last ones")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_generate)
    s = sub.add_parser("tiny-mimi")
    s.add_argument("dialogues")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_tiny_mimi)
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except MimiError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
