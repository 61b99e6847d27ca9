"""`train(config, out_dir)`: the Mimi training loop.

One step: encode a batch of random crops to the latent, quantize it with the training split
RVQ (EMA codebooks, quantizer dropout, 50 % of sequences left unquantized), decode, update the
multi-scale STFT discriminator (hinge), then the generator: adversarial + feature matching
(Mimi's final setup) or, with `loss.mode = "encodec"`, also multi-scale mel + L1
reconstruction, optionally through the loss balancer; plus the commitment loss and the
semantic distillation loss when a teacher is configured. AdamW (weight decay on transformer
weights only), gradient clipping, weight EMA, bf16 autocast on GPU (on CPU with `cpu_bf16`). DDP under torchrun:
gradients and codebook statistics are averaged across processes.

Outputs in `out_dir`: `config.resolved.json`, `train.csv`, `eval.csv`, `checkpoints/` (resume
exactly with the same command and `resume=True`), and `final/` (EMA weights in the Kyutai
layout with our config, plus the discriminator).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from mimi.checkpoint import save_state
from mimi.config import MimiConfig
from mimi.checkpoint.loading import read_checkpoint, read_safetensors, resolve_source
from mimi.devices import resolve_device
from mimi.errors import MimiError
from mimi.model import MimiModel, build_mimi
from mimi.quantization.training import split_rvq_train_forward
from mimi.training.balancer import Balancer
from mimi.training.checkpoint import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from mimi.training.config import TrainConfig, save_resolved
from mimi.training.csv_log import CsvLog
from mimi.training.data import AudioCropDataset
from mimi.training.discriminator import MultiScaleSTFTDiscriminator
from mimi.training.losses import (
    MultiScaleMelLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    waveform_l1,
)

LOG_FIELDS = ["step", "seconds", "loss_d", "adversarial", "feature", "mel", "l1", "commitment", "distill",
              "grad_norm_g", "grad_norm_d", "lr", "quantized_fraction"]


@dataclass(frozen=True)
class TrainReport:
    steps_done: int
    resumed_from: int  # 0 for a fresh run
    seconds: float
    final_model: Path  # EMA weights, Kyutai layout
    last_eval: dict[str, float]


class _StepSampler(Sampler[int]):
    """Sample indices for steps `start..steps-1` of this rank: a pure function of the step, so
    a resumed run reads exactly the crops the uninterrupted run would have read."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int):
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.steps):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch


def _device(cfg: TrainConfig) -> torch.device:
    """The configured device, checked; under torchrun a bare `cuda` is this process's GPU."""
    device = resolve_device(cfg.device, option="training config: device")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _init_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _out_of_time(start: float, limit: float | None, world: int, device: torch.device) -> bool:
    """Whether the time limit has passed; under DDP, rank 0's clock decides for every rank (one
    broadcast per step); a single process reads its clock only."""
    if limit is None:
        return False
    over = time.perf_counter() - start >= limit
    if world > 1:
        flag = torch.tensor([float(over)], device=device)
        dist.broadcast(flag, src=0)
        over = bool(flag[0])
    return over


class _WeightEma:
    """The generator's weight EMA as two fused (foreach) updates: ema <- d * ema + (1 - d) * w
    for parameters, a copy for buffers (codebook statistics)."""

    def __init__(self, model: MimiModel, ema: dict[str, torch.Tensor]):
        params = dict(model.named_parameters())
        state = model.state_dict()
        self.ema_params = [ema[k] for k in state if k in params]
        self.params = [params[k] for k in state if k in params]
        self.ema_buffers = [ema[k] for k in state if k not in params]
        self.buffers = [state[k] for k in state if k not in params]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        current = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.ema_params, current, 1.0 - decay)
        torch._foreach_copy_(self.ema_buffers, self.buffers)


