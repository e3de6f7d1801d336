"""The engine: text and a voice in, PCM chunks out as they are generated.

`Engine` holds the models (codec, backbone, tokenizer, speaker encoder) and
checks they belong together. `SpeechStream` is one listener's synthesis: its
segments waiting, its own chunked decoder, the pauses between segments. It
does not step the backbone itself: `Engine.synthesize` steps a private
`BatchGenerator` for one stream, while the gRPC server steps one shared
generator for all its streams and feeds each stream its frames.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from backbone.generate import BatchGenerator, Request, SamplingConfig
from backbone.model import Backbone, load_backbone
from backbone.tokenizer import TextTokenizer, tokenizer_for
from codec.loaders import load_codec
from codec.model import CodecModel
from codec.onnx_runtime import CodecRuntime, available as onnx_available, onnx_capable
from tts.segment import Segment, TextAccumulator, segment_text, utterance_text
from tts.stream.decoder import ChunkedDecoder
from tts.stream.tempo import TempoStretcher
from voice.encoder import SpeakerEncoder, load_encoder
from voice.enroll import ClipLimits, check_clip, resolve_voice
from voice.store import VoiceStore

if TYPE_CHECKING:
    from backbone.phonemes import PhonemeTokenizer

log = logging.getLogger(__name__)
# Audio expected per spoken character, for the playout buffer's estimate of what is still to come.
# Conservative on purpose: the corpus averages 0.058 s/char, its 95th percentile is 0.077.
SECONDS_PER_CHAR = 0.07


class SynthesisError(ValueError):
    """Text that cannot be synthesised: empty, nothing speakable, or over the length limit."""


class ModelMismatchError(ValueError):
    """The backbone was trained with another codec, tokenizer or speaker encoder than the ones loaded."""


@dataclass(frozen=True)
class SynthesisOptions:
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_chars_per_segment: int = 160
    max_text_chars: int = 100_000
    first_chunk_frames: int = 1
    max_chunk_frames: int = 8


class SpeechStream:
    """One listener's synthesis state (see module doc). PCM is float32 at the codec's sample rate."""

    def __init__(self, engine: "Engine", speaker: np.ndarray, options: SynthesisOptions,
                 decoder_voice: np.ndarray | None = None) -> None:
        self.engine = engine
        self.speaker = torch.as_tensor(np.asarray(speaker, dtype=np.float32))
        self.options = options
        self.segments: collections.deque[Segment] = collections.deque()
        # the codec decodes in `decoder_voice` where given (a calibrated or fitted voice, tts/voice_calibration.py)
        self.decoder_voice = self.speaker.numpy() if decoder_voice is None else np.asarray(decoder_voice, np.float32)
        self.decoder = ChunkedDecoder(engine.codec, options.first_chunk_frames, options.max_chunk_frames,
                                      engine.codec_runtime, self.decoder_voice)
        # The speaking rate is the decoded speech's time scale (tts/stream/tempo.py: the read pointer's odds barely
        # move the speech), so the codes keep the voice's own pace; a client that decodes them paces them itself.
        rate = options.sampling.speaking_rate
        self.tempo = TempoStretcher(rate, engine.sample_rate) if rate != 1.0 else None
        self.sampling = replace(options.sampling, speaking_rate=1.0)
        self.accumulator = TextAccumulator(options.max_chars_per_segment)
        self.current: Segment | None = None
        self.frames_in_segment = 0
        self.segments_started = 0

    # text in
    def add_text(self, text: str) -> None:
        """Whole text, checked and segmented at once."""
        self.add_segments(self.engine.segments(text, self.options))

    def add_segments(self, segments: list[Segment]) -> None:
        """Segments the caller already has from `Engine.segments` (the text is not read twice)."""
        self.segments.extend(segments)

    def feed(self, piece: str) -> None:
        """Text arriving in pieces: complete segments are queued as soon as they are known."""
        self.segments.extend(self.accumulator.feed(piece))

    def flush_text(self) -> None:
        self.segments.extend(self.accumulator.flush())

    # generation
    def next_request(self) -> Request | None:
        """The backbone request for the next segment, or None when none is waiting."""
        if not self.segments:
            return None
        self.current = self.segments.popleft()
        self.frames_in_segment = 0
        seed = self.options.seed + self.segments_started
        self.segments_started += 1
        return Request(self.engine.tokenizer.encode(utterance_text(self.current.text), normalized=True), self.speaker,
                       len(self.current.text), seed, self.sampling)

    def on_frames(self, frames: list[torch.Tensor], decode: bool = True) -> list[np.ndarray]:
        """PCM chunks completed by these frames (none when the caller sends codes, `decode=False`)."""
        self.frames_in_segment += len(frames)
        return self._paced(self.decoder.push(frames)) if decode else []

    def end_segment(self, decode: bool = True) -> list[np.ndarray]:
        """The current segment is generated: the decoder's remainder and the pause that follows."""
        if not decode:
            self.current = None
            return []
        tail = self.decoder.flush()
        self.decoder.reset()   # each segment decodes like its own utterance; the pause separates them
        chunks = [tail] if tail is not None else []
        if self.current is not None and self.current.pause_after > 0:
            chunks.append(np.zeros(int(self.current.pause_after * self.engine.sample_rate), dtype=np.float32))
        self.current = None
        if self.tempo is None:
            return chunks
        paced = self._paced(chunks)   # the pause too: a slower speaker pauses longer
        return paced + [rest for rest in (self.tempo.flush(),) if len(rest)]

    def _paced(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """PCM chunks at the speaking rate (as they are without a stretcher); empty ones dropped."""
        if self.tempo is not None:
            chunks = [self.tempo.push(chunk) for chunk in chunks]
        return [chunk for chunk in chunks if len(chunk)]

    def remaining_seconds(self) -> float:
        """Estimate of the audio still to come: the rest of the current segment and the queued ones."""
        rate = self.options.sampling.speaking_rate   # the stretcher paces speech and pauses alike
        estimate = lambda s: (len(s.text) * SECONDS_PER_CHAR + s.pause_after) / rate  # noqa: E731
        queued = sum(estimate(s) for s in self.segments)
        if self.current is None:
            return queued
        done = self.frames_in_segment / self.engine.codec.frame_rate / rate
        return queued + max(self.current.pause_after, estimate(self.current) - done)


class Engine:
    """The models of one synthesis setup, checked to belong together."""

    def __init__(self, codec: CodecModel, backbone: Backbone, tokenizer: "TextTokenizer | PhonemeTokenizer",
                 encoder: SpeakerEncoder | None = None, store: VoiceStore | None = None,
                 encoder_path: str | Path | None = None, int8: bool = True, onnx: bool = True) -> None:
        """`encoder` or, loaded at the first clone, the encoder file `encoder_path` (default: the shipped one).

        `int8`: decoding steps with int8 weight products (on ONNX Runtime about twice as fast on one CPU
        thread; the next-token distributions differ from float32 by 0.0008 nats of KL, measured on
        generated speech). Off on a GPU.
        `onnx`: on the CPU, decoding steps run on ONNX Runtime (backbone/onnx_step.py: the same logits, a few
        times cheaper per step), and streams decode codec frames there too where the codec can (an ISTFT
        decoder; codec/onnx_runtime.py). The sessions one stream uses are built here, so the first
        request does not pay for them.
        """
        self.codec, self.backbone, self.tokenizer = codec, backbone, tokenizer
        self.int8 = int8 and backbone.text_emb.weight.device.type == "cpu"
        self._encoder = encoder
        self._encoder_path = encoder_path
        self.store = store
        cfg = backbone.config
        for what, wanted, loaded in (("codec", cfg.codec_id, codec.tokens_id),
                                     ("tokenizer", cfg.tokenizer_id, tokenizer.id)):
            if wanted != loaded:
                raise ModelMismatchError(f"the backbone was trained with {what} {wanted}, "
                                         f"but {what} {loaded} is loaded")
        if codec.speaker_conditioned and codec.speaker_encoder_id != cfg.encoder_id:
            raise ModelMismatchError(f"the codec's decoder follows speaker encoder {codec.speaker_encoder_id}, "
                                     f"the backbone's voices come from {cfg.encoder_id or 'another'}")
        if cfg.n_codebooks > codec.config.n_q:
            raise ModelMismatchError(
                f"the backbone models {cfg.n_codebooks} codebooks, the codec has {codec.config.n_q}")
        self.codec_runtime: CodecRuntime | None = None
        if onnx and onnx_capable(codec) and next(codec.parameters()).device.type == "cpu":
            self.codec_runtime = CodecRuntime(codec)
            self.codec_runtime.decoder_session(cfg.n_codebooks)
        self.onnx_steps = onnx and onnx_available() and backbone.text_emb.weight.device.type == "cpu"
        if self.onnx_steps:
            backbone.step_model(self.int8, onnx=True)

    @classmethod
    def load(cls, backbone: str | Path | None = None, codec: str | Path | None = None,
             encoder: str | Path | None = None, tokenizer: str | Path | None = None,
             store: VoiceStore | None = None, int8: bool = True) -> "Engine":
        """The shipped models by default (the speaker encoder is loaded only when a clip is cloned)."""
        torch.set_num_threads(1)   # fastest on the CPUs we measured; see the README
        model = load_backbone(backbone, inference_only=True)
        return cls(load_codec(codec), model, tokenizer_for(model.config.tokenizer_id, tokenizer), None, store,
                   encoder, int8)

    def generator(self, shared: bool = False) -> BatchGenerator:
        """A new batch of decoding requests on this engine's backbone.

        One stream's generator steps in int8 when `int8`; a generator `shared` by several streams steps in
        float32, because dynamic int8 scales its activations per batch, and a stream's audio would then
        depend on the streams beside it (a seed must give the same audio whatever else runs).
        """
        return BatchGenerator(self.backbone, quantized=self.int8 and not shared, onnx=self.onnx_steps)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def encoder(self) -> SpeakerEncoder:
        if self._encoder is None:
            self._encoder = load_encoder(self._encoder_path)
        return self._encoder

    @property
    def encoder_id(self) -> str:
        return self.backbone.config.encoder_id or self.encoder.model_id

    # ------------------------------------------------------------ voices

    def voice_embedding(self, name: str, store: VoiceStore | None = None) -> np.ndarray:
        """Embedding of a preset or a voice enrolled in `store` (default: the engine's, else the user's).

        Raises:
            VoiceNotFoundError, StaleVoiceError: see voice.enroll.resolve_voice.
        """
        return resolve_voice(store if store is not None else self._store(), name, self.encoder_id).embedding

    def speech_voice(self, name: str, store: VoiceStore | None = None, calibrate: bool = False,
                     on_calibrate: Callable[[], None] | None = None) -> np.ndarray | None:
        """The voice the codec decodes this engine's speech in for voice `name`: the calibrated one the store keeps
        for an enrolled voice (tts/voice_calibration.py, made by `tts voice fit`, or now with `calibrate` where the
        clip is kept; `on_calibrate` is told first, as it takes tens of seconds), else None (decode in the
        embedding): built-in voices and voices not calibrated for this codec and backbone."""
        from tts.voice_calibration import speech_voice

        return speech_voice(store if store is not None else self._store(), self, name, calibrate, on_calibrate)

    def _store(self) -> VoiceStore:
        if self.store is None:
            self.store = VoiceStore()
        return self.store

    def clone_embedding(self, clip: bytes, limits: ClipLimits = ClipLimits()) -> np.ndarray:
        """Embedding of a reference clip, checked as enrollment checks it (nothing is stored).

        Raises:
            EnrollmentError: the clip is unusable.
        """
        audio, _ = check_clip(clip, limits)
        wanted = self.backbone.config.encoder_id
        if wanted and wanted != self.encoder.model_id:
            raise ModelMismatchError(f"the backbone was trained with speaker encoder {wanted}, "
                                     f"but encoder {self.encoder.model_id} is loaded")
        return self.encoder.embed(audio.samples, audio.sample_rate)

    def clone_speech_voice(self, clip: bytes, embedding: np.ndarray) -> np.ndarray:
        """The decoder voice calibrated on the backbone's speech in `embedding` against `clip` (the clone's
        reference, checked as enrollment checks it): what `tts voice fit` keeps for an enrolled voice, made for one
        use (about 20 s; tts/voice_calibration.py).

        Raises:
            EnrollmentError: the clip is unusable. ValueError: a codec whose decoder follows no voice.
        """
        from tts.audio import resample
        from tts.voice_calibration import CalibrationOptions, calibrate_speech_voice

        audio, _ = check_clip(clip)
        samples = resample(audio.samples, audio.sample_rate, self.sample_rate)
        return calibrate_speech_voice(self, samples, embedding, CalibrationOptions()).voice

    # ------------------------------------------------------------ text

    def segments(self, text: str, options: SynthesisOptions = SynthesisOptions()) -> list[Segment]:
        if not text or not text.strip():
            raise SynthesisError("the text is empty")
        try:
            options.sampling.validate()   # a speaking rate is the stretcher's: any backbone takes one
        except ValueError as exc:
            raise SynthesisError(str(exc)) from None
        if len(text) > options.max_text_chars:
            raise SynthesisError(f"the text has {len(text)} characters; the limit is {options.max_text_chars}")
        segments = segment_text(text, options.max_chars_per_segment)
        if not segments:
            raise SynthesisError("the text has nothing that can be spoken (no letters or digits)")
        return segments

    # ------------------------------------------------------------ synthesis

    def stream(self, speaker: np.ndarray, options: SynthesisOptions = SynthesisOptions(),
               decoder_voice: np.ndarray | None = None) -> SpeechStream:
        """A stream in the voice `speaker` (the speaker encoder's embedding, which the backbone reads); the
        codec decodes in `decoder_voice` where given: that voice fitted to its clip (codec/voice_fit.py)."""
        return SpeechStream(self, speaker, options, decoder_voice)

    def synthesize(self, text: str, speaker: np.ndarray, options: SynthesisOptions = SynthesisOptions(),
                   decoder_voice: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """PCM chunks of one stream as they are produced (float32, codec sample rate); see `stream`."""
        stream = self.stream(speaker, options, decoder_voice)
        stream.add_text(text)
        yield from run_stream(self, stream)


def run_stream(engine: Engine, stream: SpeechStream) -> Iterator[np.ndarray]:
    """Generate a stream's queued segments one after another with a private generator."""
    while (request := stream.next_request()) is not None:
        generator = engine.generator()
        row = generator.add(request)
        while generator.active:
            frames, _ = generator.step().get(row, ([], False))
            yield from stream.on_frames(frames)
        yield from stream.end_segment()
