"""Tests for the ``.mimi`` container (``mimi.format``)."""

from __future__ import annotations

import json
import math
import os
import struct
import time
import zlib
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mimi.format as fmt
from mimi.errors import MimiError, MimiFormatError
from mimi.format import (
    CRC_SIZE,
    FIXED_OVERHEAD,
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    MimiFile,
    MimiHeader,
    bitrate_bps,
    bits_for_codebook_size,
    decode_mimi_bytes,
    encode_mimi_bytes,
    pack_codes,
    read_mimi,
    read_mimi_header,
    unpack_codes,
    write_mimi,
)

FINGERPRINT = "0123456789abcdef" * 4


def make_header(**overrides: Any) -> MimiHeader:
    """A valid header for mono Mimi codes, with any field overridden."""
    values: dict[str, Any] = dict(
        model_id="kyutai/mimi",
        weights_fingerprint=FINGERPRINT,
        sample_rate=24_000,
        channels=1,
        num_samples=5 * 1920,
        num_codebooks=8,
        num_frames=5,
        frame_rate=12.5,
        codebook_size=2048,
        library_version="0.1.0",
    )
    values.update(overrides)
    return MimiHeader(**values)


def random_codes(header: MimiHeader, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, header.codebook_size, size=header.codes_shape, dtype=np.int64)


def build_raw(
    header_bytes: bytes,
    payload: bytes,
    *,
    version: int = FORMAT_VERSION,
    header_len: int | None = None,
    magic: bytes = MAGIC,
) -> bytes:
    """Assemble a file by hand, with a correct CRC over whatever we put in."""
    n = len(header_bytes) if header_len is None else header_len
    body = magic + struct.pack("<BI", version, n) + header_bytes + payload
    return body + struct.pack("<I", zlib.crc32(body))


def recrc(data: bytes) -> bytes:
    """Replace the last four bytes of ``data`` by the CRC of the rest."""
    body = data[:-CRC_SIZE]
    return body + struct.pack("<I", zlib.crc32(body))


def header_json(header: MimiHeader, **changes: Any) -> bytes:
    obj = header.to_dict()
    for key, value in changes.items():
        if value is _DELETE:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode("utf-8")


_DELETE = object()


@pytest.fixture
def small() -> tuple[MimiHeader, np.ndarray, bytes]:
    header = make_header(num_codebooks=2, num_frames=3, num_samples=3 * 1920)
    codes = random_codes(header)
    return header, codes, encode_mimi_bytes(header, codes)


# --------------------------------------------------------------------------
# Bit packing
# --------------------------------------------------------------------------


SHAPES = [(0,), (1,), (7,), (8,), (9,), (3, 4, 5), (2, 32, 0), (2, 3, 17), (1, 1, 1)]


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pack_unpack_round_trip(bits: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(bits * 1000 + len(shape))
    codes = rng.integers(0, 2**bits, size=shape, dtype=np.int64)
    if codes.size:
        codes.flat[0] = 2**bits - 1  # the extremes always appear
        codes.flat[-1] = 0
    data = pack_codes(codes, bits)
    assert isinstance(data, bytes)
    assert len(data) == math.ceil(codes.size * bits / 8)
    out = unpack_codes(data, codes.size, bits)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out.reshape(shape), codes)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint64])
def test_pack_accepts_integer_dtypes(dtype: Any) -> None:
    codes = np.array([0, 1, 100, 255], dtype=dtype)
    assert unpack_codes(pack_codes(codes, 8), 4, 8).tolist() == [0, 1, 100, 255]


def test_pack_known_bit_order() -> None:
    # The worked examples of docs/mimi-format.md.
    assert pack_codes(np.array([5, 3]), 3) == bytes([0b00011101])
    assert pack_codes(np.array([2047, 1, 1024]), 11) == bytes.fromhex("ff0f000001")
    assert unpack_codes(bytes.fromhex("ff0f000001"), 3, 11).tolist() == [2047, 1, 1024]


