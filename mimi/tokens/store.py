"""The output folder of a token extraction: crash-safe writes, recovery after a crash, merging.

Layout of OUT_DIR::

    shard-r{rank}-{n:05d}.safetensors   int16 code tensors [codebooks, frames], one per input file
    manifest.jsonl                      one JSON line per encoded file (sorted by "audio" when done)
    errors.jsonl                        one JSON line per file that could not be encoded
    manifest.r{rank}.jsonl              per-rank lines of a multi-process (torchrun) run, until
    errors.r{rank}.jsonl                rank 0 merges them into the two files above
    .shard-r{rank}-{n:05d}.safetensors.tmp, .manifest.jsonl.tmp, .errors.jsonl.tmp
                                        files being written (removed on the next start)

Commit protocol, which makes any crash (even SIGKILL or power loss) recoverable: a shard is
written to a temporary file, fsync'd, renamed into place and the folder fsync'd; only then its
manifest lines are appended in a single write and fsync'd. A line is committed once its
newline is on disk. So after a crash a shard may exist that no manifest line references (an
orphan, deleted on restart: its files are encoded again) and a manifest may end in a torn line
without newline (ignored, and truncated on restart by the process that owns the file).
Nothing else can be half-done.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mimi.atomic import fsync_dir
from mimi.errors import MimiError

__all__ = [
    "ERRORS", "MANIFEST", "SHARD_RE", "JsonlContents", "OutputState", "append_jsonl",
    "atomic_write_jsonl", "check_compatible", "errors_name", "fsync_dir", "manifest_name", "merge_outputs",
    "read_jsonl", "recover_outputs", "scan_outputs", "shard_name", "write_file_atomic",
]

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
SHARD_RE = re.compile(r"^shard-r(\d+)-(\d+)\.safetensors$")
_RANK_FILE_RE = re.compile(r"^(manifest|errors)\.r(\d+)\.jsonl$")
_SHARD_TMP_RE = re.compile(r"^\.shard-r(\d+)-\d+\.safetensors\.tmp$")
_MERGE_TMP = (f".{MANIFEST}.tmp", f".{ERRORS}.tmp")


def manifest_name(rank: int, world_size: int) -> str:
    """The manifest a process appends to: the final one, or its own until rank 0 merges."""
    return MANIFEST if world_size == 1 else f"manifest.r{rank}.jsonl"


def errors_name(rank: int, world_size: int) -> str:
    return ERRORS if world_size == 1 else f"errors.r{rank}.jsonl"


def shard_name(rank: int, index: int) -> str:
    return f"shard-r{rank}-{index:05d}.safetensors"


# -- low-level durable writes ------------------------------------------------------------------

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via `.NAME.tmp` in the same folder: fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _encode_lines(records: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=True).encode("ascii") + b"\n" for r in records)


def append_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append `records` as JSON lines in one write, then fsync (and fsync the folder if new)."""
    if not records:
        return
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        _write_all(fd, _encode_lines(records))
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)


def atomic_write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    write_file_atomic(path, _encode_lines(records))


# -- reading -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JsonlContents:
    """The committed lines of a JSON-lines file, and whether a torn last line follows them."""

    records: tuple[dict[str, Any], ...]
    committed_bytes: int
    torn: bool


