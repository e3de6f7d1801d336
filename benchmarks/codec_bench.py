"""`tts bench codec`: our codec at its bitrates against libopus, on speakers never trained on.

Quality: PESQ-WB (ITU-T P.862.2, `pesq` package), STOI (`pystoi`) and log-mel
L1 distance, averaged over utterances of the corpus's `unseen` split. One
more row decodes the encoder's latent without quantization: the ceiling of the
encoder/decoder pair, which no bitrate can pass (where the quantized rows sit
on it, more bits cannot help and the autoencoder itself needs training).
Speed: CPU time of streaming encode + decode, one thread, one and four frames per
call, on PyTorch and on ONNX Runtime (codec/onnx_runtime.py), reported per 20 ms of audio.
Opus runs in VOIP mode with 20 ms frames; its
algorithmic delay is removed before scoring so STOI compares aligned signals.
Voice: whether the decoded clip is still its speaker (benchmarks/voice_identity.py):
the speaker encoder's cosine to a 10-s reference of the speaker's other sentences, and
how often the clip is closer to its own speaker's reference than to any other unseen
speaker's. A row for the original audio gives the figures' ceiling. Voice cloning from
codec tokens can keep no more of a voice than the codec does. A speaker-conditioned codec
(codec/modules/speaker.py) has two more rows per bitrate: "its voice in the stream", the
file round trip whose header carries the clip's own embedding (codec/bitstream.py; its bytes
are counted in the row's kbps, once per clip), and "in its voice", the same codes decoded
with the embedding of another 10 s of the speaker (as the engine decodes speech in an
enrolled voice, where the voice costs no bits). Its first row decodes the codes alone, in
the decoder's default voice. With `fit_voices`, "in its fitted voice" decodes them in the voice
fitted to that enrollment clip (codec/voice_fit.py), as an enrollment can fit it once per voice.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.stats import Z95, paired_mean_se
from benchmarks.voice_identity import IdentityTally, references, speaker_scores
from codec.compress import compress_audio, decompress_codes
from codec.metrics import quality_scores
from codec.model import CodecModel
from codec.onnx_runtime import CodecRuntime, onnx_capable
from codec.voice_fit import fit_decoder_voice
from tts.audio import read_audio
from tts.corpus.manifest import Utterance, audio_path, read_manifest
from voice.encoder import SpeakerEncoder
from voice.verification import REFERENCE_SECONDS, speaker_streams

OPUS_KBPS = (6, 8, 12, 16)
SR = 16_000


@dataclass
class Row:
    name: str
    kbps: float
    pesq: float
    stoi: float
    mel: float
    ms_per_20ms: float                       # PyTorch (Opus: libopus), one frame per call
    ms_per_20ms_chunked: float = float("nan")  # PyTorch, four frames per call
    onnx_ms_per_20ms: float = float("nan")     # ONNX Runtime, one frame per call
    onnx_ms_per_20ms_chunked: float = float("nan")
    voice_cosine: float = float("nan")          # to the speaker's own reference
    voice_closest: float = float("nan")         # share of clips closest to their own speaker's reference
    codes_kbps: float = float("nan")            # ours: the codes' rate, whatever else the row's kbps counts
    per_clip: np.ndarray | None = None          # [clips, 2]: each clip's PESQ-WB and STOI (paired comparisons)


# The targets: our codes at this rate against Opus at that one, on both PESQ-WB and STOI.
OPUS_TARGETS = ((3.0, 6), (6.0, 8), (3.0, 12))
# A difference counts as resolved when it is this many standard errors from zero (about 95 % two-sided).
RESOLVED_SE = Z95


@dataclass(frozen=True)
class Comparison:
    """One of our rows against Opus on the same clips: mean per-clip differences and their standard errors."""
    ours: str
    opus_kbps: float
    pesq_diff: float
    pesq_se: float
    stoi_diff: float
    stoi_se: float
    clips: int

    @property
    def verdict(self) -> str:
        """'above' only when both differences are positive beyond their noise; 'below' when either is negative
        beyond it; else 'not resolved' (more clips, or a real tie)."""
        pairs = ((self.pesq_diff, self.pesq_se), (self.stoi_diff, self.stoi_se))
        if all(d - RESOLVED_SE * se > 0 for d, se in pairs):
            return "above"
        if any(d + RESOLVED_SE * se < 0 for d, se in pairs):
            return "below"
        return "not resolved"


def paired_comparisons(rows: list[Row]) -> list[Comparison]:
    """Each of our rows at a target rate (`OPUS_TARGETS`) against its Opus row, clip by clip: the table's means
    alone cannot say whether a 0.02 PESQ lead is more than the draw."""
    opus = {r.kbps: r for r in rows if r.name == "opus voip" and r.per_clip is not None}
    out = []
    for ours_kbps, opus_kbps in OPUS_TARGETS:
        if opus_kbps not in opus:
            continue
        for r in rows:
            if r.per_clip is None or not math.isclose(r.codes_kbps, ours_kbps):
                continue
            pesq = paired_mean_se(r.per_clip[:, 0], opus[opus_kbps].per_clip[:, 0])
            stoi = paired_mean_se(r.per_clip[:, 1], opus[opus_kbps].per_clip[:, 1])
            out.append(Comparison(r.name, opus_kbps, pesq[0], pesq[1], stoi[0], stoi[1], min(pesq[2], stoi[2])))
    return out


def format_comparisons(comparisons: list[Comparison]) -> str:
    lines = ["| ours | against | PESQ-WB difference | STOI difference | clips | verdict |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.ours} | opus voip {c.opus_kbps:g} kbps | {c.pesq_diff:+.3f} \u00b1 {c.pesq_se:.3f} | "
                     f"{c.stoi_diff:+.4f} \u00b1 {c.stoi_se:.4f} | {c.clips} | {c.verdict} |")
    return "\n".join(lines) + (f"\n(mean per-clip difference \u00b1 its standard error; 'above' and 'below' are "
                               f"beyond {RESOLVED_SE} standard errors)")


def opus_round_trip(x: np.ndarray, kbps: float) -> np.ndarray:
    """Encode/decode with libopus (VOIP, 20 ms frames, given bitrate), delay-compensated."""
    import opuslib

    frame = SR // 50
    enc = opuslib.Encoder(SR, 1, opuslib.APPLICATION_VOIP)
    enc.bitrate = int(kbps * 1000)
    dec = opuslib.Decoder(SR, 1)
    delay = enc.lookahead
    pcm = np.concatenate([x, np.zeros(delay + frame, np.float32)])
    pcm16 = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    out = []
    for i in range(0, len(pcm16) - frame + 1, frame):
        packet = enc.encode(pcm16[i:i + frame].tobytes(), frame)
        out.append(np.frombuffer(dec.decode(packet, frame), np.int16))
    y = np.concatenate(out).astype(np.float32) / 32768
    return y[delay: delay + len(x)]


@torch.inference_mode()
def streaming_ms_per_20ms(model: CodecModel, n_q: int, seconds: float = 4.0, chunk_frames: int = 1,
                          runtime: CodecRuntime | None = None) -> float:
    """Streaming encode + decode, `chunk_frames` frames per call, one thread: CPU ms per 20 ms of audio.
    On ONNX Runtime when a `runtime` is given."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(1, 1, int(seconds * SR)) * 0.1
        hop = model.hop_length * chunk_frames
        chunks = [x[..., i:i + hop] for i in range(0, x.shape[-1] - hop + 1, hop)]
        if runtime is None:
            with model.streaming(1):
                elapsed = _cpu_seconds(lambda c: model.decode(model.encode(c, n_q)), chunks, model.reset_streaming)
        else:
            encoder, decoder = runtime.encoder_stream(n_q), runtime.decoder_stream(n_q)

            def reset() -> None:
                encoder.reset()
                decoder.reset()

            elapsed = _cpu_seconds(lambda c: decoder.decode(encoder.encode(c)), [c[0, 0].numpy() for c in chunks],
                                   reset)
    finally:
        torch.set_num_threads(threads)
    return elapsed * 1000 / (len(chunks) * hop / SR / 0.02)


