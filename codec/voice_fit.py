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
What moves is the fitted voice of codec/modules/speaker.py: the embedding and offsets of the shift and
FiLM the decoder makes of it (960 numbers for the shipped decoder). Session 42, on the held-out flite
voice at 3 kbps (about 26 clips): moving the embedding alone lifted PESQ by 0.18, the offsets alone by
0.47; `tts bench codec --fit-voice` (all 960 moved, 40 clips) by 0.36 overall, to 2.54 against Opus 6
kbps's 2.48. Every path that takes a voice (`CodecModel.decode`, the stream decoders, ONNX Runtime,
stream headers) takes a fitted one.

Written by hand: a dozen lines of optimisation over the trainer's own losses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec.losses import MultiResolutionSpectralLoss
from codec.model import CodecModel
from codec.perceptual_loss import PesqDisturbanceLoss, StoiLoss


@dataclass(frozen=True)
class VoiceFitOptions:
    steps: int = 100
    lr: float = 0.01
    max_seconds: float = 10.0          # an enrollment clip's length; the fit's time grows with it
    n_qs: tuple[int, ...] = (4, 12)    # the backbone's codebooks and 3 kbps, by turns
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
    sizes = (model.config.decoder_speaker_dim, model.decoder.speaker.voice_dim)
    if start.size not in sizes or not np.isfinite(start).all():
        raise ValueError(f"the starting voice must be a finite {sizes[0]}-d embedding or a {sizes[1]}-d fitted voice; "
                         f"got {start.size} values")
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
            latents = [model.quantizer.decode(model.encode(clip, n_q)) for n_q in options.n_qs]
        voice = model.decoder.speaker.resolve(torch.tensor(start), 1).clone().requires_grad_(True)
        opt = torch.optim.Adam([voice], lr=options.lr)
        for step in range(options.steps):
            decoded, reference = model.align(model.decoder(latents[step % len(latents)], speaker=voice), clip)
            decoded, reference = decoded.flatten(1), reference.flatten(1)
            parts = spectral(decoded, reference)
            loss = parts["stft_lin"] + parts["stft_log"] + 2 * parts["mel"] \
                + options.lambda_pesq * pesq(reference, decoded) + options.lambda_stoi * stoi(reference, decoded)
            opt.zero_grad()
            # only the voice's gradient: the model's own parameters get none (and keep no .grad)
            (voice.grad,) = torch.autograd.grad(loss, [voice])
            opt.step()
    return voice.detach()[0].numpy()
