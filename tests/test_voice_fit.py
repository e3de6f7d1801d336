"""Fitting the shipped decoder's voice to a clip (codec/voice_fit.py)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from codec.bitstream import StreamVoice
from codec.compress import compress_audio, decompress_codes, header_voice
from codec.config import CodecConfig
from codec.loaders import load_codec
from codec.model import CodecModel
from codec.voice_fit import VoiceFitOptions, fit_decoder_voice
from tests.test_codec_shipped import CLIP, _mel_l1   # a voice held out of codec training; log-mel L1
from tts.audio import read_audio
from voice.encoder import load_encoder

FEW_STEPS = VoiceFitOptions(steps=12)


@pytest.fixture(scope="module")
def shipped():
    model, encoder = load_codec(), load_encoder()
    x = read_audio(CLIP).samples.astype(np.float32)
    return model, encoder, x, encoder.embed(x, model.sample_rate)


def test_a_fitted_voice_reproduces_its_clip_better_and_leaves_the_model_alone(shipped):
    model, encoder, x, start = shipped
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():   # as a caller decoding under inference mode would call it
        fitted = fit_decoder_voice(model, x, start, FEW_STEPS)
    assert fitted.shape == (model.decoder.speaker.voice_dim,) and fitted.dtype == np.float32
    assert np.isfinite(fitted).all() and not np.allclose(fitted[:start.size], start)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    header, codes = compress_audio(model, x, 16_000, 3.0, encoder)
    with torch.inference_mode():
        in_start, in_fitted = (decompress_codes(model, header, codes, v) for v in (start, fitted))
    assert _mel_l1(x, in_fitted) < _mel_l1(x, in_start) - 0.01


def test_fitting_is_deterministic(shipped):
    model, _, x, start = shipped
    options = replace(FEW_STEPS, steps=3)
    assert np.array_equal(fit_decoder_voice(model, x, start, options), fit_decoder_voice(model, x, start, options))


def test_fitting_refuses_what_it_cannot_fit(shipped):
    model, _, x, start = shipped
    with pytest.raises(ValueError, match="192-d"):
        fit_decoder_voice(model, x, start[:10], FEW_STEPS)
    with pytest.raises(ValueError, match="finite"):
        fit_decoder_voice(model, x, np.full_like(start, np.nan), FEW_STEPS)
    with pytest.raises(ValueError, match="at least 1 s"):
        fit_decoder_voice(model, x[:8000], start, FEW_STEPS)
    with model.streaming(1), pytest.raises(ValueError, match="offline"):
        fit_decoder_voice(model, x, start, FEW_STEPS)
    plain = CodecModel(CodecConfig(channels=4, max_channels=16, dimension=8, n_q=2, card=16)).eval()
    with pytest.raises(ValueError, match="follows no voice"):
        fit_decoder_voice(plain, x, start, FEW_STEPS)


def test_a_codec_with_fewer_quantizers_than_the_fit_asks_fits_at_its_own(shipped):
    """The fit's default rates (12 and 24 quantizers) are the shipped codec's; a smaller conditioned codec (2
    quantizers, 2 blocks) fits with all of its own, to a voice of its own size."""
    _, _, x, start = shipped
    small = CodecModel(CodecConfig(channels=4, max_channels=16, dimension=8, n_q=2, card=16, decoder="istft",
                                   decoder_dim=16, decoder_hidden=24, decoder_layers=2,
                                   decoder_speaker_dim=start.size)).eval()
    fitted = fit_decoder_voice(small, x, start, replace(FEW_STEPS, steps=2))
    assert fitted.shape == (small.decoder.speaker.voice_dim,) == (start.size + 3 * 16 + 3 * 2 * 16,)
    assert np.isfinite(fitted).all()


def test_a_stream_carries_a_fitted_voice_to_the_decoder(shipped):
    model, encoder, x, start = shipped
    fitted = fit_decoder_voice(model, x, start, replace(FEW_STEPS, steps=3))
    header, codes = compress_audio(model, x, 16_000, 3.0, encoder)
    header = replace(header, voice=StreamVoice.of(fitted, encoder.model_id))
    carried = header_voice(model, header)
    assert carried is not None and carried.shape == fitted.shape
    np.testing.assert_allclose(carried, fitted, atol=np.abs(fitted).max() / 127)
    with torch.inference_mode():
        from_header = decompress_codes(model, header, codes)
        np.testing.assert_allclose(from_header, decompress_codes(model, header, codes, carried))


def test_codec_encode_fits_the_streams_voice_to_its_input(tmp_path, capsys):
    """`tts codec encode --fit-voice`: the header carries the fitted voice (4 544 levels), and the file decodes
    closer to its input than with the embedding alone; without a voice to fit it is refused, writing nothing."""
    from tts.cli import main

    x = read_audio(CLIP).samples.astype(np.float32)
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "plain.sttc")]) == 0
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "fitted.sttc"), "--fit-voice"]) == 0
    assert "its voice (4566 bytes)" in capsys.readouterr().out   # 4 544 levels, their scale, the encoder's id
    decoded = {}
    for name in ("plain", "fitted"):
        assert main(["codec", "decode", str(tmp_path / f"{name}.sttc"), str(tmp_path / f"{name}.wav")]) == 0
        decoded[name] = read_audio(tmp_path / f"{name}.wav").samples.astype(np.float32)
    assert "in its voice" in capsys.readouterr().out
    assert _mel_l1(x, decoded["fitted"]) < _mel_l1(x, decoded["plain"]) - 0.02
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "n.sttc"), "--fit-voice", "--no-voice"]) == 2
    assert "--fit-voice" in capsys.readouterr().err and not (tmp_path / "n.sttc").exists()


def _enrollment_clip() -> bytes:
    """The held-out clip twice over (5.3 s): enough speech to enroll."""
    import io

    import soundfile as sf

    x = read_audio(CLIP).samples.astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.concatenate([x, np.zeros(4000, np.float32), x]), 16_000, format="WAV")
    return buf.getvalue()


CONSENT = "I am the speaker in this clip and I consent to cloning my voice."


def test_an_enrolled_voice_is_fitted_to_its_clip_once_per_decoder(shipped, tmp_path, monkeypatch):
    import codec.voice_fit
    from voice.enroll import EnrollmentError, decoder_voice, enroll
    from voice.store import VoiceStore

    model, encoder, _, _ = shipped
    calls = []
    real_fit = codec.voice_fit.fit_decoder_voice
    monkeypatch.setattr(codec.voice_fit, "fit_decoder_voice", lambda *a: calls.append(1) or real_fit(*a))
    options = replace(FEW_STEPS, steps=2)
    with VoiceStore(tmp_path / "v.db") as store:
        enroll(store, encoder, _enrollment_clip(), "ann", CONSENT, keep_clip=True)
        enroll(store, encoder, _enrollment_clip(), "bob", CONSENT)
        fitted = decoder_voice(store, model, "ann", options)
        assert fitted.shape == (model.decoder.speaker.voice_dim,) and np.isfinite(fitted).all()
        assert not np.allclose(fitted[:192], store.get("ann").embedding)
        np.testing.assert_array_equal(decoder_voice(store, model, "ann", options), fitted)
        assert len(calls) == 1   # the second time it comes from the store
        with pytest.raises(EnrollmentError, match="without keeping its clip.*--keep-clip"):
            decoder_voice(store, model, "bob", options)
        with pytest.raises(EnrollmentError, match="built-in voice"):
            decoder_voice(store, model, "slt", options)
        plain = CodecModel(CodecConfig(channels=4, max_channels=16, dimension=8, n_q=2, card=16)).eval()
        with pytest.raises(EnrollmentError, match="follows no voice"):
            decoder_voice(store, plain, "ann", options)


def test_a_voice_re_embedded_during_its_fit_is_fitted_again_from_the_new_embedding(shipped, tmp_path, monkeypatch):
    """A fit takes tens of seconds: where another process re-embeds the voice meanwhile, the voice fitted from
    the old embedding is not kept, and the fit runs again from the new one."""
    import codec.voice_fit
    from voice.enroll import decoder_voice, enroll
    from voice.store import VoiceStore

    model, encoder, _, _ = shipped
    starts = []
    rest = np.zeros(model.decoder.speaker.voice_dim - 192, np.float32)

    def fit_while_re_embedded(model, samples, start, options):
        starts.append(np.array(start))
        if len(starts) == 1:   # the other process re-embeds while this fit runs
            with VoiceStore(tmp_path / "v.db") as other:
                moved = other.get("ann").embedding[::-1].copy()
                other.update_embedding("ann", moved, other.get("ann").encoder_version)
        return np.concatenate([start, rest + len(starts)]).astype(np.float32)

    monkeypatch.setattr(codec.voice_fit, "fit_decoder_voice", fit_while_re_embedded)
    with VoiceStore(tmp_path / "v.db") as store:
        enroll(store, encoder, _enrollment_clip(), "ann", CONSENT, keep_clip=True)
        first = store.get("ann").embedding
        fitted = decoder_voice(store, model, "ann")
        now = store.get("ann").embedding
        assert len(starts) == 2 and np.array_equal(starts[0], first) and np.array_equal(starts[1], now)
        assert not np.array_equal(first, now) and np.array_equal(fitted[:192], now) and fitted[-1] == 2
        np.testing.assert_array_equal(store.decoder_voice("ann", model.model_id), fitted)


def test_voice_fit_fits_the_decoder_once_at_a_moment_the_user_chooses(shipped, tmp_path, monkeypatch, capsys):
    """`tts voice fit NAME` (and `tts voice enroll --keep-clip --fit-codec`) do the tens-of-seconds fit up front, so
    the first codec command in the voice does not; a second call finds it kept; no clip, no fit."""
    import codec.voice_fit
    import tts.voice_calibration
    from tts.cli import main
    from tts.voice_calibration import speech_voice_key
    from voice.store import VoiceStore

    model = shipped[0]
    calls = []

    def quick_fit(model, samples, start, options):   # the real fit is tested above; here, the commands
        calls.append(1)
        return np.concatenate([start, np.full(model.decoder.speaker.voice_dim - 192, 0.01, np.float32)])

    monkeypatch.setattr(codec.voice_fit, "fit_decoder_voice", quick_fit)
    calibrations = []

    def quick_calibration(engine, samples, start, options):   # tested in test_stream.py
        calibrations.append(1)
        rest = np.full(engine.codec.decoder.speaker.voice_dim - 192, 0.02, np.float32)
        return tts.voice_calibration.Calibration(np.concatenate([start, rest]), 1.0, 0.5)

    monkeypatch.setattr(tts.voice_calibration, "calibrate_speech_voice", quick_calibration)
    clip, db = tmp_path / "ann.wav", str(tmp_path / "v.db")
    clip.write_bytes(_enrollment_clip())
    enroll = ["voice", "enroll", str(clip), "--consent", CONSENT, "--store", db]
    assert main([*enroll, "--name", "bob", "--fit-codec"]) == 2
    assert "add --keep-clip" in capsys.readouterr().err
    assert main([*enroll, "--name", "bob", "--keep-clip", "--fit-codec", "--codec", str(tmp_path / "none")]) == 2
    assert "Traceback" not in capsys.readouterr().err          # the codec is checked before the voice is stored
    assert main([*enroll, "--name", "ann", "--keep-clip", "--fit-codec"]) == 0
    out = capsys.readouterr().out
    assert "fitted the codec's voice" in out and "fitted its speech" in out
    assert len(calls) == 1 and len(calibrations) == 1
    from tts.engine import Engine

    engine = Engine.load()
    with VoiceStore(db) as store:
        assert [v.name for v in store.list()] == ["ann"]   # the refused enrollment left nothing
        kept = store.decoder_voice("ann", model.model_id)
        assert kept is not None and kept[-1] == np.float32(0.01)
        speech = store.decoder_voice("ann", speech_voice_key(engine))
        assert speech is not None and speech[-1] == np.float32(0.02)
        # what tts say and the server decode the voice's speech in: the calibrated voice; a built-in voice has none
        np.testing.assert_array_equal(engine.speech_voice("ann", store), speech)
        assert engine.speech_voice("slt", store) is None
    assert main(["voice", "fit", "ann", "--store", db]) == 0
    assert capsys.readouterr().out.count("already fitted") == 2 and len(calls) == 1 and len(calibrations) == 1
    assert main(["voice", "show", "ann", "--store", db]) == 0
    assert json.loads(capsys.readouterr().out)["fitted_for"] == sorted([model.model_id, speech_voice_key(engine)])
    assert main([*enroll, "--name", "cat"]) == 0
    assert main(["voice", "fit", "cat", "--store", db]) == 2
    assert "--keep-clip" in capsys.readouterr().err and len(calls) == 1
    # tts say speaks an enrolled voice's speech in its calibrated voice, calibrating it on first use where the clip
    # is kept (--no-calibrate: in its embedding)
    import soundfile as sf

    assert main([*enroll, "--name", "dan", "--keep-clip"]) == 0
    assert "calibrated on first use" in capsys.readouterr().out
    said = []
    for extra in (["--no-calibrate"], [], []):
        assert main(["say", "Hello there.", "--voice", "dan", "--store", db, "--seed", "1",
                     "--out", str(tmp_path / "dan.wav"), *extra]) == 0
        said.append(sf.read(str(tmp_path / "dan.wav"))[0])
    assert capsys.readouterr().err.count("calibrating its speech") == 1 and len(calibrations) == 2
    assert len(said[0]) == len(said[1]) and not np.allclose(said[0], said[1], atol=1e-3)
    np.testing.assert_array_equal(said[1], said[2])            # the kept calibration, not another
    assert main(["say", "Hello there.", "--voice", "cat", "--store", db, "--out", str(tmp_path / "cat.wav")]) == 0
    assert len(calibrations) == 2                              # no clip kept: nothing to calibrate, no error
    # a clone (nothing stored) is calibrated on its clip when asked
    cloned = []
    for extra in ([], ["--calibrate-clone"]):
        assert main(["say", "Hello there.", "--clone", str(clip), "--seed", "1", "--out", str(tmp_path / "c.wav"),
                     "--store", db, *extra]) == 0
        cloned.append(sf.read(str(tmp_path / "c.wav"))[0])
    assert len(calibrations) == 3 and "calibrating the clone" in capsys.readouterr().err
    assert len(cloned[0]) == len(cloned[1]) and not np.allclose(cloned[0], cloned[1], atol=1e-3)
    assert main(["say", "Hi.", "--calibrate-clone", "--store", db]) == 2
    assert "--clone" in capsys.readouterr().err


def _store_with_a_kept_voice(shipped, tmp_path) -> tuple[str, np.ndarray, np.ndarray]:
    """A store with voice "ann" (the enrollment clip, kept) and a decoder voice for the shipped codec as a fit
    would leave it (none runs here): (its path, ann's embedding, that voice)."""
    from voice.enroll import enroll
    from voice.store import VoiceStore

    model, encoder, _, _ = shipped
    db = str(tmp_path / "v.db")
    with VoiceStore(db) as store:
        enroll(store, encoder, _enrollment_clip(), "ann", CONSENT, keep_clip=True)
        ann = store.get("ann").embedding
        kept = np.concatenate([ann, np.linspace(-0.1, 0.1, model.decoder.speaker.voice_dim - ann.size)])
        store.set_decoder_voice("ann", model.model_id, kept.astype(np.float32))
    return db, ann, kept.astype(np.float32)


def test_codec_encode_carries_an_enrolled_voice(shipped, tmp_path, capsys):
    """`tts codec encode --voice NAME`: the stream carries the enrolled voice's embedding, or with --fit-voice
    the voice fitted to its clip as the store keeps it; an unknown voice or --no-voice is refused, writing
    nothing."""
    from codec.bitstream import read_stream
    from tts.cli import main

    model = shipped[0]
    db, ann, kept = _store_with_a_kept_voice(shipped, tmp_path)
    args = ["--voice", "ann", "--store", db]
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "e.sttc"), *args]) == 0
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "f.sttc"), *args, "--fit-voice"]) == 0
    out = capsys.readouterr().out
    assert "voice 'ann' (214 bytes)" in out and "voice 'ann' fitted (4566 bytes)" in out
    for name, want in (("e", ann), ("f", kept)):
        with open(tmp_path / f"{name}.sttc", "rb") as f:
            header, _ = read_stream(f)
        np.testing.assert_allclose(header_voice(model, header), want, atol=np.abs(want).max() / 127)
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "n.sttc"), "--voice", "nobody", "--store", db]) == 2
    assert "unknown voice 'nobody'" in capsys.readouterr().err
    assert main(["codec", "encode", str(CLIP), str(tmp_path / "n.sttc"), *args, "--no-voice"]) == 2
    assert "--voice" in capsys.readouterr().err and not (tmp_path / "n.sttc").exists()


