"""A frame-rate decoder that synthesises the waveform by inverse STFT (Vocos-style), causal.

Why: the SEANet decoder spends its compute on small convolutions at 4-16 kHz,
which are slow on one CPU thread and slow to train. This decoder works at
`hop` resolution (100 Hz for hop 160 at 16 kHz): the latent frames are
upsampled once, a stack of causal ConvNeXt blocks predicts the magnitude and
phase of each short-time spectrum, and an inverse FFT with overlap-add (50 %
Hann, which sums to one) makes the samples. All the work is a few matrix
products per 10 ms.

Phase (`phase`): "absolute" predicts each spectrum's phase from the latent alone. A causal stack
cannot know where a harmonic's phase stands after the frames before, so neighbouring frames
disagree and the upper harmonics cancel into noise (session 19, spectrograms). "integrated"
predicts how far each bin's phase moves per hop (its instantaneous frequency, which the latent
does carry) and sums the moves over time, as a phase vocoder does: the running phase is part of
the streaming state. The moves start at the bins' centre frequencies.

Harmonic source (`harmonics` > 0, codec/modules/harmonic.py): oscillators at a predicted pitch's
multiples make the voiced part; they read the same features, gate the magnitudes (the noise they
replace) and add their samples to the overlap-add's.

Speaker conditioning (`speaker_dim` > 0, codec/modules/speaker.py): a voice's embedding shifts the blocks'
input and scales and shifts the heads' features; with none given, the training voices' mean.

Causality: spectrum t covers output samples [hop * t, hop * t + n_fft), so
output block b is final once spectrum b exists. The decoder's output is the
input delayed by `delay` (= hop) samples: the window of spectrum t is centred
on what the encoder saw up to block t, and nothing has to be predicted ahead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.modules.harmonic import HarmonicSource
from codec.modules.phase import accumulate_phase
from codec.modules.speaker import SpeakerConditioning, offset_layer_norm
from codec.modules.streaming import StreamingModule


def _windowed_inverse_dft(n_fft: int, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices R, I [n_fft / 2 + 1, n_fft] with irfft(re + i im) * window == re @ R + im @ I."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    t = torch.arange(n_fft, dtype=torch.float64)[None]
    weight = torch.full_like(k, 2.0)   # each bin but DC and Nyquist stands for itself and its mirror
    weight[0] = weight[-1] = 1.0
    angle = 2 * torch.pi * k * t / n_fft
    scale = weight / n_fft * window.double()
    return (scale * torch.cos(angle)).float(), (-scale * torch.sin(angle)).float()


class CausalConvNeXtBlock(nn.Module):
    """Depthwise causal conv (kernel k) -> LayerNorm -> pointwise MLP, with a residual."""

    def __init__(self, dim: int, hidden: int, kernel: int = 7) -> None:
        super().__init__()
        self.kernel = kernel
        self.dwconv = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, hidden)
        self.pw2 = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None, norm_offset: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, T]; `history` [B, C, kernel - 1] is the input just before x (zeros at the start);
        `norm_offset` [B, 2, C]: a fitted voice's offsets of the LayerNorm's scale and bias
        (codec/modules/speaker.py). Returns (output, the new history)."""
        if history is None:
            history = x.new_zeros(x.shape[0], x.shape[1], self.kernel - 1)
        padded = torch.cat([history, x], dim=-1)
        if torch.onnx.is_in_onnx_export():  # ONNX has no unfold of a varying length; its conv is fast
            h = self.dwconv(padded).transpose(1, 2)
        else:
            # The depthwise conv as a sum over the kernel's taps: on the few steps of a streaming call
            # this is several times faster than the conv kernel (measured), and identical.
            taps = padded.unfold(-1, self.kernel, 1)                      # [B, C, T, kernel]
            h = torch.einsum("bctk,ck->btc", taps, self.dwconv.weight[:, 0]) + self.dwconv.bias
        h = self.pw2(F.gelu(self.pw1(offset_layer_norm(self.norm, h, norm_offset))))
        return x + (self.scale * h).transpose(1, 2), padded[..., -(self.kernel - 1):]


PHASE_MODES = ("absolute", "integrated")


@dataclass
class _IstftState:
    body: list[torch.Tensor] | None       # `step`'s state (`state_shapes`)
    tail: torch.Tensor | None             # [B, hop] second half of the last spectrum's frame, not yet final
    batch_size: int


