"""The codec's bitstream: a versioned header and one fixed-size packet per frame.

File layout (all integers big-endian):

    header   magic "STTC" | version u8 | header length u16 | JSON-free fixed fields:
             sample_rate u32 | hop_length u16 | n_q u8 | bits_per_code u8 |
             num_samples u64 | num_frames u32 | model id (16 bytes, ASCII, zero-padded) |
             header CRC32 u32
    packets  num_frames packets of ceil(n_q * bits / 8) bytes: frame f's codes
             c[0..n_q) packed MSB-first, bits_per_code bits each
    trailer  CRC32 u32 of all packets

A packet holds everything needed to decode its frame, so the same packets can
travel one by one over a network (the transport then supplies integrity and
sequence numbers); the trailer CRC protects files on disk.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"STTC"
VERSION = 1
_HEADER = struct.Struct("!4sBHIHBBQI16s")
_CRC = struct.Struct("!I")


class BitstreamError(ValueError):
    """The input is not a valid stream of this codec (foreign, corrupt, truncated or unsupported)."""


@dataclass(frozen=True)
class StreamHeader:
    sample_rate: int
    hop_length: int
    n_q: int
    bits_per_code: int
    num_samples: int
    num_frames: int
    model_id: str

    @property
    def packet_bytes(self) -> int:
        return packet_size(self.n_q, self.bits_per_code)

    @property
    def kbps(self) -> float:
        return self.n_q * self.bits_per_code * self.sample_rate / self.hop_length / 1000


def packet_size(n_q: int, bits: int) -> int:
    return (n_q * bits + 7) // 8


def pack_frames(codes: np.ndarray, bits: int) -> bytes:
    """codes [F, K] of non-negative ints < 2**bits -> F packets, each K*bits bits rounded up to bytes."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError("codes must be [frames, quantizers]")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {1 << bits})")
    frames, k = codes.shape
    shifts = np.arange(bits - 1, -1, -1)
    bit_matrix = ((codes[..., None] >> shifts) & 1).astype(np.uint8).reshape(frames, k * bits)
    pad = packet_size(k, bits) * 8 - k * bits
    bit_matrix = np.pad(bit_matrix, ((0, 0), (0, pad)))
    return np.packbits(bit_matrix, axis=1).tobytes()


def unpack_frames(data: bytes, n_q: int, bits: int) -> np.ndarray:
    """Inverse of `pack_frames`: bytes of whole packets -> codes [F, n_q]."""
    size = packet_size(n_q, bits)
    if len(data) % size:
        raise BitstreamError(f"{len(data)} bytes is not a whole number of {size}-byte packets")
    frames = len(data) // size
    bit_matrix = np.unpackbits(np.frombuffer(data, np.uint8).reshape(frames, size), axis=1)
    bit_matrix = bit_matrix[:, : n_q * bits].reshape(frames, n_q, bits).astype(np.int64)
    return (bit_matrix << np.arange(bits - 1, -1, -1)).sum(-1)


def _model_id_bytes(model_id: str) -> bytes:
    raw = model_id.encode("ascii", errors="replace")[:16]
    return raw.ljust(16, b"\0")


def write_stream(out: BinaryIO, header: StreamHeader, codes: np.ndarray) -> None:
    """Write a complete stream (header, packets, trailer) for codes [F, n_q]."""
    if codes.shape != (header.num_frames, header.n_q):
        raise ValueError(f"codes shape {codes.shape} does not match the header")
    fields = (MAGIC, VERSION, _HEADER.size + _CRC.size, header.sample_rate, header.hop_length, header.n_q,
              header.bits_per_code, header.num_samples, header.num_frames, _model_id_bytes(header.model_id))
    head = _HEADER.pack(*fields)
    out.write(head + _CRC.pack(zlib.crc32(head)))
    payload = pack_frames(codes, header.bits_per_code)
    out.write(payload)
    out.write(_CRC.pack(zlib.crc32(payload)))


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise BitstreamError(f"the stream ended sooner than expected (while reading the {what}: "
                             f"{len(data)} of {n} bytes); the file is truncated")
    return data


def read_header(src: BinaryIO) -> StreamHeader:
    raw = src.read(_HEADER.size)
    if len(raw) < 4 or raw[:4] != MAGIC:
        raise BitstreamError("not a codec stream of this project "
                             "(bad magic; expected a file made by 'tts codec encode')")
    if len(raw) < _HEADER.size:
        raise BitstreamError("the stream ended sooner than expected (while reading the header); the file is truncated")
    magic, version, header_len, sr, hop, n_q, bits, n_samples, n_frames, model = _HEADER.unpack(raw)
    if version != VERSION:
        raise BitstreamError(f"stream version {version} is not supported (this build reads version {VERSION})")
    (crc,) = _CRC.unpack(_read_exact(src, _CRC.size, "header"))
    if crc != zlib.crc32(raw) or header_len != _HEADER.size + _CRC.size:
        raise BitstreamError("the header is corrupt (checksum mismatch)")
    if not (0 < n_q <= 64 and 0 < bits <= 16 and sr > 0 and hop > 0) or n_frames != -(-n_samples // hop):
        raise BitstreamError("the header holds impossible values")
    return StreamHeader(sr, hop, n_q, bits, n_samples, n_frames, model.rstrip(b"\0").decode("ascii", "replace"))


def read_stream(src: BinaryIO) -> tuple[StreamHeader, np.ndarray]:
    """Read and verify a whole stream -> (header, codes [F, n_q]).

    Raises:
        BitstreamError: foreign, truncated, corrupt or unsupported input.
    """
    header = read_header(src)
    payload = _read_exact(src, header.num_frames * header.packet_bytes, "packets")
    (crc,) = _CRC.unpack(_read_exact(src, _CRC.size, "trailer"))
    if crc != zlib.crc32(payload):
        raise BitstreamError("the packets are corrupt (checksum mismatch)")
    return header, unpack_frames(payload, header.n_q, header.bits_per_code)