def test_pack_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "_CHUNK_CODES", 64)
    rng = np.random.default_rng(3)
    for bits in (1, 7, 11, 16):
        codes = rng.integers(0, 2**bits, size=64 * 5 + 13)
        data = pack_codes(codes, bits)
        monkeypatch.setattr(fmt, "_CHUNK_CODES", 1 << 20)
        assert data == pack_codes(codes, bits)  # chunking does not change the bytes
        monkeypatch.setattr(fmt, "_CHUNK_CODES", 64)
        np.testing.assert_array_equal(unpack_codes(data, codes.size, bits), codes)


def test_pack_one_hour_is_fast() -> None:
    codes = np.random.default_rng(0).integers(0, 2048, size=(2, 32, 45_000))
    t0 = time.perf_counter()
    data = pack_codes(codes, 11)
    t1 = time.perf_counter()
    out = unpack_codes(data, codes.size, 11)
    t2 = time.perf_counter()
    np.testing.assert_array_equal(out.reshape(codes.shape), codes)
    # Typically ~0.1 s each; generous bounds so a loaded machine does not flake.
    assert t1 - t0 < 1.0
    assert t2 - t1 < 1.0


@pytest.mark.parametrize("bits", [0, 17, -1, True, 2.0])
def test_pack_rejects_bad_bits(bits: Any) -> None:
    with pytest.raises(MimiError, match="bits"):
        pack_codes(np.array([0]), bits)
    with pytest.raises(MimiError, match="bits"):
        unpack_codes(b"\x00", 1, bits)


def test_pack_rejects_bad_codes() -> None:
    with pytest.raises(MimiError, match=r"\[0, 8\)"):
        pack_codes(np.array([8]), 3)
    with pytest.raises(MimiError, match=r"\[0, 8\)"):
        pack_codes(np.array([-1]), 3)
    with pytest.raises(MimiError, match="integer dtype"):
        pack_codes(np.array([1.0]), 3)
    with pytest.raises(MimiError, match="integer dtype"):
        pack_codes(np.array([True]), 3)


def test_unpack_rejects_bad_lengths_and_padding() -> None:
    with pytest.raises(MimiFormatError, match="expected 2"):
        unpack_codes(b"\x00", 2, 5)
    with pytest.raises(MimiFormatError, match="expected 2"):
        unpack_codes(b"\x00\x00\x00", 2, 5)
    with pytest.raises(MimiFormatError, match="padding"):
        unpack_codes(bytes([0, 0b00000100]), 2, 5)  # bit 10 is padding
    with pytest.raises(MimiError, match="count"):
        unpack_codes(b"", -1, 5)
    assert unpack_codes(b"", 0, 5).shape == (0,)


def test_bits_for_codebook_size() -> None:
    assert [bits_for_codebook_size(n) for n in (2, 3, 4, 5, 2000, 2048, 2049, 65536)] == [
        1, 2, 2, 3, 11, 11, 12, 16,
    ]
    with pytest.raises(MimiError):
        bits_for_codebook_size(1)


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------


def test_header_properties() -> None:
    h = make_header(channels=2, num_codebooks=32, num_frames=125, num_samples=240_000, sample_rate=24_000)
    assert h.bits == 11
    assert h.codes_shape == (2, 32, 125)
    assert h.num_codes == 2 * 32 * 125
    assert h.payload_size == math.ceil(2 * 32 * 125 * 11 / 8)
    assert h.duration_seconds == 10.0
    assert bitrate_bps(h) == 32 * 11 * 12.5 * 2 == 8800.0
    assert bitrate_bps(make_header(num_codebooks=8)) == 1100.0
    with pytest.raises(FrozenInstanceError):
        h.channels = 3  # type: ignore[misc]


def test_header_normalises_types() -> None:
    h = make_header(channels=np.int64(2), frame_rate=25, num_frames=np.uint32(4))
    assert type(h.channels) is int and h.channels == 2
    assert type(h.num_frames) is int
    assert type(h.frame_rate) is float and h.frame_rate == 25.0


