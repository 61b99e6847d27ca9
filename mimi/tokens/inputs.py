"""Which audio files a `mimi tokens` run encodes: a folder, or a manifest listing them.

INPUT is either

* a folder, searched recursively for audio files by extension (case-insensitive:
  ``wav flac ogg oga mp3 aiff aif au opus``); each file's ``rel`` is its POSIX path relative to
  the folder, and the list is sorted by ``rel``; hidden files and folders (name starting with
  ``.``) are skipped, symlinked folders are not followed;
* a text manifest (``.txt`` / ``.lst``): one path per line; blank lines and lines starting
  with ``#`` are skipped; surrounding whitespace is stripped;
* a JSON-lines manifest (``.jsonl``): one object per line with an ``"audio"`` key (other keys
  are ignored); blank lines are skipped.

Relative paths in a manifest are resolved against the manifest's folder; ``rel`` is the path
exactly as written (it is the name the output manifest uses), so it must be unique.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from mimi.errors import MimiError

__all__ = ["AUDIO_EXTENSIONS", "MANIFEST_EXTENSIONS", "InputFile", "list_inputs"]

PathLike = Union[str, "os.PathLike[str]"]

AUDIO_EXTENSIONS: frozenset[str] = frozenset({"wav", "flac", "ogg", "oga", "mp3", "aiff", "aif", "au", "opus"})
"""Extensions (lower case, no dot) picked up when INPUT is a folder."""

MANIFEST_EXTENSIONS: frozenset[str] = frozenset({"txt", "lst", "jsonl"})
"""Extensions of the manifest files INPUT may be."""


@dataclass(frozen=True)
class InputFile:
    """One input audio file.

    Attributes:
        path: where to read it from (absolute for a folder; resolved against the manifest's
            folder for a relative manifest entry).
        rel: its name in the output: the path relative to the INPUT folder (POSIX
            separators), or the path as written in the manifest.
    """

    path: Path
    rel: str


def list_inputs(input_path: PathLike) -> list[InputFile]:
    """The audio files named by INPUT (a folder or a manifest file); see the module docstring.

    Raises:
        MimiError: INPUT is missing, is a folder without audio files, is a file that is not a
            manifest, is an unreadable or malformed manifest, lists no files, or two entries
            have the same ``rel``.
    """
    root = Path(os.fspath(input_path))
    if not root.exists():
        raise MimiError(f"{root}: no such file or folder")
    if root.is_dir():
        files = _scan_folder(root)
        if not files:
            raise MimiError(f"{root}: no audio files found (looked for "
                            f"{', '.join('.' + e for e in sorted(AUDIO_EXTENSIONS))})")
    else:
        ext = root.suffix.lower().lstrip(".")
        if ext not in MANIFEST_EXTENSIONS:
            raise MimiError(f"{root}: an audio source must be a folder or a manifest (.txt, .lst or .jsonl), "
                            f"not a .{ext or '(no extension)'} file")
        files = _read_manifest(root, jsonl=(ext == "jsonl"))
        if not files:
            raise MimiError(f"{root}: the manifest lists no audio files")
    _check_unique(root, files)
    return files


def _scan_folder(root: Path) -> list[InputFile]:
    base = root.resolve()
    found: list[InputFile] = []

    def on_error(exc: OSError) -> None:
        raise MimiError(f"{exc.filename or root}: cannot list folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(base, onerror=on_error, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if ext in AUDIO_EXTENSIONS:
                path = Path(dirpath) / name
                found.append(InputFile(path=path, rel=path.relative_to(base).as_posix()))
    found.sort(key=lambda f: f.rel)
    return found


def _read_manifest(manifest: Path, *, jsonl: bool) -> list[InputFile]:
    try:
        text = manifest.read_text(encoding="utf-8")
    except OSError as exc:
        raise MimiError(f"{manifest}: cannot read manifest: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MimiError(f"{manifest}: cannot read manifest: not UTF-8 text") from None
    base = manifest.resolve().parent
    files: list[InputFile] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = _manifest_entry(manifest, lineno, line, jsonl=jsonl)
        if entry is None:
            continue
        path = Path(entry)
        files.append(InputFile(path=path if path.is_absolute() else base / path, rel=entry))
    return files


def _manifest_entry(manifest: Path, lineno: int, line: str, *, jsonl: bool) -> str | None:
    """The path on one manifest line, or None for a line to skip."""
    stripped = line.strip()
    if not stripped:
        return None
    if not jsonl:
        return None if stripped.startswith("#") else stripped
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise MimiError(f"{manifest}:{lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or not ("audio" in obj or "path" in obj):
        raise MimiError(f"{manifest}:{lineno}: expected a JSON object with an \"audio\" (or \"path\") key")
    key = "audio" if "audio" in obj else "path"
    audio = obj[key]
    if not isinstance(audio, str) or not audio.strip():
        raise MimiError(f"{manifest}:{lineno}: \"{key}\" must be a non-empty string")
    return audio


def _check_unique(root: Path, files: list[InputFile]) -> None:
    seen: set[str] = set()
    for f in files:
        if f.rel in seen:
            raise MimiError(f"{root}: {f.rel!r} is listed more than once")
        seen.add(f.rel)
