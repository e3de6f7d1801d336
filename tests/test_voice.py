"""Speaker encoder, enrollment checks, the SQLite voice store (concurrency, kill-safety), CLI."""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voice.encoder import EncoderConfig, SpeakerEncoder, load_encoder, periodicity_map, save_encoder
from voice.enroll import ClipLimits, EnrollmentError, StaleVoiceError, check_clip, enroll, reembed, resolve_voice
from voice.store import VoiceExistsError, VoiceNotFoundError, VoiceStore, VoiceStoreError
from voice.verification import equal_error_rate

SR = 16_000
ASSETS = Path(__file__).parent / "assets"
CONSENT = "I am the speaker in this clip and I consent to cloning my voice."


def speechlike(seconds: float, f0: float = 120.0, sr: int = SR, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Harmonic bursts with pauses: enough 'speech' for the VAD, cheap to make."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > -0.6).astype(np.float64)
    x = x * envelope + 0.01 * rng.standard_normal(len(t))
    return (level * x / np.abs(x).max()).astype(np.float32)


def speaker_corpus(root: Path, speakers: int, clips: int, seconds: float, text: str = "text") -> Path:
    """A tiny training corpus: `speakers` synthetic voices (different pitch), `clips` clips each."""
    from tts.audio import write_audio
    from tts.corpus.manifest import Utterance, write_manifest

    utts = []
    for s in range(speakers):
        for i in range(clips):
            write_audio(root / f"audio/{s}_{i}.flac", speechlike(seconds, f0=90 + 30 * s, seed=i))
            utts.append(Utterance(f"s{s}_{i}", f"audio/{s}_{i}.flac", text, f"spk{s}", seconds, "train"))
    write_manifest(root / "manifest.jsonl", utts)
    return root


def to_bytes(x: np.ndarray, sr: int = SR, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    torch.manual_seed(0)
    model = SpeakerEncoder(EncoderConfig(channels=32, pooled_channels=64, embedding_dim=16)).eval()
    model.model_id = "test-encoder-v1"
    return model


# ---------------------------------------------------------------- encoder


def test_embedding_is_unit_length_deterministic_and_windowed(encoder):
    x = speechlike(8.0)
    a, b = encoder.embed(x, SR), encoder.embed(x, SR)
    assert a.shape == (16,) and abs(np.linalg.norm(a) - 1) < 1e-5
    np.testing.assert_array_equal(a, b)
    # A 44.1 kHz copy embeds like the 16 kHz original (resampled inside).
    import soxr
    c = encoder.embed(soxr.resample(x, SR, 44_100), 44_100)
    assert float(a @ c) > 0.99
    with pytest.raises(ValueError, match="too short"):
        encoder.embed(np.zeros(SR // 4, dtype=np.float32) + 0.1, SR)


def test_clips_up_to_a_window_embed_in_one_pass_longer_ones_average_windows():
    torch.manual_seed(0)
    model = SpeakerEncoder(EncoderConfig(channels=16, pooled_channels=32, embedding_dim=8, window_seconds=4.0,
                                         window_hop_seconds=2.0)).eval()
    with torch.inference_mode():
        short = speechlike(4.0)
        one_pass = torch.nn.functional.normalize(model(torch.from_numpy(short)[None])[0], dim=0).numpy()
        np.testing.assert_allclose(model.embed(short, SR), one_pass, atol=1e-5)
        long = speechlike(8.0, seed=3)
        windows = model(torch.from_numpy(np.stack([long[s * SR:(s + 4) * SR] for s in (0, 2, 4)]))).mean(0)
        np.testing.assert_allclose(model.embed(long, SR), torch.nn.functional.normalize(windows, dim=0).numpy(),
                                   atol=1e-5)


def test_encoder_id_changes_with_a_config_that_moves_embeddings(encoder, tmp_path):
    """Same weights, another window length: another id, so voices enrolled with the first are stale."""
    from dataclasses import replace
    halved = SpeakerEncoder(replace(encoder.config, window_seconds=encoder.config.window_seconds / 2)).eval()
    halved.load_state_dict(encoder.state_dict())
    first = save_encoder(encoder, tmp_path / "a.safetensors")
    assert save_encoder(halved, tmp_path / "b.safetensors") != first
    assert save_encoder(encoder, tmp_path / "c.safetensors") == first


def test_encoder_file_round_trip(encoder, tmp_path):
    model_id = save_encoder(encoder, tmp_path / "e.safetensors")
    loaded = load_encoder(tmp_path / "e.safetensors")
    assert loaded.model_id == model_id and loaded.config == encoder.config
    x = speechlike(4.0)
    assert float(loaded.embed(x, SR) @ encoder.embed(x, SR)) > 0.999  # fp16 storage, fp32 compute
    from tts.modelfile import ModelFileError
    from codec.loaders import DEFAULT_CODEC
    with pytest.raises(ModelFileError, match="not a voice-encoder model"):
        load_encoder(DEFAULT_CODEC)


def test_periodicity_map_reads_pitch_on_a_log_axis():
    cfg = EncoderConfig(pitch_bins=48)
    f0_axis = np.logspace(np.log10(cfg.pitch_fmax), np.log10(cfg.pitch_fmin), cfg.pitch_bins)
    rng = np.random.default_rng(0)
    for f0 in (95.0, 140.0, 210.0):
        wave = torch.from_numpy(speechlike(2.0, f0=f0, seed=1))[None]
        pmap = periodicity_map(wave, cfg)
        assert pmap.shape == (1, cfg.pitch_bins, 1 + wave.shape[1] // cfg.hop)  # aligned with the log-mel frames
        voiced = pmap[0].max(0).values > 0.8
        assert voiced.float().mean() > 0.5
        profile = pmap[0][:, voiced].mean(1).numpy()
        at = lambda f: profile[int(np.abs(np.log(f0_axis / f)).argmin())]  # noqa: E731
        # A peak at the period, none a quarter off it on either side (subharmonics, at
        # multiples of the period, peak too, as in any autocorrelation).
        assert at(f0) > 0.8
        assert at(f0 * 1.25) < 0.5 and at(f0 / 1.5) < 0.5
    noise = torch.from_numpy(rng.standard_normal(2 * SR).astype(np.float32))[None]
    noise_map = periodicity_map(noise, cfg)
    assert noise_map.abs().mean() < 0.1  # no period in white noise


def test_grown_encoder_starts_as_the_old_one_and_trains_its_pitch_input(encoder):
    grown = SpeakerEncoder(EncoderConfig.from_dict({**encoder.config.to_dict(), "pitch_bins": 32})).eval()
    grown.load_grown(encoder)
    x = speechlike(4.0)
    assert float(grown.embed(x, SR) @ encoder.embed(x, SR)) > 0.9999
    assert grown.features(torch.from_numpy(x)[None]).shape[1] == encoder.config.n_mels + 32
    grown.train()
    grown(torch.from_numpy(np.stack([x, speechlike(4.0, f0=180)]))).sum().backward()
    assert grown.stem[0].weight.grad[:, encoder.config.n_mels:].abs().sum() > 0  # the new rows learn
    with pytest.raises(ValueError, match="cannot grow"):
        SpeakerEncoder(EncoderConfig(channels=16, pitch_bins=8)).load_grown(encoder)


def test_equal_error_rate():
    target = np.array([1, 1, 1, 0, 0, 0], bool)
    assert equal_error_rate(np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]), target) == 0.0
    assert equal_error_rate(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), target) == 1.0
    assert equal_error_rate(np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.0]), target) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    random_eer = equal_error_rate(rng.random(20_000), rng.random(20_000) < 0.1)
    assert 0.45 < random_eer < 0.55


