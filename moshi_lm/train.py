"""Training a Moshi-style dialogue LM on Mimi tokens + the Inner Monologue text.

    python -m moshi_lm.train --dialogues dialogues/ --tokens tokens/ --tokenizer tok.model --out runs/lm
    moshi-lm train [CONFIG.toml] --out runs/lm ...          # the same command
    moshi-lm train --resume runs/lm [--steps 2000]          # continue from the latest checkpoint

Data (`moshi_lm.data`): dialogues from `moshi_lm.dialogue_corpus`, their `mimi tokens`, and a
SentencePiece tokenizer; speaker A is the model's stream. The last `eval_fraction` of the
dialogues is held out.

Model: an `LMModel` with K = `num_codebooks` codebooks per speaker (n_q = 2K, dep_q = K,
delays 0 for text and semantic levels, 1 for acoustic levels), its sizes from a preset
(`LM_PRESETS`) plus `[model]` overrides, `text_card` = the tokenizer's vocabulary and `card`
= the codec's codebook size (default: the smallest power of two above every code seen).

Loss: `moshi_lm.lm_loss_parts` (text CE + audio CE, semantic level weighted 100 vs 1, PAD/EPAD
text targets weighted `pad_weight`). Beside it, on the same batches and with the same weights,
the unigram baseline (each stream's token frequencies on the training set): a model that
learnt nothing beyond frequencies scores the baseline.

A run folder holds `config.resolved.json`, `train.csv` (averages since the previous row),
`eval.csv` (held-out windows), `checkpoints/step_NNNNNNN/` (model, AdamW state and RNG
states in safetensors/JSON, no pickle; `latest` names the newest), `final/` (the last weights,
loadable by `moshi_lm.load`, plus `tokenizer.model` and `training.json`: codebooks, Mimi model
id and fingerprint of the tokens) and `best/` (the same for the evaluation step with the
lowest held-out loss: a tiny model on a small set overfits).

Config (TOML, every key optional except the three data paths; CLI options override it):

    dialogues = "dialogues"   tokens = "tokens"   tokenizer = "tok.model"
    steps = 1000   batch_size = 16   window = 64   lr = 2e-3   seed = 0
    [model]
    preset = "tiny"           # micro | tiny | small; any other LMConfig key overrides the preset
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from mimi.atomic import atomic_write_bytes
from mimi.checkpoint.loading import read_safetensors
from mimi.devices import resolve_device
from mimi.errors import MimiError
from mimi.training.checkpoint import latest_checkpoint, optimizer_from_tensors, optimizer_to_tensors
from mimi.training.config import read_config_table
from mimi.training.csv_log import CsvLog
from moshi_lm.checkpoint import save as save_lm
from moshi_lm.config import LMConfig
from moshi_lm.data import (DialogueExample, UnigramModel, WindowSampler, fit_unigram, fixed_windows, load_examples,
                           split_examples)
from moshi_lm.loss import lm_loss_parts
from moshi_lm.model import LMModel, build_lm

LM_PRESETS: dict[str, dict[str, Any]] = {
    # for tests: a few seconds of CPU
    "micro": dict(dim=32, num_heads=2, num_layers=1, context=64, depformer_dim=16, depformer_num_heads=2,
                  depformer_num_layers=1, depformer_dim_feedforward=None),
    # the CPU demonstration: ~1M weights besides embeddings
    "tiny": dict(dim=128, num_heads=4, num_layers=4, context=256, depformer_dim=64, depformer_num_heads=2,
                 depformer_num_layers=2, depformer_dim_feedforward=None),
    # one GPU
    "small": dict(dim=512, num_heads=8, num_layers=8, context=512, depformer_dim=256, depformer_num_heads=4,
                  depformer_num_layers=4, depformer_dim_feedforward=None),
}
DERIVED_KEYS = ("text_card", "card", "n_q", "dep_q", "delays")  # set from the data, never by hand
FINAL_INFO = "training.json"


@dataclass(frozen=True)
class LMTrainConfig:
    dialogues: str = ""
    tokens: str = ""
    tokenizer: str = ""
    num_codebooks: int = 8  # K per speaker
    model_speaker: str = "A"
    eval_fraction: float = 0.1
    overflow: str = "shift"  # Inner Monologue overflow policy (moshi_lm.inner_monologue)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    card: int | None = None
    steps: int = 1000
    batch_size: int = 16
    window: int = 64  # frames (80 ms each)
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0
    semantic_weight: float = 100.0
    pad_weight: float = 0.5
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    log_every: int = 10
    eval_every: int = 100
    eval_max_windows: int = 64
    checkpoint_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "model", dict(self.model))
        for name in ("dialogues", "tokens", "tokenizer"):
            if not getattr(self, name):
                raise MimiError(f"LM training config: {name} is required (--{name} PATH)")
        positive = ("num_codebooks", "steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                    "keep_checkpoints", "eval_max_windows")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MimiError(f"LM training config: {name} must be a positive integer, got {value!r}")
        if self.window < 2:
            raise MimiError(f"LM training config: window must be >= 2 frames, got {self.window}")
        if not self.lr > 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise MimiError("LM training config: need lr > 0, warmup_steps >= 0, 0 <= min_lr_ratio <= 1")
        if self.device not in ("cpu", "auto") and not self.device.startswith("cuda"):
            raise MimiError(f"LM training config: device must be cpu, cuda[:N] or auto, got {self.device!r}")
        preset = self.model.get("preset", "tiny")
        if preset not in LM_PRESETS:
            raise MimiError(f"LM training config: unknown model preset {preset!r}; choose one of "
                            f"{', '.join(LM_PRESETS)}")
        fixed = sorted(set(self.model) & set(DERIVED_KEYS))
        if fixed:
            raise MimiError(f"LM training config: [model] {', '.join(fixed)} come from the data and cannot be set")
        unknown = sorted(set(self.model) - {f.name for f in dataclasses.fields(LMConfig)} - {"preset"})
        if unknown:
            raise MimiError(f"LM training config: unknown [model] key(s) {', '.join(unknown)}")
        if self.card is not None and self.card < 2:
            raise MimiError(f"LM training config: card must be >= 2, got {self.card}")

    def lm_config(self, text_card: int, card: int) -> LMConfig:
        K = self.num_codebooks
        arch = {**LM_PRESETS[self.model.get("preset", "tiny")], **{k: v for k, v in self.model.items()
                                                                    if k != "preset"}}
        delays = (0,) + (0,) + (1,) * (K - 1) + (0,) + (1,) * (K - 1)
        try:
            return LMConfig(**arch, text_card=text_card, card=card, n_q=2 * K, dep_q=K, delays=delays)
        except TypeError as exc:
            raise MimiError(f"LM training config: [model]: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(data: dict[str, Any], where: str = "LM training config") -> LMTrainConfig:
    known = {f.name for f in dataclasses.fields(LMTrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MimiError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if "model" in data and not isinstance(data["model"], dict):
        raise MimiError(f"{where}: [model] must be a table")
    try:
        return LMTrainConfig(**data)
    except TypeError as exc:
        raise MimiError(f"{where}: {exc}") from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw table of a TOML (or resolved JSON) LM training config."""
    return read_config_table(path, "LM training config")


