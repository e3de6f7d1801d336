"""The read pointer (backbone/model.py): the token being spoken in every step's input, moved by an advance head."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backbone.data import load_token_cache
from backbone.generate import Request, SamplingConfig, generate_batch, generate_frames
from backbone.model import Backbone, BackboneConfig, dwell_frames, load_backbone, pointer_ids
from tests.test_aligner import _spoken_cache
from tests.test_backbone import TINY, joining_mid_flight

READER = dict(TINY, read_pointer=3)


def reader_model(seed: int = 0, **extra) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(BackboneConfig(**READER, **extra))


def test_pointer_ids_name_the_token_the_next_and_the_dwell():
    position = torch.tensor([0, 0, 1, 1, 1, 3, 3])
    assert dwell_frames(position).tolist() == [0, 1, 0, 1, 2, 0, 1]
    ids = pointer_ids(torch.tensor([7, 8, 9, 5]), position, dwell_frames(position), no_token=20)
    assert ids[:, 0].tolist() == [7, 7, 8, 8, 8, 5, 5]
    assert ids[:, 1].tolist() == [8, 8, 9, 9, 9, 20, 20]          # past the last token: no token
    assert pointer_ids(torch.tensor([], dtype=torch.long), position, torch.full((7,), 30), 20)[:, :2].eq(20).all()
    assert pointer_ids(torch.tensor([4]), position[:1], torch.tensor([30]), 20)[0, 2] == 15   # dwell saturates


@pytest.mark.parametrize("runtime", ["torch", "int8", "onnx"])
def test_step_models_compute_the_teacher_forced_codes_and_advance(runtime):
    """A decoding step fed the codes and pointer of the step before gives what teacher forcing gives."""
    model = reader_model(3).eval()
    text = torch.tensor([1, 4, 2, 7])
    codes = torch.randint(0, 12, (3, 6))
    starts = torch.tensor([0, 2, 3, 5])
    with torch.no_grad():
        out = model(torch.zeros(1, 8), [text], [codes], token_starts=[starts])
    assert out["advance"] is not None and out["loss"] > out["codes"]
    # the same inputs, step by step
    from backbone.delay import delay
    from backbone.model import spoken_tokens

    steps = delay(codes, model.config.pad, model.config.eos)                 # [K, S]
    position = spoken_tokens(starts, steps.shape[1])
    pointer = pointer_ids(text, position, dwell_frames(position), model.config.no_token)
    prompt = model.embed_prompt(torch.zeros(1, 8), text[None])
    audio_in = model.embed_audio(steps[None, :, :-1])[0] + model.embed_pointer(pointer[1:])
    with torch.no_grad():
        hidden = model.transformer(inputs_embeds=torch.cat([prompt[0], audio_in])[None]).last_hidden_state[0]
    n = prompt.shape[1]
    expected_codes = model.logits(hidden[None, n - 1:])[0]                  # [K, S, V]
    expected_advance = model.advance_head(hidden[n - 1:])                    # [S, 3]
    step_model = model.step_model(quantized=runtime == "int8", onnx=runtime == "onnx")
    tolerance = 0.15 if runtime == "int8" else 1e-4
    cache = step_model.new_cache()
    got = model.step_model().prefill(prompt[0], cache)
    for t in range(steps.shape[1] - 1):
        if t > 0:
            tokens = torch.cat([steps[:, t - 1], pointer[t]])[None]             # [1, K + 3]
            got = step_model(tokens if step_model.takes_tokens else model.embed_step(tokens), cache)[0][0]
        assert got.shape == (4, model.config.audio_vocab)                    # K code rows + the advance row
        scale = expected_codes[:, t].abs().max()
        assert (got[:3] - expected_codes[:, t]).abs().max() < tolerance * scale
        assert (got[3, :3] - expected_advance[t]).abs().max() < tolerance * scale
        assert torch.isinf(got[3, 3:]).all()


def test_tiny_reader_overfits_and_speaks_its_fixture_back():
    """Teacher forcing on codes and token starts; generation, which moves the pointer itself, gives the codes back."""
    torch.manual_seed(0)
    spk = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    text = [torch.tensor([1, 5, 7, 3]), torch.tensor([2, 9, 4, 4, 6])]
    codes = [torch.randint(0, 12, (3, 10)), torch.randint(0, 12, (3, 8))]
    starts = [torch.tensor([0, 3, 5, 8]), torch.tensor([0, 1, 3, 5, 6])]
    model = reader_model()
    assert overfit_and_speak_back(model, spk, text, codes, starts)["advance"] < 0.05
    with pytest.raises(ValueError, match="token starts"):
        model(spk, text, codes)


def overfit_and_speak_back(model: Backbone, spk: torch.Tensor, text: list[torch.Tensor], codes: list[torch.Tensor],
                           starts: list[torch.Tensor]) -> dict:
    """Teacher forcing (300 steps) until every code is right, then greedy generation of each utterance, which
    moves the pointer itself, must give its codes back; returns the last training step's output."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(spk, text, codes, token_starts=starts)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["accuracy"] == 1.0
    greedy = SamplingConfig(temperature=0.0, min_seconds_per_char=0.0)
    for i in range(len(text)):
        request = Request(text[i].tolist(), spk[i], 20, sampling=greedy)
        got = torch.stack(list(generate_frames(model.eval(), request)), 1)
        assert torch.equal(got, codes[i])
    model.train()
    return out


