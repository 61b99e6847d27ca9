"""The ``.mimi`` container, format version 1.

A ``.mimi`` file stores the discrete codes produced by the Mimi codec for one
piece of audio, plus enough metadata to decode it back and to check that the
right model is used. The layout (see ``docs/mimi-format.md`` for the full
specification) is::

    offset        size   content
    0             4      magic b"MIMI"
    4             1      format version (1)
    5             4      header length N, unsigned little-endian
    9             N      header: UTF-8 JSON object (N <= 1024)
    9 + N         P      payload: codes [channels, num_codebooks, num_frames],
                         row-major, `bits` bits per code, LSB-first, zero-padded
                         to a whole byte (P = ceil(count * bits / 8))
    9 + N + P     4      CRC-32 (zlib.crc32) of bytes [0, 9 + N + P), little-endian

Nothing here uses pickle: a ``.mimi`` file is plain bytes and JSON, and every
field is validated when read. Readers raise only :class:`MimiFormatError` for
bad content (and :class:`MimiError` for OS-level problems such as a missing
file).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import struct
import zlib
from dataclasses import dataclass, fields
from typing import Any, Union

import numpy as np

from mimi.atomic import atomic_write_bytes
from mimi.errors import MimiError, MimiFormatError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "PREAMBLE_SIZE",
    "CRC_SIZE",
    "FIXED_OVERHEAD",
    "MimiHeader",
    "MimiFile",
    "bits_for_codebook_size",
    "bitrate_bps",
    "packed_size",
    "pack_codes",
    "unpack_codes",
    "encode_mimi_bytes",
    "decode_mimi_bytes",
    "write_mimi",
    "read_mimi",
    "read_mimi_header",
]

PathLike = Union[str, "os.PathLike[str]"]

MAGIC: bytes = b"MIMI"
"""The four bytes every ``.mimi`` file starts with."""

FORMAT_VERSION: int = 1
"""The only container version this module reads and writes."""

MAX_HEADER_BYTES: int = 1024
"""Upper bound (inclusive) on the JSON header's length in bytes."""

MIN_HEADER_BYTES: int = 2
"""Lower bound on the JSON header's length (``{}`` is two bytes)."""

PREAMBLE_SIZE: int = 9
"""Magic (4) + version (1) + header length (4)."""

CRC_SIZE: int = 4
"""Size of the trailing CRC-32."""

FIXED_OVERHEAD: int = PREAMBLE_SIZE + CRC_SIZE
"""Bytes in every file besides the header and payload (13)."""

# Validation limits for header fields (inclusive bounds).
MAX_CHANNELS = 64
MAX_CODEBOOKS = 64
MIN_CODEBOOK_SIZE = 2
MAX_CODEBOOK_SIZE = 2**16
MAX_SAMPLE_RATE = 1_000_000
MAX_FRAME_RATE = 1_000_000.0
MAX_COUNT = 2**53 - 1  # largest integer JSON readers agree on
MAX_FINGERPRINT_CHARS = 128

