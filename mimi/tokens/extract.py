"""Dataset token extraction: every audio file of INPUT -> Mimi codes in safetensors shards.

    from mimi.defaults import resolve_model
    from mimi.tokens import extract_tokens, TokenDataset
    report = extract_tokens("corpus/", "tokens/", resolve_model("kyutai/mimi"), batch_size=16)
    codes = TokenDataset("tokens/").get("spk1/utt3.flac").codes   # int16 [8, frames]

What a file becomes: it is read at its own rate, downmixed to mono by averaging its channels
(the manifest keeps the original `channels`, `sample_rate` and `samples`), resampled to 24 kHz
(soxr VHQ) and encoded; its codes are ``model.encode(wav)`` on its own ``ceil(T / 1920)``
frames, stored as int16 ``[codebooks, frames]`` (see `mimi.tokens.waveforms.load_waveform`).

How: lengths come from the file headers (`audio_info`); files are sorted longest first and
batched, so a batch pads little. Batches are right-padded with zeros; offline encoding pads to
whole frames anyway, so batching changes no code. Reading and resampling run in a torch
DataLoader with `num_workers` processes while the model encodes.

Output and crash safety: see `mimi.tokens.store`. A run killed at any moment and started
again with the same arguments resumes and ends with every file listed exactly once. A file
that cannot be read (corrupt, empty, NaN samples, too short) goes to ``errors.jsonl`` and is
skipped, also by later runs (delete its line there to retry it).

Scale-out: under ``torchrun --nproc_per_node=N`` (WORLD_SIZE > 1) each process encodes every
N-th file of the length-sorted list into its own shards and ``manifest.r{rank}.jsonl``; rank 0
merges the manifests at the end (see `mimi.tokens.distributed`).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from safetensors.torch import save as safetensors_save
from torch.utils.data import DataLoader
from tqdm import tqdm

from mimi.audio import AudioInfo, audio_info, resampled_length
from mimi.checkpoint.loading import weights_fingerprint
from mimi.defaults import LoadedModel
from mimi.errors import MimiError
from mimi.model import MimiModel
from mimi.tokens.distributed import Workers, join_workers
from mimi.tokens.inputs import InputFile, list_inputs
from mimi.tokens.store import (MANIFEST, OutputState, append_jsonl, check_compatible, errors_name,
                               manifest_name, merge_outputs, recover_outputs, shard_name,
                               write_file_atomic)
from mimi.tokens.waveforms import WaveformBatch, WaveformDataset, collate_waveforms, one_line

__all__ = ["ExtractionReport", "extract_tokens", "token_key"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ExtractionReport:
    """What a run did (summed over all processes of a torchrun launch).

    Attributes:
        files_total: files INPUT names.
        files_done_before: of those, files already in the manifest when the run started.
        files_failed_before: files already in the error list when the run started (skipped).
        files_encoded: files encoded by this run.
        files_failed: files this run could not read (added to the error list).
        shards_written: shard files this run wrote.
        seconds: wall-clock time of the run.
        manifest: path of the manifest.
    """

    files_total: int
    files_done_before: int
    files_failed_before: int
    files_encoded: int
    files_failed: int
    shards_written: int
    seconds: float
    manifest: Path

    @property
    def nothing_to_do(self) -> bool:
        return self.files_done_before + self.files_failed_before == self.files_total


def token_key(rel: str) -> str:
    """The safetensors key of a file's codes: `rel` made safe, plus a hash of `rel` (unique)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", rel)[-120:]
    return f"{safe}-{hashlib.sha1(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def _as_loaded(model: LoadedModel | MimiModel) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, MimiModel):
        return LoadedModel(model, model.config.name or "unnamed", weights_fingerprint(model))
    raise MimiError(f"model must be a LoadedModel or a MimiModel, got {type(model).__name__}")