@pytest.mark.parametrize(
    "field,value",
    [
        ("channels", True),
        ("channels", 0),
        ("channels", 65),
        ("channels", 1.0),
        ("channels", "1"),
        ("num_codebooks", 0),
        ("num_codebooks", 65),
        ("codebook_size", 1),
        ("codebook_size", 2**16 + 1),
        ("sample_rate", 0),
        ("sample_rate", 1_000_001),
        ("num_samples", -1),
        ("num_frames", -1),
        ("num_frames", 2**53),
        ("frame_rate", 0.0),
        ("frame_rate", -12.5),
        ("frame_rate", float("nan")),
        ("frame_rate", float("inf")),
        ("frame_rate", True),
        ("frame_rate", "12.5"),
        ("model_id", ""),
        ("model_id", 3),
        ("model_id", "\ud800"),
        ("library_version", ""),
        ("weights_fingerprint", ""),
        ("weights_fingerprint", "ABCDEF"),
        ("weights_fingerprint", "xyz"),
        ("weights_fingerprint", "a" * 129),
    ],
)
def test_header_validation(field: str, value: Any) -> None:
    with pytest.raises(MimiError, match=field):
        make_header(**{field: value})


def test_header_limits_accepted() -> None:
    make_header(channels=64, num_codebooks=64, codebook_size=2, sample_rate=1, num_frames=0, num_samples=0)
    make_header(codebook_size=2**16, sample_rate=1_000_000, weights_fingerprint="a" * 128)


def test_header_under_1k_and_too_large_rejected(tmp_path: Path) -> None:
    h = make_header()
    assert len(h.to_json_bytes()) < 1024
    assert json.loads(h.to_json_bytes()) == h.to_dict()
    big = make_header(model_id="m" * 1000)
    with pytest.raises(MimiError, match="1024"):
        encode_mimi_bytes(big, random_codes(big))
    with pytest.raises(MimiError, match="1024"):
        write_mimi(tmp_path / "big.mimi", big, random_codes(big))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels,codebooks,frames,codebook_size",
    [(1, 8, 5, 2048), (2, 32, 13, 2048), (1, 32, 0, 2048), (3, 1, 7, 2), (1, 4, 9, 2000), (2, 2, 3, 65536)],
)
def test_write_read_round_trip(
    tmp_path: Path, channels: int, codebooks: int, frames: int, codebook_size: int
) -> None:
    header = make_header(
        channels=channels, num_codebooks=codebooks, num_frames=frames, codebook_size=codebook_size,
        num_samples=frames * 1920 - 7 if frames else 0, sample_rate=44_100,
    )
    codes = random_codes(header, seed=frames)
    path = tmp_path / "x.mimi"
    write_mimi(path, header, codes)

    n_header = len(header.to_json_bytes())
    assert n_header < 1024
    expected = n_header + math.ceil(codes.size * header.bits / 8) + FIXED_OVERHEAD
    assert FIXED_OVERHEAD == 13
    assert path.stat().st_size == expected

    f = read_mimi(path)
    assert isinstance(f, MimiFile)
    assert f.header == header
    assert f.codes.dtype == np.int64
    assert f.codes.shape == (channels, codebooks, frames)
    np.testing.assert_array_equal(f.codes, codes)
    assert read_mimi_header(path) == header
    assert decode_mimi_bytes(path.read_bytes()).header == header
    assert path.read_bytes() == encode_mimi_bytes(header, codes)
    assert [p.name for p in tmp_path.iterdir()] == ["x.mimi"]  # no temp files left