def _cpu_seconds(step: Callable[[Any], Any], chunks: list, reset: Callable[[], None]) -> float:
    """CPU time of `step` over `chunks`, after five warm-up calls and a reset."""
    for chunk in chunks[:5]:
        step(chunk)
    reset()
    start = time.process_time()
    for chunk in chunks:
        step(chunk)
    return time.process_time() - start


@torch.inference_mode()
def unquantized_round_trip(model: CodecModel, x: np.ndarray) -> np.ndarray:
    """The encoder's latent straight into the decoder (no codebooks), delay-compensated."""
    audio = torch.from_numpy(x)[None, None]
    decoded, _ = model.align(model.decoder(model.latent(audio)), audio)
    return decoded[0, 0].numpy()


def pick_clips(corpus: str, n_utts: int, seed: int = 0,
               unseen: list[Utterance] | None = None) -> tuple[list[Utterance], list[np.ndarray]]:
    """`n_utts` utterances of the corpus's unseen speakers (`unseen`, read from the corpus when not given),
    drawn with `seed`, and their samples."""
    utts = read_manifest(corpus, ["unseen"]) if unseen is None else unseen
    if not utts:
        raise ValueError(f"{corpus} has no 'unseen' utterances (speakers held out of training)")
    rng = np.random.default_rng(seed)
    picks = [utts[i] for i in rng.choice(len(utts), size=min(n_utts, len(utts)), replace=False)]
    return picks, [read_audio(audio_path(corpus, u)).samples for u in picks]


