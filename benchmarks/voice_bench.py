"""`tts bench voice`: speaker verification on speakers never trained on.

Clips of 3 s and 10 s are cut from each held-out ("unseen") speaker's audio,
every pair is a trial, and the equal error rate is reported, clean and with the
training augmentations (noise, reverberation, band limits) applied to every
clip, with the time to embed one clip on one thread.
"""
from __future__ import annotations

import torch

from tts.corpus.manifest import read_manifest
from voice.encoder import SpeakerEncoder
from voice.train import Augmenter
from voice.verification import VerificationResult, cut_clips, speaker_streams, verify


def run(encoder: SpeakerEncoder, corpus: str, clips_per_speaker: int = 12, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    sr = encoder.config.sample_rate
    utts = read_manifest(corpus, ["unseen"])
    if not utts:
        raise ValueError(f"{corpus} has no 'unseen' split")
    streams = speaker_streams(corpus, utts, sr, max_seconds=clips_per_speaker * 10.5 + 1)
    augment = Augmenter(sr, torch.Generator().manual_seed(seed))
    results: dict = {"encoder": encoder.model_id, "speakers": len(streams)}
    for seconds in (3.0, 10.0):
        clips, labels = cut_clips(streams, seconds, clips_per_speaker, sr)
        results[f"clean_{seconds:g}s"] = verify(encoder.embed, clips, labels, sr)
        noisy = [augment(torch.from_numpy(c)[None])[0].numpy() for c in clips]
        results[f"augmented_{seconds:g}s"] = verify(encoder.embed, noisy, labels, sr)
    return results


def format_report(results: dict) -> str:
    lines = [f"speaker encoder {results['encoder']}, {results['speakers']} held-out speakers",
             "| condition | clip | EER | target / non-target trials | mean cos target / non-target | ms per clip |",
             "|---|---|---|---|---|---|"]
    for key, r in results.items():
        if not isinstance(r, VerificationResult):
            continue
        cond, clip = key.split("_")
        lines.append(f"| {cond} | {clip} | {100 * r.eer:.2f} % | {r.target_trials} / {r.nontarget_trials} | "
                     f"{r.mean_target_score:.3f} / {r.mean_nontarget_score:.3f} | {1000 * r.seconds_per_clip:.1f} |")
    return "\n".join(lines)
