"""The codec's streaming steps on ONNX Runtime: the samples of the PyTorch streaming path, at a
fraction of the cost per call.

Why: one streaming call of the codec is about a hundred small operators. PyTorch spends most of a
one-frame call dispatching them (about 5 ms per 20 ms of audio on one thread, measured); ONNX Runtime
runs the same graph with little cost per operator. We use the library rather than hand-fusing kernels.

Each step is exported once per codec and number of codebooks, in memory, as a pure function
(input, state) -> (output, new state): the layers run their own streaming code while the exporter
traces them, so the math is written once. The state lives in the stream objects below, as numpy
arrays: one `CodecRuntime` (the sessions) serves any number of streams.

Only the ISTFT decoder is exported (the shipped one); `onnx_capable(model)` says whether a model can run here.
"""
from __future__ import annotations

import io
import threading
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from codec.model import CodecModel, InvalidCodesError
from codec.modules.conv import StreamingConv1d, _ConvState
from codec.modules.istft import IstftDecoder
from tts.graph_cache import cached, graph_key


EMA_STATISTICS = (".cluster_size", ".embed_avg")   # the codebooks' training-only running sums


def available() -> bool:
    """Whether onnxruntime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_capable(model: CodecModel) -> bool:
    """Whether `model` can stream through ONNX Runtime (an ISTFT decoder, onnxruntime installed)."""
    return isinstance(model.decoder, IstftDecoder) and available()


def _inference_copy(model: CodecModel) -> CodecModel:
    """A float32 CPU copy of `model` with plain weights (weight norm folded), for tracing."""
    copy = CodecModel(model.config)
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        copy.remove_weight_norm()   # a loaded model has folded its weight norm already
    # The codebooks' training-only EMA statistics are zeroed: a loaded model has them at random, and they
    # would change the graph cache's key (tts/graph_cache.py) from one run to the next.
    copy.load_state_dict({k: torch.zeros_like(v) if k.endswith(EMA_STATISTICS) else v.detach().float().cpu()
                          for k, v in model.state_dict().items()})
    return copy.remove_weight_norm().eval().requires_grad_(False)


def _convs_with_history(model: CodecModel) -> list[StreamingConv1d]:
    """The encoder's convs that carry input between calls (those with left context)."""
    return [m for m in model.encoder.modules() if isinstance(m, StreamingConv1d) and m.context]


