"""The shipped speaker encoder and preset voices (real weights, shipped fixtures)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tts.audio import read_audio
from voice.encoder import DEFAULT_ENCODER, cosine, load_encoder
from voice.enroll import resolve_voice
from voice.presets import load_presets
from voice.store import VoiceStore

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def test_shipped_encoder_is_small_and_loads_offline(encoder):
    assert DEFAULT_ENCODER.stat().st_size < 10 * 1024 * 1024
    assert encoder.model_id != "untrained" and encoder.config.embedding_dim >= 128


def test_one_speaker_embeds_closer_than_two(encoder):
    """Held-out voices (never trained on): two clips of one speaker against a clip of another."""
    emb = {}
    for name in ("voice_a1", "voice_a2", "voice_b1"):
        audio = read_audio(ASSETS / f"{name}.flac")
        emb[name] = encoder.embed(audio.samples, audio.sample_rate)
    same = cosine(emb["voice_a1"], emb["voice_a2"])
    assert same > cosine(emb["voice_a1"], emb["voice_b1"]) + 0.1
    assert same > cosine(emb["voice_a2"], emb["voice_b1"]) + 0.1


def test_identity_tally_counts_a_clip_closest_to_its_own_voice(encoder):
    from benchmarks.voice_identity import IdentityTally, speaker_scores

    refs = {}
    for speaker, name in (("a", "voice_a1"), ("b", "voice_b1")):
        audio = read_audio(ASSETS / f"{name}.flac")
        refs[speaker] = encoder.embed(audio.samples, audio.sample_rate)
    clip = read_audio(ASSETS / "voice_a2.flac")
    scores = speaker_scores(encoder, clip.samples, clip.sample_rate, refs)
    tally = IdentityTally()
    tally.add(scores, "a")
    tally.add(scores, "b")                       # the same clip, said to be b's: not closest to its own
    tally.add(speaker_scores(encoder, clip.samples[:800], clip.sample_rate, refs), "a")  # too short to embed
    assert tally.closest == 1 and tally.closest_share == 1 / 3
    assert tally.cosines == [scores["a"], scores["b"], 0.0]
    assert tally.mean_cosine == pytest.approx((scores["a"] + scores["b"]) / 3)


def test_speaker_consistency_loss_tells_voices_apart_and_trains_only_the_audio(encoder):
    import torch

    from codec.losses import SpeakerConsistencyLoss

    clips = {name: read_audio(ASSETS / f"{name}.flac").samples[:16_000] for name in ("voice_a1", "voice_b1")}
    a, b = (torch.from_numpy(clips[n])[None] for n in ("voice_a1", "voice_b1"))
    loss = SpeakerConsistencyLoss(load_encoder())
    assert float(loss(a, a)) == pytest.approx(0.0, abs=1e-5)
    decoded = b.clone().requires_grad_(True)
    value = loss(decoded, a)
    assert float(value.detach()) > 0.2               # another speaker's voice is far from this one's
    value.backward()
    assert decoded.grad is not None and decoded.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.encoder.parameters())


def test_presets_match_the_shipped_encoder(encoder, tmp_path):
    presets = load_presets()
    assert len(presets) >= 4
    with VoiceStore(tmp_path / "v.db") as store:
        for name in presets:
            voice = resolve_voice(store, name, encoder.model_id)  # raises if stale
            assert voice.preset and abs(float((voice.embedding ** 2).sum()) - 1) < 1e-3
    names = sorted(presets)
    sims = [cosine(presets[a].embedding, presets[b].embedding) for a in names for b in names if a < b]
    assert max(sims) < 0.95  # distinct voices