def test_file_layout(small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    header, codes, data = small
    hb = header.to_json_bytes()
    assert data[:4] == b"MIMI"
    assert data[4] == 1
    assert struct.unpack("<I", data[5:9])[0] == len(hb)
    assert data[9 : 9 + len(hb)] == hb
    assert data[9 + len(hb) : -4] == pack_codes(codes, 11)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_write_accepts_torch_tensor(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    header = make_header()
    codes = random_codes(header)
    write_mimi(tmp_path / "t.mimi", header, torch.from_numpy(codes).to(torch.int32))
    np.testing.assert_array_equal(read_mimi(tmp_path / "t.mimi").codes, codes)


def test_write_overwrites_existing(tmp_path: Path) -> None:
    path = tmp_path / "x.mimi"
    path.write_bytes(b"old")
    header = make_header()
    write_mimi(path, header, random_codes(header))
    assert read_mimi(path).header == header


# --------------------------------------------------------------------------
# Write validation and atomicity
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda c: c + 2048, r"\[0, 2048\)"),
        (lambda c: c - 1 - c, r"\[0, 2048\)"),
        (lambda c: c[:, :, :-1], "shape"),
        (lambda c: c[0], "shape"),
        (lambda c: c.astype(np.float32), "integer dtype"),
    ],
)
def test_write_rejects_bad_codes_and_leaves_nothing(tmp_path: Path, mutate: Any, match: str) -> None:
    header = make_header()
    path = tmp_path / "x.mimi"
    with pytest.raises(MimiError, match=match):
        write_mimi(path, header, mutate(random_codes(header)))
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_when_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = make_header()
    codes = random_codes(header)

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmt.os, "replace", boom)
    with pytest.raises(MimiError, match="cannot write"):
        write_mimi(tmp_path / "x.mimi", header, codes)
    assert list(tmp_path.iterdir()) == []

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fmt.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_mimi(tmp_path / "x.mimi", header, codes)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.mimi"
    path.write_bytes(b"previous")

    def boom(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fmt.os, "fsync", boom)
    header = make_header()
    with pytest.raises(MimiError, match="Input/output error"):
        write_mimi(path, header, random_codes(header))
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["x.mimi"]


def test_write_missing_directory(tmp_path: Path) -> None:
    header = make_header()
    with pytest.raises(MimiError, match="cannot write"):
        write_mimi(tmp_path / "nope" / "x.mimi", header, random_codes(header))


def test_written_file_permissions(tmp_path: Path) -> None:
    header = make_header()
    path = tmp_path / "x.mimi"
    write_mimi(path, header, random_codes(header))
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------
# Corruption: every problem is a MimiFormatError
# --------------------------------------------------------------------------


def test_empty_and_short(tmp_path: Path) -> None:
    with pytest.raises(MimiFormatError, match="empty"):
        decode_mimi_bytes(b"")
    for data in (b"M", b"MIM", b"MIMI", b"MIMI\x01\x00"):
        with pytest.raises(MimiFormatError, match="too short"):
            decode_mimi_bytes(data)
    (tmp_path / "e.mimi").write_bytes(b"")
    with pytest.raises(MimiFormatError, match="empty"):
        read_mimi(tmp_path / "e.mimi")
    with pytest.raises(MimiFormatError, match="empty"):
        read_mimi_header(tmp_path / "e.mimi")


