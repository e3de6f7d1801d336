"""Shared audio helpers: decode, resample, trim, loudness."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tts.audio import (AudioError, AudioFileWriter, active_speech_seconds, check_output_path, normalize_loudness,
                       played_faster, read_audio, resample, trim_silence, write_audio)

SR = 16_000


def _tone(seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * 200 * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def test_trim_silence_keeps_a_short_pad():
    x = np.concatenate([np.zeros(SR), _tone(1.0), np.zeros(2 * SR)]).astype(np.float32)
    y = trim_silence(x, SR, pad_s=0.05)
    assert abs(len(y) / SR - 1.1) < 0.03
    assert trim_silence(np.zeros(SR, np.float32), SR).size == 0


def test_active_speech_seconds():
    x = np.concatenate([np.zeros(SR), _tone(2.0), np.zeros(SR)]).astype(np.float32)
    assert abs(active_speech_seconds(x, SR) - 2.0) < 0.05
    assert active_speech_seconds(np.zeros(SR, np.float32), SR) == 0.0


def test_loudness_normalisation_and_peak_cap():
    quiet, loud = normalize_loudness(_tone(2.0, 0.01), SR), normalize_loudness(_tone(2.0, 0.9), SR)
    assert np.allclose(quiet, loud, atol=1e-3)
    assert np.abs(quiet).max() <= 10 ** (-1 / 20) + 1e-6
    with pytest.raises(AudioError, match="silent"):
        normalize_loudness(np.zeros(SR, np.float32), SR)


def test_resample_keeps_duration_and_pitch():
    y = resample(_tone(1.0), SR, 24_000)
    assert len(y) == 24_000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 24_000 / len(y) - 200) < 2


def test_read_audio_mixes_down_and_rejects_garbage(tmp_path):
    stereo = np.stack([_tone(0.5), -_tone(0.5) * 0.0], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 22_050)
    audio = read_audio(tmp_path / "s.wav")
    assert audio.sample_rate == 22_050 and audio.samples.ndim == 1
    assert np.allclose(audio.samples, stereo.mean(axis=1), atol=1e-4)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot decode"):
        read_audio(tmp_path / "bad.wav")
    with pytest.raises(AudioError, match="cannot decode the audio") as raised:   # bytes from a request
        read_audio(b"RIFF....WAVEfmt not really audio")
    assert "BytesIO" not in str(raised.value)
    with pytest.raises(AudioError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), SR)
    with pytest.raises(AudioError, match="no samples"):
        read_audio(tmp_path / "empty.wav")


def test_write_audio_is_atomic_and_16_bit(tmp_path):
    write_audio(tmp_path / "a" / "x.flac", _tone(0.2) * 5)  # clipped, not wrapped
    info = sf.info(tmp_path / "a" / "x.flac")
    assert info.subtype == "PCM_16" and info.samplerate == SR
    assert not list((tmp_path / "a").glob("*.part"))


def test_check_output_path_names_what_is_wrong(tmp_path):
    with pytest.raises(AudioError, match="must end in .wav or .flac"):
        check_output_path(tmp_path / "x.mp3")
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioError, match="it is a folder"):
        check_output_path(tmp_path / "d.wav")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(AudioError, match="is a file, not a folder"):
        check_output_path(tmp_path / "f" / "sub" / "x.wav")
    assert check_output_path(tmp_path / "new" / "x.flac").parent.is_dir()   # missing folders are made
    assert check_output_path(tmp_path / "x.sttc", formats=None).name == "x.sttc"


def test_audio_file_writer_keeps_the_old_file_when_the_stream_fails(tmp_path):
    out = tmp_path / "x.wav"
    write_audio(out, _tone(0.5))
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        with AudioFileWriter(out, SR) as writer:
            writer.write(_tone(0.1, amp=0.5))
            raise RuntimeError("the synthesis failed half-way")
    assert out.read_bytes() == before and not list(tmp_path.glob("*.part"))
    with AudioFileWriter(out, SR) as writer:
        writer.write(_tone(0.1))
        writer.write(_tone(0.1))
    assert sf.info(out).frames == int(0.2 * SR) and not list(tmp_path.glob("*.part"))


def test_played_faster_scales_pitch_and_length():
    sr = 16000
    tone = np.sin(2 * np.pi * 200 * np.arange(sr) / sr).astype(np.float32)
    faster = played_faster(tone, 1.25, sr)
    assert abs(len(faster) - sr / 1.25) <= 2
    spectrum = np.abs(np.fft.rfft(faster * np.hanning(len(faster))))
    assert abs(np.argmax(spectrum) * sr / len(faster) - 250) < 3
    assert played_faster(tone, 1.0, sr) is tone

