"""The speaker in every audio step's input (BackboneConfig.speaker_steps): training, stepping and generation agree."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backbone.delay import delay
from backbone.generate import Request, generate_frames
from backbone.model import Backbone, BackboneConfig, dwell_frames, load_backbone, pointer_ids, spoken_tokens
from tests.test_read_pointer import (READER, _aligned_spoken_cache, assert_batched_equals_one_by_one,
                                     overfit_and_speak_back)


def voiced_model(seed: int = 0, **extra) -> Backbone:
    """A tiny read-pointer model whose per-step voice is not zero (as after training)."""
    torch.manual_seed(seed)
    model = Backbone(BackboneConfig(**READER, speaker_steps=True, **extra))
    with torch.no_grad():
        model.speaker_step.weight.normal_(0, 1.0)
    return model


def test_a_new_speaker_step_starts_at_zero_and_changes_nothing():
    torch.manual_seed(1)
    plain = Backbone(BackboneConfig(**READER)).eval()
    voiced = Backbone(BackboneConfig(**READER, speaker_steps=True)).eval()
    voiced.load_state_dict({**plain.state_dict(), "speaker_step.weight": voiced.speaker_step.weight}, strict=True)
    speaker, text, codes = torch.randn(1, 8), torch.tensor([1, 4, 2]), torch.randint(0, 12, (3, 5))
    starts = torch.tensor([0, 2, 3])
    with torch.no_grad():
        assert voiced.step_voice(speaker).abs().max() == 0
        a = plain(speaker, [text], [codes], token_starts=[starts])
        b = voiced(speaker, [text], [codes], token_starts=[starts])
    assert torch.equal(a["loss"], b["loss"])
    assert plain.step_voice(speaker).shape == (1, plain.config.d_model)    # zeros for a model without it


@pytest.mark.parametrize("runtime", ["torch", "int8", "onnx"])
def test_every_step_carries_the_voice_as_in_teacher_forcing(runtime):
    """Decoding steps given the row's voice compute what teacher forcing computes; without it they do not."""
    model = voiced_model(3).eval()
    speaker = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    text, codes, starts = torch.tensor([1, 4, 2, 7]), torch.randint(0, 12, (3, 6)), torch.tensor([0, 2, 3, 5])
    steps = delay(codes, model.config.pad, model.config.eos)
    position = spoken_tokens(starts, steps.shape[1])
    pointer = pointer_ids(text, position, dwell_frames(position), model.config.no_token)
    with torch.no_grad():
        prompt = model.embed_prompt(speaker, text[None])
        audio_in = model.embed_audio(steps[None, :, :-1])[0] + model.embed_pointer(pointer[1:]) \
            + model.step_voice(speaker)
        hidden = model.transformer(inputs_embeds=torch.cat([prompt[0], audio_in])[None]).last_hidden_state[0]
    n = prompt.shape[1]
    expected = model.logits(hidden[None, n - 1:])[0]                          # [K, S, V]
    voices = model.step_voice(speaker).detach()
    step_model = model.step_model(quantized=runtime == "int8", onnx=runtime == "onnx")
    tolerance = 0.15 if runtime == "int8" else 1e-4

    def run(with_voice: bool) -> list[torch.Tensor]:
        cache = step_model.new_cache()
        got = [model.step_model().prefill(prompt[0].detach(), cache)]
        for t in range(1, steps.shape[1] - 1):
            tokens = torch.cat([steps[:, t - 1], pointer[t]])[None]
            row_voices = voices if with_voice else torch.zeros_like(voices)
            if step_model.takes_tokens:
                got.append(step_model(tokens, cache, row_voices)[0][0])
            else:
                got.append(step_model(model.embed_step(tokens, row_voices), cache)[0][0])
        return got

    for t, logits in enumerate(run(with_voice=True)):
        assert (logits[:3] - expected[:, t]).abs().max() < tolerance * expected[:, t].abs().max()
    unvoiced = run(with_voice=False)
    assert (unvoiced[2][:3] - expected[:, 2]).abs().max() > 0.2 * expected[:, 2].abs().max()


def test_tiny_model_learns_two_voices_through_its_steps_and_speaks_each_back():
    """Two speakers, one text, different codes: the voice decides the codes, and generation (which adds the voice
    to every step itself) gives each speaker's codes back."""
    torch.manual_seed(0)
    spk = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    text = [torch.tensor([1, 5, 7, 3])] * 2
    codes = [torch.randint(0, 12, (3, 10)), torch.randint(0, 12, (3, 10))]
    starts = [torch.tensor([0, 3, 5, 8])] * 2
    overfit_and_speak_back(voiced_model(), spk, text, codes, starts)


@pytest.mark.parametrize("onnx", [False, True])
def test_batched_voiced_generation_with_guidance_equals_one_by_one(onnx):
    """Each cache row gets its own voice; a guided row's unconditional twin gets none."""
    assert_batched_equals_one_by_one(voiced_model(1, unconditional=True).eval(), onnx)


def test_training_gains_speaker_steps_on_another_models_weights_at_a_higher_rate_and_resumes(tmp_path):
    from backbone.train import BackboneTrainConfig, train_backbone

    _aligned_spoken_cache(tmp_path / "aligned.npz")
    with np.load(tmp_path / "aligned.npz") as z:     # a voice to learn from (the fixture's embeddings are zeros)
        arrays = dict(z)
    arrays["speaker_embeddings"] = np.random.default_rng(0).normal(size=(1, 2, 8)).astype(np.float32)
    np.savez(tmp_path / "aligned.npz", **arrays)
    base = dict(cache=str(tmp_path / "aligned.npz"), frames_per_batch=80, valid_every=10, log_every=1,
                warmup_steps=1, lr=1e-3, read_pointer=3, model=dict(d_model=32, n_layers=2, n_heads=2, ffn=64))
    plain = BackboneTrainConfig(out_dir=str(tmp_path / "plain"), export=str(tmp_path / "plain.safetensors"),
                                steps=2, **base)
    train_backbone(plain)
    start = load_backbone(plain.export)
    run = BackboneTrainConfig(out_dir=str(tmp_path / "voiced"), export=str(tmp_path / "voiced.safetensors"),
                              steps=10, speaker_steps=True, new_lr_scale=10.0, init_from=plain.export, **base)
    train_backbone(run)
    checkpoint = torch.load(tmp_path / "voiced" / "last.pt", weights_only=True)
    assert checkpoint["fresh"] == ["speaker_step.weight"]
    assert [g["lr_scale"] for g in checkpoint["opt"]["param_groups"]] == [1.0, 10.0]
    trained = checkpoint["model"]
    # in 10 steps the new projection moved about ten times as far as the weights it joined
    new_move = trained["speaker_step.weight"].abs().mean()
    old_move = (trained["heads.weight"] - start.heads.weight.detach()).abs().mean()
    assert new_move > 3 * old_move > 0
    run.steps = 12
    assert train_backbone(run)["step"] == 12                                  # resumes with the same two groups
    model = load_backbone(run.export)
    assert model.config.speaker_steps and model.step_voice(torch.randn(1, 8)).abs().sum() > 0
    frames = list(generate_frames(model, Request([1, 2, 3], torch.randn(8), 12)))
    assert frames and all(int(f.max()) < model.config.card for f in frames)