def test_wrong_magic(small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    _, _, data = small
    for bad in (b"RIFF" + data[4:], b"mimi" + data[4:], b"\x00" * 100, b"PK\x03\x04"):
        with pytest.raises(MimiFormatError, match="not a .mimi file"):
            decode_mimi_bytes(bad)
    with pytest.raises(MimiFormatError, match="not a .mimi file"):
        decode_mimi_bytes(recrc(b"MIMX" + data[4:]))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version(small: tuple[MimiHeader, np.ndarray, bytes], version: int) -> None:
    _, _, data = small
    bad = recrc(data[:4] + bytes([version]) + data[5:])
    with pytest.raises(MimiFormatError, match=f"unsupported .mimi format version {version}"):
        decode_mimi_bytes(bad)


@pytest.mark.parametrize("header_len", [0, 1, 1025, 2**31, 2**32 - 1])
def test_header_length_out_of_range(small: tuple[MimiHeader, np.ndarray, bytes], header_len: int) -> None:
    _, _, data = small
    bad = recrc(data[:5] + struct.pack("<I", header_len) + data[9:])
    with pytest.raises(MimiFormatError, match="header length"):
        decode_mimi_bytes(bad)


def test_header_length_beyond_file() -> None:
    data = build_raw(b"{}", b"", header_len=1000)
    with pytest.raises(MimiFormatError, match="truncated"):
        decode_mimi_bytes(data)


def test_checksum_mismatch(small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    _, _, data = small
    bad = bytearray(data)
    bad[-6] ^= 0x10  # a payload byte
    with pytest.raises(MimiFormatError, match="checksum mismatch: file is corrupt"):
        decode_mimi_bytes(bytes(bad))
    bad = bytearray(data)
    bad[-1] ^= 0x01  # the CRC itself
    with pytest.raises(MimiFormatError, match="checksum mismatch: file is corrupt"):
        decode_mimi_bytes(bytes(bad))


def test_truncated_at_every_offset(small: tuple[MimiHeader, np.ndarray, bytes], tmp_path: Path) -> None:
    _, _, data = small
    path = tmp_path / "t.mimi"
    for n in range(len(data)):
        with pytest.raises(MimiFormatError):
            decode_mimi_bytes(data[:n])
        path.write_bytes(data[:n])
        with pytest.raises(MimiFormatError):
            read_mimi(path)
        with pytest.raises(MimiFormatError):
            read_mimi_header(path)
    # A truncated payload gets the helpful message rather than a bare checksum error.
    with pytest.raises(MimiFormatError, match="truncated"):
        decode_mimi_bytes(data[:-1])
    with pytest.raises(MimiFormatError, match="trailing data"):
        decode_mimi_bytes(data + b"\x00")


def test_flipped_byte_at_every_position(small: tuple[MimiHeader, np.ndarray, bytes], tmp_path: Path) -> None:
    _, _, data = small
    path = tmp_path / "f.mimi"
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(MimiFormatError):
                decode_mimi_bytes(bytes(bad))
        path.write_bytes(bytes(bad))
        with pytest.raises(MimiFormatError):
            read_mimi(path)


def test_random_bytes() -> None:
    rng = np.random.default_rng(0)
    for n in list(range(0, 40)) + [100, 1000, 5000]:
        blob = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        with pytest.raises(MimiFormatError):
            decode_mimi_bytes(blob)
        with pytest.raises(MimiFormatError):
            decode_mimi_bytes(MAGIC + blob)
        with pytest.raises(MimiFormatError):
            decode_mimi_bytes(recrc(MAGIC + b"\x01" + blob + b"\x00" * 4))


@pytest.mark.parametrize(
    "header_bytes,match",
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"model_id": "\xc3"}', "UTF-8"),
        (b"not json", "not valid JSON"),
        (b"{" * 2 + b"}", "not valid JSON"),
        (b"[" * 1020 + b"]" * 4, "not valid JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"hello"', "JSON object"),
        (b"12", "JSON object"),
        (b"null", "JSON object"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b"{}", "missing field"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
    ],
)
def test_bad_header_json(header_bytes: bytes, match: str) -> None:
    with pytest.raises(MimiFormatError, match=match):
        decode_mimi_bytes(build_raw(header_bytes, b""))


def test_deeply_nested_header_does_not_recurse() -> None:
    for depth in (100, 500, 1000):
        hb = (b"[" * depth + b"]" * depth)[:MAX_HEADER_BYTES]
        with pytest.raises(MimiFormatError):
            decode_mimi_bytes(build_raw(hb, b""))
    hb = b'{"a":' * 200 + b"1" + b"}" * 200
    with pytest.raises(MimiFormatError):
        decode_mimi_bytes(build_raw(hb, b""))


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"channels": _DELETE}, "missing field.*channels"),
        ({"model_id": _DELETE, "frame_rate": _DELETE}, "missing field.*model_id, frame_rate"),
        ({"extra": 1}, "unknown field.*extra"),
        ({"channels": True}, "'channels' must be an integer"),
        ({"num_frames": False}, "'num_frames' must be an integer"),
        ({"channels": 1.0}, "'channels' must be an integer"),
        ({"channels": "1"}, "'channels' must be an integer"),
        ({"channels": None}, "'channels' must be an integer"),
        ({"codebook_size": [2048]}, "'codebook_size' must be an integer"),
        ({"frame_rate": True}, "'frame_rate' must be a number"),
        ({"frame_rate": "12.5"}, "'frame_rate' must be a number"),
        ({"model_id": 5}, "'model_id' must be a string"),
        ({"weights_fingerprint": None}, "'weights_fingerprint' must be a string"),
        ({"channels": 0}, "channels"),
        ({"channels": 65}, "channels"),
        ({"channels": -1}, "channels"),
        ({"num_codebooks": 0}, "num_codebooks"),
        ({"num_codebooks": 1000}, "num_codebooks"),
        ({"codebook_size": 1}, "codebook_size"),
        ({"codebook_size": 2**16 + 1}, "codebook_size"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 10**7}, "sample_rate"),
        ({"num_samples": -5}, "num_samples"),
        ({"num_frames": -1}, "num_frames"),
        ({"num_frames": 10**300}, "num_frames"),
        ({"frame_rate": 0}, "frame_rate"),
        ({"frame_rate": -1.0}, "frame_rate"),
        ({"frame_rate": 1e308 * 10}, "Infinity"),  # json.dumps writes Infinity
        ({"frame_rate": float("nan")}, "NaN"),
        ({"model_id": ""}, "model_id"),
        ({"model_id": "\ud800"}, "model_id"),
        ({"weights_fingerprint": "XYZ"}, "weights_fingerprint"),
        ({"weights_fingerprint": "ABCD"}, "weights_fingerprint"),
    ],
)
def test_bad_header_fields(changes: dict[str, Any], match: str) -> None:
    header = make_header()
    payload = pack_codes(random_codes(header), header.bits)
    data = build_raw(header_json(header, **changes), payload)
    with pytest.raises(MimiFormatError, match=match):
        decode_mimi_bytes(data)


