"""`tts bench tts`: what one listener feels, on this CPU.

For sentences of different lengths (a few words to a short paragraph), each
with several seeds: time to first audio (call to first PCM chunk), real-time
factor (synthesis time / audio length), the underruns a real-time player with
the default playout buffer would have had (the chunk timeline replayed through
it), the process's peak memory, and the speaker similarity (cosine between the
speaker encoder's embedding of the output and the voice asked for; the voice's
own recordings score about 0.9, other speakers about 0.25, see `tts bench voice`). One warm-up run first (lazy init).
"""
from __future__ import annotations

import resource

import numpy as np
import soundfile as sf

from benchmarks.voice_identity import embedding_or_zeros
from benchmarks.intelligibility import Recognizer, wer
from tts.corpus.manifest import audio_path, read_manifest
from tts.engine import Engine, SynthesisOptions, run_stream
from tts.say import deliver

SENTENCES = [
    "Hello there.",
    "The weather is lovely today.",
    "Please remember to bring your umbrella, because it may rain later this afternoon.",
    "At nine thirty the train left the station, and by noon we had reached the coast, where the wind was "
    "strong and the sea was grey.",
    "Streaming speech must start quickly. It must never stutter, even when the machine is busy. And it "
    "should sound natural from the first word to the last one, whatever the length of the text.",
]


def measure(engine: Engine, text: str, speaker: np.ndarray, seed: int) -> dict:
    stream = engine.stream(speaker, SynthesisOptions(seed=seed))
    stream.add_text(text)
    pieces: list[np.ndarray] = []

    def chunks():
        for chunk in run_stream(engine, stream):
            pieces.append(chunk)
            yield chunk

    first, elapsed, audio, stats = deliver(chunks(), engine.sample_rate, remaining=stream.remaining_seconds)
    pcm = np.concatenate(pieces)
    similarity = float(np.dot(embedding_or_zeros(engine.encoder, pcm, engine.sample_rate), speaker))
    return {"pcm": pcm, "text": text, "chars": len(text), "ttfa": first, "rtf": elapsed / audio, "audio": audio,
            "underruns": stats.underruns, "start_delay": stats.start_delay, "similarity": similarity}


def run(engine: Engine, voice: str = "slt", seeds: int = 3, corpus: str | None = None) -> dict:
    speaker = engine.voice_embedding(voice)
    measure(engine, SENTENCES[0], speaker, 0)   # warm-up
    rows = [measure(engine, text, speaker, seed) for text in SENTENCES for seed in range(seeds)]
    audio = [(r.pop("pcm"), r["text"]) for r in rows]
    intelligibility = _intelligibility(audio, engine.sample_rate, corpus)
    ttfa = np.array([r["ttfa"] for r in rows]) * 1000
    rtf = np.array([r["rtf"] for r in rows])
    return {"runs": len(rows), "rows": rows, "backbone": getattr(engine.backbone, "model_id", "?"),
            "ttfa_ms_p50": float(np.percentile(ttfa, 50)), "ttfa_ms_p95": float(np.percentile(ttfa, 95)),
            "rtf_p50": float(np.percentile(rtf, 50)), "rtf_p95": float(np.percentile(rtf, 95)),
            "underruns": int(sum(r["underruns"] for r in rows)),
            "similarity": float(np.mean([r["similarity"] for r in rows])),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **intelligibility}


def _intelligibility(audio: list[tuple[np.ndarray, str]], sample_rate: int, corpus: str | None) -> dict:
    """WER of our output, and of the corpus's own test audio as the recogniser's baseline."""
    try:
        recognizer = Recognizer()
    except ImportError:
        return {}
    if sample_rate != 16000:
        return {}
    result = {"wer": wer(recognizer, audio)}
    if corpus:
        utts = read_manifest(corpus, ["test"])[:30]
        pairs = [(sf.read(audio_path(corpus, u), dtype="float32")[0], u.text) for u in utts]
        result["corpus_wer"] = wer(recognizer, pairs)
    return result


def format_report(result: dict) -> str:
    lines = [f"backbone {result['backbone']}, {result['runs']} runs (sentences x seeds), one thread",
             "| chars | audio s | time to first audio ms | RTF | underruns | playback start ms | speaker cos |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['chars']} | {r['audio']:.2f} | {r['ttfa'] * 1000:.0f} | {r['rtf']:.3f} | "
                     f"{r['underruns']} | {r['start_delay'] * 1000:.0f} | {r['similarity']:.2f} |")
    lines.append(f"time to first audio p50 {result['ttfa_ms_p50']:.0f} ms, p95 {result['ttfa_ms_p95']:.0f} ms; "
                 f"RTF p50 {result['rtf_p50']:.3f}, p95 {result['rtf_p95']:.3f}; underruns {result['underruns']}; "
                 f"peak memory {result['peak_rss_mb']:.0f} MB; mean speaker cosine {result['similarity']:.2f}")
    if "wer" in result:
        baseline = (f" (the same recogniser on 30 corpus test utterances: {result['corpus_wer'] * 100:.0f} %)"
                    if "corpus_wer" in result else "")
        lines.append(f"word error rate of pocketsphinx on our output: {result['wer'] * 100:.0f} %{baseline}")
    return "\n".join(lines)