# ---------------------------------------------------------------- clip checks


@pytest.mark.parametrize("make, message", [
    (lambda: b"", "empty"),
    (lambda: b"RIFF....WAVEfmt not really audio", "cannot decode"),
    (lambda: to_bytes(np.zeros(5 * SR, np.float32)), "silent"),
    (lambda: to_bytes(np.clip(speechlike(5.0, level=1.0) * 4, -1, 1)), "distorted"),
    (lambda: to_bytes(speechlike(2.0)), "s of speech"),
    (lambda: to_bytes(speechlike(40.0)), "trim it"),
])
def test_clip_checks_name_the_problem(make, message):
    with pytest.raises(EnrollmentError, match=message) as err:
        check_clip(make())
    assert "accepted" in str(err.value) or "gain" in str(err.value)


def test_clip_size_bound_and_accepted_formats():
    with pytest.raises(EnrollmentError, match="MB"):
        check_clip(to_bytes(speechlike(5.0)), ClipLimits(max_bytes=1000))
    stereo = np.stack([speechlike(6.0, sr=44_100), speechlike(6.0, sr=44_100)], axis=1)
    for fmt in ("WAV", "FLAC", "OGG"):
        audio, speech = check_clip(to_bytes(stereo, 44_100, fmt))
        assert audio.sample_rate == SR and audio.samples.ndim == 1 and 3.0 <= speech <= 6.1


