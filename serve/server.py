"""The gRPC server (grpc.aio): synthesis streams batched by one scheduler, voices, health, reflection.

Handlers validate everything before any work (status codes say what to fix),
turn requests into scheduler jobs and relay the jobs' audio. Concurrency is
bounded (`max_streams`, RESOURCE_EXHAUSTED beyond), a client that goes away or
whose deadline passes cancels its job at once, and shutdown drains: health
turns NOT_SERVING, new streams get UNAVAILABLE, running ones finish.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from backbone.generate import MAX_RATE as MAX_SPEAKING_RATE
from backbone.generate import MIN_RATE as MIN_SPEAKING_RATE
from backbone.generate import SamplingConfig
from serve.calibrator import BackgroundCalibrator
from serve.scheduler import Emitted, OutputFormat, Scheduler, StreamJob
from serve.stubs import pb, rpc
from tts.engine import Engine, ModelMismatchError, SynthesisError, SynthesisOptions
from voice.enroll import ClipLimits, EnrollmentError, StaleVoiceError, all_voices, enroll, find_voice
from voice.presets import BuiltInVoiceError, refuse_built_in
from voice.store import VoiceExistsError, VoiceNotFoundError, VoiceStore, VoiceStoreError

log = logging.getLogger("tts.serve")
SERVICE = pb.DESCRIPTOR.services_by_name["TextToSpeech"].full_name
MIN_RATE, MAX_RATE = 8000, 48000
ENCODINGS = {pb.AUDIO_ENCODING_UNSPECIFIED: "linear16", pb.LINEAR16: "linear16", pb.FLOAT32: "float32",
             pb.CODEC: "codec"}


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # One scheduler thread on one core keeps 12 streams under real time with guidance on (worst RTF 0.61,
    # TTFA p50 359 ms); at 16 it falls behind (RTF 1.32, playback starting 2.6 s late) (session 19).
    max_streams: int = 12
    max_text_chars: int = 5000
    # Synthesize answers in one message; gRPC clients refuse messages over 4 MiB unless told otherwise, and a
    # bigger answer was computed in full only to be refused (5 000 digits: 41 MB). Past this, the call ends.
    max_unary_audio_bytes: int = 4 * 2**20 - 64 * 2**10
    # A StreamingSynthesize stream holds one of `max_streams` slots: one that sends nothing for this long while
    # it has nothing to speak is ended (OUT_OF_RANGE), so idle clients cannot hold every slot.
    text_idle_seconds: float = 60.0
    # A client that takes no audio for this long (its transport window full, the write waiting) is ended
    # (DEADLINE_EXCEEDED): backpressure stops its generation, but it would keep its slot for ever.
    stall_seconds: float = 30.0
    max_queued_seconds: float = 10.0
    default_voice: str = "slt"
    grace_seconds: float = 30.0
    # Calibrate enrolled voices' speech in the background (serve/calibrator.py): after an enrollment that keeps its
    # clip, and on the first request for a voice that has no calibration for these models.
    calibrate_voices: bool = True


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _error_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a known failure maps to (anything else is INTERNAL, logged)."""
    if isinstance(exc, _Reject):
        return exc.code, exc.message
    if isinstance(exc, VoiceNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc).strip("'\"")
    if isinstance(exc, VoiceExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc)
    if isinstance(exc, (StaleVoiceError, ModelMismatchError, BuiltInVoiceError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, (SynthesisError, EnrollmentError, VoiceStoreError, ValueError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"


class TokenAuth(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every call except health checks and reflection."""

    EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.EXEMPT):
            return handler
        sent = dict(details.invocation_metadata or ()).get("authorization")
        if sent == f"Bearer {self.token}":
            return handler
        message = ("missing token: send metadata 'authorization: Bearer <token>'" if sent is None
                   else "wrong token")

        async def deny(_request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        kind = ("stream" if handler.request_streaming else "unary") + "_" + \
               ("stream" if handler.response_streaming else "unary")
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(deny, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


class TextToSpeechServicer(rpc.TextToSpeechServicer):
    def __init__(self, engine: Engine, store: VoiceStore, config: ServerConfig) -> None:
        self.engine, self.store, self.config = engine, store, config
        self.scheduler = Scheduler(engine, config.max_queued_seconds)
        self.scheduler.on_job_done = self._log_job
        self.streams = 0
        self.draining = False
        self.calibrator = BackgroundCalibrator(engine, store) if config.calibrate_voices else None
        codec = engine.codec.config
        self.max_n_q = engine.backbone.config.n_codebooks
        self.codec_rates = [codec.kbps(n) for n in range(1, self.max_n_q + 1)]

    # ------------------------------------------------------------ validation

    def _output(self, audio: pb.AudioConfig) -> OutputFormat:
        kind = ENCODINGS.get(audio.encoding)
        if kind is None:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported encoding {audio.encoding}; "
                          "use LINEAR16, FLOAT32 or CODEC")
        codec = self.engine.codec.config
        if kind == "codec":
            n_q = self.max_n_q
            if audio.codec_kbps:
                if not 0 < audio.codec_kbps < math.inf:   # NaN and inf too
                    raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "codec_kbps must be a positive number (0: highest)")
                n_q = min(self.max_n_q, codec.n_q_for_kbps(audio.codec_kbps))
            return OutputFormat("codec", codec.sample_rate, n_q, codec.bits_per_code)
        rate = audio.sample_rate_hz or self.engine.sample_rate
        if not MIN_RATE <= rate <= MAX_RATE:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                          f"sample_rate_hz {rate} is not supported; use {MIN_RATE}-{MAX_RATE} or 0 (native)")
        return OutputFormat(kind, rate)

    def _options(self, config: pb.SynthesisConfig) -> SynthesisOptions:
        temperature = config.temperature if config.HasField("temperature") else SamplingConfig.temperature
        if not 0 <= temperature <= 2:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "temperature must be between 0 and 2")
        guidance = config.guidance if config.HasField("guidance") else SamplingConfig.guidance
        if not 0 <= guidance <= 10:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "guidance must be between 0 and 10")
        rate = config.speaking_rate if config.HasField("speaking_rate") else SamplingConfig.speaking_rate
        if not MIN_SPEAKING_RATE <= rate <= MAX_SPEAKING_RATE:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                          f"speaking_rate must be between {MIN_SPEAKING_RATE} and {MAX_SPEAKING_RATE}")
        return SynthesisOptions(seed=config.seed % (2 ** 63),
                                sampling=SamplingConfig(temperature=temperature, guidance=guidance,
                                                        speaking_rate=rate),
                                max_text_chars=self.config.max_text_chars)

    def _format(self, out: OutputFormat, job: StreamJob) -> pb.AudioFormat:
        if out.kind == "codec":
            codec = self.engine.codec
            # the voice the server's own decoder uses (a calibrated one where kept), so the client's audio is ours
            voice = job.stream.decoder_voice.tolist() if codec.speaker_conditioned else []
            info = pb.CodecInfo(model_id=codec.tokens_id, n_q=out.n_q, bits_per_code=out.bits_per_code,
                                hop_length=codec.hop_length, kbps=codec.config.kbps(out.n_q), voice_embedding=voice,
                                voice_encoder_id=codec.speaker_encoder_id if voice else "",
                                speaking_rate=job.stream.options.sampling.speaking_rate)   # the client paces them
            return pb.AudioFormat(encoding=pb.CODEC, sample_rate_hz=out.sample_rate, codec=info)
        encoding = pb.FLOAT32 if out.kind == "float32" else pb.LINEAR16
        return pb.AudioFormat(encoding=encoding, sample_rate_hz=out.sample_rate)

    async def _job(self, config: pb.SynthesisConfig, text: str | None) -> tuple[StreamJob, OutputFormat]:
        if self.draining:
            raise _Reject(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another instance")
        if self.streams >= self.config.max_streams:
            raise _Reject(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"all {self.config.max_streams} synthesis streams are busy; retry later")
        out = self._output(config.audio)
        options = self._options(config)
        name = config.voice or self.config.default_voice
        speaker = self.engine.voice_embedding(name, self.store)
        decoder_voice = self.engine.speech_voice(name, self.store)
        if decoder_voice is None and self.calibrator is not None:
            self.calibrator.request(name)    # in the background: this stream decodes in the embedding
        stream = self.engine.stream(speaker, options, decoder_voice)
        if text is not None:
            stream.add_text(text)      # SynthesisError for empty, unspeakable or too long text
        job = StreamJob(stream, out, asyncio.get_running_loop())
        if text is not None:
            job.end_input()
        return job, out

    # ------------------------------------------------------------ relay

    async def _relay(self, job: StreamJob, context) -> AsyncIterator[Emitted]:
        """The job's output as it comes; cancels the job when the caller goes away."""
        self.streams += 1
        self.scheduler.submit(job)
        try:
            while True:
                item: Emitted = await job.queue.get()
                if item.error is not None:
                    code, message = _error_status(item.error)
                    await context.abort(code, message)
                yield item
                job.taken(item)
                self.scheduler.wake()
                if item.final:
                    return
        finally:
            self.streams -= 1
            if not (job.finished or job.cancelled):
                job.cancel()
                self.scheduler.wake()

    async def _chunks(self, job: StreamJob, out: OutputFormat, context) -> AsyncIterator[pb.AudioChunk]:
        seq, position = 0, 0.0
        async for item in self._relay(job, context):
            chunk = pb.AudioChunk(audio=item.audio, sequence_number=seq, start_seconds=position,
                                  duration_seconds=item.seconds, server_elapsed_seconds=item.elapsed,
                                  segment=item.segment, final=item.final, remaining_seconds_estimate=item.remaining)
            if seq == 0:
                chunk.format.CopyFrom(self._format(out, job))
            seq += 1
            position += item.seconds
            yield chunk

    # ------------------------------------------------------------ RPCs

    async def Synthesize(self, request, context):
        try:
            job, out = await self._job(request.config, request.text)
            audio, size, limit = [], 0, self.config.max_unary_audio_bytes
            async with aclosing(self._relay(job, context)) as items:   # leaving it cancels the job at once
                async for item in items:
                    size += len(item.audio)
                    if size > limit:
                        raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"the audio passes {limit} bytes, the most one Synthesize response carries; "
                                      "use SynthesizeStream for text this long")
                    audio.append(item.audio)
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await self._abort(context, exc)
        return pb.SynthesizeResponse(audio=b"".join(audio), format=self._format(out, job),
                                     duration_seconds=job.audio_seconds,
                                     synthesis_seconds=time.perf_counter() - job.created)

    async def SynthesizeStream(self, request, context):
        try:
            job, out = await self._job(request.config, request.text)
            await self._send(job, out, context)
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)

    async def _send(self, job: StreamJob, out: OutputFormat, context) -> None:
        """Write the job's chunks as they come (context.write, not yield, so that a write can time out); a
        client that takes none for `stall_seconds` is ended and its job cancelled, freeing its slot."""
        async with aclosing(self._chunks(job, out, context)) as chunks:
            async for chunk in chunks:
                try:
                    async with asyncio.timeout(self.config.stall_seconds):   # no task per chunk
                        await context.write(chunk)
                except TimeoutError:
                    raise _Reject(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"the client took no audio for {self.config.stall_seconds:g} s") from None

    async def StreamingSynthesize(self, request_iterator, context):
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("request") != "config":
                raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry `config`")
            job, out = await self._job(first.config, None)
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)
        reader = asyncio.create_task(self._read_text(request_iterator, job))
        try:
            await self._send(job, out, context)
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)
        finally:
            reader.cancel()

    async def _next_request(self, requests, job: StreamJob):
        """The next request, or None at the end of input; waits as long as the stream has work, then at most
        `text_idle_seconds` (a read is never cancelled mid-way: that would close the request stream)."""
        read = asyncio.ensure_future(anext(requests))
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self.config.text_idle_seconds)
                if done:
                    try:
                        return read.result()
                    except StopAsyncIteration:
                        return None
                if job.idle:
                    raise TimeoutError
        finally:
            read.cancel()

    async def _read_text(self, requests, job: StreamJob) -> None:
        total = 0
        requests = aiter(requests)
        try:
            while (request := await self._next_request(requests, job)) is not None:
                kind = request.WhichOneof("request")
                if kind == "text":
                    total += len(request.text)
                    if total > 100 * self.config.max_text_chars:
                        return _fail(job, "too much text in one stream")
                    job.feed(request.text)
                elif kind == "flush":
                    job.flush()
                elif kind == "end_of_input":
                    break
                elif kind == "config":
                    return _fail(job, "`config` may only be sent in the first request")
        except TimeoutError:
            return _fail(job, f"no request for {self.config.text_idle_seconds:g} s with nothing left to speak; send "
                         "`end_of_input` when the text is complete", grpc.StatusCode.OUT_OF_RANGE)
        except (asyncio.CancelledError, grpc.RpcError):
            return
        job.end_input()
        self.scheduler.wake()

    async def EnrollVoice(self, request_iterator, context):
        limits = ClipLimits()
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("request") != "config":
                raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry `config`")
            parts, size = [], 0
            async for request in request_iterator:
                if request.WhichOneof("request") != "audio_content":
                    raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "after `config`, send only `audio_content`")
                size += len(request.audio_content)
                if size > limits.max_bytes:
                    raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"the clip is over {limits.max_bytes // 2 ** 20} MB; send 3-30 s of speech")
                parts.append(request.audio_content)
            cfg = first.config
            record = await asyncio.to_thread(enroll, self.store, self.engine.encoder, b"".join(parts), cfg.name,
                                             cfg.consent, cfg.keep_clip, limits)
            log.info(json.dumps({"event": "voice_enrolled", "name": record.name, "clip_seconds": record.clip_seconds}))
            if cfg.keep_clip and self.calibrator is not None:
                self.calibrator.request(record.name, enrolled=True)
            return self._voice(record)
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)

    async def ListVoices(self, request, context):
        return pb.ListVoicesResponse(voices=[self._voice(v) for v in all_voices(self.store)])

    async def GetVoice(self, request, context):
        try:
            return self._voice(find_voice(self.store, request.name))
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)

    async def DeleteVoice(self, request, context):
        try:
            refuse_built_in(request.name, "deleted")
            self.store.delete(request.name)
            return pb.DeleteVoiceResponse()
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)

    async def GetConfig(self, request, context):
        return pb.ServiceConfig(
            voices=[self._voice(v) for v in all_voices(self.store)], encodings=[pb.LINEAR16, pb.FLOAT32, pb.CODEC],
            native_sample_rate_hz=self.engine.sample_rate, min_sample_rate_hz=MIN_RATE, max_sample_rate_hz=MAX_RATE,
            codec_kbps=self.codec_rates, max_text_chars=self.config.max_text_chars,
            max_unary_audio_bytes=self.config.max_unary_audio_bytes,
            text_idle_seconds=self.config.text_idle_seconds,
            stall_seconds=self.config.stall_seconds,
            max_streams=self.config.max_streams, default_voice=self.config.default_voice,
            backbone_id=getattr(self.engine.backbone, "model_id", "untrained"), codec_id=self.engine.codec.model_id)

    # ------------------------------------------------------------ helpers

    def _voice(self, record) -> pb.Voice:
        calibrated = not record.preset and self.engine.speech_voice(record.name, self.store) is not None
        return pb.Voice(name=record.name, preset=record.preset, clip_seconds=record.clip_seconds,
                        created=record.created, encoder_version=record.encoder_version,
                        consent=record.consent, calibrated=calibrated)

    async def _abort(self, context, exc: BaseException) -> None:
        if isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)):   # the latter: aborted already
            raise exc
        code, message = _error_status(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("internal error", exc_info=exc)
        await context.abort(code, message)

    def _log_job(self, job: StreamJob, error: BaseException | None) -> None:
        audio = job.audio_seconds
        elapsed = job._elapsed()
        log.info(json.dumps({
            "event": "stream_done", "segments": job.stream.segments_started, "audio_s": round(audio, 3),
            "ttfa_ms": round(job.first_audio * 1000, 1) if job.first_audio is not None else None,
            "rtf": round(elapsed / audio, 3) if audio else None, "encoding": job.output.kind,
            "cancelled": job.cancelled, "error": str(error) if error else None}))


def _fail(job: StreamJob, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
    """End a stream with `code` from the request reader (the scheduler drops the job)."""
    job.queue.put_nowait(Emitted(b"", 0, 0, 0, True, _Reject(code, message)))
    job.cancel()


class TtsServer:
    """A running server: `await start()`, then `await stop()` (graceful) or `await wait()`."""

    def __init__(self, engine: Engine, store: VoiceStore, config: ServerConfig = ServerConfig()) -> None:
        self.config = config
        self.servicer = TextToSpeechServicer(engine, store, config)
        self.health = health.aio.HealthServicer()
        interceptors = [TokenAuth(config.token)] if config.token else []
        self.server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", 8 * 2 ** 20), ("grpc.max_concurrent_streams", 4 * config.max_streams)])
        rpc.add_TextToSpeechServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        address = f"{config.host}:{config.port}"
        if config.tls_cert or config.tls_key:
            if not (config.tls_cert and config.tls_key):
                raise ValueError("TLS needs both --tls-cert and --tls-key")
            with open(config.tls_key, "rb") as k, open(config.tls_cert, "rb") as c:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen on {address}")

    async def start(self) -> None:
        self.servicer.scheduler.start()
        await self.server.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(json.dumps({"event": "serving", "port": self.port, "tls": bool(self.config.tls_cert),
                             "auth": bool(self.config.token), "max_streams": self.config.max_streams}))

    async def stop(self, grace: float | None = None) -> None:
        """Drain: stop taking streams, let running ones finish (up to `grace` seconds), then stop."""
        self.servicer.draining = True
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.config.grace_seconds if grace is None else grace)
        self.servicer.scheduler.stop()
        if self.servicer.calibrator is not None:
            self.servicer.calibrator.stop()
        log.info(json.dumps({"event": "stopped"}))

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def serve_forever(engine: Engine, store: VoiceStore, config: ServerConfig) -> None:
    """Run until SIGINT/SIGTERM, then drain."""
    server = TtsServer(engine, store, config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"serving on {config.host}:{server.port}", flush=True)
    await stop.wait()
    await server.stop()


class BackgroundServer:
    """A server on its own event-loop thread: for tests, the benchmark and embedding in other programs."""

    def __init__(self, engine: Engine, store: VoiceStore, config: ServerConfig = ServerConfig(port=0)) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tts-grpc", daemon=True)
        self.thread.start()
        self.server: TtsServer = self._call(self._make(engine, store, config))
        self.port = self.server.port
        self.target = f"{config.host}:{self.port}"

    async def _make(self, engine, store, config) -> TtsServer:
        server = TtsServer(engine, store, config)
        await server.start()
        return server

    def _call(self, coroutine, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        self._call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
