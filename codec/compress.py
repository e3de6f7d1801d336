"""File-level API: WAV <-> codec stream, as used by `tts codec encode / decode`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codec.bitstream import BitstreamError, StreamHeader, read_stream, write_stream
from codec.model import CodecModel
from tts.audio import read_audio, resample, write_audio


def compress_audio(model: CodecModel, samples: np.ndarray, sample_rate: int,
                   kbps: float) -> tuple[StreamHeader, np.ndarray]:
    """Encode mono samples at any rate -> (header, codes [F, n_q])."""
    audio = resample(samples, sample_rate, model.sample_rate)
    n_q = model.config.n_q_for_kbps(kbps)
    codes = model.encode(torch.from_numpy(audio)[None, None], n_q)[0].T.numpy()
    header = StreamHeader(model.sample_rate, model.hop_length, n_q, model.config.bits_per_code,
                          len(audio), codes.shape[0], model.tokens_id)
    return header, codes


def require_tokens(model: CodecModel, tokens_id: str, source: str) -> None:
    """Refuse codes made with another token vocabulary: they would decode into noise.

    A decoder fine-tuned on the same vocabulary keeps its tokens id and decodes them.
    Raises BitstreamError naming `source` (a file's stream, a server's stream).
    """
    if tokens_id != model.tokens_id:
        raise BitstreamError(f"{source} was made by codec tokens {tokens_id}, this codec's are {model.tokens_id}")


def decompress_codes(model: CodecModel, header: StreamHeader, codes: np.ndarray,
                     speaker: np.ndarray | None = None) -> np.ndarray:
    """(header, codes [F, n_q]) -> mono float32 samples at the model's rate, original length; `speaker`: the
    voice's embedding, which a speaker-conditioned decoder follows (see `CodecModel.decode`)."""
    if (header.sample_rate, header.hop_length) != (model.sample_rate, model.hop_length):
        raise BitstreamError(f"stream made for {header.sample_rate} Hz / hop {header.hop_length}, "
                             f"this model is {model.sample_rate} Hz / hop {model.hop_length}")
    if header.n_q > model.config.n_q or header.bits_per_code != model.config.bits_per_code:
        raise BitstreamError(f"stream uses {header.n_q} quantizers of {header.bits_per_code} bits; "
                             f"this model has {model.config.n_q} of {model.config.bits_per_code}")
    if codes.size and codes.max() >= model.config.card:
        raise BitstreamError("stream holds codes outside this model's codebooks")
    audio = model.decode_aligned(torch.from_numpy(codes.T.copy())[None], speaker)[0, 0].numpy()
    return audio[: header.num_samples]


def encode_file(model: CodecModel, wav_in: str | Path, stream_out: str | Path, kbps: float) -> StreamHeader:
    audio = read_audio(wav_in)
    header, codes = compress_audio(model, audio.samples, audio.sample_rate, kbps)
    tmp = Path(str(stream_out) + ".part")
    try:
        with open(tmp, "wb") as f:
            write_stream(f, header, codes)
    except BaseException:
        tmp.unlink(missing_ok=True)   # a failed write leaves neither half a stream nor a stray .part
        raise
    tmp.replace(stream_out)
    return header


def decode_file(model: CodecModel, stream_in: str | Path, wav_out: str | Path) -> StreamHeader:
    """Raises BitstreamError for foreign, truncated or corrupt input (nothing is written then)."""
    with open(stream_in, "rb") as f:
        header, codes = read_stream(f)
    require_tokens(model, header.model_id, "stream")
    write_audio(wav_out, decompress_codes(model, header, codes), model.sample_rate)
    return header
