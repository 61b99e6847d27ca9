"""Codec speed: encode / decode real-time factors, streaming latency and peak memory.

:func:`run_speed` times our model and, where importable, its peers on the *same weights*:
transformers' ``MimiModel`` (our weights saved in the transformers layout and loaded with
``from_pretrained``) and Kyutai's reference ``moshi`` (built with moshi's own
``loaders.get_mimi`` for our architecture, loaded with our Kyutai-layout weights, strict keys).
Peers are timed interleaved with ours in the same run (the order is reversed every other
round, so slow drift cancels out), on the same input audio and the same codes.

* real-time factor (RTF) = audio seconds x batch / wall seconds, after one warm-up call, the
  median (and best) of ``repeats`` calls, per batch size, under ``torch.inference_mode``;
* streaming latency at batch 1: one 1920-sample frame encoded and decoded inside
  ``streaming(1)``, 10 warm-up then 100 timed frames, p50 / p99 (ours and moshi);
* peak memory of each warm-up call: on CUDA ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``; on CPU the process's resident-set high-water mark (``VmHWM``
  in ``/proc/self/status``, reset before each call through ``/proc/self/clear_refs`` where
  the kernel allows it, otherwise the process-wide peak so far).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from mimi.defaults import LoadedModel
from mimi.devices import resolve_device
from mimi.errors import MimiError

__all__ = ["SpeedRow", "StreamingRow", "SpeedReport", "run_speed", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OURS = "mimi"


@dataclass(frozen=True)
class SpeedRow:
    """One implementation, one operation, one batch size.

    ``rtf_median`` / ``rtf_best``: audio seconds x batch / wall seconds of the median / fastest
    call. ``peak_memory_mib``: process peak RSS (CPU) or peak allocated CUDA memory during the
    warm-up call; ``memory_delta_mib``: the same minus what was in use just before it.
    """

    implementation: str
    operation: str
    batch_size: int
    audio_seconds: float
    times_s: tuple[float, ...]
    median_s: float
    min_s: float
    rtf_median: float
    rtf_best: float
    peak_memory_mib: Optional[float] = None
    memory_delta_mib: Optional[float] = None


@dataclass(frozen=True)
class StreamingRow:
    """Per-frame latency of streaming (encode one frame + decode it) at batch 1."""

    implementation: str
    frames: int
    frame_ms: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass
class SpeedReport:
    model_id: str
    fingerprint: str
    device: str
    dtype: str
    num_codebooks: int
    seconds: float
    repeats: int
    batch_sizes: tuple[int, ...]
    threads: int
    memory_kind: str
    rows: list[SpeedRow] = field(default_factory=list)
    streaming: list[StreamingRow] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    skipped_peers: list[str] = field(default_factory=list)
    peer_code_agreement: dict[str, float] = field(default_factory=dict)
    process_peak_rss_mib: Optional[float] = None
    machine: dict[str, Any] = field(default_factory=dict)

    def row(self, implementation: str, operation: str, batch_size: int) -> Optional[SpeedRow]:
        for r in self.rows:
            if (r.implementation, r.operation, r.batch_size) == (implementation, operation, batch_size):
                return r
        return None

    def ratio(self, peer: str, operation: str, batch_size: int) -> Optional[float]:
        """Our speed over the peer's (median RTFs): > 1 means ours is faster."""
        ours, theirs = self.row(OURS, operation, batch_size), self.row(peer, operation, batch_size)
        if ours is None or theirs is None or theirs.rtf_median <= 0:
            return None
        return ours.rtf_median / theirs.rtf_median

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratios_ours_over_peer"] = [
            {"peer": p, "operation": op, "batch_size": b, "ratio": self.ratio(p, op, b)}
            for p in self.peers for op in ("encode", "decode") for b in self.batch_sizes
            if self.ratio(p, op, b) is not None
        ]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_markdown(self) -> str:
        mem_head = "peak CUDA MiB (+call)" if self.memory_kind == "cuda" else "peak RSS MiB (+call)"
        lines = [
            f"Model `{self.model_id}` ({self.fingerprint}), {self.num_codebooks} codebooks; device {self.device}, "
            f"{self.dtype}, {self.threads} torch thread(s); input {self.seconds:g} s per item; "
            f"median (best) of {self.repeats} call(s) after a warm-up.",
            "",
            "RTF = audio seconds x batch / wall seconds (higher is faster). "
            "ours/peer = our median RTF over the peer's (> 1: ours is faster).",
            "",
            f"| implementation | op | batch | RTF median | RTF best | median s | {mem_head} | ours/peer |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        order = [OURS] + list(self.peers)
        for b in self.batch_sizes:
            for op in ("encode", "decode"):
                for impl in order:
                    r = self.row(impl, op, b)
                    if r is None:
                        continue
                    ratio = self.ratio(impl, op, b) if impl != OURS else None
                    mem = "n/a" if r.peak_memory_mib is None else f"{r.peak_memory_mib:.0f} (+{r.memory_delta_mib:.0f})"
                    lines.append(f"| {impl} | {op} | {b} | {r.rtf_median:.1f} | {r.rtf_best:.1f} | {r.median_s:.4f} | "
                                 f"{mem} | {'' if ratio is None else f'{ratio:.2f}x'} |")
        if self.streaming:
            lines += ["", "Streaming at batch 1 (encode one 80 ms frame + decode it):", "",
                      "| implementation | frames | p50 ms | p99 ms | mean ms | max ms | real time |",
                      "|---|---:|---:|---:|---:|---:|---|"]
            for s in self.streaming:
                ok = "yes" if s.p99_ms < s.frame_ms else ("p50 only" if s.p50_ms < s.frame_ms else "no")
                lines.append(f"| {s.implementation} | {s.frames} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.mean_ms:.2f} | "
                             f"{s.max_ms:.2f} | {ok} |")
        notes = []
        for peer, agree in self.peer_code_agreement.items():
            why = "same weights"
            if self.dtype != "float32":
                why += f"; {self.dtype} rounding lets codes diverge"
            notes.append(f"{peer} codes agree with ours on {100 * agree:.1f}% of entries ({why})")
        notes += [f"skipped peer {s}" for s in self.skipped_peers]
        if self.memory_kind == "rss-process":
            notes.append("CPU memory is the process's peak RSS so far (the high-water mark could not be reset)")
        elif self.memory_kind == "rss":
            notes.append("CPU memory: process RSS high-water mark during the warm-up call (reset before it); "
                         "+call = above the RSS just before the call")
        if self.process_peak_rss_mib is not None:
            notes.append(f"process peak RSS over the whole run: {self.process_peak_rss_mib:.0f} MiB")
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------
# memory
# -------------------------------------------------------------------------------------------


def _proc_status_mib(field_name: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Memory:
    """Peak memory of one call: CUDA allocator peak, or the process RSS high-water mark."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.kind = "cuda"
        elif _proc_status_mib("VmHWM") is None:
            self.kind = "none"
        else:
            self.kind = "rss" if _reset_rss_peak() else "rss-process"
        self.seen_peak: Optional[float] = None  # highest RSS mark read before any reset

    def _note(self, value: Optional[float]) -> None:
        if value is not None and (self.seen_peak is None or value > self.seen_peak):
            self.seen_peak = value

    def process_peak(self) -> Optional[float]:
        """Peak RSS of the whole process (CPU), across the per-call resets."""
        if self.cuda or self.kind == "none":
            return _proc_status_mib("VmHWM")
        self._note(_proc_status_mib("VmHWM"))
        return self.seen_peak

    def measure(self, fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[Any, Optional[float], Optional[float]]:
        if self.cuda:
            sync()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
            out = fn()
            sync()
            peak = torch.cuda.max_memory_allocated() / 2**20
            return out, peak, peak - before
        if self.kind == "none":
            return fn(), None, None
        if self.kind == "rss":
            self._note(_proc_status_mib("VmHWM"))
            _reset_rss_peak()
        before = _proc_status_mib("VmRSS") or 0.0
        out = fn()
        peak = _proc_status_mib("VmHWM")
        self._note(peak)
        return out, peak, None if peak is None else max(0.0, peak - before)


# -------------------------------------------------------------------------------------------
# implementations
# -------------------------------------------------------------------------------------------


@dataclass
class _Impl:
    name: str
    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    streaming: Optional[Callable[[], Any]] = None  # context manager factory, batch 1


def _ours(model) -> _Impl:
    return _Impl(OURS, model.encode, model.decode, lambda: model.streaming(1))


def _transformers_peer(model, device: torch.device, dtype: torch.dtype, workdir: Path) -> _Impl:
    import transformers

    import mimi

    with contextlib.suppress(Exception):
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    folder = mimi.save(model, workdir / "transformers", layout="transformers")
    hf = transformers.MimiModel.from_pretrained(str(folder)).to(device=device, dtype=dtype).eval()
    hf.requires_grad_(False)
    k = model.num_codebooks
    return _Impl("transformers", lambda wav: hf.encode(wav, num_quantizers=k).audio_codes,
                 lambda codes: hf.decode(codes).audio_values)


def _moshi_config(config, loaders) -> dict[str, Any]:
    base = getattr(loaders, "_mimi_config", None)
    if not isinstance(base, dict):
        raise MimiError("moshi.models.loaders has no _mimi_config to build the architecture from")
    cfg = copy.deepcopy(base)
    s, t, q = config.seanet, config.transformer, config.quantizer
    cfg.update(sample_rate=config.sample_rate, frame_rate=config.frame_rate, channels=s.channels)
    cfg["seanet"].update(channels=s.channels, dimension=s.dimension, n_filters=s.n_filters, ratios=list(s.ratios),
                         n_residual_layers=s.n_residual_layers, kernel_size=s.kernel_size,
                         last_kernel_size=s.last_kernel_size, residual_kernel_size=s.residual_kernel_size,
                         dilation_base=s.dilation_base, compress=s.compress, pad_mode=s.pad_mode)
    cfg["transformer"].update(d_model=t.d_model, num_heads=t.num_heads, num_layers=t.num_layers,
                              dim_feedforward=t.dim_feedforward, context=t.context, max_period=t.max_period,
                              layer_scale=t.layer_scale, input_dimension=s.dimension,
                              output_dimensions=[s.dimension])
    cfg["quantizer"].update(dimension=q.dimension, n_q=q.n_q, bins=q.bins, input_dimension=s.dimension,
                            output_dimension=s.dimension)
    if q.n_q_semantic != 1:
        cfg["quantizer"]["n_q_semantic"] = q.n_q_semantic
    return cfg


def _moshi_peer(model, device: torch.device, dtype: torch.dtype, workdir: Path) -> _Impl:
    from moshi.models import loaders
    from safetensors.torch import load_file

    import mimi

    mo = loaders.get_mimi(None, mimi_config=_moshi_config(model.config, loaders), device=device,
                          num_codebooks=model.num_codebooks)
    path = mimi.save(model, workdir / "kyutai.safetensors", layout="kyutai")
    state = load_file(str(path), device=str(device))
    theirs = set(mo.state_dict())
    renames = {".self_attn.in_proj_weight": ".self_attn.in_projs.0.weight",
               ".self_attn.out_proj.weight": ".self_attn.out_projs.0.weight"}
    fixed = {}
    for key, value in state.items():
        if key not in theirs:
            for old, new in renames.items():
                if key.endswith(old) and key[: -len(old)] + new in theirs:
                    key = key[: -len(old)] + new
                    break
        fixed[key] = value
    missing, unexpected = sorted(theirs - set(fixed)), sorted(set(fixed) - theirs)
    if missing or unexpected:
        raise MimiError(f"our Kyutai-layout weights do not fit moshi's model: {len(missing)} missing key(s) "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    mo.load_state_dict(fixed, strict=True)
    for m in mo.modules():  # moshi caches codebook tables computed from the old buffers
        if hasattr(m, "_cached_initialized"):
            m._cached_initialized = False
        if "_embedding" in getattr(m, "_buffers", {}):
            m._embedding = None
    mo = mo.to(device=device, dtype=dtype).eval()
    mo.requires_grad_(False)
    return _Impl("moshi", mo.encode, mo.decode, lambda: mo.streaming(1))


_PEERS: dict[str, Callable[..., _Impl]] = {"transformers": _transformers_peer, "moshi": _moshi_peer}
_PEER_MODULES = {"transformers": "transformers", "moshi": "moshi.models"}


def _load_peers(model, device: torch.device, dtype: torch.dtype, workdir: Path) -> tuple[list[_Impl], list[str]]:
    import importlib

    peers, skipped = [], []
    for name, build in _PEERS.items():
        try:
            importlib.import_module(_PEER_MODULES[name])
        except Exception as exc:  # ImportError, or a broken install
            msg = str(exc).splitlines()[0] if str(exc) else ""
            skipped.append(f"{name}: not importable ({type(exc).__name__}: {msg})")
            continue
        try:
            peers.append(build(model, device, dtype, workdir))
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else ""
            skipped.append(f"{name}: could not load our weights ({type(exc).__name__}: {msg})")
    return peers, skipped


# -------------------------------------------------------------------------------------------
# timing
# -------------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def _positive_ints(values: Sequence[int], name: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise MimiError(f"{name} must be positive integers, got {v!r}")
        if int(v) not in out:
            out.append(int(v))
    if not out:
        raise MimiError(f"{name}: give at least one")
    return tuple(out)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def run_speed(loaded_model: LoadedModel, *, device: Union[str, torch.device] = "cpu",
              dtype: torch.dtype = torch.float32, batch_sizes: Sequence[int] = (1, 8, 32), seconds: float = 10.0,
              repeats: int = 5, peers: bool = True, streaming: bool = True, stream_warmup: int = 10,
              stream_frames: int = 100, seed: int = 0) -> SpeedReport:
    """Time encode / decode (per batch size) and streaming of ``loaded_model`` and its peers.

    The model is used as is when already on ``device`` in ``dtype``, otherwise a cast copy.
    The input is ``seconds`` of seeded noise per item (speed does not depend on content);
    every implementation decodes the same codes (ours, from that input).
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise MimiError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    batch_sizes = _positive_ints(batch_sizes, "batch sizes")
    if not (isinstance(seconds, (int, float)) and np.isfinite(seconds) and seconds > 0):
        raise MimiError(f"seconds must be a positive number, got {seconds!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise MimiError(f"repeats must be a positive integer, got {repeats!r}")
    device = resolve_device(device)

    model = loaded_model.model
    param = next(model.parameters())
    if param.device != device or param.dtype != dtype:
        model = copy.deepcopy(model).to(device=device).set_dtype(dtype).eval()
    model.requires_grad_(False)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    memory = _Memory(device)
    sr, frame = model.sample_rate, model.frame_size
    n = int(round(seconds * sr))
    audio_seconds = n / sr
    gen = torch.Generator().manual_seed(seed)
    base_audio = 0.1 * torch.randn(max(batch_sizes), 1, n, generator=gen)

    report = SpeedReport(
        model_id=loaded_model.model_id, fingerprint=loaded_model.fingerprint, device=str(device),
        dtype=str(dtype).removeprefix("torch."), num_codebooks=model.num_codebooks, seconds=audio_seconds,
        repeats=repeats, batch_sizes=batch_sizes, threads=torch.get_num_threads(), memory_kind=memory.kind,
        machine=_machine(),
    )

    with tempfile.TemporaryDirectory(prefix="mimi-bench-speed-") as work, torch.inference_mode():
        impls = [_ours(model)]
        if peers:
            found, skipped = _load_peers(model, device, dtype, Path(work))
            impls += found
            report.skipped_peers = skipped

        # code agreement: a check that the peers really run the same weights
        # whole frames: implementations pad a partial last frame differently (see mimi.model)
        probe_len = max(frame, min(n, 50 * frame) // frame * frame)
        probe = base_audio[:1, :, :probe_len].to(device=device, dtype=dtype)
        ref_codes = model.encode(probe)
        for impl in list(impls[1:]):
            try:
                codes = impl.encode(probe)
                if codes.shape != ref_codes.shape:
                    raise MimiError(f"codes of shape {tuple(codes.shape)}, ours {tuple(ref_codes.shape)}")
                report.peer_code_agreement[impl.name] = float((codes == ref_codes).float().mean())
            except Exception as exc:
                impls.remove(impl)
                report.skipped_peers.append(f"{impl.name}: failed to encode ({type(exc).__name__}: {exc})")
        report.peers = [i.name for i in impls[1:]]

        for b in batch_sizes:
            wav = base_audio[:b].to(device=device, dtype=dtype)
            codes = model.encode(wav)
            calls = []
            for impl in impls:
                calls.append((impl, "encode", lambda impl=impl, wav=wav: impl.encode(wav)))
                calls.append((impl, "decode", lambda impl=impl, codes=codes: impl.decode(codes)))
            times: dict[tuple[str, str], list[float]] = {(i.name, op): [] for i, op, _ in calls}
            mem: dict[tuple[str, str], tuple[Optional[float], Optional[float]]] = {}
            for impl, op, fn in calls:  # warm-up, measuring memory
                _, peak, delta = memory.measure(fn, sync)
                mem[(impl.name, op)] = (peak, delta)
            for r in range(repeats):
                order = calls if r % 2 == 0 else calls[::-1]
                for impl, op, fn in order:
                    sync()
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    times[(impl.name, op)].append(time.perf_counter() - t0)
            for impl, op, _ in calls:
                ts = times[(impl.name, op)]
                med, best = statistics.median(ts), min(ts)
                peak, delta = mem[(impl.name, op)]
                report.rows.append(SpeedRow(
                    implementation=impl.name, operation=op, batch_size=b, audio_seconds=audio_seconds,
                    times_s=tuple(ts), median_s=med, min_s=best, rtf_median=audio_seconds * b / med,
                    rtf_best=audio_seconds * b / best, peak_memory_mib=peak, memory_delta_mib=delta))
            del wav, codes, calls

        if streaming:
            report.streaming = _stream_latency([i for i in impls if i.streaming is not None], base_audio, frame,
                                               sr, device, dtype, stream_warmup, stream_frames, sync)

    report.process_peak_rss_mib = memory.process_peak()
    return report


def _stream_latency(impls: list[_Impl], base_audio: torch.Tensor, frame: int, sample_rate: int, device: torch.device,
                    dtype: torch.dtype, warmup: int, frames: int, sync: Callable[[], None]) -> list[StreamingRow]:
    """Encode + decode one frame at a time inside streaming(1), implementations interleaved per frame."""
    total = warmup + frames
    src = base_audio[0, 0]
    reps = -(-total * frame // src.numel())
    audio = src.repeat(reps)[: total * frame].view(total, 1, 1, frame).to(device=device, dtype=dtype)
    lat: dict[str, list[float]] = {i.name: [] for i in impls}
    with contextlib.ExitStack() as stack:
        for impl in impls:
            stack.enter_context(impl.streaming())
        for t in range(total):
            for impl in (impls if t % 2 == 0 else impls[::-1]):
                sync()
                t0 = time.perf_counter()
                impl.decode(impl.encode(audio[t]))
                sync()
                if t >= warmup:
                    lat[impl.name].append((time.perf_counter() - t0) * 1000.0)
    frame_ms = 1000.0 * frame / sample_rate
    return [StreamingRow(implementation=i.name, frames=len(lat[i.name]), frame_ms=frame_ms,
                         p50_ms=_percentile(lat[i.name], 50), p99_ms=_percentile(lat[i.name], 99),
                         mean_ms=float(np.mean(lat[i.name])), max_ms=float(np.max(lat[i.name])))
            for i in impls if lat[i.name]]
