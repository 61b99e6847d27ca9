"""Error types raised by the ``mimi`` library for user-facing problems.

Every problem a user can cause (a bad file, a bad argument, an unreadable
audio file, a corrupt ``.mimi`` container) is reported as a :class:`MimiError`
or one of its subclasses, with a message that fits on one line. Anything else
escaping the library is a bug.
"""

from __future__ import annotations

__all__ = ["MimiError", "MimiFormatError", "AudioReadError", "MetricError"]


class MimiError(Exception):
    """Base class of every user-facing error raised by the library.

    The message is a single line that says what went wrong and, where it helps,
    which file or argument was involved.
    """


class MimiFormatError(MimiError):
    """A ``.mimi`` file (or byte string) is corrupt, truncated or unsupported."""


class AudioReadError(MimiError):
    """An audio file is missing, unreadable, empty or holds invalid samples."""


class MetricError(MimiError):
    """A quality metric (PESQ, STOI, SI-SDR, ...) cannot be computed for the given input.

    Raised instead of returning a made-up or NaN score: silent or too-short
    audio, mismatched lengths, multi-channel input, a missing optional package.
    """