def _check_args(batch_size: int, num_workers: int, shard_size: int) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                             ("shard_size", shard_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MimiError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class _Job:
    """A file to encode, with its header info."""

    file: InputFile
    info: AudioInfo
    samples_24k: int


class _ShardWriter:
    """Collects codes and commits them shard by shard (shard first, manifest lines after)."""

    def __init__(self, out_dir: Path, workers: Workers, first_index: int, shard_size: int,
                 loaded: LoadedModel) -> None:
        self.out_dir, self.rank, self.shard_size = out_dir, workers.rank, shard_size
        self.manifest = out_dir / manifest_name(workers.rank, workers.world_size)
        self.index = first_index
        self.codebooks = loaded.model.num_codebooks
        self.common = {"model_id": loaded.model_id, "fingerprint": loaded.fingerprint}
        self.metadata = {**self.common, "codebooks": str(self.codebooks),
                         "sample_rate": str(loaded.model.sample_rate),
                         "frame_rate": str(loaded.model.frame_rate), "format": "pt"}
        self.pending: list[tuple[_Job, str, torch.Tensor]] = []
        self.written = 0

    def add(self, job: _Job, codes: torch.Tensor) -> None:
        self.pending.append((job, token_key(job.file.rel), codes))
        if len(self.pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = shard_name(self.rank, self.index)
        data = safetensors_save({key: codes for _, key, codes in self.pending}, metadata=self.metadata)
        write_file_atomic(self.out_dir / name, data)
        append_jsonl(self.manifest, [
            {"audio": job.file.rel, "shard": name, "key": key, "frames": int(codes.shape[1]),
             "codebooks": int(codes.shape[0]), "sample_rate": job.info.sample_rate,
             "samples": job.info.frames, "channels": job.info.channels, **self.common}
            for job, key, codes in self.pending])
        self.pending.clear()
        self.index += 1
        self.written += 1


def _probe(files: Sequence[InputFile]) -> list[AudioInfo | str]:
    """Header info of each file, or a one-line error (threads: libsndfile releases the GIL)."""
    def one(f: InputFile) -> AudioInfo | str:
        try:
            return audio_info(f.path)
        except Exception as exc:
            return one_line(exc)

    if len(files) < 8:
        return [one(f) for f in files]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, files))


def _lock(out_dir: Path, workers: Workers) -> int | None:
    """Rank 0 holds an exclusive lock on OUT_DIR for the whole run (released on exit/kill)."""
    if workers.rank != 0:
        return None
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MimiError(f"{out_dir}: another `mimi tokens` run is writing this folder") from None
    return fd


