"""gRPC service end to end on a loopback port: every RPC, every error status, cancellation, deadlines, auth."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from backbone.tokenizer import TextTokenizer
from codec.bitstream import unpack_frames
from codec.loaders import load_codec
from serve.client import TtsClient
from serve.server import BackgroundServer, ServerConfig
from serve.stubs import pb
from tts.engine import Engine
from voice.store import VoiceStore
from tests.test_stream import random_backbone

CONSENT = "I, the speaker, agree that this recording may be used to synthesise my voice."


@pytest.fixture(scope="module")
def engine():
    codec = load_codec()
    return Engine(codec, random_backbone(codec), TextTokenizer())


def start(engine, tmp_path, **config) -> BackgroundServer:
    return BackgroundServer(engine, VoiceStore(tmp_path / "voices.db"), ServerConfig(port=0, **config))


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    srv = start(engine, tmp_path_factory.mktemp("srv"), max_streams=8)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with TtsClient(server.target, timeout=60) as c:
        yield c


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    return info.value.code(), info.value.details()


def test_config_voices_health_and_reflection(server, client):
    cfg = client.service_config()
    assert cfg.native_sample_rate_hz == 16000 and pb.CODEC in cfg.encodings and cfg.max_streams == 8
    assert list(cfg.codec_kbps) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    names = {v.name for v in client.voices()}
    assert {"slt", "rms", "kal"} <= names
    assert client.get_voice("slt").preset
    health = health_pb2_grpc.HealthStub(client.channel).Check(
        health_pb2.HealthCheckRequest(service="tts.v1.TextToSpeech"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert "tts.v1.TextToSpeech" in {s.name for s in answer.list_services_response.service}


def test_unary_synthesis_returns_the_whole_utterance(client):
    response = client.synthesize("Hello there.", voice="rms", seed=1)
    assert response.format.encoding == pb.LINEAR16 and response.format.sample_rate_hz == 16000
    assert len(response.audio) == pytest.approx(response.duration_seconds * 16000 * 2, abs=4)
    assert response.duration_seconds > 0.2


def test_stream_chunks_are_numbered_timed_and_resampled(client):
    chunks = list(client.stream("Hello there. How are you?", voice="slt", encoding=pb.FLOAT32, sample_rate=24000))
    assert [c.sequence_number for c in chunks] == list(range(len(chunks)))
    assert chunks[0].format.sample_rate_hz == 24000 and chunks[0].format.encoding == pb.FLOAT32
    assert chunks[-1].final and not any(c.final for c in chunks[:-1])
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_seconds == pytest.approx(a.start_seconds + a.duration_seconds)
        assert b.server_elapsed_seconds >= a.server_elapsed_seconds
    total = sum(len(c.audio) for c in chunks) / 4
    assert total / 24000 == pytest.approx(sum(c.duration_seconds for c in chunks), abs=1e-3)
    assert {c.segment for c in chunks} == {0, 1}


def test_codec_packets_decode_to_the_same_audio_as_pcm(client, engine):
    pcm = client.synthesize("Good morning.", voice="slt", seed=5).audio
    chunks = list(client.stream("Good morning.", voice="slt", seed=5, encoding=pb.CODEC, codec_kbps=1.0))
    info = chunks[0].format.codec
    assert info.n_q == 4 and info.kbps == pytest.approx(1.0) and info.model_id == engine.codec.tokens_id
    codes = unpack_frames(b"".join(c.audio for c in chunks), info.n_q, info.bits_per_code)
    # a speaker-conditioned codec's packets come with the stream's voice, for the client's decoder
    voice = np.asarray(info.voice_embedding, np.float32) if len(info.voice_embedding) else None
    assert (voice is not None) == engine.codec.speaker_conditioned
    if voice is not None:
        np.testing.assert_allclose(voice, engine.voice_embedding("slt"), atol=1e-6)
        assert info.voice_encoder_id == engine.codec.speaker_encoder_id
    decoded = engine.codec.decode_aligned(torch.from_numpy(codes).T[None], voice)[0, 0].numpy()
    reference = np.frombuffer(pcm, "<i2") / 32768.0
    assert decoded.size == reference.size
    np.testing.assert_allclose(decoded, reference, atol=1e-3)   # float32 rounding (tests/test_stream.py)
    low = list(client.stream("Good morning.", voice="slt", seed=5, encoding=pb.CODEC, codec_kbps=0.5))
    assert low[0].format.codec.n_q == 2
    # a speaking rate leaves the packets at the voice's own pace and tells the client the rate to play them at
    slow = list(client.stream("Good morning.", voice="slt", seed=5, encoding=pb.CODEC, codec_kbps=1.0,
                              speaking_rate=0.5))
    assert slow[0].format.codec.speaking_rate == pytest.approx(0.5) and info.speaking_rate in (0.0, 1.0)
    assert b"".join(c.audio for c in slow) == b"".join(c.audio for c in chunks)
    slow_pcm = client.synthesize("Good morning.", voice="slt", seed=5, speaking_rate=0.5).audio
    assert len(slow_pcm) == pytest.approx(2 * len(pcm), rel=0.01)


def test_text_streamed_in_pieces_comes_back_as_audio(client):
    text = "The first sentence is here. And a second one follows it! Then a third?"
    pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
    chunks = list(client.stream_text(iter(pieces), voice="kal"))
    assert chunks[-1].final and max(c.segment for c in chunks) == 2
    assert sum(c.duration_seconds for c in chunks) > 1.0


def test_same_seed_same_audio_even_with_other_streams_running(server, client):
    solo = [client.synthesize(f"Stream number {i}.", seed=i).audio for i in range(4)]
    results = [None] * 4

    def run(i):
        with TtsClient(server.target, timeout=60) as c:
            results[i] = b"".join(ch.audio for ch in c.stream(f"Stream number {i}.", seed=i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    for i in range(4):
        a, b = np.frombuffer(results[i], "<i2"), np.frombuffer(solo[i], "<i2")
        assert a.size == b.size and np.abs(a.astype(int) - b).max() <= 2   # batched rows match solo runs


@pytest.mark.parametrize("call, status, words", [
    (lambda c: c.synthesize(""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    (lambda c: c.synthesize("x" * 6000), grpc.StatusCode.INVALID_ARGUMENT, "limit is 5000"),
    (lambda c: c.synthesize("hello", voice="nobody"), grpc.StatusCode.NOT_FOUND, "unknown voice"),
    (lambda c: c.synthesize("hello", sample_rate=4000), grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz"),
    (lambda c: c.synthesize("hello", encoding=9), grpc.StatusCode.INVALID_ARGUMENT, "unsupported encoding"),
    (lambda c: c.synthesize("hello", temperature=-1), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    (lambda c: c.synthesize("hello", guidance=11), grpc.StatusCode.INVALID_ARGUMENT, "guidance"),
    (lambda c: c.synthesize("hello", speaking_rate=3), grpc.StatusCode.INVALID_ARGUMENT, "speaking_rate"),
    (lambda c: c.synthesize("hello", encoding=pb.CODEC, codec_kbps=float("nan")), grpc.StatusCode.INVALID_ARGUMENT,
     "codec_kbps"),
    (lambda c: c.stream("!!!"), grpc.StatusCode.INVALID_ARGUMENT, "nothing that can be spoken"),
    (lambda c: c.get_voice("ghost"), grpc.StatusCode.NOT_FOUND, "unknown voice"),
    (lambda c: c.delete_voice("slt"), grpc.StatusCode.FAILED_PRECONDITION, "built in"),
    (lambda c: c.enroll("Eve", b"not audio", CONSENT), grpc.StatusCode.INVALID_ARGUMENT, ""),
    (lambda c: c.enroll("Eve", b"x", ""), grpc.StatusCode.INVALID_ARGUMENT, "consent"),
])
def test_bad_requests_get_the_right_status(client, call, status, words):
    code, details = code_of(lambda: call(client))
    assert code == status and words in details


def test_bidirectional_stream_must_start_with_config(client):
    requests = iter([pb.StreamingSynthesizeRequest(text="hello")])
    code, details = code_of(lambda: client.stub.StreamingSynthesize(requests, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "config" in details


def test_enroll_get_synthesize_delete(client):
    clip = open("tests/assets/voice_a1.flac", "rb").read()
    voice = client.enroll("Ada", clip, CONSENT)
    assert voice.name == "Ada" and voice.clip_seconds > 3 and voice.consent == CONSENT
    assert client.get_voice("Ada").name == "Ada"
    code, _ = code_of(lambda: client.enroll("Ada", clip, CONSENT))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert client.synthesize("Hi.", voice="Ada").duration_seconds > 0
    client.delete_voice("Ada")
    assert code_of(lambda: client.get_voice("Ada"))[0] == grpc.StatusCode.NOT_FOUND


def test_an_enrolled_voice_with_a_calibrated_voice_is_decoded_in_it_and_its_packets_say_so(engine, tmp_path):
    """A voice calibrated on the backbone's speech (tts voice fit) is what the server decodes the voice's speech in,
    and what its codec packets tell the client to decode them in: the client's audio is the server's."""
    from tts.voice_calibration import speech_voice_key

    srv = start(engine, tmp_path)
    try:
        with TtsClient(srv.target, timeout=60) as c:
            c.enroll("Cal", open("tests/assets/voice_a1.flac", "rb").read(), CONSENT)
            before = c.synthesize("Good morning.", voice="Cal", seed=5).audio
            with VoiceStore(tmp_path / "voices.db") as store:   # as `tts voice fit` leaves it
                start_voice = engine.codec.decoder.speaker.resolve(torch.from_numpy(store.get("Cal").embedding), 1)
                calibrated = (start_voice[0] * 1.1).numpy()
                store.set_decoder_voice("Cal", speech_voice_key(engine), calibrated)
            pcm = c.synthesize("Good morning.", voice="Cal", seed=5).audio
            assert pcm != before
            chunks = list(c.stream("Good morning.", voice="Cal", seed=5, encoding=pb.CODEC, codec_kbps=1.0))
            info = chunks[0].format.codec
            np.testing.assert_allclose(np.asarray(info.voice_embedding, np.float32), calibrated, atol=1e-6)
            codes = unpack_frames(b"".join(ch.audio for ch in chunks), info.n_q, info.bits_per_code)
            decoded = engine.codec.decode_aligned(torch.from_numpy(codes).T[None], calibrated)[0, 0].numpy()
            np.testing.assert_allclose(decoded, np.frombuffer(pcm, "<i2") / 32768.0, atol=1e-3)
    finally:
        srv.stop()


def test_enrolled_voices_are_calibrated_in_the_background(engine, tmp_path, monkeypatch):
    """serve/calibrator.py: an enrollment that keeps its clip, or the first request for such a voice enrolled
    elsewhere, is calibrated on a worker thread; meanwhile its streams decode in the embedding (no request waits),
    after it in the calibration. No clip kept, a built-in voice, or `--no-calibrate`: nothing is queued."""
    import tts.voice_calibration
    from voice.enroll import enroll

    release, dim = threading.Event(), engine.codec.decoder.speaker.voice_dim

    def held_calibration(engine, samples, start, options):   # the real one is tested in test_voice_fit.py
        release.wait(60)
        return tts.voice_calibration.Calibration(np.concatenate([start, np.full(dim - start.size, 0.02)]), 1, 0.5)

    monkeypatch.setattr(tts.voice_calibration, "calibrate_speech_voice", held_calibration)
    clip = open("tests/assets/voice_a1.flac", "rb").read()

    def voice_of(c, name):
        chunks = list(c.stream("Hi.", voice=name, seed=1, encoding=pb.CODEC, codec_kbps=1.0))
        return np.asarray(chunks[0].format.codec.voice_embedding, np.float32)

    def settle(calibrator):
        for _ in range(600):
            if not calibrator.pending():
                return
            time.sleep(0.05)
        raise AssertionError("the calibration did not finish")

    srv = start(engine, tmp_path)
    try:
        calibrator = srv.server.servicer.calibrator
        with TtsClient(srv.target, timeout=60) as c:
            assert not c.enroll("Kim", clip, CONSENT, keep_clip=True).calibrated
            assert calibrator.pending() == 1
            assert voice_of(c, "Kim").size == engine.backbone.config.speaker_dim   # not waiting: the embedding
            assert calibrator.pending() == 1                                      # and not queued twice
            release.set()
            settle(calibrator)
            assert list(calibrator.finished) == ["Kim"] and voice_of(c, "Kim")[-1] == np.float32(0.02)
            assert c.get_voice("Kim").calibrated and not c.get_voice("slt").calibrated   # what clients see
            with VoiceStore(tmp_path / "voices.db") as store:   # enrolled by another process, clip kept
                enroll(store, engine.encoder, clip, "Max", CONSENT, keep_clip=True)
            c.synthesize("Hi.", voice="Max")
            settle(calibrator)
            assert list(calibrator.finished) == ["Kim", "Max"] and voice_of(c, "Max").size == dim
            c.enroll("Lee", clip, CONSENT)
            c.synthesize("Hi.", voice="Lee")
            c.synthesize("Hi.", voice="slt")
            assert calibrator.pending() == 0 and list(calibrator.finished) == ["Kim", "Max"]
    finally:
        srv.stop()
    srv = start(engine, tmp_path / "off", calibrate_voices=False)
    try:
        with TtsClient(srv.target, timeout=60) as c:
            c.enroll("Kim", clip, CONSENT, keep_clip=True)
            assert srv.server.servicer.calibrator is None and voice_of(c, "Kim").size < dim
    finally:
        srv.stop()


def test_a_voice_whose_calibration_failed_is_not_retried_on_every_request(engine, tmp_path, monkeypatch):
    """Each try costs tens of seconds of a core: after a failure, requests do not start another for a while; a
    new enrollment of the name does."""
    import tts.voice_calibration
    from serve.calibrator import BackgroundCalibrator
    from voice.enroll import enroll

    tries = []

    def failing(engine, samples, start, options):
        tries.append(1)
        raise ValueError("calibrating a voice needs at least 1 s of its audio")

    monkeypatch.setattr(tts.voice_calibration, "calibrate_speech_voice", failing)
    store = VoiceStore(tmp_path / "voices.db")
    enroll(store, engine.encoder, open("tests/assets/voice_a1.flac", "rb").read(), "Kim", CONSENT, keep_clip=True)
    calibrator = BackgroundCalibrator(engine, store)

    def settled_after(queued: bool) -> bool:
        for _ in range(600):
            if not calibrator.pending():
                return queued
            time.sleep(0.05)
        raise AssertionError("the calibration did not finish")

    try:
        assert settled_after(calibrator.request("Kim")) and len(tries) == 1 and not calibrator.finished
        assert not calibrator.request("Kim") and not calibrator.request("Nobody")
        assert settled_after(calibrator.request("Kim", enrolled=True)) and len(tries) == 2
        calibrator.retry_after_s = 0.0
        assert settled_after(calibrator.request("Kim")) and len(tries) == 3
    finally:
        calibrator.stop()
        store.close()


def test_malformed_bytes_do_not_crash_the_server(client):
    raw = client.channel.unary_unary("/tts.v1.TextToSpeech/Synthesize", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError):
        raw(b"\xff\xfe\x00garbage\x12\x99", timeout=10)
    assert client.synthesize("Still here.").duration_seconds > 0


LONG_TEXT = "This stream runs long enough to be interrupted. " * 20


def test_a_unary_answer_past_its_size_limit_is_refused_and_its_work_stops(engine, tmp_path):
    """Synthesize answers in one message; audio past the limit ends the call (a client would refuse it)."""
    srv = start(engine, tmp_path, max_unary_audio_bytes=8000)   # a quarter second of LINEAR16 at 16 kHz
    try:
        with TtsClient(srv.target, timeout=60) as c:
            assert c.service_config().max_unary_audio_bytes == 8000
            code, details = code_of(lambda: c.synthesize(LONG_TEXT))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "use SynthesizeStream" in details
            deadline = time.time() + 10
            while srv.server.servicer.scheduler.active_streams and time.time() < deadline:
                time.sleep(0.02)
            assert srv.server.servicer.scheduler.active_streams == 0   # the refused job no longer runs
            assert len(b"".join(ch.audio for ch in c.stream(LONG_TEXT))) > 8000   # streaming has no such limit
    finally:
        srv.stop()


def test_a_text_stream_left_idle_is_ended_and_frees_its_slot(engine, tmp_path):
    srv = start(engine, tmp_path, max_streams=1, text_idle_seconds=0.5)
    try:
        with TtsClient(srv.target, timeout=60) as c:
            assert c.service_config().text_idle_seconds == 0.5

            def pieces_then_silence():
                yield "Hello there."
                time.sleep(3)          # a client that keeps the stream open and sends nothing
                yield "Too late."

            code, details = code_of(lambda: c.stream_text(pieces_then_silence()))
            assert code == grpc.StatusCode.OUT_OF_RANGE and "end_of_input" in details
            assert c.synthesize("hello").duration_seconds > 0            # its slot is free again

            def slow_but_steady():
                for word in ("One", "two", "three."):
                    time.sleep(0.3)       # each gap under the limit
                    yield word + " "

            chunks = list(c.stream_text(slow_but_steady()))
            assert chunks and chunks[-1].final
    finally:
        srv.stop()


def test_a_client_that_stops_taking_audio_is_ended_and_frees_its_slot(engine, tmp_path):
    """Backpressure stops its generation; the stall limit frees its slot (float32 at 48 kHz fills the window)."""
    srv = start(engine, tmp_path, max_streams=1, stall_seconds=1.0)
    try:
        with TtsClient(srv.target, timeout=60) as a, TtsClient(srv.target, timeout=60) as b:
            assert a.service_config().stall_seconds == 1.0
            stalled = a.stream(LONG_TEXT * 3, encoding=pb.FLOAT32, sample_rate=48000)
            next(stalled)                                   # then it takes nothing more
            deadline = time.time() + 20
            while srv.server.servicer.streams and time.time() < deadline:
                time.sleep(0.1)
            assert srv.server.servicer.streams == 0
            assert b.synthesize("hello").duration_seconds > 0   # the slot is free
            stalled.close()
    finally:
        srv.stop()


def test_too_many_streams_cancellation_frees_the_slot_and_deadlines(engine, tmp_path):
    srv = start(engine, tmp_path, max_streams=1)
    try:
        with TtsClient(srv.target, timeout=60) as a, TtsClient(srv.target, timeout=60) as b:
            stream = a.stream(LONG_TEXT)
            next(stream)
            code, details = code_of(lambda: b.synthesize("hello"))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in details
            stream.close()                                   # the client goes away mid-stream
            deadline = time.time() + 10
            while (srv.server.servicer.streams or srv.server.servicer.scheduler.active_streams) and \
                    time.time() < deadline:                  # the worker drops it at its next step
                time.sleep(0.02)
            assert srv.server.servicer.streams == 0 and srv.server.servicer.scheduler.active_streams == 0
            assert b.synthesize("hello").duration_seconds > 0   # the slot is free again
            code, _ = code_of(lambda: list(TtsClient(srv.target, timeout=0.3).stream(LONG_TEXT)))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.time() + 10
            while srv.server.servicer.scheduler.active_streams and time.time() < deadline:
                time.sleep(0.02)
            assert srv.server.servicer.scheduler.active_streams == 0   # the expired stream's work stopped
    finally:
        srv.stop()


def test_token_auth(engine, tmp_path):
    srv = start(engine, tmp_path, token="s3cret")
    try:
        for token, expected in ((None, "missing token"), ("wrong", "wrong token")):
            with TtsClient(srv.target, token=token, timeout=10) as c:
                code, details = code_of(c.voices)
                assert code == grpc.StatusCode.UNAUTHENTICATED and expected in details
                code, _ = code_of(lambda: c.stream("hello"))
                assert code == grpc.StatusCode.UNAUTHENTICATED
                health = health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest())
                assert health.status == health_pb2.HealthCheckResponse.SERVING    # health needs no token
        with TtsClient(srv.target, token="s3cret", timeout=30) as c:
            assert c.voices() and c.synthesize("hello").duration_seconds > 0
    finally:
        srv.stop()


def test_graceful_stop_finishes_running_streams(engine, tmp_path):
    srv = start(engine, tmp_path)
    got = []
    with TtsClient(srv.target, timeout=60) as c:
        stream = c.stream("One more sentence before we close. And another one.")
        got.append(next(stream))
        stopper = threading.Thread(target=srv.stop, kwargs={"grace": 30})
        stopper.start()
        got.extend(stream)
        stopper.join(30)
    assert got[-1].final


def test_client_cli(server, tmp_path, capsys):
    from tts.cli import main
    import soundfile as sf

    common = ["--target", server.target]
    out = tmp_path / "c.wav"
    assert main(["-v", "client", "say", "Hello from the client.", "--out", str(out), *common]) == 0
    audio, sr = sf.read(out)
    assert sr == 16000 and audio.size > 0
    assert "underruns 0" in capsys.readouterr().err
    out2 = tmp_path / "codec.wav"
    assert main(["client", "say", "Hello from the client.", "--encoding", "codec", "--out", str(out2), *common]) == 0
    assert sf.read(out2)[0].size == audio.size        # the same seed, decoded here from codec packets
    # at a speaking rate the packets keep the voice's pace and the client paces what it decodes, as the server does
    slow, slow_codec = tmp_path / "slow.wav", tmp_path / "slow_codec.wav"
    assert main(["client", "say", "Hello from the client.", "--rate", "0.8", "--out", str(slow), *common]) == 0
    assert main(["client", "say", "Hello from the client.", "--rate", "0.8", "--encoding", "codec", "--out",
                 str(slow_codec), *common]) == 0
    paced, paced_here = sf.read(slow)[0], sf.read(slow_codec)[0]
    assert paced.size == paced_here.size and abs(paced.size / audio.size - 1.25) < 0.01
    assert np.abs(paced - paced_here).max() < 0.01     # int16 PCM against float decoding here
    # a .sttc name keeps the packets as they come, with the stream's voice; `tts codec decode` plays them
    reply, replayed = tmp_path / "reply.sttc", tmp_path / "replayed.wav"
    capsys.readouterr()
    assert main(["client", "say", "Hello from the client.", "--out", str(reply), *common]) == 0
    assert "its voice" in capsys.readouterr().err
    assert main(["codec", "decode", str(reply), str(replayed)]) == 0
    assert "in its voice" in capsys.readouterr().out
    replay, heard = sf.read(replayed)[0], sf.read(out2)[0]
    assert replay.size == heard.size     # the same frames; the voice, stored at 8 bits, moves the samples a little
    assert np.linalg.norm(replay - heard) < 0.05 * np.linalg.norm(heard)   # 0.011; the default voice: ~1.5
    assert main(["client", "say", "hello", "--encoding", "linear16", "--out", str(reply), *common]) == 2
    assert "a .sttc file holds codec packets" in capsys.readouterr().err
    assert main(["client", "voices", *common]) == 0
    assert "slt\tpreset" in capsys.readouterr().out
    assert main(["client", "say", "hello", "--voice", "nobody", "--out", str(out), *common]) == 2
    assert "NOT_FOUND: unknown voice" in capsys.readouterr().err



def test_client_refuses_codec_packets_its_codec_cannot_decode(server, tmp_path, capsys, monkeypatch):
    """A client whose codec has another token vocabulary says so instead of playing noise; nothing is written."""
    import codec.loaders
    from tts.cli import main

    def foreign_codec(*args, **kwargs):
        model = load_codec(*args, **kwargs)
        model.tokens_id = "0123456789abcdef"
        return model

    monkeypatch.setattr(codec.loaders, "load_codec", foreign_codec)
    out = tmp_path / "never.wav"
    assert main(["client", "say", "Hello.", "--encoding", "codec", "--out", str(out), "--target", server.target]) == 2
    err = capsys.readouterr().err
    assert "the server's stream was made by codec tokens" in err and "0123456789abcdef" in err
    assert not out.exists()
    # keeping the packets in a stream file decodes nothing here, so it needs no matching codec
    kept = tmp_path / "kept.sttc"
    assert main(["client", "say", "Hello.", "--out", str(kept), "--target", server.target]) == 0
    assert kept.stat().st_size > 0

def test_a_reader_that_stops_reading_does_not_make_the_server_buffer_grow(engine):
    """The scheduler stops starting segments for a stream whose audio is not taken (backpressure)."""
    import asyncio

    from serve.scheduler import OutputFormat, Scheduler, StreamJob

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    scheduler = Scheduler(engine, max_queued_seconds=1.0)
    scheduler.start()
    try:
        stream = engine.stream(np.ones(192, np.float32) / np.sqrt(192))
        stream.add_text("Short one. " * 40)
        job = StreamJob(stream, OutputFormat(), loop)
        job.end_input()
        scheduler.submit(job)
        deadline = time.time() + 20
        while time.time() < deadline and not (job.row is None and job.audio_seconds > 1.0):
            time.sleep(0.05)
        time.sleep(0.5)
        produced = job.audio_seconds
        time.sleep(1.0)
        assert job.audio_seconds == produced                 # nothing more while nobody reads
        assert job.stream.segments and produced < 1.0 + 8.0  # the limit plus at most one segment
        while not job.queue.empty():                         # the reader comes back ...
            job.taken(asyncio.run_coroutine_threadsafe(job.queue.get(), loop).result(5))
        scheduler.wake()
        deadline = time.time() + 20
        while time.time() < deadline and job.audio_seconds == produced:
            time.sleep(0.05)
        assert job.audio_seconds > produced                  # ... and generation resumes
        job.cancel()
    finally:
        scheduler.stop()
        loop.call_soon_threadsafe(loop.stop)


def test_tls(engine, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    srv = BackgroundServer(engine, VoiceStore(tmp_path / "v.db"),
                           ServerConfig(host="localhost", port=0, tls_cert=str(cert), tls_key=str(key)))
    try:
        with TtsClient(f"localhost:{srv.port}", tls_ca=str(cert), timeout=30) as c:
            assert c.synthesize("Secure hello.").duration_seconds > 0
        with TtsClient(f"localhost:{srv.port}", timeout=5) as plain:      # plaintext to a TLS port fails
            assert code_of(plain.voices)[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()