def test_eos_waits_for_the_pointer_and_follows_it_to_the_end():
    text, n_chars = [1, 2, 3, 4, 5], 10
    eager = reader_model()
    with torch.no_grad():   # it wants to stop at once, and its pointer never to move
        eager.heads.bias.view(3, -1)[0, eager.config.eos] = 1e4
        eager.advance_head.bias[:] = torch.tensor([1e4, 0.0, 0.0])
    # the pointer moves only when it has dwelt max_token_seconds (5 frames): at the 5th, 10th, 15th step;
    # EOS is allowed from the third-last token on (end_margin_tokens 2: tokens 3 and 4) -> after 15 frames
    hold = SamplingConfig(max_token_seconds=0.2, end_margin_tokens=2.0)
    frames = list(generate_frames(eager, Request(text, torch.zeros(8), n_chars, sampling=hold)))
    assert len(frames) == 15

    reluctant = reader_model()
    with torch.no_grad():   # it never wants to stop, and its pointer runs a token a frame
        reluctant.heads.bias.view(3, -1)[0, reluctant.config.eos] = -1e4
        reluctant.advance_head.bias[:] = torch.tensor([0.0, 1e4, 0.0])
    frames = list(generate_frames(reluctant, Request(text, torch.zeros(8), n_chars,
                                                     sampling=SamplingConfig(end_hold_seconds=0.4))))
    assert len(frames) == 3 + 11   # frame 3 reads the last token; EOS is forced once it has held it over 10 (0.4 s)


def test_speaking_rate_moves_the_pointer_faster_or_slower():
    model = reader_model(2)
    with torch.no_grad():   # it stops as soon as the pointer allows; the pointer moves on about one frame in eight
        model.heads.bias.view(3, -1)[0, model.config.eos] = 1e4
        model.advance_head.bias[:] = torch.tensor([0.0, -2.0, -1e4])
    text = list(range(1, 11))

    def frames(rate: float) -> int:
        sampling = SamplingConfig(speaking_rate=rate, min_seconds_per_char=0.0)
        return sum(len(list(generate_frames(model, Request(text, torch.zeros(8), 10, seed, sampling))))
                   for seed in range(6))

    slow, normal, fast = frames(0.5), frames(1.0), frames(2.0)
    assert slow > 1.4 * normal and normal > 1.4 * fast
    with pytest.raises(ValueError, match="speaking rate"):
        frames(3.0)
    with pytest.raises(ValueError, match="no read pointer"):
        list(generate_frames(Backbone(BackboneConfig(**TINY)), Request(text, torch.zeros(8), 10,
                                                                         sampling=SamplingConfig(speaking_rate=1.5))))


@pytest.mark.parametrize("onnx", [False, True])
def test_batched_reader_generation_equals_one_by_one(onnx):
    assert_batched_equals_one_by_one(reader_model(1, unconditional=True).eval(), onnx)


