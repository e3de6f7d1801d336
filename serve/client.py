"""A small Python client for the service (blocking grpc channel), used by `tts client` and the benchmark.

    client = TtsClient("127.0.0.1:50051")
    for chunk in client.stream("Hello there.", voice="slt"):
        play(client.pcm(chunk))          # float32 samples
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import grpc
import numpy as np

from serve.stubs import pb, rpc

CLIP_PIECE = 64 * 1024


class TtsClient:
    def __init__(self, target: str = "127.0.0.1:50051", token: str | None = None, tls_ca: str | None = None,
                 timeout: float | None = None) -> None:
        if tls_ca:
            creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(target, creds)
        else:
            self.channel = grpc.insecure_channel(target)
        self.stub = rpc.TextToSpeechStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.format: pb.AudioFormat | None = None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "TtsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def config(voice: str = "", encoding: int = pb.LINEAR16, sample_rate: int = 0, seed: int = 0,
               codec_kbps: float = 0.0, temperature: float | None = None,
               guidance: float | None = None, speaking_rate: float | None = None) -> pb.SynthesisConfig:
        cfg = pb.SynthesisConfig(voice=voice, seed=seed, audio=pb.AudioConfig(
            encoding=encoding, sample_rate_hz=sample_rate, codec_kbps=codec_kbps))
        if temperature is not None:
            cfg.temperature = temperature
        if guidance is not None:
            cfg.guidance = guidance
        if speaking_rate is not None:
            cfg.speaking_rate = speaking_rate
        return cfg

    def synthesize(self, text: str, **config) -> pb.SynthesizeResponse:
        return self.stub.Synthesize(pb.SynthesizeRequest(text=text, config=self.config(**config)),
                                    metadata=self.metadata, timeout=self.timeout)

    def stream(self, text: str, **config) -> Iterator[pb.AudioChunk]:
        """Audio chunks of `text` as the server makes them (the call is cancelled if the loop stops early)."""
        call = self.stub.SynthesizeStream(pb.SynthesizeRequest(text=text, config=self.config(**config)),
                                          metadata=self.metadata, timeout=self.timeout)
        yield from self._remember_format(call)

    def stream_text(self, pieces: Iterable[str], **config) -> Iterator[pb.AudioChunk]:
        """Bidirectional: send text pieces as they come (e.g. from an LLM), receive audio as it is ready."""
        def requests():
            yield pb.StreamingSynthesizeRequest(config=self.config(**config))
            for piece in pieces:
                yield pb.StreamingSynthesizeRequest(text=piece)
            yield pb.StreamingSynthesizeRequest(end_of_input=True)

        call = self.stub.StreamingSynthesize(requests(), metadata=self.metadata, timeout=self.timeout)
        yield from self._remember_format(call)

    def _remember_format(self, call) -> Iterator[pb.AudioChunk]:
        try:
            for chunk in call:
                if chunk.HasField("format"):
                    self.format = chunk.format
                yield chunk
        finally:
            call.cancel()

    def pcm(self, chunk: pb.AudioChunk) -> np.ndarray:
        """A PCM chunk's samples as float32 (LINEAR16 or FLOAT32 streams)."""
        if self.format is not None and self.format.encoding == pb.FLOAT32:
            return np.frombuffer(chunk.audio, "<f4").astype(np.float32)
        return np.frombuffer(chunk.audio, "<i2").astype(np.float32) / 32768.0

    def enroll(self, name: str, clip: bytes, consent: str, keep_clip: bool = False) -> pb.Voice:
        def requests():
            yield pb.EnrollVoiceRequest(config=pb.EnrollConfig(name=name, consent=consent, keep_clip=keep_clip))
            for i in range(0, len(clip), CLIP_PIECE):
                yield pb.EnrollVoiceRequest(audio_content=clip[i:i + CLIP_PIECE])

        return self.stub.EnrollVoice(requests(), metadata=self.metadata, timeout=self.timeout)

    def voices(self) -> list[pb.Voice]:
        return list(self.stub.ListVoices(pb.ListVoicesRequest(), metadata=self.metadata, timeout=self.timeout).voices)

    def get_voice(self, name: str) -> pb.Voice:
        return self.stub.GetVoice(pb.GetVoiceRequest(name=name), metadata=self.metadata, timeout=self.timeout)

    def delete_voice(self, name: str) -> None:
        self.stub.DeleteVoice(pb.DeleteVoiceRequest(name=name), metadata=self.metadata, timeout=self.timeout)

    def service_config(self) -> pb.ServiceConfig:
        return self.stub.GetConfig(pb.GetConfigRequest(), metadata=self.metadata, timeout=self.timeout)