class _EncoderStep(nn.Module):
    """(audio [B, 1, n hop], conv histories...) -> (codes [B, n_q, n], new histories...)."""

    def __init__(self, model: CodecModel, n_q: int) -> None:
        super().__init__()
        self.model, self.n_q = model, n_q
        self.convs = _convs_with_history(model)

    def extra_repr(self) -> str:
        return f"n_q={self.n_q}"     # part of the graph cache key (tts/graph_cache.py)

    def forward(self, audio: torch.Tensor, *histories: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for conv, history in zip(self.convs, histories, strict=True):
            conv._state = _ConvState(history, history.shape[0])
        try:
            latent = self.model.encoder(audio)
            new = [conv._state.previous for conv in self.convs]
        finally:
            for conv in self.convs:
                conv._state = None
        return (self.model.quantizer.encode(latent, self.n_q), *new)


class _DecoderStep(nn.Module):
    """(codes [B, K, n], overlap tail [B, hop], body state...) -> (audio [B, 1, n frame], tail, body state...);
    a speaker-conditioned decoder takes the voice after the codes, in its fitted form [B, voice_dim]
    (codec/modules/speaker.py: a plain embedding is padded with zero offsets)."""

    def __init__(self, model: CodecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        speaker, (tail, *state) = (inputs[0], inputs[1:]) if self.model.speaker_conditioned else (None, inputs)
        audio, tail, new = self.model.decoder.step(self.model.quantizer.decode(codes), tail, state, speaker)
        return (audio, tail, *new)


def export_onnx(step: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic: dict[str, dict[int, str]],
                n_outputs: int) -> bytes:
    """The ONNX model of `step` traced on `inputs` (named in0.., outputs out0..), exported in memory."""
    names = [f"in{i}" for i in range(len(inputs))]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on traced shapes: the state shapes are fixed
        torch.onnx.export(step, inputs, buffer, input_names=names, output_names=[f"out{i}" for i in range(n_outputs)],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return buffer.getvalue()


def cpu_session(model: bytes, threads: int):
    """An ONNX Runtime CPU session of a serialised model, all graph optimisations on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def export_session(step: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic: dict[str, dict[int, str]],
                   n_outputs: int, threads: int, transform: Callable[[bytes], bytes] | None = None):
    """An ONNX Runtime session of `step` traced on `inputs` (see `export_onnx`), the serialised model passed
    through `transform` (e.g. quantisation) if given; the result is kept on disk (tts/graph_cache.py)."""
    def build() -> bytes:
        graph = export_onnx(step, inputs, dynamic, n_outputs)
        return transform(graph) if transform is not None else graph

    options = (dynamic, n_outputs, getattr(transform, "__qualname__", None))
    return cached(graph_key(step, inputs, *options), build, lambda graph: cpu_session(graph, threads))


def _feed(first: np.ndarray, state: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A step's inputs by name: the chunk, then its state in order."""
    return {f"in{i}": x for i, x in enumerate([first, *state])}


class CodecRuntime:
    """ONNX Runtime sessions of one codec's streaming encoder and decoder, built on first use per n_q."""

    def __init__(self, model: CodecModel, threads: int = 1) -> None:
        if not isinstance(model.decoder, IstftDecoder):
            raise ValueError("ONNX Runtime streaming needs the ISTFT decoder (CodecConfig.decoder = 'istft')")
        self.model = _inference_copy(model)
        self.threads = threads
        self._encoders: dict[int, object] = {}
        self._decoders: dict[int, object] = {}
        self._lock = threading.Lock()
        decoder = self.model.decoder
        # Per-stream state shapes (batch 1), the exports' example inputs and the streams' zeros alike.
        self.encoder_state_shapes = [(1, c.conv.in_channels, c.context) for c in _convs_with_history(self.model)]
        self.decoder_state_shapes = [(1, decoder.hop)] + decoder.state_shapes()
        # a conditioned decoder's voice: an input of every call, before the state
        self.speaker_shapes = [(1, decoder.speaker.voice_dim)] if decoder.speaker is not None else []

    def _get(self, cache: dict[int, object], n_q: int, build: Callable[[], object]):
        if not 1 <= n_q <= self.model.config.n_q:
            raise ValueError(f"n_q must be between 1 and {self.model.config.n_q}; got {n_q}")
        with self._lock:
            if n_q not in cache:
                cache[n_q] = build()
            return cache[n_q]

    def encoder_session(self, n_q: int):
        def build():
            inputs = (torch.zeros(1, 1, self.model.hop_length), *map(torch.zeros, self.encoder_state_shapes))
            dynamic = {"in0": {0: "b", 2: "t"}, "out0": {0: "b", 2: "f"}}
            return export_session(_EncoderStep(self.model, n_q), inputs, dynamic, len(inputs), self.threads)
        return self._get(self._encoders, n_q, build)

    def decoder_session(self, n_q: int):
        def build():
            inputs = (torch.zeros(1, n_q, 1, dtype=torch.long),
                      *map(torch.zeros, self.speaker_shapes + self.decoder_state_shapes))
            dynamic = {"in0": {0: "b", 2: "f"}, "out0": {0: "b", 2: "t"}}
            n_outputs = len(inputs) - len(self.speaker_shapes)    # audio and the state; the voice is not returned
            return export_session(_DecoderStep(self.model), inputs, dynamic, n_outputs, self.threads)
        return self._get(self._decoders, n_q, build)

    def encoder_stream(self, n_q: int) -> "EncoderStream":
        return EncoderStream(self, n_q)

    def decoder_stream(self, n_q: int, speaker: np.ndarray | None = None) -> "DecoderStream":
        return DecoderStream(self, n_q, speaker)


class EncoderStream:
    """One stream's encoder state: whole frames of audio in, codes out (as `CodecModel.encode` streaming)."""

    def __init__(self, runtime: CodecRuntime, n_q: int) -> None:
        self.runtime, self.n_q = runtime, n_q
        self.session = runtime.encoder_session(n_q)
        self.reset()

    def reset(self) -> None:
        self._state = [np.zeros(shape, np.float32) for shape in self.runtime.encoder_state_shapes]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """audio [n * hop_length] float32 -> codes [n_q, n] int64."""
        hop = self.runtime.model.hop_length
        if audio.ndim != 1 or len(audio) % hop:
            raise ValueError(f"streaming chunks must be whole frames of {hop} samples")
        codes, *self._state = self.session.run(None, _feed(np.ascontiguousarray(audio, np.float32)[None, None],
                                                           self._state))
        return codes[0]


class DecoderStream:
    """One stream's decoder state: codes in, samples out (as `CodecModel.decode` streaming).

    Like the PyTorch path, the output lags by `delay` samples and `flush` returns the samples held back.
    `speaker`: the voice's embedding or fitted voice, which a speaker-conditioned decoder follows (as
    `CodecModel.decode`).
    """

    def __init__(self, runtime: CodecRuntime, n_q: int, speaker: np.ndarray | None = None) -> None:
        self.runtime, self.n_q = runtime, n_q
        self.session = runtime.decoder_session(n_q)
        conditioning = runtime.model.decoder.speaker
        self._voice = [] if conditioning is None else [    # the inputs before the state (`_DecoderStep`)
            np.ascontiguousarray(conditioning.resolve(None if speaker is None else torch.as_tensor(speaker), 1))]
        self.reset()

    def reset(self) -> None:
        # [overlap tail [1, hop], the decoder body's state (IstftDecoder.state_shapes)]
        self._state = [np.zeros(shape, np.float32) for shape in self.runtime.decoder_state_shapes]
        self._holding = False   # whether the tail holds samples of decoded frames

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [n_q, n] -> audio [n * hop_length] float32."""
        codes = np.asarray(codes, np.int64)
        if codes.ndim != 2 or codes.shape[0] != self.n_q:
            raise InvalidCodesError(f"codes must be [{self.n_q}, F]; got {codes.shape}")
        self.runtime.model.validate_codes(torch.from_numpy(codes)[None])   # the PyTorch path's range check
        audio, *self._state = self.session.run(None, _feed(codes[None], self._voice + self._state))
        self._holding = self._holding or codes.shape[1] > 0
        return audio[0, 0]

    def flush(self) -> np.ndarray:
        """End of a stream: the last `delay` samples (`IstftDecoder.ending`: the second half of the last frame,
        and a harmonic source's fade); empty if none. Run once a stream, so by PyTorch, not exported."""
        if self._holding:
            tail, *body = (torch.from_numpy(array) for array in self._state)
            with torch.no_grad():
                held = self.runtime.model.decoder.ending(tail, body)[0, 0].numpy()
        else:
            held = np.zeros(0, np.float32)
        self._state[0] = np.zeros_like(self._state[0])
        self._holding = False
        return held