def run(model: CodecModel, corpus: str, n_utts: int = 40, our_kbps: tuple[float, ...] = (1.5, 3.0, 6.0),
        seed: int = 0, encoder: SpeakerEncoder | None = None, fit_voices: bool = False) -> list[Row]:
    """The table's rows; with a speaker `encoder`, each also says how much of the voice it keeps;
    `fit_voices` adds the rows in each speaker's fitted voice (a speaker-conditioned codec only)."""
    unseen = read_manifest(corpus, ["unseen"])
    picks, clips = pick_clips(corpus, n_utts, seed, unseen)
    voice = _VoiceJudge(encoder, corpus, unseen, picks) if encoder is not None else None

    def scored(name: str, kbps: float, outputs: list[np.ndarray], *speed: float,
               codes_kbps: float = float("nan")) -> Row:
        scores = np.array([quality_scores(x, y, SR) for x, y in zip(clips, outputs)])
        p, s, m = np.nanmean(scores, axis=0)   # PESQ is NaN on a clip it finds silent (codec/metrics.py)
        return Row(name, kbps, p, s, m, *speed, **(voice.judge(outputs) if voice else {}), codes_kbps=codes_kbps,
                   per_clip=scores[:, :2])

    rows: list[Row] = []
    runtime = CodecRuntime(model) if onnx_capable(model) else None
    # each speaker's enrollment clip, read once for its embedding and for its fitted voice
    enrollment_audio = voice.enrollment_clips() if voice is not None and model.speaker_conditioned else None
    enrolled = voice.enrollments(enrollment_audio) if enrollment_audio is not None else None
    fitted = {speaker: fit_decoder_voice(model, clip, enrolled[speaker])
              for speaker, clip in enrollment_audio.items()} if enrolled and fit_voices else {}
    for kbps in our_kbps:
        n_q = model.config.n_q_for_kbps(kbps)
        with torch.inference_mode():  # the file round trip (codec/compress.py), delay-compensated
            streams = [compress_audio(model, x, SR, model.config.kbps(n_q), encoder) for x in clips]
            outputs = [decompress_codes(model, replace(header, voice=None), codes) for header, codes in streams]
            with_voice = [decompress_codes(model, header, codes) for header, codes in streams] if enrolled else []
            in_voice = [decompress_codes(model, header, codes, enrolled[u.speaker])
                        for (header, codes), u in zip(streams, picks)] if enrolled else []
            in_fitted = [decompress_codes(model, header, codes, fitted[u.speaker])
                         for (header, codes), u in zip(streams, picks)] if fitted else []
        speed = [streaming_ms_per_20ms(model, n_q, chunk_frames=n) for n in (1, 4)]
        if runtime is not None:
            speed += [streaming_ms_per_20ms(model, n_q, chunk_frames=n, runtime=runtime) for n in (1, 4)]
        rate = model.config.kbps(n_q)
        rows.append(scored(f"ours q{n_q}", rate, outputs, *speed, codes_kbps=rate))
        if with_voice:   # the voice's bytes are paid once a stream: spread over these clips' lengths
            voice_kbps = np.mean([len(h.voice.pack()) * 8 / (h.num_samples / SR) / 1000 if h.voice else 0.0
                                  for h, _ in streams])
            rows.append(scored(f"ours q{n_q}, its voice in the stream", rate + voice_kbps, with_voice,
                               float("nan"), codes_kbps=rate))
        if in_voice:
            rows.append(scored(f"ours q{n_q}, in its voice", rate, in_voice, float("nan"), codes_kbps=rate))
        if in_fitted:
            rows.append(scored(f"ours q{n_q}, in its fitted voice", rate, in_fitted, float("nan"), codes_kbps=rate))
    rows.append(scored("ours, no quantizer (ceiling)", float("nan"), [unquantized_round_trip(model, x) for x in clips],
                       float("nan")))
    for kbps in OPUS_KBPS:
        outputs, cpu = [], 0.0
        for x in clips:
            t = time.process_time()
            outputs.append(opus_round_trip(x, kbps))
            cpu += time.process_time() - t
        total_20ms = sum(len(x) for x in clips) / SR / 0.02
        rows.append(scored("opus voip", kbps, outputs, cpu * 1000 / total_20ms))
    if voice is not None:
        nan = float("nan")
        rows.append(Row("original audio", nan, nan, nan, nan, nan, **voice.judge(clips)))
    return rows