# ---------------------------------------------------------------- store


def test_store_round_trip_and_errors(encoder, tmp_path):
    clip = to_bytes(speechlike(6.0))
    with VoiceStore(tmp_path / "v.db") as store:
        rec = enroll(store, encoder, clip, "Alice", CONSENT, keep_clip=True)
        got = store.get("Alice")
        np.testing.assert_array_equal(got.embedding, rec.embedding)
        assert got.consent == CONSENT and got.encoder_version == "test-encoder-v1" and got.has_clip
        assert len(got.clip_sha256) == 64 and 3.0 <= got.clip_seconds <= 6.1
        assert store.clip("Alice") == (clip, "original")
        with pytest.raises(VoiceExistsError, match="already exists"):
            enroll(store, encoder, clip, "Alice", CONSENT)
        for consent in ("", "   ", None):
            with pytest.raises(VoiceStoreError, match="consent statement is required"):
                enroll(store, encoder, clip, "Bob", consent)
        for bad in ("", " lead", "a/b", "x" * 65, "semi;colon"):
            with pytest.raises(VoiceStoreError, match="invalid voice name"):
                enroll(store, encoder, clip, bad, CONSENT)
        enroll(store, encoder, to_bytes(speechlike(6.0, f0=200)), "Bob", CONSENT)
        assert [v.name for v in store.list()] == ["Alice", "Bob"] and not store.get("Bob").has_clip
        store.delete("Bob")
        with pytest.raises(VoiceNotFoundError, match="no enrolled voice named 'Bob'"):
            store.get("Bob")
        with pytest.raises(VoiceNotFoundError):
            store.delete("Bob")
    with VoiceStore(tmp_path / "v.db") as store:  # durable across connections
        assert [v.name for v in store.list()] == ["Alice"]


def test_stale_voices_are_refused_and_reembedded(encoder, tmp_path):
    with VoiceStore(tmp_path / "v.db") as store:
        enroll(store, encoder, to_bytes(speechlike(6.0)), "kept", CONSENT, keep_clip=True)
        enroll(store, encoder, to_bytes(speechlike(6.0)), "dropped", CONSENT)
        assert resolve_voice(store, "kept", "test-encoder-v1").name == "kept"
        with pytest.raises(StaleVoiceError, match="tts voice reembed kept"):
            resolve_voice(store, "kept", "test-encoder-v2")
        with pytest.raises(StaleVoiceError, match="enroll it again"):
            resolve_voice(store, "dropped", "test-encoder-v2")
        with pytest.raises(VoiceNotFoundError, match="unknown voice 'nobody'"):
            resolve_voice(store, "nobody", "test-encoder-v1")
        newer = SpeakerEncoder(encoder.config).eval()
        newer.model_id = "test-encoder-v2"
        assert reembed(store, newer, "kept").encoder_version == "test-encoder-v2"
        assert resolve_voice(store, "kept", "test-encoder-v2").name == "kept"
        with pytest.raises(EnrollmentError, match="without keeping its clip"):
            reembed(store, newer, "dropped")