def test_float_overflow_header_value() -> None:
    header = make_header()
    payload = pack_codes(random_codes(header), header.bits)
    hb = header_json(header).replace(b'"frame_rate": 12.5', b'"frame_rate": 1e999')
    assert b"1e999" in hb
    with pytest.raises(MimiFormatError, match="frame_rate"):
        decode_mimi_bytes(build_raw(hb, payload))


def test_payload_length_mismatch() -> None:
    header = make_header()
    payload = pack_codes(random_codes(header), header.bits)
    hb = header.to_json_bytes()
    for bad in (payload[:-1], payload + b"\x00", b"", payload * 2):
        with pytest.raises(MimiFormatError, match="payload is"):
            decode_mimi_bytes(build_raw(hb, bad))


def test_hostile_header_does_not_allocate() -> None:
    # Claims 64 channels x 64 codebooks x 2**53-1 frames with a 0-byte payload.
    header = make_header(channels=64, num_codebooks=64, num_frames=2**53 - 1, codebook_size=65536)
    t0 = time.perf_counter()
    with pytest.raises(MimiFormatError, match="payload is 0 bytes"):
        decode_mimi_bytes(build_raw(header.to_json_bytes(), b""))
    assert time.perf_counter() - t0 < 0.5


def test_code_out_of_codebook_range() -> None:
    header = make_header(codebook_size=2000, num_codebooks=1, num_frames=3)
    hb = header.to_json_bytes()
    ok = build_raw(hb, pack_codes(np.array([0, 1999, 5]), 11))
    assert decode_mimi_bytes(ok).codes.tolist() == [[[0, 1999, 5]]]
    bad = build_raw(hb, pack_codes(np.array([0, 2047, 5]), 11))
    with pytest.raises(MimiFormatError, match="code 2047 out of range"):
        decode_mimi_bytes(bad)


