"""The codec model: encoder -> residual VQ -> decoder, offline or streaming."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from codec.config import CodecConfig
from codec.modules.conv import StreamingContractError
from codec.modules.istft import IstftDecoder
from codec.modules.seanet import Decoder, Encoder
from codec.modules.streaming import StreamingModule
from codec.quantization.vq import QuantizedResult, ResidualVectorQuantizer


class InvalidCodesError(ValueError):
    """Codes out of range or of the wrong shape (they would crash or produce noise)."""


def build_decoder(config: CodecConfig) -> nn.Module:
    """The decoder `config.decoder` names (see CodecConfig)."""
    if config.decoder == "seanet":
        return Decoder(config.channels, config.strides, config.dimension, config.max_channels)
    if config.decoder == "istft":
        if config.hop_length % config.decoder_hop:
            raise ValueError(f"decoder_hop {config.decoder_hop} must divide the hop length {config.hop_length}")
        return IstftDecoder(config.dimension, config.hop_length // config.decoder_hop, config.decoder_hop,
                            config.decoder_dim, config.decoder_hidden, config.decoder_layers, config.decoder_phase,
                            config.decoder_harmonics, config.sample_rate, config.decoder_speaker_dim)
    raise ValueError(f"unknown decoder {config.decoder!r} (seanet or istft)")


class CodecModel(StreamingModule):
    """SoundStream-style codec. Shapes: audio [B, 1, T], codes [B, K, F], F = T / hop_length.

    Streaming: inside `with model.streaming(batch_size):` each call to
    `encode` / `decode` continues where the previous one stopped; chunks must be
    whole frames (multiples of `hop_length` samples).
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.model_id = "untrained"  # content hash, set by the loader
        self.tokens_id = "untrained"  # id of the token vocabulary (codec/loaders.py), set by the loader
        self.speaker_encoder_id = ""  # a conditioned decoder's speaker encoder (codec/loaders.py), set by the loader
        self.encoder = Encoder(config.channels, config.strides, config.dimension, config.max_channels)
        self.quantizer = ResidualVectorQuantizer(config.dimension, config.n_q, config.card, config.ema_decay)
        self.decoder = build_decoder(config)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def speaker_conditioned(self) -> bool:
        """Whether the decoder is steered by a voice's speaker embedding (codec/modules/speaker.py)."""
        return getattr(self.decoder, "speaker", None) is not None

    def _voice(self, speaker: torch.Tensor | np.ndarray | None) -> dict:
        """The decoder's `speaker` option: the embedding for a conditioned decoder; nothing for the others,
        which decode every voice alike."""
        if speaker is None or not self.speaker_conditioned:
            return {}
        return {"speaker": torch.as_tensor(speaker, dtype=torch.float32)}

    @property
    def delay(self) -> int:
        """Samples by which decoded audio lags the input (0 for the SEANet decoder)."""
        return getattr(self.decoder, "delay", 0)

    def align(self, decoded: torch.Tensor, original: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoded, original) cut to the samples that correspond, the decoder's delay removed."""
        n = min(decoded.shape[-1], original.shape[-1]) - self.delay
        return decoded[..., self.delay: self.delay + n], original[..., :n]

    def _pad_to_frames(self, audio: torch.Tensor) -> torch.Tensor:
        rest = audio.shape[-1] % self.hop_length
        if rest and self.is_streaming:
            raise StreamingContractError(
                f"streaming chunks must be a multiple of {self.hop_length} samples; got {audio.shape[-1]}")
        return nn.functional.pad(audio, (0, self.hop_length - rest)) if rest else audio

    def forward(self, audio: torch.Tensor, n_q: torch.Tensor | int | None = None,
                **decoder_options) -> tuple[torch.Tensor, QuantizedResult]:
        """Training/analysis pass: (reconstruction [B, 1, T'], quantizer result). `decoder_options` go to
        the decoder (the ISTFT decoder's `with_extras` and `teacher_pitch`; the reconstruction is then its
        (audio, extras))."""
        result = self.quantize(audio, n_q)
        return self.decoder(result.quantized, **decoder_options), result

    def latent(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 1, T] -> the encoder's continuous latent [B, D, ceil(T / hop)], before any codebook."""
        return self.encoder(self._pad_to_frames(audio))

    def quantize(self, audio: torch.Tensor, n_q: torch.Tensor | int | None = None) -> QuantizedResult:
        """Encoder and residual VQ of the training pass (per-example `n_q`: quantizer dropout)."""
        return self.quantizer(self.latent(audio), n_q)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, n_q: int, chunk_frames: int | None = None) -> torch.Tensor:
        """audio [B, 1, T] -> codes [B, n_q, ceil(T / hop)]; offline input is zero-padded to whole frames.

        `chunk_frames` (offline only): encode `chunk_frames` frames at a time, streaming, so a long
        file's memory stays that of one chunk (streaming equals offline)."""
        if not 1 <= n_q <= self.config.n_q:
            raise ValueError(f"n_q must be between 1 and {self.config.n_q}; got {n_q}")
        if chunk_frames and not self.is_streaming:
            audio = self._pad_to_frames(audio)
            step = chunk_frames * self.hop_length
            with self.streaming(audio.shape[0]):
                parts = [self.encode(audio[..., i:i + step], n_q) for i in range(0, audio.shape[-1], step)]
            return torch.cat(parts, dim=-1) if parts else audio.new_zeros(audio.shape[0], n_q, 0, dtype=torch.long)
        return self.quantizer.encode(self.latent(audio), n_q)

    def validate_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.config.n_q:
            raise InvalidCodesError(
                f"codes must be [B, K, F] with 1 <= K <= {self.config.n_q}; got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.card):
            raise InvalidCodesError(f"codes must lie in [0, {self.config.card})")

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, speaker: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """codes [B, K, F] -> audio [B, 1, F * hop_length]. `speaker`: the voice's embedding ([E] or [B, E]),
        which a speaker-conditioned decoder follows (without it: the training voices' mean); others ignore it."""
        self.validate_codes(codes)
        return self.decoder(self.quantizer.decode(codes.long()), **self._voice(speaker))

    @torch.no_grad()
    def decode_aligned(self, codes: torch.Tensor, speaker: torch.Tensor | np.ndarray | None = None,
                       chunk_frames: int | None = None) -> torch.Tensor:
        """codes [B, K, F] -> audio [B, 1, F * hop_length] in step with the encoder's input (`speaker`: `decode`'s).

        The decoder's delay is removed and the samples it holds back at the end
        are appended: the same samples a streamed decode (tts/stream) gives.
        `chunk_frames`: decode that many frames a call, so a long file's memory stays that of one chunk.
        """
        if not codes.shape[-1]:   # an empty stream is silence, not a decoder call on nothing
            self.validate_codes(codes)
            return torch.zeros(codes.shape[0], 1, 0)
        step = chunk_frames or codes.shape[-1]
        with self.streaming(codes.shape[0]):
            audio = torch.cat([self.decode(codes[..., i:i + step], speaker)
                               for i in range(0, codes.shape[-1], step)], dim=-1)
            held = self.flush_decoder()
        if held is not None:
            audio = torch.cat([audio, held.to(audio)], dim=-1)
        return audio[..., self.delay:]

    @torch.no_grad()
    def flush_decoder(self) -> torch.Tensor | None:
        """In streaming mode, at the end of a stream: the `delay` samples the decoder still holds, [B, 1, delay].

        None for a decoder without delay, which holds nothing back.
        """
        flush = getattr(self.decoder, "flush", None)
        return flush() if flush is not None else None

    def remove_weight_norm(self) -> "CodecModel":
        """Fold weight normalisation into plain weights: same output, no per-call recomputation."""
        for module in self.modules():
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations.keys()):
                    parametrize.remove_parametrizations(module, name)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