def test_export_import_round_trip(encoder, tmp_path):
    with VoiceStore(tmp_path / "a.db") as a, VoiceStore(tmp_path / "b.db") as b:
        enroll(a, encoder, to_bytes(speechlike(6.0)), "Carol", CONSENT, keep_clip=True)
        fitted = np.linspace(-1, 1, 40, dtype=np.float32)
        a.set_decoder_voice("Carol", "codec-a", fitted)
        a.set_decoder_voice("Carol", "codec-b", 2 * fitted)
        a.export("Carol", tmp_path / "carol.voice.json")
        got = b.import_file(tmp_path / "carol.voice.json")
        src = a.get("Carol")
        np.testing.assert_array_equal(got.embedding, src.embedding)
        assert (got.consent, got.clip_sha256, got.encoder_version, got.created) == (
            src.consent, src.clip_sha256, src.encoder_version, src.created)
        assert b.clip("Carol") == a.clip("Carol")
        got_voices = b.decoder_voices("Carol")   # the fitted decoder voices travel with it: no fit again
        assert sorted(got_voices) == ["codec-a", "codec-b"]
        np.testing.assert_array_equal(got_voices["codec-a"], fitted)
        np.testing.assert_array_equal(got_voices["codec-b"], 2 * fitted)
        with pytest.raises(VoiceExistsError):
            b.import_file(tmp_path / "carol.voice.json")
        assert b.import_file(tmp_path / "carol.voice.json", name="Carol 2").name == "Carol 2"
        data = json.loads((tmp_path / "carol.voice.json").read_text())
        for damage, message in [({"format": "x"}, "not a voice export"), ({"version": 9}, "export version"),
                                ({"embedding": [0.5, float("nan")]}, "finite unit-length"),
                                ({"consent": ""}, "consent"), ({"embedding": "abc"}, "damaged|finite"),
                                ({"decoder_voices": [{"codec_id": "c", "float32_base64": "AAA="}]}, "damaged"),
                                ({"decoder_voices": [{"codec_id": "c", "float32_base64": "AADAfw=="}]}, "finite"),
                                ({"decoder_voices": [{"codec_id": "c"}]}, "damaged")]:
            (tmp_path / "bad.json").write_text(json.dumps({**data, **damage, "name": "Dave"}))
            with pytest.raises(VoiceStoreError, match=message):
                b.import_file(tmp_path / "bad.json")
        (tmp_path / "junk.json").write_bytes(b"\xff\xfe junk")
        with pytest.raises(VoiceStoreError, match="cannot read"):
            b.import_file(tmp_path / "junk.json")
        assert [v.name for v in b.list()] == ["Carol", "Carol 2"]   # a refused file adds nothing, voice or part
        assert b.integrity_ok() and len(b._db.execute("SELECT * FROM decoder_voices").fetchall()) == 4


def _enroll_many(db: str, prefix: str, n: int) -> None:
    with VoiceStore(db) as store:
        for i in range(n):
            emb = np.random.default_rng(i).standard_normal(16).astype(np.float32)
            store.add(f"{prefix}-{i}", emb / np.linalg.norm(emb), "v1", CONSENT, 5.0, "0" * 64)


def test_concurrent_enrollment_loses_nothing(tmp_path):
    db = str(tmp_path / "v.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_enroll_many, args=(db, f"p{k}", 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with VoiceStore(db) as store:
        names = {v.name for v in store.list()}
    assert names == {f"p{k}-{i}" for k in range(4) for i in range(25)}


KILL_CHILD = """
import sys, numpy as np
from voice.store import VoiceStore
store = VoiceStore(sys.argv[1])
blob = bytes(2_000_000)   # a large kept clip makes each write slow enough to be cut
for i in range(10_000):
    emb = np.ones(16, np.float32) / 4.0
    store.add(f"v{i}", emb, "v1", "consent given", 5.0, "0" * 64, clip=blob, clip_format="wav")
    print(f"v{i}", flush=True)
"""


def test_killed_enrollment_leaves_the_store_consistent(tmp_path):
    db = tmp_path / "v.db"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(db)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parent.parent)
    committed = []
    deadline = time.time() + 60
    while len(committed) < 5 and time.time() < deadline:
        committed.append(child.stdout.readline().strip())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    committed += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    assert len(committed) >= 5
    with VoiceStore(db) as store:
        assert store.integrity_ok()
        voices = store.list()
        names = [v.name for v in voices]
        assert set(committed) <= set(names)            # nothing reported as enrolled was lost
        assert len(names) <= len(committed) + 1         # at most the one commit that raced the kill
        for v in voices:                                # and every row is whole
            assert v.embedding.shape == (16,) and store.clip(v.name) == (bytes(2_000_000), "wav")
        store.add("after-kill", np.ones(16, np.float32) / 4.0, "v1", "consent given", 5.0, "0" * 64)


# ---------------------------------------------------------------- CLI


