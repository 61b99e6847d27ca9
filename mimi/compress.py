"""Compress audio files to `.mimi` and back, in constant memory.

Encoding reads the input in blocks, resamples them to 24 kHz with a streaming soxr
resampler, and pushes whole frames through the model in streaming mode; each channel is an
independent stream (a batch item). Decoding streams the codes back through the decoder,
resamples to the original rate and writes the output incrementally, trimmed to the
original length. Memory does not grow with the input's duration, and outputs are atomic:
a failed or interrupted run leaves no file behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

import mimi
from mimi.audio import AudioWriter, StreamingResampler, audio_info, iter_audio_blocks, resampled_length
from mimi.defaults import LoadedModel
from mimi.errors import MimiError, MimiFormatError
from mimi.format import MimiFile, MimiHeader, bitrate_bps, read_mimi, write_mimi

CHUNK_FRAMES = 25  # 2 s of audio per model call: activations stay small


@dataclass(frozen=True)
class CodecReport:
    """What an encode or decode did."""

    header: MimiHeader  # the .mimi header written or read
    output: Path
    seconds: float  # wall time


def _frames(num_samples_24k: int, frame_size: int) -> int:
    return -(-num_samples_24k // frame_size)


def _progress(total: int, enabled: bool, desc: str) -> tqdm:
    return tqdm(total=total, unit="frame", desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _resampled_blocks(path: Path, from_rate: int, to_rate: int, channels: int,
                      block: int) -> Iterator[torch.Tensor]:
    """[C, n] blocks of the input resampled to `to_rate`, the filter tail included."""
    resampler = StreamingResampler(from_rate, to_rate, channels)
    for chunk in iter_audio_blocks(path, block):
        out = resampler.process(chunk)
        if out.shape[-1]:
            yield out
    tail = resampler.process(torch.zeros(channels, 0), last=True)
    if tail.shape[-1]:
        yield tail


@torch.inference_mode()
def encode_file(input_path: str | os.PathLike, output_path: str | os.PathLike, loaded: LoadedModel, *,
                progress: bool = False) -> CodecReport:
    """Encode any audio file soundfile reads into a `.mimi` file (every channel is coded)."""
    start = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    model = loaded.model
    info = audio_info(input_path)
    sr, fs = model.sample_rate, model.frame_size
    total_frames = _frames(resampled_length(info.frames, info.sample_rate, sr), fs)
    step = CHUNK_FRAMES * fs
    dtype = next(model.parameters()).dtype
    codes: list[np.ndarray] = []  # each [C, K, n] int16
    pending = torch.zeros(info.channels, 0)
    with model.streaming(info.channels), _progress(total_frames, progress, "encode") as bar:
        def push(audio: torch.Tensor) -> None:  # audio [C, n * frame_size]
            chunk = model.encode(audio[:, None, :].to(device=_device(model), dtype=dtype))  # [C, K, n]
            codes.append(chunk.to(torch.int16).cpu().numpy())
            bar.update(chunk.shape[-1])

        for block in _resampled_blocks(input_path, info.sample_rate, sr, info.channels, step):
            pending = torch.cat([pending, block], dim=-1)
            usable = pending.shape[-1] // step * step
            if usable:
                push(pending[:, :usable])
                pending = pending[:, usable:]
        if pending.shape[-1]:  # zero-pad the last frame, as offline encoding does
            push(torch.nn.functional.pad(pending, (0, -pending.shape[-1] % fs)))
    all_codes = np.concatenate(codes, axis=-1) if codes else np.zeros((info.channels, model.num_codebooks, 0))
    if all_codes.shape[-1] != total_frames:
        raise MimiError(f"internal error: expected {total_frames} frames, encoded {all_codes.shape[-1]}")
    header = MimiHeader(
        model_id=loaded.model_id,
        weights_fingerprint=loaded.fingerprint,
        sample_rate=info.sample_rate,
        channels=info.channels,
        num_samples=info.frames,
        num_codebooks=model.num_codebooks,
        num_frames=total_frames,
        frame_rate=model.frame_rate,
        codebook_size=model.codebook_size,
        library_version=mimi.__version__,
    )
    write_mimi(output_path, header, all_codes.astype(np.int64))
    return CodecReport(header, output_path, time.perf_counter() - start)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_model_matches(header: MimiHeader, loaded: LoadedModel) -> None:
    """Refuse to decode codes with a model other than the one that made them, or a header whose
    length does not match its frames (the decoder pads or trims by a few samples at most)."""
    if header.weights_fingerprint != loaded.fingerprint:
        raise MimiError(f"this file was encoded with model {header.model_id!r} (weights fingerprint "
                        f"{header.weights_fingerprint}), but the model given has fingerprint "
                        f"{loaded.fingerprint}; decode with the original model")
    model = loaded.model
    if header.num_codebooks > model.total_codebooks or header.codebook_size != model.codebook_size:
        raise MimiError(f"the file's {header.num_codebooks} codebooks of {header.codebook_size} do not fit "
                        f"this model ({model.total_codebooks} of {model.codebook_size})")
    expected = _frames(resampled_length(header.num_samples, header.sample_rate, model.sample_rate),
                       model.frame_size)
    if header.num_frames != expected or header.frame_rate != model.frame_rate:
        raise MimiFormatError(f"inconsistent .mimi header: {header.num_samples} samples at {header.sample_rate} Hz "
                              f"make {expected} frames at {model.frame_rate:g} Hz, the file has "
                              f"{header.num_frames} at {header.frame_rate:g} Hz")


def load_decoder_for(header: MimiHeader, source: str | None, device: str = "cpu") -> LoadedModel:
    """The model to decode a file with: `source` if given, else the one its header names (pass
    the header of a file read with `read_mimi`, i.e. checksum-verified, before trusting it)."""
    from mimi.defaults import resolve_model

    return resolve_model(source if source is not None else header.model_id,
                         num_codebooks=header.num_codebooks, device=device)


def decode_file(input_path: str | os.PathLike, output_path: str | os.PathLike, loaded: LoadedModel, *,
                progress: bool = False) -> CodecReport:
    """Decode a `.mimi` file to audio at its original rate, channels and exact length."""
    return decode_codes(read_mimi(input_path), output_path, loaded, progress=progress)


@torch.inference_mode()
def decode_codes(mf: MimiFile, output_path: str | os.PathLike, loaded: LoadedModel, *,
                 progress: bool = False) -> CodecReport:
    """Decode the contents of a `.mimi` file already read (and verified) with `read_mimi`."""
    start = time.perf_counter()
    output_path = Path(output_path)
    header = mf.header
    check_model_matches(header, loaded)
    model = loaded.model
    codes = torch.from_numpy(mf.codes.astype(np.int64))  # [C, K, F]
    resampler = StreamingResampler(model.sample_rate, header.sample_rate, header.channels)
    remaining = header.num_samples
    with AudioWriter(output_path, header.sample_rate, header.channels) as writer, \
            model.streaming(header.channels), _progress(header.num_frames, progress, "decode") as bar:
        def emit(audio: torch.Tensor) -> None:  # [C, n] at the original rate
            nonlocal remaining
            take = min(remaining, audio.shape[-1])
            if take:
                writer.write(audio[:, :take])
                remaining -= take

        for i in range(0, header.num_frames, CHUNK_FRAMES):
            chunk = codes[:, :, i:i + CHUNK_FRAMES].to(_device(model))
            audio = model.decode(chunk)[:, 0].float().cpu()  # [C, n * frame_size]
            emit(resampler.process(audio))
            bar.update(chunk.shape[-1])
        emit(resampler.process(torch.zeros(header.channels, 0), last=True))
        if remaining:  # resampler rounding: a few samples (checked by `check_model_matches`)
            emit(torch.zeros(header.channels, remaining))
    return CodecReport(header, output_path, time.perf_counter() - start)


def roundtrip_file(input_path: str | os.PathLike, output_path: str | os.PathLike, loaded: LoadedModel, *,
                   progress: bool = False) -> CodecReport:
    """Encode then decode (through a temporary `.mimi` file): hear what the codec keeps."""
    with tempfile.TemporaryDirectory(prefix="mimi-roundtrip-") as tmp:
        encoded = encode_file(input_path, Path(tmp) / "audio.mimi", loaded, progress=progress)
        decoded = decode_file(encoded.output, output_path, loaded, progress=progress)
    return CodecReport(decoded.header, decoded.output, encoded.seconds + decoded.seconds)


@dataclass(frozen=True)
class MimiFileInfo:
    path: Path
    header: MimiHeader
    bitrate_bps: float
    file_bytes: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), **self.header.to_dict(), "duration_seconds": self.header.duration_seconds,
                "bitrate_bps": self.bitrate_bps, "file_bytes": self.file_bytes}


def mimi_file_info(path: str | os.PathLike) -> MimiFileInfo:
    """The header of a `.mimi` file, fully validated (checksum included)."""
    mf = read_mimi(path)
    return MimiFileInfo(Path(path), mf.header, bitrate_bps(mf.header), Path(path).stat().st_size)
