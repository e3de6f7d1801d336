"""Enrollment: check a clip, embed it, store the voice; and resolve a voice name for synthesis.

This is the library call the CLI (`tts voice enroll`) and the gRPC server use.
Every refusal says what is wrong and what is accepted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np

from tts.audio import SAMPLE_RATE, Audio, AudioError, active_speech_seconds, read_audio, resample, trim_silence
from voice.encoder import SpeakerEncoder
from voice.presets import load_presets
from voice.store import VoiceNotFoundError, VoiceRecord, VoiceStore, VoiceStoreError, validate_consent, validate_name

if TYPE_CHECKING:
    from codec.model import CodecModel
    from codec.voice_fit import VoiceFitOptions


class EnrollmentError(ValueError):
    """The clip (or the request) cannot be enrolled; the message says why and what is accepted."""


class StaleVoiceError(VoiceStoreError):
    """The voice was embedded by another encoder version than the one loaded."""


@dataclass(frozen=True)
class ClipLimits:
    """What an enrollment clip must be."""

    max_bytes: int = 20 * 1024 * 1024
    min_speech_s: float = 3.0
    max_speech_s: float = 30.0
    max_clipped_fraction: float = 0.01   # share of samples at full scale
    silence_peak: float = 1e-3           # a clip whose peak is below this is silent

    def describe(self) -> str:
        return (f"a wav, flac or ogg file under {self.max_bytes // (1024 * 1024)} MB with "
                f"{self.min_speech_s:g}-{self.max_speech_s:g} s of speech")


def check_clip(data: bytes, limits: ClipLimits = ClipLimits()) -> tuple[Audio, float]:
    """Decode and check an enrollment clip; returns (16 kHz mono audio, seconds of speech).

    Raises:
        EnrollmentError: too large, undecodable, silent, clipped, too little or too much speech.
    """
    accepted = limits.describe()
    if len(data) > limits.max_bytes:
        raise EnrollmentError(f"the clip is {len(data) / 1e6:.1f} MB; accepted: {accepted}")
    if not data:
        raise EnrollmentError(f"the clip is empty; accepted: {accepted}")
    try:
        audio = read_audio(data)
    except AudioError as exc:
        raise EnrollmentError(f"{exc}; accepted: {accepted}") from exc
    x = audio.samples
    if float(np.abs(x).max()) < limits.silence_peak:
        raise EnrollmentError(f"the clip is silent; accepted: {accepted}")
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > limits.max_clipped_fraction:
        raise EnrollmentError(f"the clip is distorted: {100 * clipped:.1f} % of samples are at full scale "
                              f"(at most {100 * limits.max_clipped_fraction:g} %); record with less gain")
    x = trim_silence(resample(x, audio.sample_rate, SAMPLE_RATE), SAMPLE_RATE)
    speech = active_speech_seconds(x, SAMPLE_RATE)
    if speech < limits.min_speech_s:
        raise EnrollmentError(f"the clip has {speech:.1f} s of speech; accepted: {accepted}")
    if speech > limits.max_speech_s:
        raise EnrollmentError(f"the clip has {speech:.1f} s of speech; accepted: {accepted} (trim it)")
    return Audio(x, SAMPLE_RATE), speech


def enroll(store: VoiceStore, encoder: SpeakerEncoder, clip: bytes, name: str, consent: str,
           keep_clip: bool = False, limits: ClipLimits = ClipLimits()) -> VoiceRecord:
    """Validate, embed and store a voice. Name and consent are checked before any audio work.

    Raises:
        EnrollmentError: the clip is unusable, or the name is a built-in preset.
        VoiceStoreError: bad name, no consent, or the name is taken.
    """
    validate_name(name)
    validate_consent(consent)
    if name in load_presets():
        raise EnrollmentError(f"{name!r} is a built-in voice; choose another name")
    audio, speech = check_clip(clip, limits)
    embedding = encoder.embed(audio.samples, audio.sample_rate)
    return store.add(name, embedding, encoder.model_id, consent, clip_seconds=speech,
                     clip_sha256=hashlib.sha256(clip).hexdigest(), clip=clip if keep_clip else None,
                     clip_format="original" if keep_clip else None)


def reembed(store: VoiceStore, encoder: SpeakerEncoder, name: str) -> VoiceRecord:
    """Re-embed a voice from its stored clip with the current encoder (after an encoder update)."""
    audio = kept_clip(store, name)
    store.update_embedding(name, encoder.embed(audio.samples, audio.sample_rate), encoder.model_id)
    return store.get(name)


def kept_clip(store: VoiceStore, name: str) -> Audio:
    """The clip voice `name` was enrolled with, checked as at enrollment: re-embedding and fitting start from it.

    Raises:
        EnrollmentError: the voice was enrolled without keeping its clip.
    """
    stored = store.clip(name)
    if stored is None:
        raise EnrollmentError(f"voice {name!r} was enrolled without keeping its clip; enroll it again with "
                              f"--keep-clip")
    return check_clip(stored[0])[0]


def all_voices(store: VoiceStore) -> list[VoiceRecord]:
    """Built-in presets first, then enrolled voices."""
    return list(load_presets().values()) + store.list()


def find_voice(store: VoiceStore, name: str) -> VoiceRecord:
    """A preset or an enrolled voice by name: one lookup, not a scan of every voice.

    Raises:
        VoiceNotFoundError: neither a preset nor an enrolled voice has that name (the message lists them).
    """
    presets = load_presets()
    record = presets.get(name)
    if record is not None:
        return record
    try:
        return store.get(name)
    except VoiceNotFoundError:
        known = sorted(presets) + [v.name for v in store.list()]
        raise VoiceNotFoundError(f"unknown voice {name!r}; known voices: {', '.join(known) or 'none'}") from None


def resolve_voice(store: VoiceStore, name: str, encoder_version: str) -> VoiceRecord:
    """The voice to synthesise with, refusing one embedded by another encoder version.

    Raises:
        VoiceNotFoundError: neither a preset nor an enrolled voice has that name.
        StaleVoiceError: the voice's embedding comes from another encoder.
    """
    record = find_voice(store, name)
    if record.encoder_version != encoder_version:
        hint = (f"run 'tts voice reembed {name}'" if record.has_clip else "enroll it again")
        raise StaleVoiceError(f"voice {name!r} was embedded by encoder {record.encoder_version}, "
                              f"the current encoder is {encoder_version}: {hint}")
    return record


def kept_decoder_voice(store: VoiceStore, model: "CodecModel", name: str, key: str | None = None) -> np.ndarray | None:
    """The decoder voice the store keeps for `name` under `key` (default: `model`'s decoder, the voice fitted to the
    clip's codes; tts/voice_calibration.py keeps another kind under its own key), if one of a size `model`'s decoder
    takes (one imported from another build may not be), else None."""
    kept = store.decoder_voice(name, model.model_id if key is None else key)
    return kept if kept is not None and kept.size in model.decoder.speaker.voice_sizes else None


T = TypeVar("T")

# Fits of a decoder voice tried before giving up, where another process re-embeds the voice during each.
FIT_ATTEMPTS = 2


def decoder_voice(store: VoiceStore, model: "CodecModel", name: str,
                  options: "VoiceFitOptions | None" = None) -> np.ndarray:
    """The voice `name` as `model`'s decoder (one that follows the voice) best renders it: its embedding fitted
    to its enrollment clip (codec/voice_fit.py), fitted on first use and kept in the store per decoder, since a
    fit takes tens of seconds of CPU and the clip does not change.

    Raises:
        VoiceNotFoundError / StaleVoiceError: no such voice, or one embedded by another speaker encoder than the
            one the decoder follows.
        EnrollmentError: a decoder that follows no voice, or a voice with no clip to fit to (a built-in voice,
            or one enrolled without keeping its clip).
    """
    from codec.voice_fit import VoiceFitOptions, fit_decoder_voice

    if not model.speaker_conditioned:
        raise EnrollmentError("this codec's decoder follows no voice: there is no voice to fit")
    resolve_voice(store, name, model.speaker_encoder_id)   # no kept voice serves a stale one
    kept = kept_decoder_voice(store, model, name)
    if kept is not None:
        return kept
    return fit_and_keep(store, name, model.model_id, model.speaker_encoder_id, model.sample_rate,
                        lambda samples, start: fit_decoder_voice(model, samples, start, options or VoiceFitOptions()))


def fit_and_keep(store: VoiceStore, name: str, key: str, encoder_id: str, sample_rate: int,
                 fit: Callable[[np.ndarray, np.ndarray], T], voice_of: Callable[[T], np.ndarray] = lambda v: v) -> T:
    """Fit something to enrolled voice `name`'s kept clip (at `sample_rate`) from its embedding, and keep its
    voice (`voice_of` the result) in the store under `key`. A fit takes tens of seconds: where another process
    re-embeds the voice meanwhile, nothing is kept and the fit runs again from the new embedding.

    Raises:
        VoiceNotFoundError / StaleVoiceError: no such voice, or one from another speaker encoder than `encoder_id`.
        EnrollmentError: a built-in voice, one enrolled without keeping its clip, or re-embedded during every fit.
    """
    record = resolve_voice(store, name, encoder_id)
    if record.preset:
        raise EnrollmentError(f"voice {name!r} is a built-in voice: there is no clip to fit to")
    audio = kept_clip(store, name)   # a re-embed keeps the clip
    samples = resample(audio.samples, audio.sample_rate, sample_rate)
    for _ in range(FIT_ATTEMPTS):
        result = fit(samples, record.embedding)
        if store.set_decoder_voice(name, key, voice_of(result), fitted_from=record.embedding):
            return result
        record = resolve_voice(store, name, encoder_id)   # re-embedded meanwhile: fit from the new one
    raise EnrollmentError(f"voice {name!r} was re-embedded during each of {FIT_ATTEMPTS} fits; try again")