# -- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainReport:
    steps_done: int
    resumed_from: int
    seconds: float
    final_dir: Path
    train_loss: float | None  # the last logged averages
    train_unigram: float | None
    eval_loss: float | None
    eval_unigram: float | None
    stopped_early: bool  # the time budget ran out before `steps`
    best_step: int | None = None  # the evaluation step with the lowest held-out loss (saved in best/)
    best_eval_loss: float | None = None


TRAIN_FIELDS = ["step", "seconds", "lr", "loss", "text_loss", "audio_loss", "unigram", "unigram_text",
                "unigram_audio", "grad_norm"]
EVAL_FIELDS = ["step", "loss", "text_loss", "audio_loss", "unigram", "unigram_text", "unigram_audio", "windows"]


def lr_at(cfg: LMTrainConfig, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then cosine decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _param_groups(model: LMModel, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "emb" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _losses(model: LMModel, unigram: UnigramModel, codes: torch.Tensor, cfg: LMTrainConfig
            ) -> tuple[Any, Any]:
    out = model(codes)
    loss = lm_loss_parts(out, codes, cfg.semantic_weight, cfg.pad_weight)
    with torch.no_grad():
        base = lm_loss_parts(unigram.output_like(out), codes, cfg.semantic_weight, cfg.pad_weight)
    return loss, base


@torch.no_grad()
def evaluate(model: LMModel, unigram: UnigramModel, windows: Sequence[torch.Tensor], cfg: LMTrainConfig,
             device: torch.device) -> dict[str, float]:
    """Mean losses (model and unigram) over held-out windows, in batches of `batch_size`."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for i in range(0, len(windows), cfg.batch_size):
        codes = torch.stack(list(windows[i:i + cfg.batch_size])).to(device)  # [B, 1 + 2K, window]
        loss, base = _losses(model, unigram, codes, cfg)
        w = codes.shape[0]
        for key, value in (("loss", loss.total), ("text_loss", loss.text), ("audio_loss", loss.audio),
                           ("unigram", base.total), ("unigram_text", base.text), ("unigram_audio", base.audio)):
            sums[key] = sums.get(key, 0.0) + float(value) * w
        n += w
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()} | {"windows": n}


def _save_checkpoint(folder: Path, step: int, model: LMModel, opt: torch.optim.Optimizer,
                     sampler_gen: torch.Generator, keep: int) -> Path:
    """`folder/step_N`, written to a temporary folder and renamed; `latest` then points at it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:07d}"
    tmp = folder / f".step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"lm_config": model.config.to_json()})
    tensors, meta = optimizer_to_tensors(opt)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "optimizer.safetensors"),
              metadata=meta)
    info = {"step": step, "sampler_rng": sampler_gen.get_state().numpy().tobytes().hex(),
            "torch_rng": torch.get_rng_state().numpy().tobytes().hex()}
    (tmp / "state.json").write_text(json.dumps(info) + "\n")
    for path in (tmp / "model.safetensors", tmp / "optimizer.safetensors", tmp / "state.json"):
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_bytes(folder / "latest", (final.name + "\n").encode())
    for old in sorted(folder.glob("step_*"))[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(path: Path, model: LMModel, opt: torch.optim.Optimizer, sampler_gen: torch.Generator) -> int:
    try:
        info = json.loads((path / "state.json").read_text())
        state, meta = read_safetensors(path / "model.safetensors")
        if meta.get("lm_config") and LMConfig.from_json(meta["lm_config"]) != model.config:
            raise MimiError(f"{path}: the checkpoint's LM config differs from this run's (data or config changed)")
        model.load_state_dict(state, strict=True)
        optimizer_from_tensors(opt, *read_safetensors(path / "optimizer.safetensors"))
        sampler_gen.set_state(torch.frombuffer(bytearray.fromhex(info["sampler_rng"]), dtype=torch.uint8))
        torch.set_rng_state(torch.frombuffer(bytearray.fromhex(info["torch_rng"]), dtype=torch.uint8))
        return int(info["step"])
    except MimiError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise MimiError(f"cannot resume from {path}: {' '.join(str(exc).split())[:200]}") from None


def _card_for(examples: Sequence[DialogueExample]) -> int:
    """The smallest power of two (>= 2) above every audio code."""
    top = max(int(ex.codes[1:].max()) for ex in examples if ex.num_frames)
    return 1 << max(1, top.bit_length())


def train_on_examples(cfg: LMTrainConfig, examples: Sequence[DialogueExample], out_dir: str | os.PathLike, *,
                      text_card: int, resume: bool = False, progress: bool = False,
                      time_limit_s: float | None = None, final_extra: dict[str, Any] | None = None,
                      tokenizer_file: str | None = None) -> TrainReport:
    """The training loop on in-memory examples (`train` loads them from the config's paths)."""
    started = time.perf_counter()
    if time_limit_s is not None and not time_limit_s > 0:
        raise MimiError(f"the time limit must be positive, got {time_limit_s} s")
    examples = [ex for ex in examples if ex.num_frames > 0]
    if not examples:
        raise MimiError("no dialogue with any frame to train on")
    K = examples[0].num_codebooks
    if any(ex.num_codebooks != K for ex in examples) or K != cfg.num_codebooks:
        raise MimiError(f"examples must all have num_codebooks = {cfg.num_codebooks} per speaker")
    top_text = max(int(ex.codes[0].max()) for ex in examples)
    if top_text >= text_card:
        raise MimiError(f"text token {top_text} does not fit text_card {text_card}")
    card = cfg.card if cfg.card is not None else _card_for(examples)
    top_audio = max(int(ex.codes[1:].max()) for ex in examples)
    if top_audio >= card:
        raise MimiError(f"audio code {top_audio} does not fit card {card} (set card to the codec's codebook size)")
    lm_cfg = cfg.lm_config(text_card, card)
    train_set, eval_set = split_examples(examples, cfg.eval_fraction)

    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_lm(lm_cfg).to(device).train()
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sampler_gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume:
        ckpt = latest_checkpoint(ckpt_dir)
        if ckpt is None:
            raise MimiError(f"{out} holds no checkpoint to resume from")
        step = _load_checkpoint(ckpt, model, opt, sampler_gen)
    else:
        out.mkdir(parents=True, exist_ok=True)
    resumed_from = step
    resolved = cfg.to_dict() | {"resolved_lm_config": lm_cfg.to_json_dict()}
    atomic_write_bytes(out / "config.resolved.json", (json.dumps(resolved, indent=2, sort_keys=True) + "\n").encode())

    unigram = fit_unigram(train_set, text_card, card, lm_cfg.dep_q)
    sampler = WindowSampler(train_set, cfg.window, cfg.batch_size, sampler_gen)
    eval_windows = fixed_windows(eval_set, cfg.window, cfg.eval_max_windows)
    log = CsvLog(out / "train.csv", TRAIN_FIELDS, resumed_from)
    eval_log = CsvLog(out / "eval.csv", EVAL_FIELDS, resumed_from)
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    if eval_windows and step == 0:
        last_eval = evaluate(model, unigram, eval_windows, cfg, device)
        eval_log.write({"step": 0, **last_eval})
    info = {"num_codebooks": K, "model_speaker": cfg.model_speaker, "card": card, "text_card": text_card,
            **(final_extra or {})}
    best_step, best_loss = _read_best(out / "best") if resume else (None, None)

    from tqdm import tqdm

    sums: dict[str, float] = {}
    count = 0
    stopped_early = False
    bar = tqdm(total=cfg.steps, initial=step, unit="step", disable=not progress, leave=False)
    try:
        while step < cfg.steps:
            lr = lr_at(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            codes = sampler.sample().to(device)  # [B, 1 + 2K, window]
            loss, base = _losses(model, unigram, codes, cfg)
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            for key, value in (("loss", loss.total), ("text_loss", loss.text), ("audio_loss", loss.audio),
                               ("unigram", base.total), ("unigram_text", base.text),
                               ("unigram_audio", base.audio), ("grad_norm", grad_norm)):
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            count += 1
            bar.update(1)
            out_of_time = time_limit_s is not None and time.perf_counter() - started > time_limit_s
            last = step == cfg.steps or out_of_time
            if step % cfg.log_every == 0 or last:
                last_train = {k: v / count for k, v in sums.items()}
                log.write({"step": step, "seconds": time.perf_counter() - started, "lr": lr, **last_train})
                bar.set_postfix(loss=f"{last_train['loss']:.3f}", unigram=f"{last_train['unigram']:.3f}")
                sums, count = {}, 0
            if eval_windows and (step % cfg.eval_every == 0 or last):
                last_eval = evaluate(model, unigram, eval_windows, cfg, device)
                eval_log.write({"step": step, **last_eval})
                if best_loss is None or last_eval["loss"] < best_loss:
                    best_step, best_loss = step, last_eval["loss"]
                    _export(model, out / "best", info | {"steps": step, "eval_loss": best_loss}, tokenizer_file)
                    model.train()
            if step % cfg.checkpoint_every == 0 or last:
                _save_checkpoint(ckpt_dir, step, model, opt, sampler_gen, cfg.keep_checkpoints)
            if out_of_time and step < cfg.steps:
                stopped_early = True
                break
    finally:
        bar.close()

    final = out / "final"
    _export(model, final, info | {"steps": step}, tokenizer_file)
    return TrainReport(step, resumed_from, time.perf_counter() - started, final, last_train.get("loss"),
                       last_train.get("unigram"), last_eval.get("loss"), last_eval.get("unigram"), stopped_early,
                       best_step, best_loss)


def _export(model: LMModel, folder: Path, info: dict[str, Any], tokenizer_file: str | None) -> None:
    """`folder`: the model for `moshi_lm.load`, `training.json` and a copy of the tokenizer."""
    model.eval()
    save_lm(model, folder)
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, folder / ".tokenizer.model.tmp")
        os.replace(folder / ".tokenizer.model.tmp", folder / "tokenizer.model")
    atomic_write_bytes(folder / FINAL_INFO, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def _read_best(folder: Path) -> tuple[int | None, float | None]:
    """(step, held-out loss) of the best model saved so far, (None, None) without one."""
    try:
        info = json.loads((folder / FINAL_INFO).read_text())
        return int(info["steps"]), float(info["eval_loss"])
    except (OSError, KeyError, TypeError, ValueError):
        return None, None


def train(cfg: LMTrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = False,
          time_limit_s: float | None = None) -> TrainReport:
    """Load the data named by `cfg` and train (see the module docstring)."""
    from mimi.tokens import TokenDataset
    from moshi_lm.text_tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer)
    examples = load_examples(cfg.dialogues, cfg.tokens, tokenizer, num_codebooks=cfg.num_codebooks,
                             model_speaker=cfg.model_speaker, overflow=cfg.overflow)
    tokens = TokenDataset(cfg.tokens)
    extra = {"mimi_model_id": tokens.model_id, "mimi_fingerprint": tokens.fingerprint}
    return train_on_examples(cfg, examples, out_dir, text_card=tokenizer.vocab_size, resume=resume,
                             progress=progress, time_limit_s=time_limit_s, final_extra=extra,
                             tokenizer_file=cfg.tokenizer)


if __name__ == "__main__":  # python -m moshi_lm.train ...: the `moshi-lm train` command
    from mimi_cli.lm_train import train as _command

    sys.exit(_command(prog_name="python -m moshi_lm.train"))