def test_voice_cli_end_to_end(encoder, tmp_path, capsys):
    from tts.cli import main

    enc_file = tmp_path / "enc.safetensors"
    save_encoder(encoder, enc_file)
    (tmp_path / "clip.wav").write_bytes(to_bytes(speechlike(6.0)))
    common = ["--store", str(tmp_path / "v.db"), "--encoder", str(enc_file)]
    assert main(["voice", "enroll", str(tmp_path / "clip.wav"), "--name", "Eve", "--consent", CONSENT,
                 *common]) == 0
    assert main(["voice", "list", "--json", *common]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [v["name"] for v in listed if not v["preset"]] == ["Eve"] and not listed[-1]["stale"]
    assert main(["voice", "show", "Eve", *common]) == 0
    assert json.loads(capsys.readouterr().out)["consent"] == CONSENT
    assert main(["voice", "export", "Eve", str(tmp_path / "eve.json"), *common]) == 0
    assert main(["voice", "delete", "Eve", *common]) == 0
    assert main(["voice", "import", str(tmp_path / "eve.json"), *common]) == 0
    capsys.readouterr()
    for argv, message in [
        (["voice", "enroll", str(tmp_path / "clip.wav"), "--name", "Fay", "--consent", " "], "consent"),
        (["voice", "enroll", str(tmp_path / "missing.wav"), "--name", "Fay", "--consent", CONSENT], "not found"),
        (["voice", "enroll", str(tmp_path / "clip.wav"), "--name", "Eve", "--consent", CONSENT], "already exists"),
        (["voice", "show", "Nobody"], "unknown voice"),
        (["voice", "delete", "Nobody"], "no enrolled voice"),
    ]:
        assert main([*argv, *common]) == 2
        assert message in capsys.readouterr().err


# ---------------------------------------------------------------- trainer


def test_voice_training_runs_resumes_and_exports(tmp_path):
    from voice.train import VoiceTrainConfig, train_voice

    corpus = speaker_corpus(tmp_path / "corpus", speakers=6, clips=4, seconds=6.0)
    cfg = VoiceTrainConfig(corpus=str(corpus), out_dir=str(tmp_path / "run"), export=str(tmp_path / "e.safetensors"),
                           steps=3, batch_size=4, min_seconds=1.0, max_seconds=1.5, valid_every=3, log_every=1,
                           dev_every=3, warmup_steps=1,
                           encoder=dict(channels=16, pooled_channels=32, embedding_dim=8))
    assert train_voice(cfg)["step"] == 3
    assert load_encoder(tmp_path / "e.safetensors").config.embedding_dim == 8
    cfg.steps = 5
    result = train_voice(cfg)
    assert result["step"] == 5 and 0.0 <= result["best"]["eer"] <= 1.0
    logged = [json.loads(line) for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert any("dev_eer_10s" in m for m in logged)
    # --resume-from continues that checkpoint in a new directory with another window; its best is re-scored.
    moved = VoiceTrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "moved"), "steps": 6,
                                "resume_from": str(tmp_path / "run" / "last.pt"),
                                "encoder": {"window_seconds": 2.0, "window_hop_seconds": 1.0},
                                "export": str(tmp_path / "m.safetensors")})
    assert train_voice(moved)["best"]["step"] == 6          # the first validation after the move wins
    exported = load_encoder(tmp_path / "m.safetensors")
    assert (exported.config.window_seconds, exported.config.channels) == (2.0, 16)
    assert torch.load(tmp_path / "moved" / "last.pt", weights_only=True)["step"] == 6
    with pytest.raises(ValueError, match="only .*window_seconds.* may change"):
        train_voice(VoiceTrainConfig(**{**moved.__dict__, "out_dir": str(tmp_path / "bad"),
                                        "encoder": {"channels": 32}}))


def test_warped_crop_scales_pitch_and_keeps_the_length():
    import random

    from voice.train import warped_crop

    t = np.arange(SR * 2) / SR
    stream = np.sin(2 * np.pi * 200.0 * t).astype(np.float32)
    for factor in (0.88, 1.0, 1.12):
        crop = warped_crop(stream, SR, factor, SR, random.Random(0))
        assert crop.shape == (SR,)
        peak = np.argmax(np.abs(np.fft.rfft(crop * np.hanning(SR))))  # 1-s crop: 1-Hz bins
        assert abs(peak - 200.0 * factor) <= 2.0