class IstftDecoder(StreamingModule):
    """Latent [B, D, F] at the frame rate -> waveform [B, 1, F * upsample * hop], delayed by `hop` samples."""

    def __init__(self, dimension: int, upsample: int, hop: int, dim: int = 256, hidden: int = 768,
                 layers: int = 6, phase: str = "absolute", harmonics: int = 0, sample_rate: int = 16_000,
                 speaker_dim: int = 0) -> None:
        super().__init__()
        if phase not in PHASE_MODES:
            raise ValueError(f"unknown phase mode {phase!r} ({' or '.join(PHASE_MODES)})")
        self.upsample, self.hop, self.n_fft, self.phase = upsample, hop, 2 * hop, phase
        self.inp = nn.Conv1d(dimension, dim * upsample, 1)  # frame -> `upsample` spectra, causal by construction
        self.blocks = nn.ModuleList(CausalConvNeXtBlock(dim, hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 2 * (hop + 1))
        # Optional oscillators at the pitch's multiples (codec/modules/harmonic.py) for the voiced part.
        self.source = HarmonicSource(dim, hop, sample_rate, harmonics) if harmonics else None
        # Optional steering by the voice's speaker embedding (codec/modules/speaker.py).
        self.speaker = SpeakerConditioning(speaker_dim, dim, layers + 1) if speaker_dim else None  # + the heads' norm
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        real, imag = _windowed_inverse_dft(self.n_fft, self.window)
        self.register_buffer("idft_real", real, persistent=False)
        self.register_buffer("idft_imag", imag, persistent=False)
        # A bin's centre frequency moves its phase by 2 pi k hop / n_fft = pi k per hop (mod 2 pi).
        self.register_buffer("centre_advance", torch.pi * (torch.arange(hop + 1) % 2).float(), persistent=False)

    @property
    def delay(self) -> int:
        return self.hop

    def state_shapes(self, batch_size: int = 1) -> list[tuple[int, ...]]:
        """Shapes of `step`'s state: each block's history, then (integrated phase) the running phase, then
        (with a harmonic source) the source's state."""
        shapes = [(batch_size, b.dwconv.in_channels, b.kernel - 1) for b in self.blocks]
        shapes += [(batch_size, self.hop + 1)] if self.phase == "integrated" else []
        return shapes + (self.source.state_shapes(batch_size) if self.source is not None else [])

    def reset_phase_head(self) -> None:
        """Zero the phase half of the output layer: a head switched to integrated phase starts by moving
        every bin at its centre frequency (its old weights meant absolute phases)."""
        with torch.no_grad():
            self.out.weight[self.hop + 1:].zero_()
            self.out.bias[self.hop + 1:].zero_()

    def start_source_from_magnitudes(self, level_db: float = 6.0, replaced: float = 0.9) -> None:
        """Start a harmonic source added to a trained decoder near a good point: its envelope takes the
        magnitude head's shape, `level_db` from the level those magnitudes mean for a sinusoid (a
        bin-centred sinusoid of amplitude A has magnitude A n_fft / 2 here), and in voiced frames it
        replaces a `replaced` share of the noise. Measured with the real pitch on unseen speech
        (session 20): PESQ 1.15 -> 1.55 before any training; the losses then refine it. Starting quiet
        instead, the harmonics never grew: halfway there, the losses are worse than at either end."""
        src = self.source
        shift = math.log(self.n_fft / 2) - level_db / 20 * math.log(10)
        with torch.no_grad():
            src.head.weight[src.envelope_slice] = self.out.weight[: self.hop + 1]
            src.head.bias[src.envelope_slice] = self.out.bias[: self.hop + 1] - shift
            src.head.weight[src.harmonicity_slice] = 0.0
            src.head.bias[src.harmonicity_slice] = math.log(replaced / (1 - replaced))

    def spectra_to_frames(self, h: torch.Tensor, phase: torch.Tensor | None = None,
                          gate: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Normalised features [B, T, dim] -> (windowed time frames [B, T, n_fft], the running phase after
        them [B, bins], each spectrum's phase move from the one before [B, T, bins]); the last two are None
        in absolute mode. `phase`: the running phase before them (integrated mode; zeros at the start).
        `gate` [B, T, bins] scales the magnitudes (a harmonic source's noise gate)."""
        log_mag, phase_out = self.out(h).chunk(2, dim=-1)
        mag = torch.exp(log_mag.clamp(max=10.0))
        if gate is not None:
            mag = mag * gate
        last = steps = None
        if self.phase == "integrated":
            if phase is None:
                phase = h.new_zeros(h.shape[0], self.hop + 1)
            steps = self.centre_advance + phase_out
            phase_out = accumulate_phase(phase[:, None], steps)   # streaming equals offline
            last = phase_out[:, -1]
        # irfft as two matrix products: the same frames (float rounding aside), as fast on a few
        # spectra, and exportable to ONNX, which has no complex numbers.
        frames = (mag * torch.cos(phase_out)) @ self.idft_real + (mag * torch.sin(phase_out)) @ self.idft_imag
        return frames, last, steps

    def hidden(self, z: torch.Tensor, histories: list | None = None, speaker: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, list]:
        """z [B, D, F] -> the features both heads read [B, F * upsample, dim] (the blocks' output, normalised
        and, for a conditioned decoder, modulated), carrying each block's conv history;
        `speaker`: the resolved voices [B, voice_dim] of a conditioned decoder."""
        B, _, Fr = z.shape
        # A kernel-1 conv applied as a matrix product (cheaper per call).
        x = F.linear(z.transpose(1, 2), self.inp.weight[..., 0], self.inp.bias)          # [B, F, dim * up]
        x = x.view(B, Fr, -1, self.upsample).permute(0, 2, 1, 3).reshape(B, -1, Fr * self.upsample)
        norm_offsets: list = [None] * (len(self.blocks) + 1)
        if self.speaker is not None:
            x = self.speaker.shifted(x, speaker)
            norm_offsets = self.speaker.norm_offsets(speaker)
        new_histories = []
        for i, block in enumerate(self.blocks):
            x, hist = block(x, histories[i] if histories else None, norm_offsets[i])
            new_histories.append(hist)
        h = offset_layer_norm(self.norm, x.transpose(1, 2), norm_offsets[-1])
        if self.speaker is not None:
            h = self.speaker.modulated(h, speaker)
        return h, new_histories

    def overlap_add(self, frames: torch.Tensor, tail: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames [B, T, 2 hop] -> (final samples [B, 1, T hop], the unfinished last hop [B, hop])."""
        B, T, _ = frames.shape
        first, second = frames[..., : self.hop], frames[..., self.hop:]
        out = first.clone()
        out[:, 1:] += second[:, :-1]
        if tail is not None:
            out[:, 0] += tail
        return out.reshape(B, 1, T * self.hop), second[:, -1]

    def _init_state(self, batch_size: int) -> _IstftState:
        return _IstftState(None, None, batch_size)

    def flush(self) -> torch.Tensor:
        """End of a stream: the last `delay` samples (`ending`), [B, 1, hop]; nothing before the first frame."""
        if self._state is None:
            raise RuntimeError("flush() needs streaming mode")
        tail, self._state.tail = self._state.tail, None
        if tail is None:
            return torch.zeros(self._state.batch_size, 1, 0)
        return self.ending(tail, self._state.body)

    def ending(self, tail: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        """The samples after a stream's last frame, [B, 1, hop], from `step`'s tail and state: the second
        half of the last ISTFT frame, fading out, and a harmonic source's fade (`HarmonicSource.fade_out`)."""
        if self.source is None:
            return tail[:, None]
        return (tail + self.source.fade_out(self._source_state(state)))[:, None]

    def _source_state(self, state: list | None) -> list | None:
        """The harmonic source's part of `step`'s state (`state_shapes` puts it last); None before a stream."""
        return state[len(state) - len(self.source.state_shapes()):] if state else None

    def step(self, z: torch.Tensor, tail: torch.Tensor | None, state: list | None,
             speaker: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
        """One streaming call as a pure function (also what codec/onnx_runtime.py exports):
        (z [B, D, F], overlap tail, state of `state_shapes`) -> (audio [B, 1, F * upsample * hop], tail, state).
        `speaker`: the voice's embedding, for a conditioned decoder (else its default; ignored by others)."""
        audio, tail, state, _ = self._decode(z, tail, state, speaker=speaker)
        return audio, tail, state

    def _decode(self, z: torch.Tensor, tail: torch.Tensor | None, state: list | None,
                teacher_pitch: torch.Tensor | None = None, speaker: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list, dict[str, torch.Tensor | None]]:
        """`step`, plus the trainer's extras: the phase moves (integrated mode), the harmonic source's
        pitch and voicing logits (with a source); None where the decoder has none. A harmonic
        source sounds at `teacher_pitch` [B, F * upsample] where given (training) instead of its own."""
        n = len(self.blocks)
        if self.speaker is not None:
            speaker = self.speaker.resolve(speaker, z.shape[0])
        h, histories = self.hidden(z, state[:n] if state else None, speaker)
        rest = state[n:] if state else []
        integrated = self.phase == "integrated"
        extras: dict[str, torch.Tensor | None] = {"phase_steps": None, "pitch_logits": None, "voicing": None,
                                                  "log_amplitudes": None}
        source = self.source.predict(h, teacher_pitch) if self.source is not None else None
        frames, phase, extras["phase_steps"] = self.spectra_to_frames(
            h, rest[0] if rest and integrated else None, source.noise_gate if source is not None else None)
        audio, tail = self.overlap_add(frames, tail)
        new_state = histories + ([phase] if integrated else [])
        if source is not None:
            voiced, source_state = self.source.synthesize(source.sounded, source.amplitudes,
                                                          self._source_state(state))
            audio = audio + voiced[:, None]
            new_state += source_state
            extras.update(pitch_logits=source.pitch_logits, voicing=source.voicing,
                          log_amplitudes=source.log_amplitudes)
        return audio, tail, new_state, extras

    def forward(self, z: torch.Tensor, with_extras: bool = False, teacher_pitch: torch.Tensor | None = None,
                speaker: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        """z [B, D, F] -> audio [B, 1, F * upsample * hop]; offline, `with_extras` also returns the
        trainer's extras (`_decode`): phase moves [B, F * upsample, bins], pitch logits, voicing logits,
        the source's log amplitudes.
        `teacher_pitch`: the trainer's (`_decode`). `speaker`: see `step`."""
        if self._state is None:
            audio, _, _, extras = self._decode(z, None, None, teacher_pitch, speaker)
            return (audio, extras) if with_extras else audio
        if with_extras or teacher_pitch is not None:
            raise ValueError("the trainer's extras come from an offline pass")
        out, self._state.tail, self._state.body = self.step(z, self._state.tail, self._state.body, speaker)
        return out
