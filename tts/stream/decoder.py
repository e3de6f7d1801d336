"""The chunked streaming decoder: codec frames in as the backbone yields them, PCM chunks out.

The codec's causal decoder carries its own state between calls, so decoding
frame by frame gives exactly the samples of one offline decode of the whole
sequence: chunk joins need no crossfade and cannot click. The first chunk is
one frame (40 ms at 25 Hz) for the lowest latency; later chunks double up to
`max_chunk_frames`, because each decoder call has a fixed cost.

A decoder with a delay (the ISTFT decoder lags by 10 ms) is compensated here:
the first `delay` samples of a stream are dropped and `flush` returns the
samples it still holds, so a stream is exactly as long as its frames and
starts on time.

One codec model serves any number of decoders: each keeps its streaming state
in its own object and lends it to the model only for the duration of a call.
With a `CodecRuntime` (codec/onnx_runtime.py) the calls run on ONNX Runtime
instead, with the state in a `DecoderStream`: the same samples, a few times
cheaper per call.

A speaker-conditioned codec (codec/modules/speaker.py) decodes in the stream's
voice: the decoder is given the speaker embedding that conditions the backbone.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from codec.model import CodecModel
from codec.onnx_runtime import CodecRuntime, DecoderStream


class ChunkedDecoder:
    """Decodes one stream's frames ([K] codes each) into float32 PCM chunks at the codec's sample rate."""

    def __init__(self, codec: CodecModel, first_chunk_frames: int = 1, max_chunk_frames: int = 8,
                 runtime: CodecRuntime | None = None, speaker: np.ndarray | None = None) -> None:
        if not 1 <= first_chunk_frames <= max_chunk_frames:
            raise ValueError("need 1 <= first_chunk_frames <= max_chunk_frames")
        self.codec = codec
        self.runtime = runtime
        self.speaker = speaker    # the voice's embedding, for a speaker-conditioned decoder
        self._stream: DecoderStream | None = None   # the ONNX Runtime path's state, made at the first frame
        self.first_chunk_frames = first_chunk_frames
        self.max_chunk_frames = max_chunk_frames
        self._pending: list[torch.Tensor] = []
        self._state: list | None = None
        self._next_chunk = first_chunk_frames
        self._skip = codec.delay     # samples still to drop at the start of the stream
        self.frames_decoded = 0

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def push(self, frames: Iterable[torch.Tensor]) -> list[np.ndarray]:
        """Add frames; returns the chunks that are now complete (possibly none)."""
        self._pending.extend(frames)
        chunks = []
        while len(self._pending) >= self._next_chunk:
            chunk, self._pending = self._pending[:self._next_chunk], self._pending[self._next_chunk:]
            chunks.append(self._decode(chunk))
            self._next_chunk = min(2 * self._next_chunk, self.max_chunk_frames)
        return chunks

    def flush(self) -> np.ndarray | None:
        """End of an utterance: whatever is pending, decoded, and the samples the decoder held back; None if nothing."""
        parts = []
        if self._pending:
            chunk, self._pending = self._pending, []
            parts.append(self._decode(chunk))
        if self._stream is not None:
            parts.append(self._trim_start(self._stream.flush()))
        elif self._state is not None:
            held = self._run(self.codec.flush_decoder)
            if held is not None and held.shape[-1]:
                parts.append(self._trim_start(held[0, 0].float().cpu().numpy()))
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else None

    def reset(self) -> None:
        """Forget the history: the next frame starts a new, unrelated utterance."""
        self._pending, self._state, self._stream, self._next_chunk = [], None, None, self.first_chunk_frames
        self._skip = self.codec.delay

    @torch.inference_mode()
    def _run(self, call, *args):
        """`call(*args)` on the codec with this stream's state lent to it."""
        if self._state is None:
            self.codec.start_streaming(1)
        else:
            self.codec.restore_streaming(self._state)
        try:
            return call(*args)
        finally:
            self._state = self.codec.capture_streaming()
            self.codec.stop_streaming()

    def _trim_start(self, audio: np.ndarray) -> np.ndarray:
        """Drop what is left of the decoder's delay at the start of the stream."""
        cut = min(self._skip, len(audio))
        self._skip -= cut
        return audio[cut:]

    def _decode(self, frames: list[torch.Tensor]) -> np.ndarray:
        codes = torch.stack(frames, 1)   # [K, n]
        if self.runtime is not None:
            if self._stream is None:
                self._stream = self.runtime.decoder_stream(codes.shape[0], self.speaker)
            audio = self._stream.decode(codes.cpu().numpy())
        else:
            device = next(self.codec.parameters()).device
            audio = self._run(self.codec.decode, codes[None].to(device), self.speaker)[0, 0].float().cpu().numpy()
        self.frames_decoded += len(frames)
        return self._trim_start(audio)
