"""Fitting a decoder's voice to a clip of the speaker: analysis by synthesis.

A speaker-conditioned decoder (codec/modules/speaker.py) renders a voice from the speaker encoder's
embedding. That embedding was learnt to tell voices apart, not to render them, and for a voice the
decoder never trained on it is a poor guide: session 42 found the shipped decoder 0.4 PESQ below Opus
6 kbps on the held-out flite voice while 0.6-1.0 above it on the training ones, and a decoder fine-tuned
on the held-out voice (an oracle) reached 2.9. The codes carry the voice; the decoder does not know how
to render it.

Here the voice is the thing trained: starting from the speaker encoder's embedding, a hundred gradient
steps move the voice the decoder reads to where the frozen decoder best reproduces a clip of the voice
from that clip's own codes, under the trainer's losses (multi-resolution spectral, PESQ and STOI models).
What moves is the fitted voice of codec/modules/speaker.py: the embedding, offsets of the shift and
FiLM the decoder makes of it, and offsets of the scale and bias of each of its LayerNorms (4 544 numbers
for the shipped decoder). Session 42, on the held-out flite voice at 3 kbps (about 26 clips): moving the
embedding alone lifted PESQ by 0.18, the shift and FiLM offsets alone by 0.47; `tts bench codec
--fit-voice` (embedding, shift and FiLM: 960 numbers, 40 clips) by 0.36 overall, to 2.54 against Opus 6
kbps's 2.48, and on a second draw of 40 clips to 2.44 against 2.48. Session 43 (runs/s43/richfit.py, both
draws, 3 kbps): adding offsets of every LayerNorm gave 2.56 / 0.929 and 2.52 / 0.924 (Opus 6 kbps
2.48 / 0.921 and 2.48 / 0.920); offsets of every bias of the decoder as well, 2.54 / 0.931 and 2.52 /
0.926, not enough more for three times the numbers; fitting all its weights, 2.48 / 0.926 on the first
(worse: with 2.8 M weights, 10 s of one voice is more likely learnt as a clip than as a voice). Every
path that takes a voice (`CodecModel.decode`, the stream decoders, ONNX Runtime, stream headers) takes a
fitted one.

Written by hand: a dozen lines of optimisation over the trainer's own losses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec.losses import MultiResolutionSpectralLoss, spectral_total
from codec.model import CodecModel
from codec.perceptual_loss import PesqDisturbanceLoss, StoiLoss


@dataclass(frozen=True)
class VoiceFitOptions:
    steps: int = 100
    lr: float = 0.01
    max_seconds: float = 10.0          # an enrollment clip's length; the fit's time grows with it
    norm_lr: float = 0.003             # the LayerNorm offsets' (session 43's measured setting)
    n_qs: tuple[int, ...] = (12, 24)   # 3 and 6 kbps, by turns (through the backbone a fitted voice did not help)
    lambda_pesq: float = 0.3           # the shipped decoder's fine-tune weights (codec/train.py)
    lambda_stoi: float = 3.0


def fit_decoder_voice(model: CodecModel, audio: np.ndarray, embedding: np.ndarray,
                      options: VoiceFitOptions = VoiceFitOptions()) -> np.ndarray:
    """The fitted voice [voice_dim] under which `model`'s decoder best reproduces `audio` (mono, at the
    model's rate) from its own codes, starting from `embedding` (the speaker encoder's for that audio or its
    speaker, or a voice fitted before).

    Raises:
        ValueError: a decoder that follows no voice or is streaming, a starting voice of the wrong size, or
            under one second of audio.
    """
    if not model.speaker_conditioned:
        raise ValueError("this codec's decoder follows no voice: there is nothing to fit")
    if model.is_streaming:
        raise ValueError("fitting a voice decodes offline: finish the model's stream first")
    start = np.asarray(embedding, dtype=np.float32).ravel()
    conditioning = model.decoder.speaker
    sizes = conditioning.voice_sizes
    if start.size not in sizes or not np.isfinite(start).all():
        raise ValueError(f"the starting voice must be a finite {sizes[0]}-d embedding or a fitted voice of "
                         f"{' or '.join(map(str, sizes[1:]))}; got {start.size} values")
    n = min(len(audio), int(options.max_seconds * model.sample_rate)) // model.hop_length * model.hop_length
    if n < model.sample_rate:
        raise ValueError(f"fitting a voice needs at least 1 s of audio; got {len(audio) / model.sample_rate:.2f} s")
    # inference_mode(False): callers decode under inference mode, and autograd cannot use its tensors
    # (the losses' windows included, so they are made here).
    with torch.inference_mode(False), torch.enable_grad():
        spectral = MultiResolutionSpectralLoss(model.sample_rate)
        pesq = PesqDisturbanceLoss(model.sample_rate, compensate=True)
        stoi = StoiLoss(model.sample_rate)
        clip = torch.tensor(np.asarray(audio[:n], dtype=np.float32))[None, None]
        with torch.no_grad():
            # a codec with fewer quantizers than a rate asks fits at all of its own
            latents = [model.quantizer.decode(model.encode(clip, min(n_q, model.config.n_q))) for n_q in options.n_qs]
        # two leaves, each with its own step size: the embedding with its shift and FiLM offsets, and the
        # LayerNorm offsets
        voice = conditioning.resolve(torch.tensor(start), 1)
        head, norms = (part.clone().requires_grad_(True) for part in voice.split(
            [conditioning.head_dim, conditioning.voice_dim - conditioning.head_dim], dim=-1))
        opt = torch.optim.Adam([{"params": [head], "lr": options.lr}, {"params": [norms], "lr": options.norm_lr}])
        for step in range(options.steps):
            voice = torch.cat([head, norms], dim=-1)
            decoded, reference = model.align(model.decoder(latents[step % len(latents)], speaker=voice), clip)
            decoded, reference = decoded.flatten(1), reference.flatten(1)
            loss = spectral_total(spectral(decoded, reference)) \
                + options.lambda_pesq * pesq(reference, decoded) + options.lambda_stoi * stoi(reference, decoded)
            opt.zero_grad()
            # only the voice's gradient: the model's own parameters get none (and keep no .grad)
            head.grad, norms.grad = torch.autograd.grad(loss, [head, norms])
            opt.step()
    return torch.cat([head, norms], dim=-1).detach()[0].numpy()