def test_codec_decode_speaks_in_an_enrolled_voice_the_stream_leaves_out(shipped, tmp_path, capsys):
    """A stream without its voice (`--no-voice`) decoded with `--voice NAME --fit-voice` speaks in the voice the
    listener's store keeps for that decoder, as if the stream had carried it; --fit-voice alone is refused."""
    from codec.bitstream import read_stream
    from tts.cli import main

    model = shipped[0]
    db, _, kept = _store_with_a_kept_voice(shipped, tmp_path)
    stream, wav = tmp_path / "n.sttc", tmp_path / "n.wav"
    assert main(["codec", "encode", str(CLIP), str(stream), "--no-voice"]) == 0
    assert main(["codec", "decode", str(stream), str(wav), "--voice", "ann", "--store", db, "--fit-voice"]) == 0
    assert "in voice 'ann' fitted" in capsys.readouterr().out
    with open(stream, "rb") as f:
        header, codes = read_stream(f)
    assert header.voice is None
    with torch.inference_mode():
        want = decompress_codes(model, header, codes, kept)
    np.testing.assert_allclose(read_audio(wav).samples, want, atol=1 / 32768 + 1e-6)
    wav.unlink()
    assert main(["codec", "decode", str(stream), str(wav), "--fit-voice"]) == 2
    assert "--voice" in capsys.readouterr().err and not wav.exists()


