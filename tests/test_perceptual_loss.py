"""The PESQ-WB model used as a training loss (codec/perceptual_loss.py) against the real PESQ."""
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfilt

from codec.perceptual_loss import PesqDisturbanceLoss, StoiLoss
from tts.audio import read_audio

CLIP = Path(__file__).parent / "assets" / "unseen_awb.flac"


def _clip() -> np.ndarray:
    audio = read_audio(CLIP)
    assert audio.sample_rate == 16_000
    return audio.samples.astype(np.float32)


def _distortions(x: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(len(x)).astype(np.float32) * np.sqrt((x ** 2).mean())
    out = {f"noise {snr} dB": x + noise * 10 ** (-snr / 20) for snr in (35, 25, 15)}
    out.update({f"low-pass {fc} Hz": sosfilt(butter(8, fc, fs=16_000, output="sos"), x).astype(np.float32)
                for fc in (1500, 3000)})
    return out


def _paired_scores(real_score, model_score, tolerance: float) -> tuple[list[float], list[float]]:
    """The real metric's and the model's scores of each distortion of the test clip, each within `tolerance`."""
    x = _clip()
    real, ours = [], []
    for name, y in _distortions(x).items():
        real.append(real_score(x, y))
        ours.append(float(model_score(torch.from_numpy(x)[None], torch.from_numpy(y)[None])))
        assert abs(ours[-1] - real[-1]) < tolerance, (name, real[-1], ours[-1])
    return real, ours


def test_model_scores_as_pesq_does():
    pesq = pytest.importorskip("pesq").pesq
    real, ours = _paired_scores(lambda x, y: pesq(16_000, x, y, "wb"), PesqDisturbanceLoss().mos, 0.15)
    assert np.argsort(real).tolist() == np.argsort(ours).tolist()   # the same order of quality
    assert real[0] > real[1] > real[2] > 1.0                         # more noise, lower scores


def test_clean_and_rescaled_audio_is_undisturbed():
    x = torch.from_numpy(_clip())[None]
    model = PesqDisturbanceLoss()
    assert float(model(x, x)) == pytest.approx(0.0, abs=1e-3)
    assert float(model(x, 0.3 * x)) == pytest.approx(0.0, abs=0.02)   # P.862 aligns levels
    assert float(model.mos(x, x)) > 4.6


def test_gradient_points_to_the_reference_and_stays_finite():
    x = torch.from_numpy(_clip())[None, :16_000].repeat(2, 1)
    x[1, :8000] = 0.0                                                  # a crop that is half pause
    level = float(PesqDisturbanceLoss.band_level(torch.from_numpy(_clip())[None]))
    model = PesqDisturbanceLoss(level=level)
    y = (x + 0.02 * torch.randn_like(x)).requires_grad_()
    loss = model(x, y)
    assert loss.shape == (2,) and (loss > 0).all()
    loss.sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with torch.no_grad():                                              # a small step down the gradient helps
        assert (model(x, y - 1e-3 * y.grad / y.grad.abs().max()) < loss).all()
    short = torch.randn(1, 600)
    assert torch.isfinite(model(short, short + 0.1 * torch.randn_like(short))).all()   # one frame is one window


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="16 kHz"):
        PesqDisturbanceLoss(24_000)
    model = PesqDisturbanceLoss()
    with pytest.raises(ValueError, match="at least 512 samples"):
        model(torch.zeros(1, 100), torch.zeros(1, 100))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.zeros(1, 2000), torch.zeros(1, 1000))


def test_strict_model_charges_a_static_filter_that_pesq_forgives():
    x = _clip()
    tilted = sosfilt(butter(2, 1000, fs=16_000, btype="high", output="sos"), x).astype(np.float32)
    ref, deg = torch.from_numpy(x)[None], torch.from_numpy(tilted)[None]
    forgiving, strict = PesqDisturbanceLoss(), PesqDisturbanceLoss(compensate=False)
    assert float(strict(ref, deg)) > 2 * float(forgiving(ref, deg)) > 0
    assert float(strict(ref, ref)) == pytest.approx(0.0, abs=1e-3)


def test_stoi_model_scores_as_pystoi_does():
    stoi = pytest.importorskip("pystoi").stoi
    model = StoiLoss()
    # within 0.04: 0.036 at the 1.5-kHz low-pass (within 0.003 on codec outputs)
    real, ours = _paired_scores(lambda x, y: stoi(x, y, 16_000), lambda x, y: 1 - model(x, y), 0.04)
    assert ours[0] > ours[1] > ours[2] and real[0] > real[1] > real[2]      # more noise, lower scores
    x = torch.from_numpy(_clip())[None]
    assert float(model(x, x)) == pytest.approx(0.0, abs=1e-5)


def test_stoi_gradient_is_finite_and_helps():
    x = torch.from_numpy(_clip())[None, :16_000].repeat(2, 1)
    x[1, :12_000] = 0.0                       # under a segment of speech: nothing to score, no gradient
    y = (x + 0.05 * torch.randn_like(x)).requires_grad_()
    loss = StoiLoss()(x, y)
    assert loss[0] > 0 and loss[1] == 0
    loss.sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad[0].abs().sum() > 0
    with torch.no_grad():
        assert StoiLoss()(x, y - 1e-3 * y.grad / y.grad.abs().max())[0] < loss[0]
    with pytest.raises(ValueError, match="16 kHz"):
        StoiLoss(8000)
    with pytest.raises(ValueError, match="at least 410 samples"):
        StoiLoss()(torch.zeros(1, 100), torch.zeros(1, 100))
