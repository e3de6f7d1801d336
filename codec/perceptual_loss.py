"""Differentiable models of the benchmark's two listeners, used as training losses: PESQ-WB's disturbance
(ITU-T P.862 / P.862.2) and STOI's envelope correlation (Taal et al. 2011).

Why: the spectral losses settle on an over-smoothed magnitude (formant peaks low, valleys between the harmonics
filled, noise above 4 kHz; docs/history/codec.md, sessions 38-40), which log-magnitude L1 prices lightly and
PESQ heavily: PESQ compares loudness per Bark band and frame, and charges energy the reference lacks (an
additive disturbance) up to 12 times more than energy that is missing. A loss built from the same perceptual
model points the decoder at what the benchmark hears, on the CPU, without a discriminator. Speech enhancement
trains on such models (PMSQE, Martin-Donas et al. 2018; torch-pesq, audiolabs).

Written by hand: torch-pesq needs torchaudio, which has no build for the pinned torch, and the model is
short. What it keeps of P.862: level alignment, the 100-Hz input filter of the wide-band mode, a 32-ms Hann
STFT with 50 % overlap, P.862's 49 Bark bands, hearing thresholds and Zwicker loudness, the partial
compensation of a static filter and of per-frame gain, the disturbance with its dead zone, the asymmetry
factor, the frame weighting, L6 over 20-frame windows and L2 over the clip. What it leaves: time alignment (a
codec's output is aligned by construction, `CodecModel.align`), and the level and filters are applied to the
power spectrum rather than the waveform (the same for a stationary filter, far cheaper). The constants are
P.862's published tables for 16 kHz.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

# P.862, 16 kHz: FFT bins (of 256) per Bark band, each band's width in Bark, its power-density correction,
# its absolute hearing threshold (in the model's power units) and its centre in Bark.
_BINS_PER_BAND = (1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 3, 4,
                  5, 4, 5, 6, 6, 7, 8, 9, 9, 12, 12, 15, 16, 18, 21, 25, 20)
_WIDTH_BARK = (0.157344, 0.317994, 0.322441, 0.326934, 0.331474, 0.336061, 0.340697, 0.345381, 0.350114, 0.354897,
               0.359729, 0.364611, 0.369544, 0.374529, 0.379565, 0.384653, 0.389794, 0.394989, 0.400236, 0.405538,
               0.410894, 0.416306, 0.421773, 0.427297, 0.432877, 0.438514, 0.444209, 0.449962, 0.455774, 0.461645,
               0.467577, 0.473569, 0.479621, 0.485736, 0.491912, 0.498151, 0.504454, 0.510819, 0.517250, 0.523745,
               0.530308, 0.536934, 0.543629, 0.550390, 0.557220, 0.564119, 0.571085, 0.578125, 0.585232)
_DENSITY_CORRECTION = (100.0, 99.999992, 100.0, 100.000008, 100.000008, 100.000015, 99.999992, 99.999969, 50.000027,
                       100.0, 99.999969, 100.000015, 99.999947, 100.000061, 53.047077, 110.000046, 117.991989, 65.0,
                       68.760147, 69.999931, 71.428818, 75.000038, 76.843384, 80.968781, 88.646126, 63.864388,
                       68.155350, 72.547775, 75.584831, 58.379192, 80.950836, 64.135651, 54.384785, 73.821884,
                       64.437073, 59.176456, 65.521278, 61.399822, 58.144047, 57.004543, 64.126297, 54.311001,
                       61.114979, 55.077751, 56.849335, 55.628868, 53.137054, 54.985844, 79.546974)
_HEARING_THRESHOLD = (51286152.0, 2454709.5, 70794.59375, 4897.788574, 1174.897705, 389.045166, 104.71286, 45.70882,
                      17.782795, 9.772372, 4.897789, 3.090296, 1.905461, 1.258925, 0.977237, 0.724436, 0.562341,
                      0.457088, 0.389045, 0.331131, 0.295121, 0.269153, 0.25704, 0.251189, 0.251189, 0.251189,
                      0.251189, 0.263027, 0.288403, 0.30903, 0.338844, 0.371535, 0.398107, 0.436516, 0.467735,
                      0.489779, 0.501187, 0.501187, 0.512861, 0.524807, 0.524807, 0.524807, 0.512861, 0.47863,
                      0.42658, 0.371535, 0.363078, 0.416869, 0.537032)
_CENTRE_BARK = (0.078672, 0.316341, 0.636559, 0.961246, 1.29045, 1.624217, 1.962597, 2.305636, 2.653383, 3.005889,
                3.363201, 3.725371, 4.092449, 4.464486, 4.841533, 5.223642, 5.610866, 6.003256, 6.400869, 6.803755,
                7.211971, 7.625571, 8.044611, 8.469146, 8.899232, 9.334927, 9.776288, 10.223374, 10.676242,
                11.134952, 11.599563, 12.070135, 12.546731, 13.029408, 13.518232, 14.013264, 14.514566, 15.022202,
                15.536238, 16.056736, 16.583761, 17.117382, 17.657663, 18.204674, 18.758478, 19.319147, 19.886751,
                20.461355, 21.043034)
_SP = 6.910853e-6            # power scaling of the Bark spectrum (P.862, 16 kHz)
_SL = 1.866055e-1            # loudness scaling
_ZWICKER_POWER = 0.23
_TARGET_LEVEL = 1e7          # P.862 aligns both signals to this power in 325-3250 Hz
_N_FFT, _HOP = 512, 256      # 32-ms frames, 50 % overlap
# The wide-band mode's input filter (a 100-Hz high-pass), numerator and denominator of a biquad.
_INPUT_FILTER = ((2.740826, -5.4816519, 2.740826), (1.0, -1.9444777, 0.94597794))


def _check_pair(reference: torch.Tensor, decoded: torch.Tensor, minimum: int, model: str, unit: str) -> None:
    """Both models' input check: two [B, T] signals of the same shape, at least `minimum` samples long."""
    if reference.shape != decoded.shape or reference.dim() != 2:
        raise ValueError(f"reference and decoded must both be [B, T]; got {tuple(reference.shape)} and "
                         f"{tuple(decoded.shape)}")
    if reference.shape[-1] < minimum:
        raise ValueError(f"{model} needs at least {minimum} samples ({unit}); got {reference.shape[-1]}")