_HEX_RE = re.compile(r"[0-9a-f]+")
_PREAMBLE = struct.Struct("<4sBI")
_CRC = struct.Struct("<I")
# Codes are (un)packed in chunks of this many codes to bound temporary memory.
# Must be a multiple of 8 so every chunk starts on a byte boundary.
_CHUNK_CODES = 1 << 20


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with ``...`` marking a cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (always a single line)."""
    return _cut(repr(value), limit)


def bits_for_codebook_size(codebook_size: int) -> int:
    """Bits needed to store one code: ``ceil(log2(codebook_size))``.

    >>> bits_for_codebook_size(2048)
    11
    >>> bits_for_codebook_size(2000)
    11
    >>> bits_for_codebook_size(2)
    1
    """
    if codebook_size < 2:
        raise MimiError(f"codebook_size must be >= 2, got {codebook_size}")
    return (int(codebook_size) - 1).bit_length()


def packed_size(count: int, bits: int) -> int:
    """Number of bytes that ``count`` codes of ``bits`` bits pack into."""
    return (count * bits + 7) // 8


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------


def _as_int(name: str, value: Any, lo: int, hi: int) -> int:
    """Check ``value`` is an integer (not a bool) in ``[lo, hi]``; return it as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MimiError(f"header field {name!r} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise MimiError(f"header field {name!r} must be in {lo}..{hi}, got {value}")
    return value


def _as_str(name: str, value: Any) -> str:
    """Check ``value`` is a non-empty string that encodes to UTF-8."""
    if not isinstance(value, str):
        raise MimiError(f"header field {name!r} must be a string, got {type(value).__name__}")
    if not value:
        raise MimiError(f"header field {name!r} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MimiError(f"header field {name!r} is not valid Unicode") from None
    return value


@dataclass(frozen=True)
class MimiHeader:
    """Metadata stored in the JSON header of a ``.mimi`` file.

    All fields are validated on construction (a :class:`MimiError` is raised
    for a bad value); integer-like values are normalised to ``int`` and
    ``frame_rate`` to ``float``.

    Attributes:
        model_id: identifier of the codec model, e.g. ``"kyutai/mimi"``.
        weights_fingerprint: lowercase hex digest of the weights used (1..128 chars).
        sample_rate: sample rate of the original audio, in Hz (1..1_000_000).
        channels: number of audio channels (1..64); each is coded separately.
        num_samples: length of the original audio per channel, in samples (>= 0).
        num_codebooks: codebooks per frame, K (1..64).
        num_frames: frames per channel, T (>= 0).
        frame_rate: frames per second (finite, > 0), 12.5 for Mimi.
        codebook_size: number of entries per codebook (2..65536); codes are in
            ``[0, codebook_size)``.
        library_version: version of the library that wrote the file.
    """

    model_id: str
    weights_fingerprint: str
    sample_rate: int
    channels: int
    num_samples: int
    num_codebooks: int
    num_frames: int
    frame_rate: float
    codebook_size: int
    library_version: str

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "model_id", _as_str("model_id", self.model_id))
        fp = _as_str("weights_fingerprint", self.weights_fingerprint)
        if len(fp) > MAX_FINGERPRINT_CHARS or not _HEX_RE.fullmatch(fp):
            raise MimiError(
                f"header field 'weights_fingerprint' must be 1..{MAX_FINGERPRINT_CHARS} "
                f"lowercase hex digits, got {_short(fp)}"
            )
        set_(self, "sample_rate", _as_int("sample_rate", self.sample_rate, 1, MAX_SAMPLE_RATE))
        set_(self, "channels", _as_int("channels", self.channels, 1, MAX_CHANNELS))
        set_(self, "num_samples", _as_int("num_samples", self.num_samples, 0, MAX_COUNT))
        set_(self, "num_codebooks", _as_int("num_codebooks", self.num_codebooks, 1, MAX_CODEBOOKS))
        set_(self, "num_frames", _as_int("num_frames", self.num_frames, 0, MAX_COUNT))
        fr = self.frame_rate
        if isinstance(fr, bool) or not isinstance(fr, numbers.Real):
            raise MimiError(f"header field 'frame_rate' must be a number, got {type(fr).__name__}")
        fr = float(fr)
        if not (math.isfinite(fr) and 0.0 < fr <= MAX_FRAME_RATE):
            raise MimiError(f"header field 'frame_rate' must be finite and in (0, {MAX_FRAME_RATE:g}], got {fr!r}")
        set_(self, "frame_rate", fr)
        set_(
            self,
            "codebook_size",
            _as_int("codebook_size", self.codebook_size, MIN_CODEBOOK_SIZE, MAX_CODEBOOK_SIZE),
        )
        set_(self, "library_version", _as_str("library_version", self.library_version))

    @property
    def bits(self) -> int:
        """Bits per packed code: ``ceil(log2(codebook_size))`` (11 for 2048)."""
        return bits_for_codebook_size(self.codebook_size)

    @property
    def num_codes(self) -> int:
        """Total number of codes in the payload: ``channels * num_codebooks * num_frames``."""
        return self.channels * self.num_codebooks * self.num_frames

    @property
    def payload_size(self) -> int:
        """Size of the packed payload in bytes."""
        return packed_size(self.num_codes, self.bits)

    @property
    def codes_shape(self) -> tuple[int, int, int]:
        """Shape of the codes array: ``(channels, num_codebooks, num_frames)``."""
        return (self.channels, self.num_codebooks, self.num_frames)

    @property
    def duration_seconds(self) -> float:
        """Duration of the original audio: ``num_samples / sample_rate``."""
        return self.num_samples / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        """The header as a plain dict, in field order (what goes into the JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json_bytes(self) -> bytes:
        """Compact UTF-8 JSON encoding of the header.

        Raises:
            MimiError: if the encoding is longer than :data:`MAX_HEADER_BYTES`.
        """
        data = json.dumps(
            self.to_dict(), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
        if len(data) > MAX_HEADER_BYTES:
            raise MimiError(
                f".mimi header is {len(data)} bytes, more than the {MAX_HEADER_BYTES}-byte limit"
            )
        return data


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(MimiHeader))
_INT_FIELDS = frozenset(
    {"sample_rate", "channels", "num_samples", "num_codebooks", "num_frames", "codebook_size"}
)
_STR_FIELDS = frozenset({"model_id", "weights_fingerprint", "library_version"})


def bitrate_bps(header: MimiHeader) -> float:
    """Bit rate of the coded stream in bits per second.

    ``num_codebooks * bits * frame_rate * channels`` (container overhead not
    counted). For Mimi with 32 codebooks, mono: ``32 * 11 * 12.5 = 4400``.
    """
    return float(header.num_codebooks * header.bits * header.frame_rate * header.channels)


@dataclass(frozen=True, eq=False)
class MimiFile:
    """A decoded ``.mimi`` file.

    Attributes:
        header: the validated header.
        codes: int64 array of shape ``[channels, num_codebooks, num_frames]``
            with values in ``[0, header.codebook_size)``.
    """

    header: MimiHeader
    codes: np.ndarray


# --------------------------------------------------------------------------
# Bit packing
# --------------------------------------------------------------------------


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 16:
        raise MimiError(f"bits must be an integer in 1..16, got {_short(bits)}")
    return int(bits)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack integer codes into bytes at ``bits`` bits per code.

    Codes are taken in row-major (C) order. Code ``i`` occupies bits
    ``[i * bits, (i + 1) * bits)`` of the output, where bit ``p`` of the
    output is bit ``p % 8`` (LSB = 0) of byte ``p // 8``, and each code is
    written least significant bit first. The last byte is padded with zero
    bits. The output has ``ceil(codes.size * bits / 8)`` bytes.

    Args:
        codes: array of any shape with an integer dtype and values in ``[0, 2**bits)``.
        bits: bits per code, 1..16.

    Raises:
        MimiError: bad ``bits``, non-integer dtype or a value out of range.
    """
    bits = _check_bits(bits)
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise MimiError(f"codes must have an integer dtype, got {arr.dtype}")
    flat = arr.reshape(-1)
    n = flat.size
    if n == 0:
        return b""
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= (1 << bits):
        raise MimiError(f"codes must be in [0, {1 << bits}) to pack at {bits} bits, got range [{lo}, {hi}]")
    out = bytearray()
    for start in range(0, n, _CHUNK_CODES):
        chunk = np.ascontiguousarray(flat[start : start + _CHUNK_CODES], dtype="<u2")
        # [m, 16] matrix of bits, LSB first, then keep the low `bits` columns.
        bitmat = np.unpackbits(chunk.view(np.uint8).reshape(-1, 2), axis=1, bitorder="little")
        out += np.packbits(bitmat[:, :bits].reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: read ``count`` codes of ``bits`` bits.

    Returns a 1-D int64 array of length ``count``; reshape it as needed.

    Raises:
        MimiError: bad ``bits`` or ``count``.
        MimiFormatError: ``data`` is not exactly ``ceil(count * bits / 8)``
            bytes long, or its padding bits are not zero.
    """
    bits = _check_bits(bits)
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise MimiError(f"count must be a non-negative integer, got {_short(count)}")
    count = int(count)
    expected = packed_size(count, bits)
    if len(data) != expected:
        raise MimiFormatError(
            f"packed codes are {len(data)} bytes, expected {expected} for {count} codes of {bits} bits"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    tail_bits = (count * bits) % 8
    if tail_bits and int(buf[-1]) >> tail_bits:
        raise MimiFormatError("nonzero padding bits after the last code")
    out = np.empty(count, dtype=np.int64)
    chunk_bytes = _CHUNK_CODES * bits // 8
    for i, start in enumerate(range(0, count, _CHUNK_CODES)):
        m = min(_CHUNK_CODES, count - start)
        raw = buf[i * chunk_bytes : i * chunk_bytes + packed_size(m, bits)]
        bitmat = np.unpackbits(raw, bitorder="little", count=m * bits).reshape(m, bits)
        full = np.zeros((m, 16), dtype=np.uint8)
        full[:, :bits] = bitmat
        values = np.packbits(full, axis=1, bitorder="little").view("<u2").reshape(m)
        out[start : start + m] = values
    return out


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _validated_codes(header: MimiHeader, codes: np.ndarray) -> np.ndarray:
    """Check ``codes`` against ``header``; raise :class:`MimiError` if they disagree."""
    if not isinstance(header, MimiHeader):
        raise MimiError(f"header must be a MimiHeader, got {type(header).__name__}")
    try:
        arr = np.asarray(codes)
    except Exception as exc:  # e.g. a CUDA tensor
        raise MimiError(f"codes cannot be converted to a numpy array: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise MimiError(f"codes must have an integer dtype, got {arr.dtype}")
    if arr.shape != header.codes_shape:
        raise MimiError(
            f"codes have shape {tuple(arr.shape)}, header says "
            f"[channels, num_codebooks, num_frames] = {list(header.codes_shape)}"
        )
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= header.codebook_size:
            raise MimiError(
                f"codes must be in [0, {header.codebook_size}), got range [{lo}, {hi}]"
            )
    return arr


def encode_mimi_bytes(header: MimiHeader, codes: np.ndarray) -> bytes:
    """Serialise ``header`` and ``codes`` ([channels, K, T]) to ``.mimi`` bytes.

    Raises:
        MimiError: codes of the wrong shape/dtype/range, or a header over 1 KiB.
    """
    arr = _validated_codes(header, codes)
    header_bytes = header.to_json_bytes()
    body = bytearray(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes)))
    body += header_bytes
    body += pack_codes(arr, header.bits)
    body += _CRC.pack(zlib.crc32(body))
    return bytes(body)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {_short(key)}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_header(header_bytes: bytes) -> MimiHeader:
    """Parse and validate the JSON header; raise :class:`MimiFormatError` on any problem."""
    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise MimiFormatError("header is not valid UTF-8") from None
    try:
        obj = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise MimiFormatError("header is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MimiFormatError(f"header is not valid JSON: {msg}") from None
    if not isinstance(obj, dict):
        raise MimiFormatError(f"header must be a JSON object, got {type(obj).__name__}")
    missing = [name for name in _FIELD_NAMES if name not in obj]
    if missing:
        raise MimiFormatError(f"header is missing field(s): {', '.join(missing)}")
    extra = sorted(key for key in obj if key not in _FIELD_NAMES)
    if extra:
        raise MimiFormatError(
            f"header has unknown field(s): {_cut(', '.join(map(repr, extra)), 80)}"
        )
    # Strict JSON types: integers must be JSON integers (not bools, not floats).
    for name in _FIELD_NAMES:
        value = obj[name]
        if name in _INT_FIELDS:
            ok = isinstance(value, int) and not isinstance(value, bool)
            want = "an integer"
        elif name in _STR_FIELDS:
            ok = isinstance(value, str)
            want = "a string"
        else:  # frame_rate
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number"
        if not ok:
            raise MimiFormatError(
                f"header field {name!r} must be {want}, got {type(value).__name__} {_short(value)}"
            )
    try:
        return MimiHeader(**obj)
    except MimiFormatError:
        raise
    except MimiError as exc:
        raise MimiFormatError(f"invalid header: {exc}") from None


def _parse_preamble(data: bytes) -> int:
    """Check magic, version and header length in the first 9 bytes; return N."""
    if len(data) >= len(MAGIC) and data[: len(MAGIC)] != MAGIC:
        raise MimiFormatError("not a .mimi file (bad magic bytes)")
    if len(data) < PREAMBLE_SIZE:
        raise MimiFormatError(f"file is too short to be a .mimi file ({len(data)} bytes)")
    _, version, header_len = _PREAMBLE.unpack_from(data)
    if version != FORMAT_VERSION:
        raise MimiFormatError(
            f"unsupported .mimi format version {version} (this reader supports {FORMAT_VERSION})"
        )
    if not MIN_HEADER_BYTES <= header_len <= MAX_HEADER_BYTES:
        raise MimiFormatError(
            f"header length {header_len} out of range {MIN_HEADER_BYTES}..{MAX_HEADER_BYTES}"
        )
    return header_len


def _size_error(actual: int, header: MimiHeader, header_len: int) -> MimiFormatError:
    expected = FIXED_OVERHEAD + header_len + header.payload_size
    kind = "truncated" if actual < expected else "has trailing data"
    return MimiFormatError(
        f"file is {actual} bytes but its header implies {expected}: file {kind} or corrupt"
    )


def _decode(data: bytes) -> MimiFile:
    data = bytes(data)
    if not data:
        raise MimiFormatError("file is empty")
    header_len = _parse_preamble(data)
    header_end = PREAMBLE_SIZE + header_len
    if len(data) < header_end + CRC_SIZE:
        raise MimiFormatError(
            f"file is truncated: {len(data)} bytes, header alone needs {header_end + CRC_SIZE}"
        )
    (stored_crc,) = _CRC.unpack_from(data, len(data) - CRC_SIZE)
    if zlib.crc32(memoryview(data)[: len(data) - CRC_SIZE]) != stored_crc:
        # A truncated or extended file also fails the checksum; say so when the
        # header is intact, it is a more useful message.
        try:
            header = _parse_header(data[PREAMBLE_SIZE:header_end])
        except MimiFormatError:
            header = None
        if header is not None and len(data) != FIXED_OVERHEAD + header_len + header.payload_size:
            raise _size_error(len(data), header, header_len)
        raise MimiFormatError("checksum mismatch: file is corrupt")
    header = _parse_header(data[PREAMBLE_SIZE:header_end])
    # Compare sizes before unpacking so a hostile header cannot make us allocate.
    payload_len = len(data) - FIXED_OVERHEAD - header_len
    if payload_len != header.payload_size:
        raise MimiFormatError(
            f"payload is {payload_len} bytes but the header implies {header.payload_size}"
        )
    flat = unpack_codes(data[header_end : header_end + payload_len], header.num_codes, header.bits)
    if flat.size and int(flat.max()) >= header.codebook_size:
        raise MimiFormatError(
            f"code {int(flat.max())} out of range for codebook_size {header.codebook_size}"
        )
    return MimiFile(header=header, codes=flat.reshape(header.codes_shape))


def decode_mimi_bytes(data: bytes) -> MimiFile:
    """Parse and fully validate ``.mimi`` bytes.

    Checks, in order: magic, version, header length, CRC-32, header JSON and
    every field, payload length (before any allocation proportional to the
    header's claims), padding bits and code range.

    Raises:
        MimiFormatError: for any problem (the only exception raised for bad input).
    """
    return _decode(data)


def _prefixed(path: PathLike, exc: MimiFormatError) -> MimiFormatError:
    return MimiFormatError(f"{os.fspath(path)}: {exc}")


def _open_error(path: PathLike, exc: OSError) -> MimiError:
    p = os.fspath(path)
    if isinstance(exc, FileNotFoundError):
        return MimiError(f"{p}: no such file")
    if isinstance(exc, IsADirectoryError):
        return MimiError(f"{p}: is a directory, not a .mimi file")
    return MimiError(f"{p}: cannot read: {exc.strerror or exc}")


def read_mimi(path: PathLike) -> MimiFile:
    """Read and fully validate a ``.mimi`` file.

    Raises:
        MimiFormatError: corrupt, truncated or unsupported content.
        MimiError: the file cannot be opened (missing, a directory, no permission).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _open_error(path, exc) from None
    try:
        return _decode(data)
    except MimiFormatError as exc:
        raise _prefixed(path, exc) from None


def read_mimi_header(path: PathLike) -> MimiHeader:
    """Read only the header of a ``.mimi`` file (cheap, for ``info``-style use).

    Validates magic, version, header and that the file size matches the size
    the header implies. It does NOT read the payload, so it does not verify
    the CRC or code values; use :func:`read_mimi` for that.

    Raises:
        MimiFormatError: bad magic/version/header, or wrong file size.
        MimiError: the file cannot be opened.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(PREAMBLE_SIZE)
            try:
                if not head:
                    raise MimiFormatError("file is empty")
                header_len = _parse_preamble(head)
                header_bytes = f.read(header_len)
                if len(header_bytes) < header_len or size < PREAMBLE_SIZE + header_len + CRC_SIZE:
                    raise MimiFormatError(
                        f"file is truncated: {size} bytes, header alone needs "
                        f"{PREAMBLE_SIZE + header_len + CRC_SIZE}"
                    )
                header = _parse_header(header_bytes)
                if size != FIXED_OVERHEAD + header_len + header.payload_size:
                    raise _size_error(size, header, header_len)
                return header
            except MimiFormatError as exc:
                raise _prefixed(path, exc) from None
    except OSError as exc:
        raise _open_error(path, exc) from None


# --------------------------------------------------------------------------
# Atomic write
# --------------------------------------------------------------------------


def _atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :mod:`mimi.atomic`); errors as one line."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise MimiError(f"{os.fspath(path)}: cannot write: {exc.strerror or exc}") from None


def write_mimi(path: PathLike, header: MimiHeader, codes: np.ndarray) -> None:
    """Write ``codes`` ([channels, K, T]) with ``header`` to ``path`` atomically.

    Everything is validated and encoded in memory first; the bytes go to a
    temporary file in the same directory, which is fsynced and then renamed
    over ``path``. On any failure nothing is left behind at ``path`` (an
    existing file there is left unchanged) and the temporary file is removed.

    Raises:
        MimiError: invalid codes/header, or the file cannot be written.
    """
    data = encode_mimi_bytes(header, codes)
    _atomic_write_bytes(path, data)