def extract_tokens(input_path: PathLike, out_dir: PathLike, model: LoadedModel | MimiModel, *,
                   batch_size: int = 8, num_workers: int = 0, shard_size: int = 256,
                   progress: bool = False) -> ExtractionReport:
    """Encode every audio file of `input_path` into `out_dir` (see the module docstring).

    `model` is a `LoadedModel` (from `mimi.defaults.resolve_model`, whose model_id and
    fingerprint go into the manifest) or a bare `MimiModel` (model_id = its config name);
    it encodes with its current `num_codebooks` on its own device.

    Raises:
        MimiError: bad arguments, INPUT not usable (`list_inputs`), OUT_DIR made with another
            model or codebook count, damaged, locked by another run, or a batch that does not
            fit in memory. Unreadable audio files are not errors: they go to errors.jsonl.
    """
    start = time.monotonic()
    _check_args(batch_size, num_workers, shard_size)
    loaded = _as_loaded(model)
    net = loaded.model
    if net.is_streaming:
        raise MimiError("the model is in streaming mode; extract tokens with it outside `streaming()`")
    if net.codebook_size > 2 ** 15:
        raise MimiError(f"codebook size {net.codebook_size} does not fit in int16 codes")
    files = list_inputs(input_path)
    out = Path(os.fspath(out_dir))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MimiError(f"{out}: cannot create output folder: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise MimiError(f"{out}: not a folder")
    device = next(net.parameters()).device
    workers = join_workers(device)
    lock = None
    try:
        lock = _lock(out, workers)
        workers.barrier()  # nobody touches OUT_DIR before rank 0 holds the lock
        counts = _run(files, out, loaded, workers, device, batch_size=batch_size,
                      num_workers=num_workers, shard_size=shard_size, progress=progress)
    finally:
        if lock is not None:
            os.close(lock)
        workers.close()
    return ExtractionReport(**counts, seconds=time.monotonic() - start, manifest=out / MANIFEST)


def _run(files: list[InputFile], out: Path, loaded: LoadedModel, workers: Workers,
         device: torch.device, *, batch_size: int, num_workers: int, shard_size: int,
         progress: bool) -> dict[str, Any]:
    rank, world = workers.rank, workers.world_size
    net = loaded.model
    state: OutputState = recover_outputs(out, rank, world)
    check_compatible(state, out, loaded.fingerprint, net.num_codebooks)
    done_before = sum(f.rel in state.done for f in files)
    failed_before = sum(f.rel in state.failed and f.rel not in state.done for f in files)
    todo = [f for f in files if f.rel not in state.done and f.rel not in state.failed]

    # Header lengths, probed by all ranks in parallel. The all_gather is also the point after
    # which ranks write: every rank has read (and recovered) the folder before anyone writes.
    mine = todo[rank::world]
    probed = workers.all_gather(list(zip(range(rank, len(todo), world), _probe(mine))))
    errors_path = out / errors_name(rank, world)
    jobs: list[_Job] = []
    bad_headers = [{"audio": mine[i].rel, "error": r} for i, (_, r) in enumerate(probed[rank])
                   if isinstance(r, str)]
    append_jsonl(errors_path, bad_headers)
    for per_rank in probed:
        for index, info in per_rank:
            if isinstance(info, AudioInfo):
                jobs.append(_Job(todo[index], info,
                                 resampled_length(info.frames, info.sample_rate, net.sample_rate)))
    jobs.sort(key=lambda j: (-j.samples_24k, j.file.rel))
    my_jobs = jobs[rank::world]

    writer = _ShardWriter(out, workers, state.next_shard_index(rank), shard_size, loaded)
    failed = len(bad_headers)
    encoded = 0
    if my_jobs:
        loader = DataLoader(WaveformDataset([j.file.path for j in my_jobs], net.sample_rate),
                            batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate_waveforms)
        bar = tqdm(total=len(my_jobs), unit="file", file=sys.stderr, disable=not progress,
                   dynamic_ncols=True, desc="tokens" if world == 1 else f"tokens r{rank}")
        was_training = net.training
        net.eval()
        try:
            for batch in loader:
                lost = [{"audio": my_jobs[i].file.rel, "error": msg} for i, msg in batch.errors]
                append_jsonl(errors_path, lost)
                failed += len(lost)
                for index, codes in _encode(net, batch, device):
                    writer.add(my_jobs[index], codes)
                    encoded += 1
                bar.update(len(batch))
            writer.flush()
        finally:
            bar.close()
            net.train(was_training)

    totals = workers.all_gather((encoded, failed, writer.written))  # also: every rank finished
    if rank == 0:
        merge_outputs(out)
    workers.barrier()  # nobody returns before the merged manifest is durable
    return {"files_total": len(files), "files_done_before": done_before,
            "files_failed_before": failed_before, "files_encoded": sum(t[0] for t in totals),
            "files_failed": sum(t[1] for t in totals), "shards_written": sum(t[2] for t in totals)}


def _encode(net: MimiModel, batch: WaveformBatch, device: torch.device) -> list[tuple[int, torch.Tensor]]:
    """(dataset index, int16 codes [K, ceil(len / frame_size)]) for each readable item."""
    if batch.wav is None:
        return []
    try:
        with torch.inference_mode():
            codes = net.encode(batch.wav.to(device)).to("cpu")
    except torch.OutOfMemoryError:
        seconds = batch.wav.shape[-1] / net.sample_rate
        raise MimiError(f"out of memory encoding a batch of {len(batch.indices)} files of up to "
                        f"{seconds:.0f} s; use a smaller --batch-size") from None
    return [(index, codes[row, :, : math.ceil(length / net.frame_size)].to(torch.int16).contiguous())
            for row, (index, length) in enumerate(zip(batch.indices, batch.lengths))]