@functools.lru_cache(maxsize=4)
def _tables(device: str) -> dict[str, torch.Tensor]:
    """The model's constant tensors on `device` (built outside inference mode, as losses.py's filterbank)."""
    with torch.inference_mode(False):
        bins = _N_FFT // 2
        bank = torch.zeros(len(_BINS_PER_BAND), bins)
        start = 0
        for band, width in enumerate(_BINS_PER_BAND):
            bank[band, start:start + width] = 1.0
            start += width
        freqs = np.arange(bins + 1) / _N_FFT                        # cycles per sample
        z = np.exp(-2j * np.pi * freqs)
        num, den = (np.polyval(c[::-1], z) for c in _INPUT_FILTER)  # c0 + c1 z^-1 + c2 z^-2
        hz = freqs * 16_000
        exponent = (6 / (torch.tensor(_CENTRE_BARK) + 2.0)).clamp(1.0, 2.0) ** 0.15 * _ZWICKER_POWER
        tables = {
            "bank": bank * (torch.tensor(_DENSITY_CORRECTION) * _SP)[:, None],   # [bands, bins]
            # power gain per bin; zero at DC, which P.862 leaves out
            "input_filter": torch.tensor(np.abs(num / den) ** 2 * (freqs > 0), dtype=torch.float32),
            "level_band": torch.tensor((hz >= 325) & (hz <= 3250), dtype=torch.float32),
            "threshold": torch.tensor(_HEARING_THRESHOLD),
            "exponent": exponent,
            "width": torch.tensor(_WIDTH_BARK),
            "window": torch.hann_window(_N_FFT),
        }
        return {k: v.to(device) for k, v in tables.items()}


