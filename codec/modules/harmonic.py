"""A harmonic source for the ISTFT decoder: a bank of oscillators at the multiples of a predicted pitch.

Why: a 20-ms inverse STFT cannot resolve a 100-Hz voice's harmonics, and a causal decoder trained on
spectra puts noise where they should be (session 19: harmonics only below ~500 Hz, PESQ 1.3). Speech's
voiced part is a sum of sinusoids at k f0; synthesising them directly (the harmonic-plus-noise model of
DDSP, Engel et al. 2020) makes them coherent by construction, and the spectral losses then only have to
learn their amplitudes. The ISTFT path stays as the noise (aperiodic) part. The pitch is supervised by
the clean audio's (codec/pitch.py); the amplitudes follow a spectral envelope sampled at k f0.

Timing: parameters come per spectrum (every `hop` samples), spectrum t centred on output sample
hop (t + 1) (istft.py). Output block t, samples [hop t, hop (t + 1)), ramps the parameters from
spectrum t - 1 to spectrum t, so it is final once spectrum t exists: causal, no look-ahead. The
oscillator phase, summed in float64 and wrapped, and the last spectrum's parameters are the
streaming state.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class HarmonicSource(nn.Module):
    """Decoder features [B, T, dim] -> (voiced waveform [B, T hop], pitch predictions), streaming by state."""

    def __init__(self, dim: int, hop: int, sample_rate: int, n_harmonics: int,
                 f0_min: float = 50.0, f0_max: float = 500.0) -> None:
        super().__init__()
        self.hop, self.sample_rate, self.n_harmonics = hop, sample_rate, n_harmonics
        self.f0_min, self.f0_max = f0_min, f0_max
        self.envelope_bins = hop + 1          # the ISTFT's frequency grid, 0 .. sample_rate / 2
        self.head = nn.Linear(dim, 2 + self.envelope_bins)   # [log-f0 logit, voicing logit, log-envelope]
        with torch.no_grad():   # start quiet: the decoder it joins begins as it was
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias[2:] = -9.0
        self.register_buffer("harmonic_numbers", torch.arange(1, n_harmonics + 1).float(), persistent=False)
        self.register_buffer("ramp", torch.arange(1, hop + 1).float() / hop, persistent=False)

    def state_shapes(self, batch_size: int = 1) -> list[tuple[int, ...]]:
        """[oscillator phase, last f0 (0: none yet), last harmonic amplitudes]."""
        return [(batch_size, 1), (batch_size, 1), (batch_size, self.n_harmonics)]

    def predict(self, h: torch.Tensor, pitch: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [B, T, dim] -> (predicted f0 Hz [B, T], voicing logit [B, T], harmonic amplitudes [B, T, n_harmonics],
        the f0 they sound at [B, T]): the predicted one, or `pitch` where given (the trainer's teacher pitch).

        The amplitudes take f0 detached: the pitch learns from its target alone (a spectral loss's
        gradient with respect to an oscillator's frequency points anywhere)."""
        out = self.head(h)
        f0 = self.f0_min * (self.f0_max / self.f0_min) ** torch.sigmoid(out[..., 0])
        voicing = out[..., 1]
        sounded = f0.detach() if pitch is None else pitch
        freqs = sounded[..., None] * self.harmonic_numbers                         # [B, T, H]
        position = (freqs / (self.sample_rate / 2) * (self.envelope_bins - 1)).clamp(max=self.envelope_bins - 1)
        below = position.floor().long().clamp(max=self.envelope_bins - 2)
        frac = position - below
        log_env = out[..., 2:]
        log_amp = torch.lerp(log_env.gather(-1, below), log_env.gather(-1, below + 1), frac)
        audible = (freqs < 0.95 * self.sample_rate / 2).float()                  # no aliasing
        amplitudes = torch.exp(log_amp.clamp(max=5.0)) * torch.sigmoid(voicing)[..., None] * audible
        return f0, voicing, amplitudes, sounded

    def synthesize(self, f0: torch.Tensor, amplitudes: torch.Tensor, state: list[torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(f0 [B, T], amplitudes [B, T, H]) -> (samples [B, T hop], the new state of `state_shapes`)."""
        B, T = f0.shape
        if state is None:
            state = [f0.new_zeros(shape) for shape in self.state_shapes(B)]
        phase, last_f0, last_amp = state
        last_f0 = torch.where(last_f0 > 0, last_f0, f0[:, :1])    # a stream's first block holds its pitch
        prev_f0 = torch.cat([last_f0, f0[:, :-1]], dim=1)
        prev_amp = torch.cat([last_amp[:, None], amplitudes[:, :-1]], dim=1)
        f0_samples = (prev_f0[..., None] + (f0 - prev_f0)[..., None] * self.ramp).reshape(B, T * self.hop)
        # Summed in float64 and wrapped, as the ISTFT's running phase: streaming equals offline.
        summed = phase.double() + torch.cumsum(f0_samples.double() * (2 * math.pi / self.sample_rate), dim=1)
        wrapped = (summed - 2 * math.pi * torch.floor(summed / (2 * math.pi))).to(f0.dtype)
        waves = torch.sin(wrapped.view(B, T, self.hop, 1) * self.harmonic_numbers)      # [B, T, hop, H]
        # Amplitudes ramp linearly across each block: prev + (cur - prev) * ramp, summed over harmonics.
        held = torch.einsum("bth,btnh->btn", prev_amp, waves)
        moved = torch.einsum("bth,btnh->btn", amplitudes - prev_amp, waves)
        samples = (held + moved * self.ramp).reshape(B, T * self.hop)
        return samples, [wrapped[:, -1:], f0[:, -1:], amplitudes[:, -1]]
