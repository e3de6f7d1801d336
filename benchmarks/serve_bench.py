"""`tts bench serve`: N concurrent streaming clients over loopback against one server.

The server runs in this process (its own event loop and scheduler thread);
each client is a thread with its own channel, all starting together on
different sentences. Per stream: time to first audio (request sent to first
chunk received), real-time factor (last chunk's arrival / audio length) and
the underruns a client player with the default playout buffer would have had
(the arrival timeline replayed through it, with the server's estimate of
the audio still to come), and when that player would have started: above
real time, "no underrun" is bought with a later start. The largest N with no
underrun is reported.

With `calibrating`, each level starts with an enrollment that keeps its clip, so the
server calibrates that voice (serve/calibrator.py, about 20 s of a core) while the
level's streams run: what a server's streams feel when a user enrolls meanwhile.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.tts_bench import SENTENCES
from serve.client import TtsClient
from serve.server import BackgroundServer, ServerConfig
from tts.engine import Engine
from tts.say import deliver
from voice.store import VoiceStore

CALIBRATION_CLIP = Path(__file__).resolve().parents[1] / "tests" / "assets" / "voice_a1.flac"   # 6 s of speech
CONSENT = "I, the speaker, agree that this recording may be used to synthesise my voice."


def one_stream(target: str, text: str, seed: int, barrier: threading.Barrier, out: list, index: int) -> None:
    with TtsClient(target, timeout=300) as client:
        remaining = [0.0]

        def chunks():
            for chunk in client.stream(text, seed=seed):
                remaining[0] = chunk.remaining_seconds_estimate
                if chunk.audio:
                    yield client.pcm(chunk)

        barrier.wait()
        first, elapsed, audio, stats = deliver(chunks(), 16000, remaining=lambda: remaining[0])
    out[index] = {"ttfa": first, "rtf": elapsed / max(audio, 1e-9), "underruns": stats.underruns, "audio": audio,
                  "start": stats.start_delay or 0.0}


def run_level(target: str, n: int) -> dict:
    barrier = threading.Barrier(n)
    results: list = [None] * n
    threads = [threading.Thread(target=one_stream, args=(target, SENTENCES[1 + i % 4], i, barrier, results, i))
               for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ttfa = np.array([r["ttfa"] for r in results]) * 1000
    return {"streams": n, "ttfa_ms_p50": float(np.percentile(ttfa, 50)), "ttfa_ms_p95": float(np.percentile(ttfa, 95)),
            "rtf_max": max(r["rtf"] for r in results),
            "start_ms_p95": float(np.percentile([r["start"] * 1000 for r in results], 95)),
            "underruns": sum(r["underruns"] for r in results),
            "streams_with_underrun": sum(1 for r in results if r["underruns"])}


def run(engine: Engine, store: VoiceStore, levels: list[int], calibrating: bool = False) -> dict:
    server = BackgroundServer(engine, store, ServerConfig(port=0, max_streams=max(levels)))
    calibrator = server.server.servicer.calibrator
    try:
        run_level(server.target, 1)   # warm-up
        rows = []
        for n in levels:
            if calibrating:
                with TtsClient(server.target, timeout=60) as client:
                    client.enroll(f"bench{n}", CALIBRATION_CLIP.read_bytes(), CONSENT, keep_clip=True)
            rows.append(run_level(server.target, n))
            if calibrating:
                rows[-1]["calibrating_to_the_end"] = calibrator.pending() > 0
                while calibrator.pending():   # the next level starts with its own calibration
                    time.sleep(0.1)
    finally:
        server.stop()
    clean = [r["streams"] for r in rows if r["underruns"] == 0]
    return {"rows": rows, "largest_without_underrun": max(clean) if clean else 0, "calibrating": calibrating}


def format_report(result: dict) -> str:
    lines = ["| streams | TTFA p50 ms | TTFA p95 ms | worst RTF | playback start p95 ms | streams with underruns |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['streams']} | {r['ttfa_ms_p50']:.0f} | {r['ttfa_ms_p95']:.0f} | {r['rtf_max']:.3f} | "
                     f"{r['start_ms_p95']:.0f} | {r['streams_with_underrun']} |")
    lines.append(f"largest N with no underrun: {result['largest_without_underrun']}")
    if result.get("calibrating"):
        overlap = [r["streams"] for r in result["rows"] if r.get("calibrating_to_the_end")]
        lines.append("each level began with an enrollment that the server calibrated meanwhile (serve/calibrator.py); "
                     f"still calibrating when its last stream ended: levels {overlap or 'none'}")
    return "\n".join(lines)
