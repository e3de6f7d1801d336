"""`tts train voice`: train the speaker encoder with an additive-angular-margin softmax.

Training speakers are split once: most feed the classification loss, a few
(every `dev_every`-th) never do and serve for model selection by verification
EER, so the figure that picks the shipped model comes from voices the loss never
saw. The held-out ("unseen") speakers of the corpus are left to the benchmark.
Every crop is augmented (gain, coloured noise, reverberation, band limits,
random 2-4-s length) so real, imperfect clips embed like clean ones.

Speaker augmentation (`warp_factors`): each training speaker read at a few
playback rates (pitch, formants and tempo scaled together, as a shorter or
longer vocal tract does) counts as that many distinct speakers. This multiplies
the classes the margin loss separates and teaches the encoder that a few per
cent of pitch and formant scale is a different voice, which is exactly what
tells apart similar voices it has never heard.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tts.audio import played_faster
from tts.corpus.manifest import read_manifest
from tts.training import TrainerOptions, TrainingSetupError, save_checkpoint, warmup_cosine
from voice.encoder import EncoderConfig, SpeakerEncoder, load_encoder, save_encoder
from voice.verification import cut_clips, speaker_streams, verify

log = logging.getLogger(__name__)


@dataclass
class VoiceTrainConfig(TrainerOptions):
    corpus: str = "data/corpus"
    out_dir: str = "runs/voice"
    export: str = "assets/voice_encoder.safetensors"
    steps: int = 4000
    batch_size: int = 48
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    margin: float = 0.2
    scale: float = 30.0
    margin_warmup_steps: int = 800
    dev_every: int = 10              # every n-th training speaker is a development speaker
    max_seconds_per_speaker: float = 1200.0
    valid_every: int = 250
    warp_factors: tuple[float, ...] = (1.0,)  # each training speaker at each rate is its own class
    init_from: str = ""              # start a new run from this encoder file (its config; a fresh head)
    encoder: dict = field(default_factory=dict)  # EncoderConfig overrides for a new run
    # Continue another run's training checkpoint (model, head, optimiser, step) in out_dir. Only the
    # window fields of `encoder` may change then: they move the development embeddings, not the weights,
    # so the continued run's best is reset and re-scored.
    resume_from: str = ""


# EncoderConfig fields that change how a clip is cut into windows, not the weights.
WINDOW_FIELDS = ("window_seconds", "window_hop_seconds")


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): cos(theta + m) for the true class, scaled."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, margin: float,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        cos = emb @ F.normalize(self.weight, dim=-1).T
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + margin)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        logits = scale * torch.where(onehot, target, cos)
        accuracy = (cos.argmax(-1) == labels).float().mean()
        return F.cross_entropy(logits, labels), accuracy


class Augmenter:
    """Waveform augmentations of a batch [B, T], each drawn per example."""

    def __init__(self, sample_rate: int, generator: torch.Generator) -> None:
        self.sr, self.g = sample_rate, generator

    def _u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.g))

    def _p(self, p: float) -> bool:
        return float(torch.rand((), generator=self.g)) < p

    def coloured_noise(self, n: int, alpha: float) -> torch.Tensor:
        """Noise with a 1/f^alpha power spectrum (0 white, 1 pink, 2 brown)."""
        spec = torch.fft.rfft(torch.randn(n, generator=self.g))
        f = torch.arange(spec.shape[0]).clamp_min(1).float()
        return torch.fft.irfft(spec / f ** (alpha / 2), n)

    def reverb(self, x: torch.Tensor) -> torch.Tensor:
        rt60 = self._u(0.15, 0.7)
        n = int(min(0.6, rt60) * self.sr)
        t = torch.arange(n) / self.sr
        rir = torch.randn(n, generator=self.g) * torch.exp(-6.9 * t / rt60)
        rir[0] = 1.0 / self._u(0.3, 1.0)  # direct path, louder than the tail
        rir = rir / rir.norm()
        size = x.shape[-1] + n
        return torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(rir, size), size)[: x.shape[-1]]

    def band_limit(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(x)
        freqs = torch.fft.rfftfreq(x.shape[-1], 1 / self.sr)
        keep = torch.ones_like(freqs)
        if self._p(0.7):
            keep = keep * torch.sigmoid((self._u(3000, 7000) - freqs) / 100)
        if self._p(0.5):
            keep = keep * torch.sigmoid((freqs - self._u(80, 400)) / 20)
        return torch.fft.irfft(spec * keep, x.shape[-1])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = []
        for x in batch:
            if self._p(0.3):
                x = self.reverb(x)
            if self._p(0.3):
                x = self.band_limit(x)
            if self._p(0.5):
                noise = self.coloured_noise(x.shape[-1], self._u(0.0, 2.0))
                snr_db = self._u(5.0, 30.0)
                gain = x.pow(2).mean().sqrt() / (noise.pow(2).mean().sqrt() * 10 ** (snr_db / 20) + 1e-9)
                x = x + gain * noise
            x = x * 10 ** (self._u(-20.0, 6.0) / 20)
            out.append(x.clamp(-1.0, 1.0))
        return torch.stack(out)


def warped_crop(stream: np.ndarray, n: int, factor: float, sample_rate: int, rng: random.Random) -> np.ndarray:
    """`n` samples of `stream` played `factor` times faster: pitch and formants x factor, tempo x factor."""
    if factor == 1.0:
        start = rng.randint(0, max(0, len(stream) - n))
        return np.pad(stream[start:start + n], (0, max(0, n - len(stream))))
    source = int(np.ceil(n * factor)) + 64
    start = rng.randint(0, max(0, len(stream) - source))
    x = played_faster(stream[start:start + source], factor, sample_rate)[:n]
    return np.pad(x, (0, n - len(x)))


def class_name(speaker: str, factor: float) -> str:
    return speaker if factor == 1.0 else f"{speaker}@{factor:g}"


def warped_streams(streams: dict[str, np.ndarray], factors: list[float], sample_rate: int) -> dict[str, np.ndarray]:
    """Each stream at each playback rate, as distinct speakers (development trials of similar voices)."""
    return {class_name(name, f): played_faster(x, f, sample_rate) for name, x in streams.items() for f in factors}


def split_speakers(speakers: list[str], dev_every: int) -> tuple[list[str], list[str]]:
    """(loss speakers, development speakers): a fixed, deterministic split."""
    ordered = sorted(speakers)
    dev = ordered[dev_every - 1::dev_every] if dev_every > 0 else []
    dev_set = set(dev)
    return [s for s in ordered if s not in dev_set], dev


def _lr_at(step: int, cfg: VoiceTrainConfig) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps)


def _continued_checkpoint(path: str, overrides: dict) -> dict:
    """Another run's checkpoint to continue in a new directory, with its window fields overridden
    and its best reset (the development trials are embedded afresh)."""
    if not Path(path).is_file():
        raise TrainingSetupError(f"no training checkpoint at {path}")
    wrong = sorted(set(overrides) - set(WINDOW_FIELDS))
    if wrong:
        raise TrainingSetupError(
            f"continuing {path} keeps its weights; only {list(WINDOW_FIELDS)} may change, not {wrong}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["encoder_config"] = EncoderConfig.from_dict({**state["encoder_config"], **overrides}).to_dict()
    state["best"] = {"eer": float("inf"), "step": -1}
    log.info("continuing %s at step %d with %s", path, state["step"], overrides or "its own config")
    return state


def train_voice(cfg: VoiceTrainConfig) -> dict:
    """Train (or resume) and export the best encoder by development-speaker EER; returns the last metrics."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    resume = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None
    if resume is None and cfg.resume_from:
        resume = _continued_checkpoint(cfg.resume_from, cfg.encoder)
    init = load_encoder(cfg.init_from) if cfg.init_from and not resume else None
    if resume:
        enc_cfg = EncoderConfig.from_dict(resume["encoder_config"])
    else:
        base = init.config.to_dict() if init is not None else {}
        enc_cfg = EncoderConfig.from_dict({**base, **cfg.encoder})
    sr = enc_cfg.sample_rate
    factors = sorted({1.0, *cfg.warp_factors})
    if not all(0.5 <= f <= 2.0 for f in factors):
        raise TrainingSetupError(f"warp factors must lie in [0.5, 2]; got {cfg.warp_factors}")

    train_utts = read_manifest(cfg.corpus, ["train"])
    loss_speakers, dev_speakers = split_speakers(sorted({u.speaker for u in train_utts}), cfg.dev_every)
    if len(loss_speakers) < 2:
        raise TrainingSetupError(f"{cfg.corpus} has {len(loss_speakers)} training speaker(s); need at least 2")
    log.info("loading audio: %d loss speakers, %d development speakers, %d rates each",
             len(loss_speakers), len(dev_speakers), len(factors))
    loss_set, dev_set = set(loss_speakers), set(dev_speakers)
    streams = speaker_streams(cfg.corpus, [u for u in train_utts if u.speaker in loss_set], sr,
                              cfg.max_seconds_per_speaker)
    dev_streams = warped_streams(
        speaker_streams(cfg.corpus, [u for u in train_utts if u.speaker in dev_set], sr, 130.0), factors, sr)
    dev_clips = {seconds: cut_clips(dev_streams, seconds, 12, sr) for seconds in (3.0, 10.0)} if dev_speakers else {}
    classes = [(name, f) for name in sorted(streams) for f in factors]
    names = [class_name(name, f) for name, f in classes]
    log.info("audio loaded: %.1f h, %d classes", sum(len(x) for x in streams.values()) / sr / 3600, len(classes))

    device = torch.device(cfg.device)
    model = SpeakerEncoder(enc_cfg)
    if init is not None:
        if init.config == enc_cfg:
            model.load_state_dict(init.state_dict())
        else:  # e.g. a periodicity input added: the old weights, zero weights on the new rows
            model.load_grown(init)
        log.info("starting from %s (%s)", cfg.init_from, init.model_id)
    model = model.to(device)
    head = AAMSoftmax(enc_cfg.embedding_dim, len(names)).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1] + [head.weight]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    step, best = 0, {"eer": float("inf"), "step": -1}
    if resume:
        if resume["speakers"] != names:
            raise TrainingSetupError(f"{ckpt_path} was trained on other speakers; use another --out to start afresh")
        model.load_state_dict(resume["model"])
        head.load_state_dict(resume["head"])
        opt.load_state_dict(resume["opt"])
        step, best = resume["step"], resume["best"]
        log.info("resumed from %s at step %d", ckpt_path, step)

    rng = random.Random(cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    augment = Augmenter(sr, gen)

    def checkpoint() -> None:
        save_checkpoint({"model": model.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(), "step": step,
                    "best": best, "speakers": names, "encoder_config": enc_cfg.to_dict(), "train_config": asdict(cfg)},
                   ckpt_path)

    def evaluate() -> dict:
        model.eval()
        try:
            embed = lambda x, rate: model.cpu().embed(x, rate)  # noqa: E731
            results = {f"dev_eer_{seconds:g}s": verify(embed, clips, labels, sr).eer
                       for seconds, (clips, labels) in dev_clips.items() if clips}
        finally:
            model.to(device).train()
        if results:  # the 3-s trials still separate models once 10-s ones are near 0
            results["dev_eer"] = sum(results.values()) / len(results)
        return results

    started = last_ckpt = time.time()
    first_step = step
    log_file = open(out / "train.log", "a", encoding="utf-8")

    def record(metrics: dict) -> None:
        log.info("%s", metrics)
        log_file.write(json.dumps(metrics) + "\n")
        log_file.flush()

    if init is not None and step == 0:
        record({"step": 0, "init_from": cfg.init_from, **evaluate()})  # the baseline the run must beat
    model.train()
    while step < cfg.steps:
        seconds = rng.uniform(cfg.min_seconds, cfg.max_seconds)
        n = int(seconds * sr)
        labels, crops = [], []
        for _ in range(cfg.batch_size):
            k = rng.randrange(len(classes))
            name, factor = classes[k]
            crops.append(warped_crop(streams[name], n, factor, sr, rng))
            labels.append(k)
        wave = augment(torch.from_numpy(np.stack(crops))).to(device)
        target = torch.tensor(labels, device=device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        margin = cfg.margin * min(1.0, step / max(1, cfg.margin_warmup_steps))
        loss, acc = head(model(wave), target, margin, cfg.scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 5.0)
        opt.step()
        step += 1
        if step % cfg.log_every == 0:
            record({"step": step, "loss": round(loss.item(), 4), "acc": round(acc.item(), 3),
                    "lr": round(_lr_at(step, cfg), 6),
                    "sec_per_step": round((time.time() - started) / (step - first_step), 3)})
        if step % cfg.valid_every == 0 or step == cfg.steps:
            result = evaluate()
            if result.get("dev_eer", float("-inf")) <= best["eer"]:
                best = {"eer": result.get("dev_eer", float("nan")), "step": step}
                model_id = save_encoder(model.cpu(), cfg.export, step, result)
                model.to(device)
                log.info("exported %s (step %d, dev EER %s, id %s)", cfg.export, step, best["eer"], model_id)
            record({"step": step, **result, "best": best})
        if time.time() - last_ckpt > cfg.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
        if cfg.max_minutes and time.time() - started > cfg.max_minutes * 60:
            log.info("time limit reached at step %d", step)
            break
    checkpoint()
    return {"step": step, "best": best}
