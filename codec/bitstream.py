"""The codec's bitstream: a versioned header and one fixed-size packet per frame.

File layout (all integers big-endian):

    header   magic "STTC" | version u8 | header length u16 (all of it, CRC included) | fixed fields:
             sample_rate u32 | hop_length u16 | n_q u8 | bits_per_code u8 |
             num_samples u64 | num_frames u32 | model id (16 bytes, ASCII, zero-padded) |
             voice dims u16, and when it is not 0 a voice block:
                 speaker encoder id (16 bytes, ASCII) | scale f32 | dims x int8 |
             header CRC32 u32
    packets  num_frames packets of ceil(n_q * bits / 8) bytes: frame f's codes
             c[0..n_q) packed MSB-first, bits_per_code bits each
    trailer  CRC32 u32 of all packets

A packet holds everything needed to decode its frame, so the same packets can
travel one by one over a network (the transport then supplies integrity and
sequence numbers); the trailer CRC protects files on disk.

The voice (version 2) is the speaker embedding of the encoded audio, for a decoder
that follows the voice (codec/modules/speaker.py): without it such a decoder speaks in
its default voice. It is sent once, not per frame: 214 bytes for the 192-d embedding,
stored as int8 levels of a per-vector scale, which decode as well as the floats (session
36: PESQ-WB 2.110 against 2.112 on 40 unseen clips). A voice fitted to the audio
(codec/voice_fit.py) takes the same block with more levels: 4 566 bytes for the shipped
decoder's 4 544. Version 1 streams, which have no voice field, are still read.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"STTC"
VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_VOICE_DIMS = 8192
_HEADER = struct.Struct("!4sBHIHBBQI16s")
_VOICE_DIMS = struct.Struct("!H")
_VOICE = struct.Struct("!16sf")   # speaker encoder id, scale; the int8 levels follow
_CRC = struct.Struct("!I")


class BitstreamError(ValueError):
    """The input is not a valid stream of this codec (foreign, corrupt, truncated or unsupported)."""


@dataclass(frozen=True)
class StreamVoice:
    """A voice as a stream carries it: int8 levels of the embedding over `scale` (its largest magnitude)."""
    encoder_id: str
    scale: float
    levels: bytes

    @classmethod
    def of(cls, embedding: np.ndarray, encoder_id: str) -> "StreamVoice":
        """Store `embedding` (from speaker encoder `encoder_id`) at 8 bits a dimension."""
        embedding = np.asarray(embedding, dtype=np.float32).ravel()
        if not 0 < embedding.size <= MAX_VOICE_DIMS or not np.isfinite(embedding).all():
            raise ValueError(f"a stream's voice is a finite embedding of 1 to {MAX_VOICE_DIMS} dimensions")
        scale = float(np.float32(np.abs(embedding).max()) or 1.0)
        levels = np.round(embedding / scale * 127).astype(np.int8)
        return cls(encoder_id, scale, levels.tobytes())

    @property
    def embedding(self) -> np.ndarray:
        return np.frombuffer(self.levels, np.int8).astype(np.float32) * np.float32(self.scale / 127)

    def pack(self) -> bytes:
        return _VOICE_DIMS.pack(len(self.levels)) + _VOICE.pack(_model_id_bytes(self.encoder_id), self.scale) \
            + self.levels


@dataclass(frozen=True)
class StreamHeader:
    sample_rate: int
    hop_length: int
    n_q: int
    bits_per_code: int
    num_samples: int
    num_frames: int
    model_id: str
    voice: StreamVoice | None = None   # the encoded audio's voice, for a decoder that follows one

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
    voice = header.voice.pack() if header.voice is not None else _VOICE_DIMS.pack(0)
    fields = (MAGIC, VERSION, _HEADER.size + len(voice) + _CRC.size, header.sample_rate, header.hop_length,
              header.n_q, header.bits_per_code, header.num_samples, header.num_frames,
              _model_id_bytes(header.model_id))
    head = _HEADER.pack(*fields) + voice
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
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"stream version {version} is not supported (this build reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
    voice_raw = b""
    if version >= 2:
        voice_raw = _read_exact(src, _VOICE_DIMS.size, "header")
        (dims,) = _VOICE_DIMS.unpack(voice_raw)
        if dims:   # bounded before it is read: a corrupt size must not make us read (or wait for) megabytes
            block = _VOICE.size + dims
            if dims > MAX_VOICE_DIMS or header_len != _HEADER.size + _VOICE_DIMS.size + block + _CRC.size:
                raise BitstreamError("the header is corrupt (its voice block has an impossible size)")
            voice_raw += _read_exact(src, block, "header")
    (crc,) = _CRC.unpack(_read_exact(src, _CRC.size, "header"))
    if crc != zlib.crc32(raw + voice_raw) or header_len != _HEADER.size + len(voice_raw) + _CRC.size:
        raise BitstreamError("the header is corrupt (checksum mismatch)")
    if not (0 < n_q <= 64 and 0 < bits <= 16 and sr > 0 and hop > 0) or n_frames != -(-n_samples // hop):
        raise BitstreamError("the header holds impossible values")
    voice = None
    if len(voice_raw) > _VOICE_DIMS.size:
        encoder_id, scale = _VOICE.unpack_from(voice_raw, _VOICE_DIMS.size)
        if not (np.isfinite(scale) and scale > 0):
            raise BitstreamError("the header holds impossible values (its voice's scale)")
        voice = StreamVoice(_ascii_id(encoder_id), scale, voice_raw[_VOICE_DIMS.size + _VOICE.size:])
    return StreamHeader(sr, hop, n_q, bits, n_samples, n_frames, _ascii_id(model), voice)


def _ascii_id(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


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
