"""The CTC aligner (backbone/aligner.py) and the guide that follows its token starts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backbone.aligner import AlignerTrainConfig, align_token_cache, even_starts, forced_align, train_aligner
from backbone.data import _save, load_token_cache
from backbone.model import AlignmentGuide, load_backbone


def _log_probs(path: list[int], classes: int = 8) -> np.ndarray:
    """Frames that each say one class with probability 0.9."""
    probs = np.full((len(path), classes), 0.1 / (classes - 1))
    probs[np.arange(len(path)), path] = 0.9
    return np.log(probs)


def test_forced_align_finds_each_tokens_first_frame_and_refuses_too_few_frames():
    # classes are token + 1 (0 is the blank): tokens [2, 2, 4] spoken as _ _ 2 2 _ 2 4 4 _
    starts = forced_align(_log_probs([0, 0, 3, 3, 0, 3, 5, 5, 0]), np.array([2, 2, 4]))
    assert starts.tolist() == [2, 5, 6]
    # a repeated token needs a blank between its two: three tokens cannot fit in three frames here
    assert forced_align(_log_probs([3, 0, 3]), np.array([2, 2, 4])) is None
    assert forced_align(_log_probs([3, 5]), np.array([2, 4])).tolist() == [0, 1]
    # a long sentence: more than 127 CTC states (the back-pointers are int8)
    tokens = np.arange(80) % 6
    path = [int(t) + 1 for t in tokens for _ in range(2)]
    assert forced_align(_log_probs(path), tokens).tolist() == list(range(0, 160, 2))


def test_aligned_guide_band_follows_the_token_being_spoken():
    guide = AlignmentGuide(layers=(0,), heads=1, token_sigma=1.0)
    n, s = 4, 12
    starts = torch.tensor([0, 1, 2, 9])             # uneven: the third token lasts seven frames
    cost = guide.cost(n, s, starts, torch.device("cpu"))
    assert cost.argmin(1).tolist() == [0, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3]
    length = 1 + n + s

    def penalty(attend_to, token_starts) -> float:
        a = torch.zeros(1, 1, length, length)
        for q in range(s):
            a[0, 0, 1 + n + q, 1 + attend_to(q)] = 1.0
        return float(guide.penalty((a,), [n], [s], [length], token_starts))

    follows = lambda q: int(cost[q].argmin())            # noqa: E731
    diagonal = lambda q: int(q / s * n)                  # noqa: E731
    assert penalty(follows, [starts]) < 0.01 < penalty(diagonal, [starts])
    assert penalty(diagonal, None) < penalty(follows, None)     # without starts the diagonal is what it wants


def _spoken_cache(path, utterances: int = 24) -> list[np.ndarray]:
    """A cache whose codes say their text: token t is code t for a random 1-3 frames, with silences (code 30)
    between some; returns each utterance's true token starts."""
    rng = np.random.default_rng(0)
    codes, texts, truth = [], [], []
    for _ in range(utterances):
        tokens = rng.integers(0, 12, int(rng.integers(4, 9)))
        frames, starts = [30] * int(rng.integers(0, 3)), []
        for t in tokens:
            starts.append(len(frames))
            frames += [int(t)] * int(rng.integers(1, 4)) + [30] * int(rng.random() < 0.3)
        codes.append(np.tile(np.array(frames, np.int16), (2, 1)))
        texts.append(tokens.astype(np.int32))
        truth.append(np.array(starts))
    meta = {"codec_id": "c", "tokenizer_id": "t", "text_vocab": 12, "encoder_id": "e", "n_codebooks": 2,
            "frame_rate": 25.0, "utterances": utterances, "hours": 0.0}
    _save(path, dict(
        ids=np.array([f"u{i}" for i in range(utterances)]), speakers=np.array(["s0"] * utterances),
        splits=np.array(["train"] * (utterances - 4) + ["valid"] * 4), texts=np.array(["x"] * utterances),
        codes=np.concatenate(codes, 1), code_offsets=np.cumsum([0] + [c.shape[1] for c in codes]),
        text=np.concatenate(texts), text_offsets=np.cumsum([0] + [len(t) for t in texts]),
        speaker_names=np.array(["s0"]), speaker_embeddings=np.zeros((1, 2, 8), np.float32),
        meta=np.array(repr(meta))))
    return truth


