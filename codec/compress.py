"""File-level API: WAV <-> codec stream, as used by `tts codec encode / decode`.

A decoder that follows the voice (codec/modules/speaker.py) gets it from the stream: the
encoder side embeds the input with the speaker encoder the decoder follows and the header
carries it (codec/bitstream.py), so a file decodes in its own voice, not the default one.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from codec.bitstream import BitstreamError, StreamHeader, StreamVoice, read_stream, write_stream
from codec.model import CodecModel
from codec.voice_fit import VoiceFitOptions, fit_decoder_voice
from tts.audio import read_audio, resample, write_audio

if TYPE_CHECKING:
    from voice.encoder import SpeakerEncoder

# Files are encoded and decoded this many frames a call (10 s at 25 Hz), streaming: memory stays that of
# one chunk whatever a file's length (offline, a 10-minute file took 3.4 GB to encode and 3.9 GB to decode).
CHUNK_FRAMES = 250
# A stream's voice is the embedding of its first 30 s: the speaker encoder averages windows, and
# three enrollment clips' worth is as steady as it gets; a longer file would add time, not accuracy.
VOICE_SECONDS = 30.0
# The name a codec stream file goes by (`tts client say --out reply.sttc` keeps the server's packets in one).
STREAM_SUFFIX = ".sttc"


def stream_voice(model: CodecModel, audio: np.ndarray, encoder: SpeakerEncoder | None,
                 fit: VoiceFitOptions | None = None) -> StreamVoice | None:
    """The voice a stream of `audio` (at the model's rate) carries for `model`'s decoder; with `fit`, that
    voice fitted to the audio's first seconds (codec/voice_fit.py: 4 544 levels instead of 192).

    None where it would not be used: a decoder that follows no voice or another speaker
    encoder's, no `encoder`, or audio with under half a second of sound to embed.
    """
    if encoder is None or not model.speaker_conditioned or encoder.model_id != model.speaker_encoder_id:
        return None
    try:
        embedding = encoder.embed(audio[:int(VOICE_SECONDS * model.sample_rate)], model.sample_rate)
    except ValueError:   # too little sound: the decoder's default voice serves
        return None
    if fit is not None and len(audio) >= model.sample_rate:   # under 1 s there is too little to fit to
        embedding = fit_decoder_voice(model, audio, embedding, fit)
    return StreamVoice.of(embedding, encoder.model_id)


def compress_audio(model: CodecModel, samples: np.ndarray, sample_rate: int, kbps: float,
                   encoder: SpeakerEncoder | None = None, fit: VoiceFitOptions | None = None,
                   voice: StreamVoice | None = None) -> tuple[StreamHeader, np.ndarray]:
    """Encode mono samples at any rate -> (header, codes [F, n_q]); the header carries `voice` where given (an
    enrolled voice, say), else with the speaker `encoder` that a speaker-conditioned decoder follows the audio's
    own voice (`stream_voice`, fitted with `fit`)."""
    audio = resample(samples, sample_rate, model.sample_rate)
    n_q = model.config.n_q_for_kbps(kbps)
    codes = model.encode(torch.from_numpy(audio)[None, None], n_q, CHUNK_FRAMES)[0].T.numpy()
    if voice is None:
        voice = stream_voice(model, audio, encoder, fit)
    header = StreamHeader(model.sample_rate, model.hop_length, n_q, model.config.bits_per_code,
                          len(audio), codes.shape[0], model.tokens_id, voice)
    return header, codes


def header_voice(model: CodecModel, header: StreamHeader) -> np.ndarray | None:
    """The stream's voice as `model`'s decoder takes it, or None (its default voice) where the stream has none,
    the decoder follows no voice, or the voice comes from another speaker encoder than the decoder's."""
    voice = header.voice
    return None if voice is None else followed_voice(model, voice.embedding, voice.encoder_id)


def followed_voice(model: CodecModel, embedding: np.ndarray, encoder_id: str) -> np.ndarray | None:
    """`embedding` (from speaker encoder `encoder_id`) where `model`'s decoder follows that encoder's voices, else
    None (its default voice): a decoder that follows no voice, another encoder, or voices of another size (a
    voice fitted to a clip, codec/voice_fit.py, is also followed).
    Shared by stream files (`header_voice`) and a server's codec packets (`tts client say`)."""
    if not model.speaker_conditioned or encoder_id != model.speaker_encoder_id:
        return None
    embedding = np.asarray(embedding, dtype=np.float32)
    return embedding if embedding.size in model.decoder.speaker.voice_sizes else None  # an embedding or a fitted voice


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
    voice's embedding, which a speaker-conditioned decoder follows (see `CodecModel.decode`); without it, the
    stream's own voice where it carries one (`header_voice`)."""
    if (header.sample_rate, header.hop_length) != (model.sample_rate, model.hop_length):
        raise BitstreamError(f"stream made for {header.sample_rate} Hz / hop {header.hop_length}, "
                             f"this model is {model.sample_rate} Hz / hop {model.hop_length}")
    if header.n_q > model.config.n_q or header.bits_per_code != model.config.bits_per_code:
        raise BitstreamError(f"stream uses {header.n_q} quantizers of {header.bits_per_code} bits; "
                             f"this model has {model.config.n_q} of {model.config.bits_per_code}")
    if codes.size and codes.max() >= model.config.card:
        raise BitstreamError("stream holds codes outside this model's codebooks")
    if speaker is None:
        speaker = header_voice(model, header)
    audio = model.decode_aligned(torch.from_numpy(codes.T.copy())[None], speaker, CHUNK_FRAMES)[0, 0].numpy()
    return audio[: header.num_samples]


def encode_file(model: CodecModel, wav_in: str | Path, stream_out: str | Path, kbps: float,
                encoder: SpeakerEncoder | None = None, fit: VoiceFitOptions | None = None,
                voice: StreamVoice | None = None) -> StreamHeader:
    """`compress_audio` into a file, written whole or not at all; `encoder`, `fit`, `voice`: see `compress_audio`."""
    audio = read_audio(wav_in)
    header, codes = compress_audio(model, audio.samples, audio.sample_rate, kbps, encoder, fit, voice)
    write_stream_file(stream_out, header, codes)
    return header


def write_stream_file(path: str | Path, header: StreamHeader, codes: np.ndarray) -> None:
    """`write_stream` into a file, written whole or not at all."""
    tmp = Path(str(path) + ".part")
    try:
        with open(tmp, "wb") as f:
            write_stream(f, header, codes)
    except BaseException:
        tmp.unlink(missing_ok=True)   # a failed write leaves neither half a stream nor a stray .part
        raise
    tmp.replace(path)


def decode_file(model: CodecModel, stream_in: str | Path, wav_out: str | Path,
                voice: np.ndarray | None = None) -> StreamHeader:
    """Decodes in `voice` where given (an enrolled voice the listener holds), else in the stream's voice where it
    carries one for this decoder.

    Raises BitstreamError for foreign, truncated or corrupt input (nothing is written then)."""
    with open(stream_in, "rb") as f:
        header, codes = read_stream(f)
    require_tokens(model, header.model_id, "stream")
    write_audio(wav_out, decompress_codes(model, header, codes, voice), model.sample_rate)
    return header