def read_jsonl(path: Path) -> JsonlContents:
    """Read a manifest or error list; a missing file is empty; a torn last line is ignored.

    Raises:
        MimiError: the file cannot be read, or a committed line is not a JSON object with a
            string "audio" (the file was damaged or is not ours).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JsonlContents((), 0, False)
    except OSError as exc:
        raise MimiError(f"{path}: cannot read: {exc.strerror or exc}") from None
    end = data.rfind(b"\n") + 1
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(data[:end].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MimiError(f"{path}:{lineno}: not valid JSON (the file is damaged)") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("audio"), str):
            raise MimiError(f"{path}:{lineno}: expected a JSON object with an \"audio\" string")
        records.append(obj)
    return JsonlContents(tuple(records), end, end < len(data))


def _truncate_torn(path: Path, contents: JsonlContents) -> None:
    if contents.torn:
        with open(path, "r+b") as f:
            f.truncate(contents.committed_bytes)
            f.flush()
            os.fsync(f.fileno())


def _rank_files(out_dir: Path) -> dict[str, list[tuple[int, Path]]]:
    found: dict[str, list[tuple[int, Path]]] = {"manifest": [], "errors": []}
    for p in out_dir.iterdir():
        m = _RANK_FILE_RE.match(p.name)
        if m:
            found[m.group(1)].append((int(m.group(2)), p))
    for v in found.values():
        v.sort()
    return found


@dataclass(frozen=True)
class OutputState:
    """What an output folder already holds (merged and per-rank manifests together).

    Attributes:
        done: rel -> manifest record, for every committed manifest line (first one wins).
        failed: rel -> error message, for every committed error line.
        shards: names of the shard files on disk.
        referenced: names of the shards some manifest line references.
        has_rank_files: per-rank manifests or error lists exist (a merge is pending).
    """

    done: Mapping[str, Mapping[str, Any]]
    failed: Mapping[str, str]
    shards: frozenset[str]
    referenced: frozenset[str]
    has_rank_files: bool

    def next_shard_index(self, rank: int) -> int:
        """One past the highest shard number of `rank` on disk or referenced (0 if none)."""
        indices = [int(m.group(2)) for name in self.shards | self.referenced
                   if (m := SHARD_RE.match(name)) and int(m.group(1)) == rank]
        return max(indices) + 1 if indices else 0


def _manifest_and_error_files(out_dir: Path) -> tuple[list[Path], list[Path]]:
    ranked = _rank_files(out_dir)
    return ([out_dir / MANIFEST] + [p for _, p in ranked["manifest"]],
            [out_dir / ERRORS] + [p for _, p in ranked["errors"]])


def scan_outputs(out_dir: Path) -> OutputState:
    """Read an output folder without changing it."""
    manifests, error_lists = _manifest_and_error_files(out_dir)
    done: dict[str, Mapping[str, Any]] = {}
    for path in manifests:
        for rec in read_jsonl(path).records:
            done.setdefault(rec["audio"], rec)
    failed: dict[str, str] = {}
    for path in error_lists:
        for rec in read_jsonl(path).records:
            failed.setdefault(rec["audio"], str(rec.get("error", "")))
    shards = frozenset(p.name for p in out_dir.iterdir() if SHARD_RE.match(p.name))
    referenced = frozenset(str(r.get("shard")) for r in done.values())
    return OutputState(done, failed, shards, referenced,
                       has_rank_files=len(manifests) > 1 or len(error_lists) > 1)


def _owned(file_rank: int, rank: int, world_size: int) -> bool:
    """Files of rank `file_rank` that process `rank` cleans up: its own, and rank 0 also those of
    ranks that no process of this run has (left over from a run with more processes)."""
    return file_rank == rank or (rank == 0 and file_rank >= world_size)


def recover_outputs(out_dir: Path, rank: int, world_size: int) -> OutputState:
    """Make the files this process owns consistent after a crash, and return the state.

    Truncates torn last lines of owned manifests / error lists, deletes owned temporary files
    and owned orphan shards (on disk but referenced by no committed manifest line).
    Must run before any process of the run writes (other ranks only read meanwhile).
    """
    manifests, error_lists = _manifest_and_error_files(out_dir)
    for path in manifests + error_lists:
        m = _RANK_FILE_RE.match(path.name)
        owner = int(m.group(2)) if m else 0
        if _owned(owner, rank, world_size) and path.exists():
            _truncate_torn(path, read_jsonl(path))
    removed = False
    for p in out_dir.iterdir():
        m = _SHARD_TMP_RE.match(p.name)
        if (m and _owned(int(m.group(1)), rank, world_size)) or (rank == 0 and p.name in _MERGE_TMP):
            p.unlink(missing_ok=True)
            removed = True
    state = scan_outputs(out_dir)
    for name in sorted(state.shards - state.referenced):
        m = SHARD_RE.match(name)
        if m and _owned(int(m.group(1)), rank, world_size):
            (out_dir / name).unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(out_dir)
        state = scan_outputs(out_dir)
    return state


def check_compatible(state: OutputState, out_dir: Path, fingerprint: str, codebooks: int) -> None:
    """Refuse to add codes of another model (or another codebook count) to an output folder."""
    for rec in state.done.values():
        if rec.get("fingerprint") != fingerprint or rec.get("codebooks") != codebooks:
            raise MimiError(
                f"{out_dir} holds tokens of model {rec.get('model_id')!r} (fingerprint "
                f"{rec.get('fingerprint')}, {rec.get('codebooks')} codebooks); this run uses "
                f"fingerprint {fingerprint} with {codebooks} codebooks: use another OUT_DIR")


# -- merging -----------------------------------------------------------------------------------

def merge_outputs(out_dir: Path) -> bool:
    """Rank 0, at the end: merge every manifest / error list into `manifest.jsonl` /
    `errors.jsonl` sorted by audio (atomic rewrite), then delete the per-rank files.

    A file listed in the manifest is dropped from the errors. The manifest is created (empty)
    if no file could be encoded. Does nothing (and returns False) when there are no per-rank
    files and both lists exist and are already sorted.
    """
    manifests, error_lists = _manifest_and_error_files(out_dir)
    done: dict[str, dict[str, Any]] = {}
    sorted_already = True
    for path in manifests:
        records = read_jsonl(path).records
        sorted_already &= all(a["audio"] < b["audio"] for a, b in zip(records, records[1:]))
        for rec in records:
            done.setdefault(rec["audio"], rec)
    failed: dict[str, dict[str, Any]] = {}
    for path in error_lists:
        records = read_jsonl(path).records
        sorted_already &= all(a["audio"] < b["audio"] for a, b in zip(records, records[1:]))
        for rec in records:
            if rec["audio"] not in done:
                failed.setdefault(rec["audio"], rec)
    rank_files = manifests[1:] + error_lists[1:]
    if not rank_files and sorted_already and (out_dir / MANIFEST).exists():
        return False
    atomic_write_jsonl(out_dir / MANIFEST, (done[k] for k in sorted(done)))
    if failed or (out_dir / ERRORS).exists():
        atomic_write_jsonl(out_dir / ERRORS, (failed[k] for k in sorted(failed)))
    for path in rank_files:  # only now that the merged files are durable
        path.unlink(missing_ok=True)
    if rank_files:
        fsync_dir(out_dir)
    return True
