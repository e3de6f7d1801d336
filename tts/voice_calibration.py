"""A decoder voice calibrated on the backbone's own speech: an enrolled voice's speech sounds more like it.

The backbone reads a new speaker's embedding and speaks tokens that the codec's decoder renders in that
embedding. For voices no training voice resembles, the result misses fine vocal-tract detail: session 45 found
the held-out flite voice's variants taken for their neighbours 5 % apart in vocal tract, with the pitch right.
A voice fitted to the speaker's *real* codes (codec/voice_fit.py) does not help here (sessions 42-43): the
backbone's tokens are not those codes. So the decoder's voice is fitted to the backbone's *own* speech instead:
the backbone speaks a few fixed sentences in the voice, and the decoder's voice (the fitted-voice vector of
codec/modules/speaker.py) moves until that speech's long-term average spectrum matches the enrollment clip's.
No transcript of the clip and no speaker encoder enter the loss. Measured (session 45, `tts bench backbone`'s
new-speaker draws, 210 sentences): closest to the speaker's own reference 74.3 -> 82.4 % (21 sentences from
missed to closest, 4 the other way), word error rate unchanged. The fitted voice is kept only where the speaker
encoder finds the calibration speech in it closer to the voice than in the start voice (`_similarity`): a real
person's clip (session 48) was matched by speech with no harmonics left.

Written by hand: the loss is a mean of log-mel frames, and the fit is a few dozen Adam steps on the voice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import torch

from backbone.generate import Request, generate_frames
from codec.losses import log_mel
from tts.segment import utterance_text
from tts.text import normalize_text
from voice.encoder import cosine

if TYPE_CHECKING:
    from codec.model import CodecModel
    from tts.engine import Engine
    from voice.store import VoiceStore

# Sentences of everyday speech (about 13 s in all): not the clip's, so an enrollment needs no transcript.
CALIBRATION_TEXTS = (
    "Hello! This is a streaming text to speech engine, speaking on your CPU.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call me back tomorrow morning at nine, and bring the report with you.",
    "We were away for a year, and the garden grew wild while we were gone.",
)


@dataclass(frozen=True)
class CalibrationOptions:
    texts: tuple[str, ...] = CALIBRATION_TEXTS
    seed: int = 1000             # the backbone's speech is sampled: fixed seeds, so a calibration can be repeated
    steps: int = 40
    lr: float = 0.01             # the embedding with its shift and FiLM offsets
    norm_lr: float = 0.003       # the LayerNorm offsets (as codec/voice_fit.py)
    loud_db: float = 20.0        # frames within this of the loudest count (pauses would weigh the spectrum)


class Calibration(NamedTuple):
    voice: np.ndarray            # [voice_dim] for the codec's decoder: the fitted voice, or the start where refused
    distance_before: float       # mean |log-mel| between the speech's long-term spectrum and the clip's
    distance_after: float
    similarity_before: float = float("nan")   # speaker-encoder cosine of the speech to the voice, start voice
    similarity_after: float = float("nan")    # the same in the fitted voice
    accepted: bool = True        # False: the fitted voice's speech sounded less like the voice; `voice` is the start


def long_term_spectrum(audio: torch.Tensor, sample_rate: int, loud_db: float = 20.0) -> torch.Tensor:
    """audio [1, T] -> [80]: the mean log-mel frame over frames within `loud_db` of the loudest."""
    mel = log_mel(audio, sample_rate)[0]
    level = torch.logsumexp(mel, dim=0)
    loud = level > level.max() - loud_db / 10 * np.log(10)
    return mel[:, loud].mean(dim=1)


def speech_voice_key(engine: "Engine") -> str:
    """What a calibrated voice depends on: the codec that renders it and the backbone that speaks it (the voice
    store keeps it under this key, beside the codec's fitted voices)."""
    return f"speech:{engine.codec.model_id}:{engine.backbone.model_id}"


def _speech_codes(engine: "Engine", embedding: np.ndarray, options: CalibrationOptions) -> list[torch.Tensor]:
    """The backbone's codes [1, K, F] for each calibration text, spoken in `embedding`."""
    speaker = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
    out = []
    for i, text in enumerate(options.texts):
        ids = engine.tokenizer.encode(utterance_text(normalize_text(text)), normalized=True)
        frames = generate_frames(engine.backbone, Request(ids, speaker, len(text), options.seed + i),
                                 quantized=engine.int8, onnx=engine.onnx_steps)   # the steps one stream's speech takes
        out.append(torch.stack(list(frames), 1)[None])
    return out


def calibrate_speech_voice(engine: "Engine", clip: np.ndarray, embedding: np.ndarray,
                           options: CalibrationOptions = CalibrationOptions()) -> Calibration:
    """The decoder voice under which the backbone's speech in `embedding` has the long-term spectrum of `clip`
    (the voice's enrollment audio, mono at the engine's sample rate).

    Raises:
        ValueError: a codec whose decoder follows no voice, or a clip under one second.
    """
    codec = engine.codec
    if not codec.speaker_conditioned:
        raise ValueError("this codec's decoder follows no voice: there is nothing to calibrate")
    if len(clip) < codec.sample_rate:
        raise ValueError(f"calibrating a voice needs at least 1 s of its audio; "
                         f"got {len(clip) / codec.sample_rate:.2f} s")
    with torch.inference_mode():
        latents = [codec.quantizer.decode(codes) for codes in _speech_codes(engine, embedding, options)]
    conditioning = codec.decoder.speaker
    with torch.inference_mode(False), torch.enable_grad():   # callers may run under inference mode
        target = long_term_spectrum(torch.tensor(np.asarray(clip, dtype=np.float32))[None], codec.sample_rate,
                                    options.loud_db)
        latents = [z.clone() for z in latents]                # inference tensors cannot enter autograd
        start = conditioning.resolve(torch.tensor(np.asarray(embedding, dtype=np.float32)), 1)
        head, norms = (part.clone().requires_grad_(True) for part in start.split(
            [conditioning.head_dim, conditioning.voice_dim - conditioning.head_dim], dim=-1))
        opt = torch.optim.Adam([{"params": [head], "lr": options.lr}, {"params": [norms], "lr": options.norm_lr}])

        def distance() -> torch.Tensor:
            speech = _speech(codec, latents, torch.cat([head, norms], dim=-1))
            return (long_term_spectrum(speech, codec.sample_rate, options.loud_db) - target).abs().mean()

        distances = []
        for _ in range(options.steps):
            loss = distance()
            distances.append(float(loss.detach()))
            head.grad, norms.grad = torch.autograd.grad(loss, [head, norms])   # the model's weights get none
            opt.step()
        after = float(distance().detach())
        fitted, start = torch.cat([head, norms], dim=-1).detach(), start.detach()
    with torch.inference_mode():
        before_sim, after_sim = (_similarity(engine, latents, voice, embedding) for voice in (start, fitted))
    accepted = after_sim > before_sim
    return Calibration((fitted if accepted else start)[0].numpy(), distances[0] if distances else after, after,
                       before_sim, after_sim, accepted)


def _speech(codec: "CodecModel", latents: list[torch.Tensor], voice: torch.Tensor) -> torch.Tensor:
    """The calibration texts' latents decoded in decoder voice `voice`, one after another: [1, T]."""
    return torch.cat([codec.decoder(z, speaker=voice)[0] for z in latents], dim=-1)


def _similarity(engine: "Engine", latents: list[torch.Tensor], voice: torch.Tensor, embedding: np.ndarray) -> float:
    """Speaker-encoder cosine between the calibration speech decoded in decoder voice `voice` and `embedding`.

    Why: the fit matches a long-term spectrum, and a clip unlike the training voices (a real person's, a
    band-limited recording) can be matched by speech that no longer sounds like anyone (session 48: a real
    voice's calibrated speech lost its harmonics; cosine 0.50 -> 0.11, WER 91 -> 97 %). The speaker encoder
    says whether the fitted voice sounds more like the voice than the start does.
    """
    speech = _speech(engine.codec, latents, voice)[0].numpy()
    return cosine(engine.encoder.embed(speech, engine.codec.sample_rate), np.asarray(embedding, dtype=np.float32))


def kept_speech_voice(store: "VoiceStore", engine: "Engine", name: str) -> np.ndarray | None:
    """The calibrated voice the store keeps for enrolled voice `name` and this engine's codec and backbone, if one
    of a size the decoder takes; None otherwise (a built-in voice, none calibrated yet, or a re-embedded voice:
    re-embedding drops it)."""
    from voice.enroll import kept_decoder_voice

    if not engine.codec.speaker_conditioned:
        return None
    return kept_decoder_voice(store, engine.codec, name, speech_voice_key(engine))


def calibrate_enrolled_voice(store: "VoiceStore", engine: "Engine", name: str,
                             options: CalibrationOptions = CalibrationOptions()) -> Calibration:
    """Calibrate enrolled voice `name` on its kept clip and keep the result (it takes tens of seconds, once per
    voice and engine). A re-embed by another process during it leaves nothing kept; then it calibrates again.

    Raises:
        VoiceNotFoundError / StaleVoiceError: no such voice, or one from another speaker encoder.
        EnrollmentError: a built-in voice, or one enrolled without keeping its clip.
    """
    from voice.enroll import fit_and_keep

    return fit_and_keep(store, name, speech_voice_key(engine), engine.encoder_id, engine.sample_rate,
                        lambda samples, start: calibrate_speech_voice(engine, samples, start, options),
                        lambda result: result.voice)


def _calibratable(store: "VoiceStore", engine: "Engine", name: str) -> bool:
    """An enrolled voice whose clip the store keeps, and a codec whose decoder follows voices.

    Raises:
        VoiceNotFoundError: no such voice.
    """
    from voice.enroll import find_voice

    if not engine.codec.speaker_conditioned:
        return False
    record = find_voice(store, name)
    return not record.preset and record.has_clip


def needs_calibration(store: "VoiceStore", engine: "Engine", name: str) -> bool:
    """Whether voice `name` can be calibrated for this engine (`_calibratable`) and is not yet: no calibration
    kept for this codec and backbone.

    Raises:
        VoiceNotFoundError: no such voice.
    """
    return _calibratable(store, engine, name) and kept_speech_voice(store, engine, name) is None


def speech_voice(store: "VoiceStore", engine: "Engine", name: str, calibrate: bool = False,
                 on_calibrate: Callable[[], None] | None = None) -> np.ndarray | None:
    """The decoder voice for voice `name`'s speech: its kept calibration; with `calibrate`, for an enrolled voice
    whose clip is kept and that has none yet, one made now and kept (`on_calibrate` is told first: it takes tens
    of seconds); else None (decode in the voice's embedding)."""
    kept = kept_speech_voice(store, engine, name)
    if kept is not None or not calibrate or not _calibratable(store, engine, name):   # kept: read once
        return kept
    if on_calibrate is not None:
        on_calibrate()
    return calibrate_enrolled_voice(store, engine, name).voice