def test_a_voice_calibrated_on_the_backbones_speech_matches_its_clips_spectrum(shipped, monkeypatch):
    """tts/voice_calibration.py: the decoder voice moves until the backbone's speech in the voice has the clip's
    long-term spectrum; the models' weights stay; the same seeds give the same voice; a stream decodes in it.
    (The speaker encoder's verdict on the fit is the next test's: here it keeps every fit.)"""
    import tts.voice_calibration
    from tts.engine import Engine, SynthesisOptions
    from tts.voice_calibration import CalibrationOptions, calibrate_speech_voice

    verdicts = iter([0.0, 1.0] * 2)   # the start voice's cosine, then the fitted one's: kept, for both fits
    monkeypatch.setattr(tts.voice_calibration, "_similarity", lambda *_: next(verdicts))
    engine = Engine.load()
    clip = read_audio(CLIP).samples.astype(np.float32)
    start = engine.encoder.embed(clip, 16_000)
    weights = {k: v.clone() for k, v in engine.codec.state_dict().items()}
    options = CalibrationOptions(texts=("A short sentence to calibrate with.",), steps=4)
    result = calibrate_speech_voice(engine, clip, start, options)
    assert result.voice.shape == (engine.codec.decoder.speaker.voice_dim,) and np.isfinite(result.voice).all()
    assert result.distance_after < result.distance_before
    assert all(torch.equal(weights[k], v) for k, v in engine.codec.state_dict().items())
    np.testing.assert_array_equal(calibrate_speech_voice(engine, clip, start, options).voice, result.voice)
    plain, calibrated = (np.concatenate(list(engine.synthesize("Hello there.", start, SynthesisOptions(seed=3), v)))
                         for v in (None, result.voice))
    assert len(plain) == len(calibrated) and np.isfinite(calibrated).all()   # the same tokens, another rendering
    assert not np.allclose(plain, calibrated, atol=1e-3)
    with pytest.raises(ValueError, match="at least 1 s"):
        calibrate_speech_voice(engine, clip[:8000], start, options)