class PesqDisturbanceLoss(nn.Module):
    """(reference, decoded) [B, T] at 16 kHz -> PESQ's raw disturbance, 0.1 d_sym + 0.0309 d_asym, per clip.

    P.862 maps raw MOS = 4.5 - (this) to its score, so lowering it raises PESQ; `mos` gives the mapped
    P.862.2 score, to check the model against the real PESQ (tests/test_perceptual_loss.py).

    `level`: P.862 scales each whole utterance so its 325-3250 Hz band has a fixed power; a 1-s training crop
    of a pause would be blown up to speech level. Given a level (`band_level` of whole utterances of the
    corpus, which is loudness-normalised), both signals are scaled by that one factor instead.

    `compensate`: P.862 forgives most of a static filter (the reference takes the decoded signal's long-term
    band balance) and of a slow gain change. A decoder trained on the model with them cut its loud frames'
    0-500 Hz by 4 dB, which PESQ forgave and STOI and log-mel did not (docs/history/codec.md, session 41);
    without them (training) every band's loudness is held to the reference's.
    """

    def __init__(self, sample_rate: int = 16_000, level: float | None = None, compensate: bool = True) -> None:
        super().__init__()
        if sample_rate != 16_000:
            raise ValueError(f"the PESQ-WB model needs 16 kHz audio; this codec runs at {sample_rate} Hz")
        self.level, self.compensate = level, compensate

    def forward(self, reference: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        d_sym, d_asym = self.disturbances(reference, decoded)
        return 0.1 * d_sym + 0.0309 * d_asym

    def mos(self, reference: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """The model's PESQ-WB score per clip (P.862.2's mapping of the raw MOS)."""
        raw = 4.5 - self.forward(reference, decoded)
        return 0.999 + 4.0 / (1.0 + torch.exp(-1.3669 * raw + 3.8224))

    @staticmethod
    def _power(x: torch.Tensor) -> torch.Tensor:
        """x [B, T] -> the power spectrogram P.862 analyses [B, bins + 1, frames]."""
        window = _tables(str(x.device))["window"].to(x.dtype)
        spec = torch.stft(x, _N_FFT, _HOP, window=window, center=False, return_complex=True)
        return spec.real.square() + spec.imag.square()

    @staticmethod
    def _band_level(power: torch.Tensor) -> torch.Tensor:
        """Mean-square level in 325-3250 Hz [B] from a power spectrogram (Parseval; Hann at 50 % overlap:
        sum w^2 / hop = 0.75)."""
        band = _tables(str(power.device))["level_band"]
        return (power * band[:, None]).sum((1, 2)) * 2 / (_N_FFT * 0.75 * _HOP * power.shape[-1])

    @classmethod
    def band_level(cls, x: torch.Tensor) -> torch.Tensor:
        """x [B, T] -> the level P.862 aligns, per clip [B] (for `level`)."""
        return cls._band_level(cls._power(x))

    def _bark_power(self, x: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """x [B, T] -> level-aligned, input-filtered power per Bark band [B, frames, bands]."""
        power = self._power(x)
        level = self._band_level(power) if self.level is None else torch.full_like(power[:, 0, 0], self.level)
        power = power * (_TARGET_LEVEL / level.clamp_min(1e-12))[:, None, None]
        power = power * t["input_filter"][:, None]
        return torch.einsum("kb,nbf->nfk", t["bank"], power[:, :-1])

    @staticmethod
    def _audible(power: torch.Tensor, threshold: torch.Tensor, factor: float) -> torch.Tensor:
        """Power above `factor` x the hearing threshold, zero elsewhere [B, frames, bands]."""
        return torch.where(power > threshold * factor, power, torch.zeros_like(power))

    def disturbances(self, reference: torch.Tensor, decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d_sym, d_asym) per clip [B]: P.862's symmetric and asymmetric disturbance."""
        _check_pair(reference, decoded, _N_FFT, "the PESQ model", "one 32-ms frame")
        t = _tables(str(reference.device))
        threshold, exponent = t["threshold"], t["exponent"]
        ref, deg = self._bark_power(reference, t), self._bark_power(decoded, t)

        if self.compensate:
            ref, deg = self._compensate(ref, deg, threshold)

        ref_loud, deg_loud = self._loudness(ref, threshold, exponent), self._loudness(deg, threshold, exponent)
        difference = deg_loud - ref_loud
        dead_zone = 0.25 * torch.minimum(ref_loud, deg_loud)
        disturbance = difference.sign() * (difference.abs() - dead_zone).clamp_min(0.0)
        # Added energy (the decoded louder than the reference) costs more than missing energy.
        asymmetry = ((deg + 50.0) / (ref + 50.0)) ** 1.2
        asymmetry = torch.where(asymmetry < 3.0, torch.zeros_like(asymmetry), asymmetry.clamp(max=12.0))

        width = t["width"]
        total_width = width[1:].sum()
        d_sym = total_width * ((width * disturbance)[..., 1:] / total_width ** 0.5).norm(2, dim=-1)
        d_asym = (width * disturbance * asymmetry)[..., 1:].abs().sum(-1)      # P.862's width-weighted L1
        # Loud frames weigh less (the listener's attention), and a frame's disturbance is capped.
        weight = ((self._audible(ref, threshold, 1).sum(-1) + 1e5) / 1e7) ** 0.04
        return (self._aggregate((d_sym / weight).clamp(1e-20, 45.0)),
                self._aggregate((d_asym / weight).clamp(1e-20, 45.0)))

    def _compensate(self, ref: torch.Tensor, deg: torch.Tensor, threshold: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """P.862's partial compensation of a static filter and of a slow gain change ([B, frames, bands] each)."""
        # A static filter: the reference takes the decoded signal's long-term band balance.
        audible_ref = self._audible(ref, threshold, 1e2)
        speech = (audible_ref.sum(-1) >= 1e7).to(ref.dtype)[..., None]
        mean_ref = (audible_ref * speech).mean(1, keepdim=True)
        mean_deg = (self._audible(deg, threshold, 1e2) * speech).mean(1, keepdim=True)
        ref = ref * ((mean_deg + 1000) / (mean_ref + 1000)).clamp(0.01, 100.0)
        # A slow gain change: the decoded frame is scaled to the reference's audible power (smoothed).
        gain = (self._audible(ref, threshold, 1).sum(-1) + 5e3) / (self._audible(deg, threshold, 1).sum(-1) + 5e3)
        gain = torch.cat([gain[:, :1], 0.8 * gain[:, 1:] + 0.2 * gain[:, :-1]], dim=1).clamp(3e-4, 5.0)
        return ref, deg * gain[..., None]

    @staticmethod
    def _loudness(power: torch.Tensor, threshold: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
        """Zwicker loudness per band; zero at or below the hearing threshold."""
        audible = power > threshold
        ratio = torch.where(audible, power / threshold, torch.ones_like(power))
        loudness = _SL * (2.0 * threshold) ** exponent * ((0.5 + 0.5 * ratio) ** exponent - 1.0)
        return torch.where(audible, loudness, torch.zeros_like(loudness))

    @staticmethod
    def _aggregate(frames: torch.Tensor) -> torch.Tensor:
        """[B, frames] -> [B]: L6 over windows of 20 frames (hop 10), then L2 over the windows (P.862); a clip
        shorter than a window is one window."""
        windows = frames.unfold(1, min(20, frames.shape[1]), 10)
        return windows.pow(6).mean(-1).pow(1 / 6).square().mean(-1).sqrt()


class StoiLoss(nn.Module):
    """(reference, decoded) [B, T] at 16 kHz -> 1 - STOI per clip: how far the decoded speech's envelopes in
    15 third-octave bands (150 Hz - 4.3 kHz), over 384-ms segments, are from being correlated with the
    reference's (Taal et al. 2011; Kolbaek et al. 2018 train on it).

    Why: the PESQ loss alone raised PESQ and cost a little STOI (session 41); the issue asks for both.
    Written by hand (pystoi is NumPy): STOI's 25.6-ms frames at 10 kHz become 410-sample frames at 16 kHz, so
    nothing is resampled; silent frames (40 dB below the clip's loudest) are left out of each clip's segments.
    """

    frame, hop, n_fft, segment = 410, 205, 1024, 30

    def __init__(self, sample_rate: int = 16_000) -> None:
        super().__init__()
        if sample_rate != 16_000:
            raise ValueError(f"the STOI model needs 16 kHz audio; this codec runs at {sample_rate} Hz")
        freqs = torch.arange(self.n_fft // 2 + 1) * sample_rate / self.n_fft
        k = torch.arange(15, dtype=torch.float32)
        low, high = 150 * 2 ** ((2 * k - 1) / 6), 150 * 2 ** ((2 * k + 1) / 6)
        edges = lambda f: (freqs[None] - f[:, None]).abs().argmin(-1)   # noqa: E731 - the nearest bin, as STOI
        bands = torch.zeros(15, len(freqs))
        for j, (lo, hi) in enumerate(zip(edges(low).tolist(), edges(high).tolist())):
            bands[j, lo:hi] = 1.0
        self.register_buffer("bands", bands, persistent=False)
        self.register_buffer("window", torch.hann_window(self.frame + 2, periodic=False)[1:-1], persistent=False)

    def forward(self, reference: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        _check_pair(reference, decoded, self.frame, "the STOI model", "one frame")
        reference_frames = self._frames(reference)                             # [B, frames, frame]
        x, y = self._envelopes(reference_frames), self._envelopes(self._frames(decoded))   # [B, frames, 15]
        energy_db = 20 * torch.log10(reference_frames.norm(dim=-1) + 1e-12)    # [B, frames]
        loud = energy_db > energy_db.amax(-1, keepdim=True) - 40
        return torch.stack([1 - self._correlation(x[b, loud[b]], y[b, loud[b]]) for b in range(len(x))])

    def _frames(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, T] -> windowed frames [B, frames, frame]."""
        return audio.unfold(-1, self.frame, self.hop) * self.window

    def _envelopes(self, frames: torch.Tensor) -> torch.Tensor:
        """Windowed frames -> third-octave band envelopes [B, frames, 15]."""
        power = torch.fft.rfft(frames, self.n_fft).abs().square()
        return (power @ self.bands.T).clamp_min(1e-20).sqrt()

    def _correlation(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean envelope correlation over bands and 30-frame segments (every start) of one clip's loud frames."""
        if len(x) < self.segment:        # less speech than a segment: nothing to score (loss 0, no gradient)
            return x.new_ones(())
        xs, ys = x.unfold(0, self.segment, 1), y.unfold(0, self.segment, 1)    # [segments, 15, 30]
        ys = ys * xs.norm(dim=-1, keepdim=True) / ys.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        ys = torch.minimum(ys, xs * (1 + 10 ** (15 / 20)))                       # clipped at -15 dB SDR
        xs, ys = xs - xs.mean(-1, keepdim=True), ys - ys.mean(-1, keepdim=True)
        return ((xs * ys).sum(-1) / (xs.norm(dim=-1) * ys.norm(dim=-1)).clamp_min(1e-12)).mean()