def test_aligner_learns_where_tokens_are_spoken_and_the_backbone_guide_uses_them(tmp_path):
    from backbone.data import retokenize_token_cache
    from backbone.train import BackboneTrainConfig, train_backbone
    from tts.training import TrainingSetupError

    truth = _spoken_cache(tmp_path / "tokens.npz")
    cfg = AlignerTrainConfig(cache=str(tmp_path / "tokens.npz"), out_dir=str(tmp_path / "al"),
                             export=str(tmp_path / "al" / "aligner.pt"), steps=400, lr=3e-3, valid_every=100,
                             frames_per_batch=200, warmup_steps=10, log_every=50)
    result = train_aligner(cfg)
    assert result["best"]["valid_ter"] < 0.2
    cfg.steps = 410                                   # the same command with more steps goes on from step 400
    assert train_aligner(cfg)["step"] == 410
    steps = [json.loads(line)["step"] for line in (tmp_path / "al" / "train.log").read_text().splitlines()]
    assert steps[-1] == 410 and steps == sorted(steps)
    summary = align_token_cache(tmp_path / "tokens.npz", cfg.export, tmp_path / "aligned.npz")
    with pytest.raises(TrainingSetupError, match="no aligner"):
        align_token_cache(tmp_path / "tokens.npz", tmp_path / "none.pt", tmp_path / "other.npz")
    cache = load_token_cache(tmp_path / "aligned.npz")
    assert summary["utterances"] == 24 and cache.token_starts is not None
    error = np.concatenate([abs(found - want) for found, want in zip(cache.token_starts, truth)])
    even = np.concatenate([abs(even_starts(len(want), c.shape[1]) - want) for c, want in zip(cache.codes, truth)])
    assert np.mean(error <= 2) > 0.9 and error.mean() < 0.5 * even.mean()     # CTC spikes wander a frame or two
    assert all((np.diff(s) >= 0).all() for s in cache.token_starts)

    model = dict(d_model=16, n_layers=2, n_heads=2, ffn=32)
    base = dict(frames_per_batch=80, valid_every=1000, log_every=1, warmup_steps=1, steps=2, model=model,
                guide_weight=1.0, guide_layers=(1,), guide_heads=1, guide_aligned=True)
    train_backbone(BackboneTrainConfig(cache=str(tmp_path / "aligned.npz"), out_dir=str(tmp_path / "bb"),
                                       export=str(tmp_path / "bb.safetensors"), **base))
    log = [json.loads(line) for line in (tmp_path / "bb" / "train.log").read_text().splitlines()]
    assert log[-1]["step"] == 2 and log[-1]["align"] > 0
    # the reading loss: logged, trained, resumed, and not in the exported file
    reading = dict(base, guide_weight=0.0, guide_aligned=False, reading_weight=0.5, steps=40, lr=3e-3)
    run = BackboneTrainConfig(cache=str(tmp_path / "aligned.npz"), out_dir=str(tmp_path / "rd"),
                              export=str(tmp_path / "rd.safetensors"), **reading)
    train_backbone(run)
    log = [json.loads(line) for line in (tmp_path / "rd" / "train.log").read_text().splitlines()]
    assert log[-1]["read"] < log[0]["read"] - 0.3
    run.steps = 42
    assert train_backbone(run)["step"] == 42
    exported = load_backbone(tmp_path / "rd.safetensors")
    assert not any(k.startswith("reading.") for k in exported.state_dict())
    with pytest.raises(TrainingSetupError, match="no token starts"):
        train_backbone(BackboneTrainConfig(cache=str(tmp_path / "tokens.npz"), out_dir=str(tmp_path / "bb2"),
                                           export=str(tmp_path / "bb2.safetensors"), **base))

    class Same:                                      # a tokenizer: retokenizing drops the starts it cannot keep
        id, vocab_size = "t2", 12

        def encode(self, text, normalized=True):
            return [1, 2]

    retokenize_token_cache(tmp_path / "aligned.npz", tmp_path / "re.npz", Same())
    assert load_token_cache(tmp_path / "re.npz").token_starts is None