def test_a_calibration_whose_speech_sounds_less_like_the_voice_is_refused(shipped, monkeypatch):
    """The fit matches a spectrum; the speaker encoder then judges the speech in the start voice and in the fitted
    one, and the fitted voice is kept only where it sounds more like the voice (else the start: no calibration)."""
    import tts.voice_calibration as calibration
    from tts.engine import Engine

    engine = Engine.load()
    clip = read_audio(CLIP).samples.astype(np.float32)
    start = engine.encoder.embed(clip, 16_000)
    options = calibration.CalibrationOptions(texts=("A short sentence to calibrate with.",), steps=3)
    plain = engine.codec.decoder.speaker.resolve(torch.from_numpy(start), 1)[0].detach().numpy()
    real = calibration._similarity
    judged = []

    def judge(engine_, latents, voice, embedding):
        judged.append(real(engine_, latents, voice, embedding))
        return judged[-1]

    monkeypatch.setattr(calibration, "_similarity", judge)
    result = calibration.calibrate_speech_voice(engine, clip, start, options)
    assert (result.similarity_before, result.similarity_after) == tuple(judged) and -1 <= judged[0] <= 1
    assert result.accepted == (judged[1] > judged[0])
    for before, after in ((0.9, 0.5), (0.5, 0.9)):     # a worse rendering is refused, a better one kept
        scores = iter((before, after))
        monkeypatch.setattr(calibration, "_similarity", lambda *_: next(scores))
        result = calibration.calibrate_speech_voice(engine, clip, start, options)
        assert result.accepted == (after > before) and result.distance_after < result.distance_before
        assert np.allclose(result.voice, plain) != result.accepted
