"""A voice's speaker embedding steering the ISTFT decoder (`CodecConfig.decoder_speaker_dim`).

Why: what the codec loses on a voice it never heard is its spectral envelope (docs/history/codec.md,
sessions 32-33), and more bits cannot bring it back: the encoder maps a new voice onto the training
voices. In speech synthesis the voice is known before the first frame (the enrolled embedding that
conditions the backbone, voice/encoder.py), so the decoder can be told it. The embedding is added to the
features the decoder's blocks read and scales and shifts (FiLM) the features its heads read.

Both layers start at zero, so a conditioned decoder made from a trained one starts as exactly that decoder.
Where no voice is given (a bitstream decoded by `tts codec decode`), the decoder hears `default`: the
mean of the training voices' embeddings, which the trainer stores (a buffer, saved with the weights).

A voice may also come fitted (codec/voice_fit.py): the embedding followed by offsets of the shift and of
the FiLM the layers make of it, then offsets of the scale and bias of each LayerNorm of the decoder (`norms`
of them: one per block, then the heads'), `voice_dim` numbers in all, found by gradient steps on a clip of
the voice. A plain embedding is the fitted form with zero offsets, and so is a shorter fitted voice
(session 42's had no LayerNorm offsets): it is padded.
"""
from __future__ import annotations

import torch
from torch import nn


class SpeakerConditioning(nn.Module):
    """Speaker embedding [B, speaker_dim] -> a shift of the blocks' input and a FiLM of the heads' features."""

    def __init__(self, speaker_dim: int, dim: int, norms: int = 0) -> None:
        super().__init__()
        self.norms = norms   # LayerNorms whose scale and bias a fitted voice offsets (no weights: offsets only)
        self.shift = nn.Linear(speaker_dim, dim)
        self.film = nn.Linear(speaker_dim, 2 * dim)
        for layer in (self.shift, self.film):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("default", torch.zeros(speaker_dim))

    @property
    def speaker_dim(self) -> int:
        return self.shift.in_features

    @property
    def head_dim(self) -> int:
        """Size of a fitted voice without LayerNorm offsets: the embedding, then offsets of the shift and the FiLM."""
        return self.speaker_dim + self.shift.out_features + self.film.out_features

    @property
    def voice_dim(self) -> int:
        """Size of a fitted voice: `head_dim`, then each LayerNorm's scale and bias offsets."""
        return self.head_dim + self.norms * self.film.out_features

    @property
    def voice_sizes(self) -> tuple[int, ...]:
        """The sizes of voice `resolve` takes: an embedding, a voice fitted without LayerNorm offsets, a whole one."""
        return tuple(sorted({self.speaker_dim, self.head_dim, self.voice_dim}))

    def resolve(self, speaker: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """The voices to condition on in their fitted form, [B, voice_dim]: `speaker` (an embedding,
        [speaker_dim] or [B, speaker_dim], or a fitted voice, [S] or [B, S] for a size S of `voice_sizes`),
        or `default` for every row where none is given; the offsets a voice lacks are zero.

        Raises:
            ValueError: a voice of the wrong size.
        """
        speaker = self.default if speaker is None else speaker.to(self.default)
        speaker = speaker.reshape(-1, speaker.shape[-1])
        if speaker.shape[-1] not in self.voice_sizes or speaker.shape[0] not in (1, batch_size):
            raise ValueError(f"a voice for this decoder is an embedding, [{self.speaker_dim}] or "
                             f"[{batch_size}, {self.speaker_dim}], or a fitted voice of "
                             f"{' or '.join(map(str, self.voice_sizes[1:]))}; got {tuple(speaker.shape)}")
        speaker = nn.functional.pad(speaker, (0, self.voice_dim - speaker.shape[-1]))
        return speaker.expand(batch_size, -1)

    def _parts(self, voice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return voice[..., :self.head_dim].split([self.speaker_dim, self.shift.out_features,
                                                 self.film.out_features], dim=-1)

    def norm_offsets(self, voice: torch.Tensor) -> list[torch.Tensor]:
        """Each LayerNorm's offsets in the resolved `voice` [B, voice_dim]: [B, 2, dim] (scale, bias)."""
        offsets = voice[..., self.head_dim:].unflatten(-1, (self.norms, 2, -1))
        return list(offsets.unbind(1))

    def shifted(self, x: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        """The blocks' input x [B, dim, T] plus the voice's shift (the same at every step)."""
        embedding, shift_offset, _ = self._parts(voice)
        return x + (self.shift(embedding) + shift_offset)[:, :, None]

    def modulated(self, h: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        """The heads' features h [B, T, dim], scaled and shifted for the voice."""
        embedding, _, film_offset = self._parts(voice)
        scale, bias = (self.film(embedding) + film_offset).chunk(2, dim=-1)
        return h * (1 + scale[:, None]) + bias[:, None]

    @torch.no_grad()
    def set_default(self, voice: torch.Tensor) -> None:
        """`default` := this voice [speaker_dim] (the trainer's: the training voices' normalised mean)."""
        self.default.copy_(voice)


def offset_layer_norm(norm: nn.LayerNorm, x: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """`norm`(x) for x [B, T, dim], its scale and bias moved by a fitted voice's `offset` [B, 2, dim] where given."""
    if offset is None:
        return norm(x)
    scale, bias = norm.weight + offset[:, 0], norm.bias + offset[:, 1]
    return nn.functional.layer_norm(x, norm.normalized_shape, eps=norm.eps) * scale[:, None] + bias[:, None]