def _param_groups(model: MimiModel, extra: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on the transformers' weight matrices only (DESIGN.md §3)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_tr = name.startswith(("encoder_transformer.", "decoder_transformer.")) and p.dim() >= 2
        (decay if is_tr else no_decay).append(p)
    no_decay += list(extra.parameters())
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


INIT_DEFAULT = "default"
"""`--init default`: the bundled model, with its discriminator."""


def _init_sources(init: str | None, init_discriminator: str | None) -> tuple[Path | None, Path | None]:
    """(codec weights, discriminator weights) to start from; `default` names the bundled pair."""
    if init == INIT_DEFAULT:
        from mimi.defaults import default_discriminator_path, default_model_path

        return default_model_path(), Path(init_discriminator) if init_discriminator else default_discriminator_path()
    return (resolve_source(init) if init is not None else None,
            Path(init_discriminator) if init_discriminator else None)


def _load_discriminator(disc: MultiScaleSTFTDiscriminator, path: Path) -> None:
    state = read_safetensors(path)[0]
    try:
        disc.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MimiError(f"{path}: not weights of this discriminator ({first})") from None


def _run_architecture(cfg: TrainConfig, out: Path) -> TrainConfig:
    """On resume: the architecture the run was started with (its config.resolved.json), which
    is the `--init` weights' one when they differed from CONFIG's `model`."""
    resolved = out / "config.resolved.json"
    if not resolved.is_file():
        return cfg
    try:
        recorded = MimiConfig.from_dict(json.loads(resolved.read_text())["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MimiError(f"{resolved}: unreadable model section ({exc})") from None
    return cfg if recorded == cfg.model else dataclasses.replace(cfg, model=recorded)


def _build_model(cfg: TrainConfig, init: Path | None) -> MimiModel:
    if init is None:
        return build_mimi(cfg.model, num_codebooks=min(8, cfg.model.quantizer.n_q))
    ckpt = read_checkpoint(init)
    model = build_mimi(ckpt.config, num_codebooks=min(8, ckpt.config.quantizer.n_q))
    model.load_state_dict(ckpt.state, strict=True)
    return model


def _distillation(cfg: TrainConfig, model: MimiModel, device: torch.device):
    if cfg.distill.teacher is None:
        return None, torch.nn.Module()
    from mimi.training.distill import SemanticDistillation, WavLMTeacher

    teacher = WavLMTeacher(cfg.distill.teacher, layer=cfg.distill.layer, pool_kernel=cfg.distill.pool_kernel,
                           pool_stride=cfg.distill.pool_stride).to(device)
    return teacher, SemanticDistillation(model.config.seanet.dimension, cfg.distill.teacher_dim)


@torch.no_grad()
def evaluate(model: MimiModel, ema: dict[str, torch.Tensor], clips: list, num_codebooks: int) -> dict[str, float]:
    """PESQ-WB and STOI of the EMA weights on held-out clips (failed metrics are counted, not faked)."""
    from mimi.metrics import evaluate_pair

    with torch.device("meta"):
        net = build_mimi(model.config, num_codebooks=min(num_codebooks, model.config.quantizer.n_q))
    net.load_state_dict({k: v.clone() for k, v in ema.items()}, strict=True, assign=True)
    net = net.to(next(model.parameters()).device).eval()
    scores: dict[str, list[float]] = {"pesq": [], "stoi": []}
    failures = 0
    for _, wav in clips:
        x = wav[None].to(next(net.parameters()).device)  # [1, 1, T]
        y = net.decode(net.encode(x))[..., : x.shape[-1]]
        result = evaluate_pair(x[0, 0].float().cpu().numpy(), y[0, 0].float().cpu().numpy(), net.sample_rate,
                               metrics=("pesq", "stoi"))
        for name in scores:
            value = getattr(result, name)
            if value is None:
                failures += 1
            else:
                scores[name].append(value)
    out = {name: sum(v) / len(v) for name, v in scores.items() if v}
    out.update(clips=float(len(clips)), metric_failures=float(failures))
    return out


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, init: str | None = None,
          init_discriminator: str | None = None, progress: bool = False,
          time_limit_s: float | None = None) -> TrainReport:
    """Train (or resume) the run in `out_dir`.

    `init`: codec weights to start a new run from (a file, folder or hub id, or `default` for the
    bundled model and its discriminator); `init_discriminator`: discriminator weights (a
    `discriminator.safetensors` of a run's `final/`); otherwise the discriminator starts fresh.

    `time_limit_s`: stop at the first step boundary after this many seconds (a checkpoint, an
    evaluation and `final/` are written as at the last step); `resume=True` continues exactly.
    """
    start_time = time.perf_counter()
    if time_limit_s is not None and time_limit_s <= 0:
        raise MimiError(f"the time limit must be positive, got {time_limit_s} s")
    out = Path(out_dir)
    device = _device(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop shapes: let cuDNN pick its fastest kernels
    rank, world = _init_distributed(device)
    torch.manual_seed(cfg.seed)

    init_model, init_disc = _init_sources(init, init_discriminator)
    if resume:
        cfg = _run_architecture(cfg, out)
    model = _build_model(cfg, init_model).to(device).train()
    if model.config != cfg.model:  # --init weights define the architecture: record it (resolved config, resume)
        cfg = dataclasses.replace(cfg, model=model.config)
    if cfg.num_codebooks > model.config.quantizer.n_q:
        raise MimiError(f"the model has {model.config.quantizer.n_q} codebooks, config asks {cfg.num_codebooks}")
    disc = MultiScaleSTFTDiscriminator()
    if init_disc is not None:
        _load_discriminator(disc, init_disc)
    disc = disc.to(device).train()
    teacher, extra = _distillation(cfg, model, device)
    extra = extra.to(device)
    opt_g = torch.optim.AdamW(_param_groups(model, extra, cfg.optim.weight_decay), lr=cfg.optim.lr,
                              betas=cfg.optim.betas)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.optim.disc_lr, betas=cfg.optim.betas, weight_decay=0.0)
    ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    ts = TrainingState(0, model, ema, disc, extra, opt_g, opt_d, gen, {})

    # the data is listed (and a bad source refused) before anything is written
    segment = model.frame_size * max(1, round(cfg.data.segment_seconds * model.frame_rate))
    dataset = AudioCropDataset(cfg.data.train, segment_samples=segment, sample_rate=model.sample_rate,
                               gain_db=cfg.data.gain_db, noise_snr_db=cfg.data.noise_snr_db, seed=cfg.seed,
                               length=(cfg.steps * world + world) * cfg.batch_size)
    clips = []
    if cfg.data.eval and rank == 0:
        from mimi.training.data import EvalClips

        clips = list(EvalClips(cfg.data.eval, max_seconds=cfg.data.eval_max_seconds))[: cfg.data.eval_max_clips]

    ckpt_dir = out / "checkpoints"
    resumed_from = 0
    if resume and (found := latest_checkpoint(ckpt_dir)) is not None:
        load_checkpoint(found, ts)
        resumed_from = ts.step
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_resolved(cfg, out / "config.resolved.json")
    balancer = None
    if cfg.loss.balancer:
        weights = {"adversarial": cfg.loss.adversarial, "feature": cfg.loss.feature}
        if cfg.loss.mode == "encodec":
            weights.update(mel=cfg.loss.mel, l1=cfg.loss.l1)
        balancer = Balancer(weights)
        if ts.balancer_state:
            balancer.load_state_dict(ts.balancer_state)
    mel_loss = MultiScaleMelLoss(sample_rate=model.sample_rate).to(device) if cfg.loss.mode == "encodec" else None

    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.data.num_workers,
                        sampler=_StepSampler(ts.step, cfg.steps, cfg.batch_size, rank, world), drop_last=True)
    log = CsvLog(out / "train.csv", LOG_FIELDS, resumed_from) if rank == 0 else None
    eval_log = CsvLog(out / "eval.csv", ["step", "pesq", "stoi", "clips", "metric_failures"],
                       resumed_from) if rank == 0 else None

    g_params = list(model.parameters()) + list(extra.parameters())
    # optim.lr = 0 freezes the generator (a discriminator warm-up): its forward runs without a
    # graph and it is never back-propagated; the EMA codebooks still follow the data.
    frozen_g = cfg.optim.lr == 0.0
    # bf16 autocast on GPU (`bf16`), and on CPU when asked (`cpu_bf16`: fast only with AMX / AVX512-BF16)
    use_bf16 = cfg.bf16 and (device.type == "cuda" or (device.type == "cpu" and cfg.cpu_bf16))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    all_reduce = (lambda t: (dist.all_reduce(t), t)[1]) if world > 1 else None
    last_eval: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=ts.step, disable=not (progress and rank == 0), unit="step", leave=False)
    ema_pairs = _WeightEma(model, ema)
    interval_start, interval_step = time.perf_counter(), ts.step  # `seconds`: mean per step between log rows
    for batch in loader:
        wav = batch.to(device, non_blocking=True)  # [B, 1, segment]
        lr = cfg.optim.lr_at(ts.step, cfg.steps)
        for g in opt_g.param_groups:
            g["lr"] = lr
        with autocast, torch.set_grad_enabled(not frozen_g):
            latent = model.encode_to_latent(wav)  # [B, D, F]
            q = split_rvq_train_forward(
                model.quantizer, latent, n_q=cfg.num_codebooks, q_dropout=cfg.quantizer.q_dropout,
                no_quant_rate=cfg.quantizer.no_quant_rate, ema_decay=cfg.quantizer.ema_decay,
                threshold_ratio=cfg.quantizer.threshold_ratio, update=True, generator=gen, all_reduce=all_reduce)
            y = model.decode_latent(q.quantized)[..., : wav.shape[-1]]  # [B, 1, segment]
        # the row holds device tensors: they are read (one wait for the device) on log steps only
        row: dict[str, float | torch.Tensor] = {"step": ts.step + 1, "lr": lr,
                                                "quantized_fraction": q.quantized_applied.float().mean()}
        adversarial = ts.step >= cfg.loss.disc_start_step

        # -- discriminator ------------------------------------------------------------
        if adversarial:
            with autocast:
                real = disc(wav)
                fake = disc(y.detach().float())
                loss_d = hinge_discriminator_loss([r.logits for r in real], [f.logits for f in fake])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            _average_gradients(list(disc.parameters()), world)
            row["grad_norm_d"] = torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.optim.grad_clip)
            opt_d.step()
            row["loss_d"] = loss_d.detach()

        # -- generator ----------------------------------------------------------------
        if frozen_g:  # discriminator warm-up: nothing to learn on the generator side
            row["commitment"] = q.commitment_loss.detach()
        else:
            losses: dict[str, torch.Tensor] = {}
            with autocast:
                if adversarial:
                    fake = disc(y)
                    with torch.no_grad():
                        real = disc(wav)
                    losses["adversarial"] = hinge_generator_loss([f.logits for f in fake])
                    losses["feature"] = feature_matching_loss([r.features for r in real], [f.features for f in fake])
                if mel_loss is not None:
                    losses["mel"] = mel_loss(y.float(), wav)
                    losses["l1"] = waveform_l1(y.float(), wav)
                direct = cfg.loss.commitment * q.commitment_loss
                row["commitment"] = q.commitment_loss.detach()
                if teacher is not None:
                    distill = extra.loss(q.semantic, teacher(wav))
                    direct = direct + cfg.distill.weight * distill
                    row["distill"] = distill.detach()
            opt_g.zero_grad(set_to_none=True)
            if balancer is not None and losses:
                direct.backward(retain_graph=True)
                balancer.backward(losses, y)
            else:
                weights = {"adversarial": cfg.loss.adversarial, "feature": cfg.loss.feature,
                           "mel": cfg.loss.mel, "l1": cfg.loss.l1}
                (direct + sum(weights[k] * v for k, v in losses.items())).backward()
            row.update({k: v.detach() for k, v in losses.items()})
            _average_gradients(g_params, world)
            row["grad_norm_g"] = torch.nn.utils.clip_grad_norm_(g_params, cfg.optim.grad_clip)
            opt_g.step()
        ema_pairs.update(cfg.optim.ema_decay)
        ts.step += 1
        bar.update(1)
        last = ts.step == cfg.steps or _out_of_time(start_time, time_limit_s, world, device)
        log_now = ts.step % cfg.log_every == 0 or ts.step % cfg.checkpoint_every == 0 or last
        if log_now:  # divergence is caught here, before any checkpoint is written
            values = {k: float(v) for k, v in row.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise MimiError(f"training diverged by step {ts.step} (non-finite loss): {values}")

        if rank == 0:
            if log_now and (ts.step % cfg.log_every == 0 or last):
                now = time.perf_counter()
                values["seconds"] = (now - interval_start) / max(1, ts.step - interval_step)
                interval_start, interval_step = now, ts.step
                log.write(values)
            if clips and (ts.step % cfg.eval_every == 0 or last):
                last_eval = evaluate(model, ema, clips, cfg.eval_codebooks)
                eval_log.write({"step": ts.step, **last_eval})
            if ts.step % cfg.checkpoint_every == 0 or last:
                ts.balancer_state = balancer.state_dict() if balancer is not None else {}
                save_checkpoint(ckpt_dir, ts, model.config)
        if world > 1:
            dist.barrier()
        if last:
            break
    bar.close()

    final = out / "final" / "model.safetensors"
    if rank == 0:
        (out / "final").mkdir(parents=True, exist_ok=True)
        save_state(ema, model.config, final, layout="kyutai")
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in disc.state_dict().items()},
                  str(out / "final" / "discriminator.safetensors"))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainReport(ts.step, resumed_from, time.perf_counter() - start_time, final, last_eval)