def assert_batched_equals_one_by_one(model: Backbone, onnx: bool) -> None:
    """Four requests, two of them guided (a second cache row each), give the same codes alone, in one batch and
    joining a batch mid-flight."""
    reqs = [Request(list(range(1, 3 + 3 * i)), torch.randn(8), n_chars=6 + 4 * i, seed=10 + i,
                    sampling=SamplingConfig(guidance=(1.0, 2.5)[i % 2])) for i in range(4)]
    alone = [torch.stack(list(generate_frames(model, r, onnx=onnx)), 1) for r in reqs]
    together = generate_batch(model, reqs, onnx=onnx)
    assert all(torch.equal(a, b) for a, b in zip(alone, together))
    joined = joining_mid_flight(model, reqs, first=1, join_at=2, max_steps=300, onnx=onnx)
    assert all(torch.equal(got, expected) for got, expected in zip(joined, alone))


def _aligned_spoken_cache(path) -> None:
    """test_aligner's spoken cache with its true token starts written in (as 'tts train align' would)."""
    truth = _spoken_cache(path)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["token_starts"] = np.concatenate(truth).astype(np.int32)
    np.savez(path, **arrays)
    assert load_token_cache(path).token_starts is not None


def test_reader_training_learns_the_pointer_resumes_and_starts_from_another_models_weights(tmp_path):
    from backbone.train import BackboneTrainConfig, text_reliance, train_backbone
    from tts.training import TrainingSetupError

    _aligned_spoken_cache(tmp_path / "aligned.npz")
    cache = str(tmp_path / "aligned.npz")
    base = dict(cache=cache, frames_per_batch=80, valid_every=20, log_every=1, warmup_steps=1, lr=3e-3,
                model=dict(d_model=32, n_layers=2, n_heads=2, ffn=64))
    plain = BackboneTrainConfig(out_dir=str(tmp_path / "plain"), export=str(tmp_path / "plain.safetensors"),
                                steps=2, uncond_dropout=0.2, **base)
    train_backbone(plain)
    assert load_backbone(plain.export).config.unconditional
    run = BackboneTrainConfig(out_dir=str(tmp_path / "rp"), export=str(tmp_path / "rp.safetensors"), steps=60,
                              read_pointer=3, init_from=plain.export, **base)
    train_backbone(run)
    log = [json.loads(line) for line in (tmp_path / "rp" / "train.log").read_text().splitlines()]
    assert log[-1]["adv"] < log[0]["adv"] - 0.3 and "valid_advance" in log[-1]
    run.steps = 62
    assert train_backbone(run)["step"] == 62
    model = load_backbone(run.export)
    assert model.config.read_pointer == 3 and model.advance_head.out_features == 3
    assert not model.config.unconditional       # trained on without unconditional examples: no guidance
    frames = list(generate_frames(model, Request([1, 2, 3], torch.zeros(8), 12)))
    assert frames and all(int(f.max()) < model.config.card for f in frames)
    reliance = text_reliance(run.export, cache, 4)
    assert reliance["own"]["valid_loss"] < reliance["none"]["valid_loss"]   # codes that say their text
    with pytest.raises(TrainingSetupError, match="no token starts"):
        _spoken_cache(tmp_path / "bare.npz")
        train_backbone(BackboneTrainConfig(**{**base, "cache": str(tmp_path / "bare.npz")}, read_pointer=3,
                                           out_dir=str(tmp_path / "x"), export=str(tmp_path / "x.safetensors")))


def test_a_batch_with_no_text_still_gives_every_weight_a_gradient():
    """DDP reduces every weight on every rank: a batch whose examples all lost their text (unconditional
    training) must still put the advance and reading heads in the graph, or the ranks fall out of step
    (session 18: gloo 'Received data size doesn't match expected size' after ~480 steps)."""
    from backbone.model import ReadingHead

    model = reader_model(unconditional=True)
    model.reading = ReadingHead(model.config.d_model, model.config.text_vocab, 0.5)
    empty = torch.zeros(0, dtype=torch.long)
    codes = [torch.randint(0, model.config.card, (model.config.n_codebooks, n)) for n in (6, 9)]
    result = model(torch.zeros(2, model.config.speaker_dim), [empty, empty], codes, token_starts=[empty, empty])
    result["loss"].backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    assert result["advance"] == 0 and result["reading"] == 0