class _VoiceJudge:
    """Scores decoded clips against references of their speakers (clips without one are left out)."""

    def __init__(self, encoder: SpeakerEncoder, corpus: str, utts: list[Utterance], picks: list[Utterance]):
        self.encoder, self.corpus, self.utts = encoder, corpus, utts
        self.excluded = {u.id for u in picks}
        self.refs = references(corpus, utts, {u.speaker for u in picks}, self.excluded, encoder)
        self.speakers = [u.speaker for u in picks]

    def enrollment_clips(self) -> dict[str, np.ndarray]:
        """Per speaker, another 10 s of its other sentences than its reference's (from the last), as an
        enrollment clip: the samples `references(..., last_first=True)` would embed."""
        pool = [u for u in self.utts if u.speaker in set(self.speakers) and u.id not in self.excluded]
        streams = speaker_streams(self.corpus, pool, SR, max_seconds=REFERENCE_SECONDS, last_first=True)
        return {speaker: x[:int(REFERENCE_SECONDS * SR)] for speaker, x in streams.items()}

    def enrollments(self, clips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per speaker, the embedding of its enrollment clip (`enrollment_clips`): the voice a
        speaker-conditioned decoder is given, as an enrollment would give it."""
        return {speaker: self.encoder.embed(x, SR) for speaker, x in clips.items()}

    def judge(self, outputs: list[np.ndarray]) -> dict[str, float]:
        """The `Row` voice fields for these outputs (one per pick, in order)."""
        tally = IdentityTally()
        for y, speaker in zip(outputs, self.speakers):
            if speaker in self.refs:
                tally.add(speaker_scores(self.encoder, y, SR, self.refs), speaker)
        return {"voice_cosine": tally.mean_cosine, "voice_closest": tally.closest_share}


def format_table(rows: list[Row]) -> str:
    lines = ["| codec | kbps | PESQ-WB | STOI | log-mel L1 | CPU ms / 20 ms: PyTorch, 1 frame/call | 4 frames/call "
             "| ONNX Runtime, 1 frame/call | 4 frames/call | voice: cos to own reference | closest to own |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        figures = [_figure(r.kbps, ".3g"), _figure(r.pesq, ".2f"), _figure(r.stoi, ".3f"), _figure(r.mel, ".3f")]
        figures += [_figure(v, ".3f") for v in (r.ms_per_20ms, r.ms_per_20ms_chunked, r.onnx_ms_per_20ms,
                                                r.onnx_ms_per_20ms_chunked)]
        figures += [_figure(r.voice_cosine, ".3f"), _figure(r.voice_closest * 100, ".0f", " %")]
        lines.append(f"| {r.name} | " + " | ".join(figures) + " |")
    return "\n".join(lines)


def _figure(value: float, spec: str, unit: str = "") -> str:
    return "-" if math.isnan(value) else format(value, spec) + unit