def test_voice_fine_tune_with_speaker_augmentation(tmp_path):
    """--init-from an encoder file and --warp-factors: each speaker x rate is a class; the start is logged."""
    from voice.encoder import EncoderConfig, SpeakerEncoder, save_encoder
    from voice.train import VoiceTrainConfig, train_voice

    corpus = speaker_corpus(tmp_path / "corpus", speakers=6, clips=3, seconds=6.0)
    start = tmp_path / "start.safetensors"
    torch.manual_seed(0)
    save_encoder(SpeakerEncoder(EncoderConfig(channels=16, pooled_channels=32, embedding_dim=8)).eval(), start)
    cfg = VoiceTrainConfig(corpus=str(corpus), out_dir=str(tmp_path / "run"), export=str(tmp_path / "e.safetensors"),
                           steps=2, batch_size=4, min_seconds=1.0, max_seconds=1.5, valid_every=2, log_every=1,
                           dev_every=3, warmup_steps=1, init_from=str(start), warp_factors=(0.9, 1.1))
    assert train_voice(cfg)["step"] == 2
    logged = [json.loads(line) for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert logged[0]["step"] == 0 and logged[0]["init_from"] == str(start) and "dev_eer_3s" in logged[0]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert len(ckpt["speakers"]) == 4 * 3 and "spk0@1.1" in ckpt["speakers"]   # 4 loss speakers x 3 rates
    assert load_encoder(tmp_path / "e.safetensors").config.channels == 16       # the start file's shape
    # --pitch-bins on top of --init-from grows the start file's encoder by a periodicity input.
    grown = VoiceTrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "grown"), "encoder": {"pitch_bins": 8},
                                "export": str(tmp_path / "g.safetensors")})
    train_voice(grown)
    exported = load_encoder(tmp_path / "g.safetensors").config
    assert (exported.channels, exported.pitch_bins) == (16, 8)
    with pytest.raises(ValueError, match="warp factors"):
        train_voice(VoiceTrainConfig(corpus=str(corpus), out_dir=str(tmp_path / "bad"), warp_factors=(3.0,)))


def test_a_decoder_voice_is_kept_per_decoder_and_goes_with_its_voice(encoder, tmp_path):
    """The store keeps a voice fitted for a codec decoder beside the voice, one per decoder; re-embedding or
    deleting the voice drops it (it was fitted from the old embedding), and an unknown voice has none."""
    fitted = np.linspace(-1, 1, 40, dtype=np.float32)
    with VoiceStore(tmp_path / "v.db") as store:
        enroll(store, encoder, to_bytes(speechlike(6.0)), "kept", CONSENT, keep_clip=True)
        enroll(store, encoder, to_bytes(speechlike(6.0, f0=200)), "other", CONSENT)
        assert store.decoder_voice("kept", "codec-a") is None
        store.set_decoder_voice("kept", "codec-a", fitted)
        store.set_decoder_voice("other", "codec-a", -fitted)
        store.set_decoder_voice("kept", "codec-b", 2 * fitted)
    with VoiceStore(tmp_path / "v.db") as store:   # it lasts
        np.testing.assert_array_equal(store.decoder_voice("kept", "codec-a"), fitted)
        np.testing.assert_array_equal(store.decoder_voice("kept", "codec-b"), 2 * fitted)
        store.set_decoder_voice("kept", "codec-a", 3 * fitted)   # replaced, not added
        np.testing.assert_array_equal(store.decoder_voice("kept", "codec-a"), 3 * fitted)
        with pytest.raises(VoiceNotFoundError):
            store.set_decoder_voice("nobody", "codec-a", fitted)
        with pytest.raises(VoiceStoreError, match="finite"):
            store.set_decoder_voice("kept", "codec-a", np.array([np.nan], np.float32))
        before = store.get("kept").embedding
        newer = SpeakerEncoder(encoder.config).eval()
        newer.model_id = "test-encoder-v2"
        reembed(store, newer, "kept")
        assert store.decoder_voice("kept", "codec-a") is None and store.decoder_voice("kept", "codec-b") is None
        # A fit that started before the re-embed (another process) is not kept; one from the new embedding is.
        assert not store.set_decoder_voice("kept", "codec-a", fitted, fitted_from=before)
        assert store.decoder_voice("kept", "codec-a") is None
        assert store.set_decoder_voice("kept", "codec-a", fitted, fitted_from=store.get("kept").embedding)
        np.testing.assert_array_equal(store.decoder_voice("kept", "codec-a"), fitted)
        store.delete("other")
        enroll(store, encoder, to_bytes(speechlike(6.0, f0=200)), "other", CONSENT)   # a new voice of that name
        assert store.decoder_voice("other", "codec-a") is None
        assert store.integrity_ok()
        with pytest.raises(VoiceNotFoundError):   # a failed delete changes nothing
            store.delete("nobody")
        assert [v.name for v in store.list()] == ["kept", "other"]