def test_nonzero_padding_bits() -> None:
    header = make_header(num_codebooks=1, num_frames=1)  # 11 bits -> 2 bytes, 5 bits of padding
    hb = header.to_json_bytes()
    payload = bytearray(pack_codes(np.array([3]), 11))
    payload[-1] |= 0x80
    with pytest.raises(MimiFormatError, match="padding"):
        decode_mimi_bytes(build_raw(hb, bytes(payload)))


def test_hand_written_header_is_accepted() -> None:
    # Key order and whitespace are free; integer frame_rate is accepted.
    header = make_header(frame_rate=25.0, num_codebooks=1, num_frames=2)
    obj = header.to_dict()
    obj["frame_rate"] = 25
    hb = json.dumps(dict(reversed(list(obj.items()))), indent=2).encode()
    f = decode_mimi_bytes(build_raw(hb, pack_codes(np.array([7, 9]), 11)))
    assert f.header == header
    assert f.codes.tolist() == [[[7, 9]]]


def test_read_errors_name_the_file(tmp_path: Path, small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    _, _, data = small
    path = tmp_path / "broken.mimi"
    path.write_bytes(data[:-3])
    with pytest.raises(MimiFormatError, match="broken.mimi: file is"):
        read_mimi(path)
    with pytest.raises(MimiError, match="no such file"):
        read_mimi(tmp_path / "missing.mimi")
    with pytest.raises(MimiError, match="no such file"):
        read_mimi_header(tmp_path / "missing.mimi")
    with pytest.raises(MimiError, match="directory"):
        read_mimi(tmp_path)
    with pytest.raises(MimiError, match="directory"):
        read_mimi_header(tmp_path)


def test_read_header_checks_size(tmp_path: Path, small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    header, _, data = small
    path = tmp_path / "x.mimi"
    path.write_bytes(data)
    assert read_mimi_header(path) == header
    path.write_bytes(data + b"\x00")
    with pytest.raises(MimiFormatError, match="trailing data"):
        read_mimi_header(path)
    path.write_bytes(data[:-1])
    with pytest.raises(MimiFormatError, match="truncated"):
        read_mimi_header(path)


def test_messages_are_one_line(small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    _, _, data = small
    blobs = [b"", b"xx", data[:20], data[:-1], recrc(data[:9] + b"\n" * (len(data) - 13) + data[-4:])]
    blobs.append(build_raw(b'{"a\\nb": 1}', b""))
    blobs.append(build_raw(b"{\n\n", b""))
    for blob in blobs:
        with pytest.raises(MimiFormatError) as info:
            decode_mimi_bytes(blob)
        assert "\n" not in str(info.value)
        assert str(info.value)


# --------------------------------------------------------------------------
# Fuzzing: the only exception decode_mimi_bytes may raise is MimiFormatError
# --------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def _valid_parts(draw: st.DrawFn) -> tuple[MimiHeader, np.ndarray]:
    codebook_size = draw(st.sampled_from([2, 3, 5, 255, 256, 2000, 2048, 65535, 65536]))
    channels = draw(st.integers(1, 2))
    codebooks = draw(st.integers(1, 4))
    frames = draw(st.integers(0, 6))
    header = make_header(
        channels=channels,
        num_codebooks=codebooks,
        num_frames=frames,
        codebook_size=codebook_size,
        num_samples=draw(st.integers(0, 10**6)),
        frame_rate=draw(st.sampled_from([12.5, 25.0, 1.0, 0.001])),
    )
    return header, random_codes(header, seed=draw(st.integers(0, 2**32 - 1)))


def _mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """One random byte-level edit: truncate, flip, splice, delete or append."""
    op = draw(st.sampled_from(["truncate", "flip", "splice", "delete", "append", "overwrite"]))
    n = len(data)
    i = draw(st.integers(0, n))
    if op == "truncate":
        return data[:i]
    if op == "append":
        return data + draw(st.binary(min_size=1, max_size=16))
    if op == "splice":
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    if op == "delete":
        return data[:i] + data[i + draw(st.integers(1, 16)) :]
    if n == 0:
        return data
    i = min(i, n - 1)
    if op == "flip":
        out = bytearray(data)
        out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    chunk = draw(st.binary(min_size=1, max_size=8))
    return data[:i] + chunk + data[i + len(chunk) :]


@st.composite
def _fuzz_blobs(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["random", "magic+random", "raw", "raw+recrc", "json_field", "json_bytes", "payload", "preamble"]
        )
    )
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "magic+random":
        prefix = MAGIC + bytes([draw(st.sampled_from([1, 1, 1, 0, 2]))])
        return recrc(prefix + draw(st.binary(max_size=200)) + b"\x00" * 4) if draw(st.booleans()) else prefix + draw(st.binary(max_size=200))

    header, codes = draw(_valid_parts())
    data = encode_mimi_bytes(header, codes)
    header_bytes = header.to_json_bytes()
    payload = pack_codes(codes, header.bits)

    if kind == "raw":  # plain corruption, CRC left stale
        for _ in range(draw(st.integers(1, 3))):
            data = _mutate_bytes(draw, data)
        return data
    if kind == "raw+recrc":  # corruption that the CRC does not catch
        body = data[:-CRC_SIZE]
        for _ in range(draw(st.integers(1, 3))):
            body = _mutate_bytes(draw, body)
        return body + struct.pack("<I", zlib.crc32(body))
    if kind == "json_field":  # structurally valid file, semantically mutated header
        obj: dict[str, Any] = header.to_dict()
        for _ in range(draw(st.integers(1, 3))):
            action = draw(st.sampled_from(["set", "set", "delete", "add", "small_int"]))
            key = draw(st.sampled_from(sorted(obj) or ["x"]))
            if action == "set":
                obj[key] = draw(_json_values)
            elif action == "small_int":
                obj[key] = draw(st.integers(-3, 70))
            elif action == "delete":
                obj.pop(key, None)
            else:
                obj[draw(st.text(max_size=10))] = draw(_json_values)
        top: Any = obj if draw(st.integers(0, 9)) else draw(_json_values)
        hb = json.dumps(top, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        return build_raw(hb, payload)
    if kind == "json_bytes":  # raw edits inside the JSON text, lengths and CRC fixed up
        hb = header_bytes
        for _ in range(draw(st.integers(1, 3))):
            hb = _mutate_bytes(draw, hb)
        return build_raw(hb, payload)
    if kind == "payload":
        new_payload = draw(
            st.one_of(
                st.binary(min_size=len(payload), max_size=len(payload)),
                st.binary(max_size=len(payload) + 4),
                st.just(_mutate_bytes(draw, payload)),
            )
        )
        return build_raw(header_bytes, new_payload)
    # preamble: version and header length, CRC fixed up
    version = draw(st.integers(0, 255))
    header_len = draw(
        st.one_of(st.integers(0, 2**32 - 1), st.integers(0, len(header_bytes) + 8), st.just(len(header_bytes)))
    )
    return build_raw(header_bytes, payload, version=version, header_len=header_len)


@settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(_fuzz_blobs())
def test_fuzz_decode_only_raises_format_error(blob: bytes) -> None:
    try:
        f = decode_mimi_bytes(blob)
    except MimiFormatError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return
    # Anything accepted must be self-consistent.
    h = f.header
    assert f.codes.shape == h.codes_shape
    assert f.codes.dtype == np.int64
    if f.codes.size:
        assert 0 <= int(f.codes.min()) and int(f.codes.max()) < h.codebook_size
    assert decode_mimi_bytes(encode_mimi_bytes(h, f.codes)).header == h


def test_mimi_file_is_frozen(small: tuple[MimiHeader, np.ndarray, bytes]) -> None:
    _, _, data = small
    f = decode_mimi_bytes(data)
    with pytest.raises(FrozenInstanceError):
        f.codes = np.zeros(1)  # type: ignore[misc]
    assert replace(f.header, channels=1) == f.header

