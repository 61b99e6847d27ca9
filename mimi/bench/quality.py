"""Quality against bitrate: Mimi at several codebook counts next to Opus and Codec2.

:func:`run_quality` reads every input file (downmixed to mono, resampled to 24 kHz), runs it
through every codec setting, scores the decoded audio against the input with
:func:`mimi.metrics.evaluate_pair` and writes to ``out_dir``:

``per_file.csv``          one row per (file, codec setting): scores, alignment, errors
``summary.csv``           one row per codec setting: means, files scored / failed per metric
``summary.md``            the same as a Markdown table
``results.json``          everything above, every error message included
``quality_vs_bitrate.png``  PESQ and STOI against bitrate, one line per codec

A metric that fails on a file (too short, silent, ...) is recorded as an error, never as a
number, and is left out of that setting's mean; the tables show how many files failed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from mimi.audio import read_audio, resample
from mimi.bench.baselines import SAMPLE_RATE, Baseline, available_baselines
from mimi.defaults import LoadedModel
from mimi.errors import MetricError, MimiError
from mimi.metrics import evaluate_pair
from mimi.metrics.codes import bitrate_bps

__all__ = [
    "QUALITY_METRICS",
    "DEFAULT_CODEBOOKS",
    "CodecSetting",
    "FileResult",
    "SummaryRow",
    "QualityReport",
    "list_audio_files",
    "run_quality",
    "plot_quality",
    "OUTPUT_FILES",
]

QUALITY_METRICS = ("pesq", "stoi", "estoi", "si_sdr", "mel")
DEFAULT_CODEBOOKS = (1, 2, 4, 8, 16, 32)
OUTPUT_FILES = ("per_file.csv", "summary.csv", "summary.md", "results.json", "quality_vs_bitrate.png")

METRIC_LABELS = {"pesq": "PESQ", "stoi": "STOI", "estoi": "ESTOI", "si_sdr": "SI-SDR (dB)", "mel": "mel dist."}
FAMILY_ORDER = ("mimi", "opus", "codec2")

# Encode/decode Mimi in streaming chunks of this many frames (40 s), so memory stays bounded for
# long files; streaming gives the same codes and audio as one offline call.
_CHUNK_FRAMES = 500

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class CodecSetting:
    """One codec at one setting: ``codec`` is the family (mimi, opus, codec2), ``setting`` its label."""

    codec: str
    setting: str
    bitrate_bps: float

    @property
    def key(self) -> str:
        return f"{self.codec}:{self.setting}"


@dataclass(frozen=True)
class FileResult:
    """Scores of one file through one codec setting (``None`` where a metric failed; see ``errors``)."""

    file: str
    codec: str
    setting: str
    bitrate_bps: float
    duration_s: float
    scores: dict[str, Optional[float]]
    errors: dict[str, str]
    lag_samples: int = 0
    correlation: float = 0.0
    codec_seconds: float = 0.0


@dataclass(frozen=True)
class SummaryRow:
    """Means over the files of one codec setting; each mean only over the files that metric scored."""

    codec: str
    setting: str
    bitrate_bps: float
    num_files: int
    means: dict[str, Optional[float]]
    scored: dict[str, int]
    failed: dict[str, int]

    @property
    def bitrate_kbps(self) -> float:
        return self.bitrate_bps / 1000.0


@dataclass
class QualityReport:
    model_id: str
    fingerprint: str
    metrics: tuple[str, ...]
    codebooks: tuple[int, ...]
    files: list[str]
    settings: list[CodecSetting]
    results: list[FileResult]
    summary: list[SummaryRow]
    skipped_baselines: list[str] = field(default_factory=list)
    file_errors: dict[str, str] = field(default_factory=dict)
    out_dir: Optional[Path] = None
    seconds: float = 0.0

    @property
    def paths(self) -> dict[str, Path]:
        if self.out_dir is None:
            return {}
        return {name: self.out_dir / name for name in OUTPUT_FILES}

    def to_markdown(self) -> str:
        return summary_markdown(self.summary, self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "sample_rate": SAMPLE_RATE,
            "metrics": list(self.metrics),
            "codebooks": list(self.codebooks),
            "files": list(self.files),
            "file_errors": dict(self.file_errors),
            "skipped_baselines": list(self.skipped_baselines),
            "settings": [asdict(s) for s in self.settings],
            "summary": [asdict(r) for r in self.summary],
            "per_file": [asdict(r) for r in self.results],
            "seconds": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


# -------------------------------------------------------------------------------------------
# inputs
# -------------------------------------------------------------------------------------------


def list_audio_files(files_or_dirs: Union[PathLike, Iterable[PathLike]]) -> list[Path]:
    """Expand files and folders (searched recursively for audio files) into a list of files."""
    from mimi.tokens.inputs import list_inputs

    if isinstance(files_or_dirs, (str, os.PathLike)):
        files_or_dirs = [files_or_dirs]
    out: list[Path] = []
    for item in files_or_dirs:
        p = Path(os.fspath(item))
        if p.is_dir():
            found = [p / f.rel for f in list_inputs(p)]
        elif p.exists():
            found = [p]
        else:
            raise MimiError(f"{p}: no such file or folder")
        out.extend(f for f in found if f not in out)
    if not out:
        raise MimiError("no input audio files")
    return out


def _read_mono_24k(path: Path) -> np.ndarray:
    audio = read_audio(path)
    mono = audio.samples.mean(dim=0, keepdim=True)
    return resample(mono, audio.sample_rate, SAMPLE_RATE)[0].numpy().astype(np.float32)


def _codebook_counts(codebooks: Iterable[int], n_q: int) -> tuple[int, ...]:
    out: list[int] = []
    for k in codebooks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise MimiError(f"codebook counts must be positive integers, got {k!r}")
        k = min(int(k), n_q)
        if k not in out:
            out.append(k)
    return tuple(sorted(out))


# -------------------------------------------------------------------------------------------
# Mimi
# -------------------------------------------------------------------------------------------


@torch.inference_mode()
def _mimi_codes(model, wav: np.ndarray, k: int) -> torch.Tensor:
    """Codes [1, k, F] of mono 24 kHz audio, encoded in streaming chunks (== offline)."""
    param = next(model.parameters())
    frame = model.frame_size
    n_frames = max(1, math.ceil(wav.size / frame))
    x = torch.zeros(1, 1, n_frames * frame, dtype=param.dtype, device=param.device)
    x[0, 0, :wav.size] = torch.from_numpy(wav).to(device=param.device, dtype=param.dtype)
    chunk = _CHUNK_FRAMES * frame
    if x.shape[-1] <= chunk:
        return model.quantize(model.encode_to_latent(x), k)
    parts = []
    with model.streaming(1):
        for start in range(0, x.shape[-1], chunk):
            parts.append(model.quantize(model.encode_to_latent(x[..., start:start + chunk]), k))
    return torch.cat(parts, dim=-1)


@torch.inference_mode()
def _mimi_decode(model, codes: torch.Tensor, num_samples: int) -> np.ndarray:
    if codes.shape[-1] <= _CHUNK_FRAMES:
        y = model.decode(codes)
    else:
        parts = []
        with model.streaming(1):
            for start in range(0, codes.shape[-1], _CHUNK_FRAMES):
                parts.append(model.decode(codes[..., start:start + _CHUNK_FRAMES]))
        y = torch.cat(parts, dim=-1)
    return y[0, 0, :num_samples].float().cpu().numpy()


# -------------------------------------------------------------------------------------------
# scoring and summaries
# -------------------------------------------------------------------------------------------


def _score(file: str, setting: CodecSetting, ref: np.ndarray, deg: Optional[np.ndarray], failure: Optional[str],
           metrics: Sequence[str], codec_seconds: float) -> FileResult:
    duration = ref.size / SAMPLE_RATE
    common = dict(file=file, codec=setting.codec, setting=setting.setting, bitrate_bps=setting.bitrate_bps,
                  duration_s=duration, codec_seconds=codec_seconds)
    if failure is not None:
        return FileResult(**common, scores={m: None for m in metrics}, errors={m: failure for m in metrics})
    try:
        q = evaluate_pair(ref, deg, SAMPLE_RATE, metrics=metrics)
    except MetricError as exc:
        return FileResult(**common, scores={m: None for m in metrics}, errors={m: str(exc) for m in metrics})
    scores = {m: getattr(q, m) for m in metrics}
    errors = {m: q.errors[m] for m in metrics if m in q.errors}
    for m, v in scores.items():  # a score is a finite number or an error, never both, never NaN
        if v is not None and not math.isfinite(v):
            scores[m], errors[m] = None, f"non-finite score ({v})"
        elif v is None and m not in errors:
            errors[m] = "no score"
    return FileResult(**common, scores=scores, errors=errors, lag_samples=int(q.lag_samples),
                      correlation=float(q.correlation))


def summarize(settings: Sequence[CodecSetting], results: Sequence[FileResult],
              metrics: Sequence[str]) -> list[SummaryRow]:
    rows = []
    for s in settings:
        mine = [r for r in results if r.codec == s.codec and r.setting == s.setting]
        means, scored, failed = {}, {}, {}
        for m in metrics:
            values = [r.scores[m] for r in mine if r.scores.get(m) is not None]
            scored[m] = len(values)
            failed[m] = sum(1 for r in mine if r.scores.get(m) is None)
            means[m] = float(np.mean(values)) if values else None
        rows.append(SummaryRow(s.codec, s.setting, s.bitrate_bps, len(mine), means, scored, failed))
    return rows


def _cell(row: SummaryRow, metric: str) -> str:
    mean, failed = row.means[metric], row.failed[metric]
    digits = 2 if metric == "si_sdr" else 3
    if mean is None:
        return f"n/a ({failed} failed)" if failed else "n/a"
    text = f"{mean:.{digits}f}"
    return f"{text} ({row.scored[metric]} scored, {failed} failed)" if failed else text


def summary_markdown(rows: Sequence[SummaryRow], metrics: Sequence[str]) -> str:
    """Markdown table: one row per codec setting, means over the files each metric scored."""
    head = ["codec", "setting", "kbps"] + [METRIC_LABELS.get(m, m) for m in metrics] + ["files"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        cells = [r.codec, r.setting, f"{r.bitrate_kbps:.3f}"] + [_cell(r, m) for m in metrics] + [str(r.num_files)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Optional[float]) -> str:
    return "" if v is None else repr(float(v))


def _per_file_csv(results: Sequence[FileResult], metrics: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "codec", "setting", "bitrate_bps", "duration_s", *metrics, "lag_samples", "correlation",
                "codec_seconds", "errors"])
    for r in results:
        errors = "; ".join(f"{m}: {msg}" for m, msg in r.errors.items())
        w.writerow([r.file, r.codec, r.setting, f"{r.bitrate_bps:g}", f"{r.duration_s:.3f}",
                    *[_fmt(r.scores.get(m)) for m in metrics], r.lag_samples, f"{r.correlation:.4f}",
                    f"{r.codec_seconds:.3f}", errors])
    return buf.getvalue()


def _summary_csv(rows: Sequence[SummaryRow], metrics: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["codec", "setting", "bitrate_kbps", "files"] + [f"{m}_mean" for m in metrics]
               + [f"{m}_scored" for m in metrics] + [f"{m}_failed" for m in metrics])
    for r in rows:
        w.writerow([r.codec, r.setting, f"{r.bitrate_kbps:g}", r.num_files] + [_fmt(r.means[m]) for m in metrics]
                   + [r.scored[m] for m in metrics] + [r.failed[m] for m in metrics])
    return buf.getvalue()


def _short_model_id(model_id: str) -> str:
    return Path(model_id).name if os.sep in model_id and Path(model_id).exists() else model_id


def plot_quality(rows: Sequence[SummaryRow], path: PathLike, *, model_id: str, num_files: int) -> Path:
    """PESQ and STOI (means) against bitrate, log x axis in kbps, one line per codec family."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels = [("pesq", "PESQ (wideband MOS-LQO, higher is better)", (1.0, 4.6)),
              ("stoi", "STOI (intelligibility, higher is better)", (0.0, 1.0))]
    colors = {"mimi": "tab:blue", "opus": "tab:orange", "codec2": "tab:green"}
    markers = {"mimi": "o", "opus": "s", "codec2": "^"}
    families = [f for f in FAMILY_ORDER if any(r.codec == f for r in rows)]
    families += sorted({r.codec for r in rows} - set(families))
    # labels of neighbouring families go to different sides of their points
    label_offsets = {"mimi": (0, 9, "center"), "opus": (7, -13, "left"), "codec2": (-7, 7, "right")}
    any_failed = False
    family_labels = {"mimi": "mimi (K = codebooks)", "opus": "opus (libopus, voip)", "codec2": "codec2 (mode)"}

    fig = Figure(figsize=(13, 5.5), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2)
    rates = [r.bitrate_kbps for r in rows] or [1.0]
    lo, hi = min(rates) / 1.6, max(rates) * 1.6
    for ax, (metric, label, (ymin, ymax)) in zip(axes, panels):
        plotted = False
        for fam in families:
            pts = sorted((r.bitrate_kbps, r.means.get(metric), r.setting, r.failed.get(metric, 0))
                         for r in rows if r.codec == fam)
            pts = [p for p in pts if p[1] is not None]
            if not pts:
                continue
            plotted = True
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker=markers.get(fam, "D"), color=colors.get(fam), linewidth=1.8, markersize=7,
                    label=family_labels.get(fam, fam))
            dx, dy, ha = label_offsets.get(fam, (6, 6, "left"))
            for x, y, setting, failed in pts:
                any_failed = any_failed or bool(failed)
                ax.annotate(setting + ("*" if failed else ""), (x, y), textcoords="offset points", xytext=(dx, dy),
                            ha=ha, fontsize=8.5, color=colors.get(fam, "black"))
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bitrate (kbps, log scale)")
        ax.set_ylabel(label)
        ax.set_title(METRIC_LABELS[metric] + " vs bitrate")
        ax.grid(True, which="both", alpha=0.3)
        values = [r.means.get(metric) for r in rows if r.means.get(metric) is not None]
        if values:
            ax.set_ylim(min(ymin, min(values) - 0.05), max(ymax, max(values) + 0.05))
        else:
            ax.set_ylim(ymin, ymax)
        if plotted:
            ax.legend(title="codec", loc="best")
        else:
            ax.text(0.5, 0.5, f"no {METRIC_LABELS[metric]} scores", transform=ax.transAxes, ha="center")
    fig.suptitle(f"Speech quality vs bitrate: model {_short_model_id(model_id)}, "
                 f"{num_files} file{'s' if num_files != 1 else ''} (means over files scored)")
    if any_failed:
        fig.supxlabel("* the metric failed on some files for this setting; the mean is over the others "
                      "(counts in summary.md)", fontsize=8, color="dimgray")
    path = Path(path)
    fig.savefig(path)
    plt.close("all")
    return path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(report: QualityReport, out_dir: PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.out_dir = out
    _write_text(out / "per_file.csv", _per_file_csv(report.results, report.metrics))
    _write_text(out / "summary.csv", _summary_csv(report.summary, report.metrics))
    _write_text(out / "summary.md", report.to_markdown())
    _write_text(out / "results.json", report.to_json() + "\n")
    plot_quality(report.summary, out / "quality_vs_bitrate.png", model_id=report.model_id,
                 num_files=len(report.files))
    return report.paths


# -------------------------------------------------------------------------------------------
# the benchmark
# -------------------------------------------------------------------------------------------


def run_quality(files_or_dir: Union[PathLike, Iterable[PathLike]], loaded_model: LoadedModel, *,
                codebooks: Iterable[int] = DEFAULT_CODEBOOKS,
                baselines: Union[Iterable[str], Iterable[Baseline]] = ("opus", "codec2"),
                out_dir: PathLike = "bench-quality", progress: bool = False,
                metrics: Sequence[str] = QUALITY_METRICS) -> QualityReport:
    """Score Mimi (at each codebook count, clipped to the model's) and the baselines on every file.

    ``files_or_dir``: a file, a folder (searched recursively) or a list of them. ``baselines``:
    names for :func:`~mimi.bench.baselines.available_baselines` (those whose tool is missing
    are listed in ``skipped_baselines``) or :class:`Baseline` objects. Files that cannot be
    read are listed in ``file_errors`` and skipped; a codec or metric that fails on a file is
    recorded as an error for that file and excluded from the means. Writes the files listed
    in :data:`OUTPUT_FILES` to ``out_dir``.
    """
    t0 = time.perf_counter()
    metrics = tuple(metrics)
    model = loaded_model.model
    paths = list_audio_files(files_or_dir)
    ks = _codebook_counts(codebooks, model.total_codebooks)

    if isinstance(baselines, (str, Baseline)):
        baselines = [baselines]
    baselines = list(baselines)
    names = [b for b in baselines if isinstance(b, str)]
    chosen = [b for b in baselines if isinstance(b, Baseline)]
    skipped: list[str] = []
    if names:
        found, skipped = available_baselines(names)
        chosen += [b for b in found if b not in chosen]

    settings = [CodecSetting("mimi", f"K={k}", bitrate_bps(k, model.codebook_size, model.frame_rate)) for k in ks]
    settings += [CodecSetting(b.family, b.setting, b.bitrate_bps)
                 for b in sorted(chosen, key=lambda b: (FAMILY_ORDER.index(b.family)
                                                        if b.family in FAMILY_ORDER else 99, b.bitrate_bps))]
    by_setting = {(b.family, b.setting): b for b in chosen}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths) * len(settings), desc="bench quality", unit="run", leave=False)

    results: list[FileResult] = []
    file_errors: dict[str, str] = {}
    files: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mimi-bench-") as work:
            for path in paths:
                name = str(path)
                try:
                    ref = _read_mono_24k(path)
                except MimiError as exc:
                    file_errors[name] = str(exc)
                    if bar is not None:
                        bar.update(len(settings))
                    continue
                files.append(name)
                codes = None
                if ks:
                    t = time.perf_counter()
                    codes = _mimi_codes(model, ref, ks[-1])
                    encode_s = (time.perf_counter() - t) / len(ks)
                for s in settings:
                    failure, deg = None, None
                    t = time.perf_counter()
                    if s.codec == "mimi":
                        k = int(s.setting.split("=")[1])
                        deg = _mimi_decode(model, codes[:, :k], ref.size)
                        spent = time.perf_counter() - t + encode_s
                    else:
                        try:
                            deg = by_setting[(s.codec, s.setting)].run(ref, work)
                        except MimiError as exc:
                            failure = f"{s.codec} {s.setting} failed: {exc}"
                        spent = time.perf_counter() - t
                    results.append(_score(name, s, ref, deg, failure, metrics, spent))
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not files:
        raise MimiError("no input file could be read: " + "; ".join(file_errors.values()))

    report = QualityReport(
        model_id=loaded_model.model_id, fingerprint=loaded_model.fingerprint, metrics=metrics, codebooks=ks,
        files=files, settings=settings, results=results, summary=summarize(settings, results, metrics),
        skipped_baselines=skipped, file_errors=file_errors,
    )
    report.seconds = time.perf_counter() - t0
    write_outputs(report, out_dir)
    return report
