"""`tts bench tts`: what one listener feels, on this CPU.

For sentences of different lengths (a few words to a short paragraph), each
with several seeds: time to first audio (call to first PCM chunk), real-time
factor (synthesis time / audio length), the underruns a real-time player with
the default playout buffer would have had (the chunk timeline replayed through
it), and the process's peak memory. One warm-up run first (lazy init).
"""
from __future__ import annotations

import resource
import time

import numpy as np

from tts.engine import Engine, SynthesisOptions, run_stream
from tts.stream.playout import simulate_playout

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
    t0 = time.perf_counter()
    first, samples, timeline = None, 0, []
    for chunk in run_stream(engine.backbone, stream):
        now = time.perf_counter() - t0
        first = now if first is None else first
        samples += chunk.size
        timeline.append((now, chunk.size, stream.remaining_seconds()))
    elapsed = time.perf_counter() - t0
    audio = samples / engine.sample_rate
    stats = simulate_playout(timeline, engine.sample_rate)
    return {"chars": len(text), "ttfa": first, "rtf": elapsed / audio, "audio": audio,
            "underruns": stats.underruns, "start_delay": stats.start_delay}


def run(engine: Engine, voice: str = "slt", seeds: int = 3) -> dict:
    speaker = engine.voice_embedding(voice)
    measure(engine, SENTENCES[0], speaker, 0)   # warm-up
    rows = [measure(engine, text, speaker, seed) for text in SENTENCES for seed in range(seeds)]
    ttfa = np.array([r["ttfa"] for r in rows]) * 1000
    rtf = np.array([r["rtf"] for r in rows])
    return {"runs": len(rows), "rows": rows, "backbone": getattr(engine.backbone, "model_id", "?"),
            "ttfa_ms_p50": float(np.percentile(ttfa, 50)), "ttfa_ms_p95": float(np.percentile(ttfa, 95)),
            "rtf_p50": float(np.percentile(rtf, 50)), "rtf_p95": float(np.percentile(rtf, 95)),
            "underruns": int(sum(r["underruns"] for r in rows)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_report(result: dict) -> str:
    lines = [f"backbone {result['backbone']}, {result['runs']} runs (sentences x seeds), one thread",
             "| chars | audio s | time to first audio ms | RTF | underruns | playback start ms |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['chars']} | {r['audio']:.2f} | {r['ttfa'] * 1000:.0f} | {r['rtf']:.3f} | "
                     f"{r['underruns']} | {r['start_delay'] * 1000:.0f} |")
    lines.append(f"time to first audio p50 {result['ttfa_ms_p50']:.0f} ms, p95 {result['ttfa_ms_p95']:.0f} ms; "
                 f"RTF p50 {result['rtf_p50']:.3f}, p95 {result['rtf_p95']:.3f}; underruns {result['underruns']}; "
                 f"peak memory {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)
