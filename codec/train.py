"""`tts train codec`: train the codec on a corpus manifest (CPU, CUDA, or DDP via torchrun).

Schedule: spectral + commitment losses from the start (cheap, fast to
converge), then the multi-scale STFT discriminator with adversarial and
feature-matching losses from `adv_start` on (about 7x the cost per step on
CPU). Quantizer dropout draws the number of quantizers per example so one
model serves every bitrate.

`decoder_only` trains the decoder of a shipped codec with its encoder and
codebooks frozen (its own decoder, or a new one: `codec` may set the decoder_*
fields, e.g. {"decoder": "istft"}): the tokens stay the same (same `tokens_id`), so a backbone
trained on them keeps working and the decoder alone gets better. `speaker_conditioning`
steers the decoder by each training speaker's embedding (codec/modules/speaker.py,
codec/voices.py), as the engine steers it by the voice it speaks in. `focus_n_q`
spends a share of the examples on the bitrate the backbone speaks. Checkpoints (every `ckpt_minutes`) hold the
config, the optimisers and the step; re-running the same command resumes.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from codec.config import CodecConfig
from codec.discriminators import MultiScaleSTFTDiscriminator
from codec.loaders import load_weights, read_codec_file, save_codec, speaker_encoder_id_of, tokens_id_of
from codec.losses import (MultiResolutionSpectralLoss, PhaseDerivativeLoss, SpeakerConsistencyLoss,
                          SpectralContrastLoss, feature_matching_loss, generator_adversarial_loss,
                          harmonic_amplitude_loss, hinge_discriminator_loss,
                          instantaneous_frequency_loss, log_mel, spectral_total)
from codec.metrics import perceptual_metrics_available, quality_scores
from codec.model import CodecModel
from codec.modules.harmonic import PITCH_BIN_CENTS, HarmonicSource
from codec.perceptual_loss import PesqDisturbanceLoss, StoiLoss
from codec.pitch import estimate_pitch
from tts.audio import played_faster, warp_rate
from tts.corpus.manifest import audio_path, read_manifest
from tts.distributed import is_main, setup_distributed
from tts.modelfile import read_model_file, save_model_file
from tts.training import TrainerOptions, TrainingSetupError, save_checkpoint, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(TrainerOptions):
    corpus: str = "data/corpus"
    extra_corpora: list[str] = field(default_factory=list)  # their train splits join the crops (more voices:
                                                             # `tts data build --festival-speakers`); validation
                                                             # stays on `corpus`
    out_dir: str = "runs/codec"
    export: str = "assets/codec.safetensors"
    steps: int = 100_000
    batch_size: int = 8
    segment_seconds: float = 1.0
    lr: float = 3e-4
    adv_start: int = 20_000
    disc_warmup: int = 0              # steps from adv_start where only the discriminator learns, so a new one
                                      # does not push a trained decoder with noise (the decoder holds still)
    lambda_lin: float = 1.0
    lambda_log: float = 1.0
    lambda_mel: float = 2.0
    lambda_commit: float = 0.25
    lambda_adv: float = 1.0
    lambda_fm: float = 2.0
    lambda_phase: float = 0.0         # phase-derivative loss (codec/losses.py): harmonics without a discriminator
    lambda_if: float = 0.0            # instantaneous-frequency loss on an integrated-phase decoder's moves
    lambda_contrast: float = 0.0      # harmonic contrast at 1-4 kHz (codec/losses.py): peaks, not a smear
    lambda_harmonic: float = 0.0      # a harmonic source's amplitudes kept near the real harmonics' (codec/losses.py)
    lambda_pesq: float = 0.0          # PESQ-WB's disturbance model (codec/perceptual_loss.py): what the benchmark hears
    pesq_compensate: bool = False     # let it forgive a static filter and slow gain changes, as P.862 does
    lambda_stoi: float = 0.0          # STOI's envelope correlation (codec/perceptual_loss.py), 1 - STOI
    lambda_pitch: float = 1.0         # a harmonic source's pitch and voicing against the real audio's
    lambda_speaker: float = 0.0       # speaker consistency (codec/losses.py): keep the voice of unseen speakers
    speaker_encoder: str = ""         # its frozen speaker encoder file ("" = the shipped one), also the
                                      # conditioning's
    speaker_conditioning: bool = False  # the decoder follows the speaker's embedding (codec/modules/speaker.py)
    conditioning_lr_scale: float = 10.0  # its layers' lr over `lr`: they start at zero beside a trained decoder
    voice_dropout: float = 0.0        # share of crops decoded in the default voice, as a bitstream with no voice is
    voice_warp: float = 0.0           # training crops sped up or slowed by up to this share (CropDataset)
    pitch_teacher: float = 0.0        # share of steps where a harmonic source sounds at the real pitch
    dropout_full_prob: float = 0.25   # share of examples trained with every quantizer
    valid_every: int = 500
    codec: dict = field(default_factory=dict)  # CodecConfig overrides for a new run
    init_from: str = ""               # a shipped codec file to start a new run from (ignored when resuming)
    decoder_only: bool = False        # freeze encoder and codebooks: tokens unchanged, decoder trained
    focus_n_q: int = 0                # when set, a `focus_prob` share of examples uses exactly this many quantizers
    focus_prob: float = 0.5
    decay_from: int = 0               # from this step the lr falls (cosine) to `lr_final` at `steps`; 0 = constant
    lr_final: float = 1e-5
    select_by: str = "mel"            # the export keeps the best "mel" (log-mel L1) or "pesq" (PESQ-WB)
    export_last: str = ""             # also export the last weights here at the end (a short run's whole result),
                                      # and the discriminator's beside them (`disc_path`)
    init_disc: str = ""               # a new run's discriminator starts from these weights (else afresh)
    loader_workers: int = 0           # processes reading and warping crops (a GPU outruns the main process)


DISC_KIND = "codec-discriminator"


def disc_path(export: str) -> str:
    """Where `--export-last` puts the discriminator (a MB): a GAN run continued from an export, on another
    machine, keeps its critic instead of starting one afresh, which sets the generator back."""
    return str(Path(export).with_suffix(".disc.safetensors"))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Constant `lr`, or from `decay_from` a cosine fall to `lr_final` at `steps` (a fine-tune's last stretch)."""
    if not cfg.decay_from or step < cfg.decay_from:
        return cfg.lr
    return warmup_cosine(step - cfg.decay_from, cfg.lr, 0, cfg.steps - cfg.decay_from, floor=cfg.lr_final / cfg.lr)


# A speaker-conditioned run's crops are warped by one of these (`warp_rate`), its voices embedded at each
# (codec/voices.py): five sets of references per speaker, not one per crop.
CONDITIONED_WARPS = (-1.0, -0.5, 0.0, 0.5, 1.0)


class CropDataset(torch.utils.data.Dataset):
    """Random fixed-length crops of a manifest's utterances (short ones are zero-padded).

    `voice_warp` w > 0: each random crop is played faster or slower by a factor drawn log-uniformly
    from [1 / (1 + w), 1 + w], which moves its pitch and every formant together, as a shorter or
    longer vocal tract would (the speed perturbation of speech recognisers). A codec learns from its
    own input, so the warped crop is also its target: the warp only widens the voices it hears.
    `warp_choices`: the warps u of `warp_rate` a crop may get, instead of any in [-1, 1] (a
    speaker-conditioned run, whose voices are embedded at each: codec/voices.py).
    """

    def __init__(self, corpora: str | list[str], splits: list[str], segment: int, seed: int,
                 voice_warp: float = 0.0, warp_choices: tuple[float, ...] | None = None) -> None:
        corpora = [corpora] if isinstance(corpora, str) else corpora
        self.utts = []  # (corpus folder, utterance): several corpora draw crops as one, utterance by utterance
        for corpus in corpora:
            found = read_manifest(corpus, splits)
            if not found:
                raise TrainingSetupError(f"{corpus} has no utterances in splits {splits}")
            self.utts += [(corpus, utt) for utt in found]
        if not 0.0 <= voice_warp < 1.0:
            raise TrainingSetupError(f"voice_warp must be in [0, 1); got {voice_warp}")
        self.segment, self.voice_warp, self.seed = segment, voice_warp, seed
        self.warp_choices = warp_choices
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.utts)

    def draw_warp(self) -> float:
        """A crop's warp u in [-1, 1] (0: none; `warp_rate`): uniform, or one of `warp_choices` (a
        speaker-conditioned run, whose voices are embedded at those warps: codec/voices.py)."""
        if not self.voice_warp:
            return 0.0
        return self.rng.choice(self.warp_choices) if self.warp_choices else self.rng.uniform(-1, 1)

    def load(self, i: int, offset: int | None = None, warp: float | None = None) -> torch.Tensor:
        """A crop at `warp` (drawn where not given); with `offset` (validation) it starts there and is never
        warped."""
        if warp is None:
            warp = self.draw_warp() if offset is None else 0.0
        warped = warp != 0.0 and offset is None
        factor = warp_rate(warp, self.voice_warp) if warped else 1.0
        margin = 64 if warped else 0                              # filter context, cut off after resampling
        frames = math.ceil(self.segment * factor) + 2 * margin    # read `factor` times the crop, play it in one
        path = audio_path(*self.utts[i])
        last = max(0, sf.info(str(path)).frames - frames)
        start = self.rng.randint(0, last) if offset is None else min(offset, last)
        x, sr = sf.read(str(path), start=start, frames=frames, dtype="float32")
        if warped:  # played `factor` times faster, as its voice's references are (codec/voices.py)
            x = played_faster(x, factor, sr)[round(margin / factor):][:self.segment]
        x = np.pad(x, (0, self.segment - len(x)))
        return torch.from_numpy(x)[None]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, float]:
        """(a random crop of utterance i, i, its warp): the index names its speaker (`speaker_of`)."""
        warp = self.draw_warp()
        return self.load(i, warp=warp), i, warp

    def speaker_of(self, i: int) -> str:
        return self.utts[i][1].speaker

    @staticmethod
    def seed_worker(worker: int) -> None:
        """DataLoader `worker_init_fn`: each worker process holds a copy of the dataset, and without a seed
        of its own every copy would draw the same crop starts and warp factors. The dataset's own seed
        (which counts a resumed run's step) stays in it, so a resumed run draws other crops."""
        info = torch.utils.data.get_worker_info()
        info.dataset.rng = random.Random(f"{info.dataset.seed}:{info.seed}")


def _start_from_shipped(model: CodecModel, state: dict[str, torch.Tensor], path: str,
                        shipped_config: CodecConfig) -> None:
    """Load a shipped (weight-norm intact) model; codebook EMA statistics restart from the codes.
    A decoder of another kind or size starts fresh (only the encoder and codebooks are loaded). One that
    differs only in its phase mode, harmonic source or speaker conditioning keeps its weights: a switched
    phase head starts at zero, a new harmonic source starts from its magnitude head
    (IstftDecoder.start_source_from_magnitudes), a new conditioning at zero (the decoder as it was)."""
    same_decoder = replace(shipped_config, decoder_phase=model.config.decoder_phase,
                           decoder_harmonics=model.config.decoder_harmonics,
                           decoder_speaker_dim=model.config.decoder_speaker_dim) == model.config
    own = model.state_dict()
    parts = {"decoder.": not same_decoder,
             # a part added (its fresh weights) or removed or resized (the shipped one dropped)
             "decoder.source.": shipped_config.decoder_harmonics != model.config.decoder_harmonics,
             "decoder.speaker.": shipped_config.decoder_speaker_dim != model.config.decoder_speaker_dim}
    for prefix in (prefix for prefix, fresh in parts.items() if fresh):
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        state.update({k: v for k, v in own.items() if k.startswith(prefix)})
    load_weights(model, state, path)
    if same_decoder and shipped_config.decoder_phase != model.config.decoder_phase:
        model.decoder.reset_phase_head()
    if same_decoder and model.config.decoder_harmonics and not shipped_config.decoder_harmonics:
        model.decoder.start_source_from_magnitudes()
    for layer in model.quantizer.layers:
        layer.embed_avg.copy_(layer.embed)
        layer.cluster_size.fill_(1.0)


def pitch_targets(audio: torch.Tensor, sample_rate: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real audio's pitch per decoder spectrum (codec/pitch.py): (f0 [B, T], voiced [B, T]).
    `audio` [B, 1, T hop] is unaligned: spectrum t is centred on its sample hop t, as pitch frame t."""
    with torch.no_grad():
        return estimate_pitch(audio.flatten(1), sample_rate, hop)


def pitch_loss(source: HarmonicSource, logits: torch.Tensor, voicing: torch.Tensor, target: torch.Tensor,
               voiced: torch.Tensor, blur_cents: float = 25.0) -> torch.Tensor:
    """A harmonic source's pitch classifier against the real audio's pitch, spectrum by spectrum:
    cross-entropy with the target blurred over neighbouring bins (CREPE's recipe) on voiced frames,
    plus the voicing decision's cross-entropy."""
    t = min(logits.shape[1], target.shape[1])
    logits, voicing, target, voiced = logits[:, :t], voicing[:, :t], target[:, :t], voiced[:, :t].float()
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    distance = (bins - source.bin_of(target)[..., None]) * (PITCH_BIN_CENTS / blur_cents)
    soft = torch.softmax(-0.5 * distance ** 2, dim=-1)
    entropy = -(soft * torch.log_softmax(logits, dim=-1)).sum(-1)
    pitch = (entropy * voiced).sum() / voiced.sum().clamp_min(1.0)
    return pitch + torch.nn.functional.binary_cross_entropy_with_logits(voicing, voiced)


def _sample_n_q(batch: int, n_q: int, full_prob: float, device: torch.device,
                focus_n_q: int = 0, focus_prob: float = 0.0) -> torch.Tensor:
    """Quantizer dropout: per example, all quantizers with prob `full_prob`, else uniform in 1..n_q;
    with `focus_n_q`, a `focus_prob` share of examples uses exactly that many instead."""
    draw = torch.randint(1, n_q + 1, (batch,), device=device)
    full = torch.rand(batch, device=device) < full_prob
    draw = torch.where(full, torch.full_like(draw, n_q), draw)
    if focus_n_q:
        focus = torch.rand(batch, device=device) < focus_prob
        draw = torch.where(focus, torch.full_like(draw, focus_n_q), draw)
    return draw


def _set_train_mode(model: CodecModel, decoder_only: bool) -> None:
    """Training mode; with `decoder_only` the encoder and codebooks stay in eval (no EMA updates)."""
    model.train()
    if decoder_only:
        model.encoder.eval()
        model.quantizer.eval()


def _speaker_encoder(cfg: TrainConfig):
    """The frozen speaker encoder `cfg.speaker_encoder` (default: the shipped one)."""
    from voice.encoder import load_encoder  # voice builds on codec.losses: imported here, not at the top

    return load_encoder(cfg.speaker_encoder or None)


@torch.no_grad()
def validate(model: CodecModel, clips: torch.Tensor, n_qs: list[int], perceptual_n_q: int = 0,
             speaker: SpeakerConsistencyLoss | None = None, voice_n_q: int = 0,
             voices: torch.Tensor | None = None, contrast: SpectralContrastLoss | None = None) -> dict[str, float]:
    """Log-mel L1 distance between clips and their reconstruction at each n_q (lower is better);
    with `perceptual_n_q`, also PESQ-WB and STOI at that n_q (higher is better); with a `speaker`
    or `contrast` loss, its value at `voice_n_q` (lower is better). `voices` [B, E]: the clips' speaker
    embeddings, for a speaker-conditioned decoder."""
    model.eval()
    out = {}
    for n_q in n_qs:
        rec, orig = model.align(model.decode(model.encode(clips, n_q), voices), clips)
        ref = log_mel(orig.flatten(1), model.sample_rate)
        out[f"mel_q{n_q}"] = float((log_mel(rec.flatten(1), model.sample_rate) - ref).abs().mean())
        if n_q == perceptual_n_q:
            scores = [quality_scores(o.numpy(), r.numpy(), model.sample_rate)
                      for o, r in zip(orig.flatten(1).cpu(), rec.flatten(1).cpu())]
            out[f"pesq_q{n_q}"], out[f"stoi_q{n_q}"] = (float(v) for v in np.nanmean(scores, axis=0)[:2])
        if speaker is not None and n_q == voice_n_q:
            out[f"speaker_q{n_q}"] = float(speaker(rec, orig))
        if contrast is not None and n_q == voice_n_q:
            out[f"contrast_q{n_q}"] = float(contrast(rec, orig))
    return out


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a codec training; returns the last validation figures."""
    if cfg.decay_from and not 0 < cfg.decay_from < cfg.steps:
        raise TrainingSetupError(f"the lr decay must start before the last step ({cfg.steps}); got {cfg.decay_from}")
    if cfg.select_by not in ("mel", "pesq"):
        raise TrainingSetupError(f"select_by must be 'mel' or 'pesq'; got {cfg.select_by!r}")
    if cfg.select_by == "pesq" and not perceptual_metrics_available():
        raise TrainingSetupError("select_by 'pesq' needs the pesq and pystoi packages (pip install '.[bench]')")
    torch.set_num_threads(cfg.threads)
    device = setup_distributed(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"   # fixed crop shapes: pick the fastest conv kernels once
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    resume = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else None
    shipped = None if resume or not cfg.init_from else read_codec_file(cfg.init_from)
    if resume:
        codec_cfg = CodecConfig.from_dict(json.loads(resume["codec_config"]))
    elif shipped:
        codec_cfg = shipped[0]
        if cfg.decoder_only:
            changed = CodecConfig.from_dict({**codec_cfg.to_dict(), **cfg.codec})
            wrong = sorted(k for k in cfg.codec if not k.startswith("decoder")
                           and getattr(changed, k) != getattr(codec_cfg, k))
            if wrong:
                raise TrainingSetupError(f"a decoder-only run keeps the encoder and codebooks; cannot change {wrong}")
            codec_cfg = changed
    else:
        codec_cfg = CodecConfig(**{k: tuple(v) if k == "strides" else v for k, v in cfg.codec.items()})

    encoder = _speaker_encoder(cfg) if cfg.lambda_speaker or cfg.speaker_conditioning \
        or codec_cfg.decoder_speaker_dim else None
    if cfg.speaker_conditioning and not codec_cfg.decoder_speaker_dim:
        if codec_cfg.decoder != "istft":
            raise TrainingSetupError("speaker conditioning steers the ISTFT decoder (--decoder istft)")
        codec_cfg = replace(codec_cfg, decoder_speaker_dim=encoder.config.embedding_dim)
    conditioned = codec_cfg.decoder_speaker_dim > 0
    if conditioned and codec_cfg.decoder_speaker_dim != encoder.config.embedding_dim:
        raise TrainingSetupError(f"the decoder follows {codec_cfg.decoder_speaker_dim}-d speaker embeddings; "
                                 f"the speaker encoder makes {encoder.config.embedding_dim}-d ones")
    if not 0.0 <= cfg.voice_dropout < 1.0 or (cfg.voice_dropout and not conditioned):
        raise TrainingSetupError(f"voice_dropout is a share in [0, 1) of a speaker-conditioned run's crops; "
                                 f"got {cfg.voice_dropout}{'' if conditioned else ' without speaker conditioning'}")
    if cfg.focus_n_q and not 1 <= cfg.focus_n_q <= codec_cfg.n_q:
        raise TrainingSetupError(f"focus_n_q must be between 1 and {codec_cfg.n_q}; got {cfg.focus_n_q}")
    if cfg.decoder_only and not (resume or shipped):
        raise TrainingSetupError("a decoder-only run fine-tunes a trained codec: "
                                 "give --init-from (or resume a decoder-only run)")
    if cfg.lambda_if and not (cfg.decoder_only and codec_cfg.decoder_phase == "integrated"):
        raise TrainingSetupError("the instantaneous-frequency loss trains an integrated-phase decoder: "
                                 "give --decoder-only and --decoder-phase integrated")
    has_source = codec_cfg.decoder == "istft" and codec_cfg.decoder_harmonics > 0
    if cfg.pesq_compensate and not cfg.lambda_pesq:
        raise TrainingSetupError("pesq_compensate shapes the PESQ loss: give --pesq-loss too")
    if cfg.lambda_harmonic and not has_source:
        raise TrainingSetupError("the harmonic amplitude loss trains a harmonic source: "
                                 "give an ISTFT decoder with --harmonics")
    model = CodecModel(codec_cfg).to(device)
    if conditioned:
        model.speaker_encoder_id = encoder.model_id
    if cfg.decoder_only:
        model.encoder.requires_grad_(False)
        model.quantizer.requires_grad_(False)
    disc = MultiScaleSTFTDiscriminator().to(device)
    trained = model.decoder if cfg.decoder_only else model
    conditioning = list(model.decoder.speaker.parameters()) if conditioned else []
    rest = [p for p in trained.parameters() if all(p is not c for c in conditioning)]
    groups = [{"params": rest}] + ([{"params": conditioning, "lr_scale": cfg.conditioning_lr_scale}]
                                   if conditioning else [])
    opt_g = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    step, best = 0, math.inf
    tokens_id = ""  # a decoder-only run's exports keep the parent's token vocabulary id
    if resume:
        tokens_id = resume.get("tokens_id", "")
        model.load_state_dict(resume["model"])
        disc.load_state_dict(resume["disc"])
        opt_g.load_state_dict(resume["opt_g"])
        opt_d.load_state_dict(resume["opt_d"])
        step, best = resume["step"], resume["best"]
        if json.loads(resume["train_config"]).get("select_by", "mel") != cfg.select_by:
            best = math.inf  # its best was measured on the other scale
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif shipped:
        _, state, meta = shipped
        followed = speaker_encoder_id_of(meta)
        if conditioned and followed and followed != encoder.model_id:
            raise TrainingSetupError(f"{cfg.init_from} follows speaker encoder {followed}; "
                                     f"the run's is {encoder.model_id} (--speaker-encoder)")
        _start_from_shipped(model, state, cfg.init_from, shipped[0])
        step = int(meta.get("step", 0))
        tokens_id = tokens_id_of(meta) if cfg.decoder_only else ""
        log.info("started from %s (trained %d steps)", cfg.init_from, step)
    if not resume and cfg.init_disc:
        disc.load_state_dict(read_model_file(cfg.init_disc, DISC_KIND)[1])
        log.info("discriminator from %s", cfg.init_disc)
    # DDP wraps what is trained; a decoder-only run calls the frozen encoder and codebooks outside it.
    train_model = DistributedDataParallel(trained) if dist.is_initialized() else trained
    train_disc = DistributedDataParallel(disc) if dist.is_initialized() else disc

    segment = int(cfg.segment_seconds * codec_cfg.sample_rate) // codec_cfg.hop_length * codec_cfg.hop_length
    data = CropDataset([cfg.corpus, *cfg.extra_corpora], ["train"], segment, cfg.seed + rank + step, cfg.voice_warp,
                       CONDITIONED_WARPS if conditioned else None)
    valid = CropDataset(cfg.corpus, ["valid"], 2 * codec_cfg.sample_rate, 0)
    valid_clips = torch.stack([valid.load(i, offset=0) for i in range(min(16, len(valid)))]).to(device)
    voices = valid_voices = None
    if conditioned:
        from codec.voices import TrainingVoices   # imports voice/: see _speaker_encoder

        voices = TrainingVoices(data.utts, encoder, cfg.seed, cfg.voice_warp, CONDITIONED_WARPS)
        valid_voices = voices.first([valid.speaker_of(i) for i in range(len(valid_clips))]).to(device)
        if not resume and not (shipped and shipped[0].decoder_speaker_dim):   # a new conditioning
            model.decoder.speaker.set_default(voices.mean())
    eval_n_q = sorted({codec_cfg.n_q_for_kbps(k) for k in (1.5, 3.0, 6.0)} | ({cfg.focus_n_q} - {0}))
    score_n_q = cfg.focus_n_q or codec_cfg.n_q_for_kbps(3.0)
    spectral = MultiResolutionSpectralLoss(codec_cfg.sample_rate).to(device)
    phase = PhaseDerivativeLoss()
    contrast = SpectralContrastLoss(codec_cfg.sample_rate)
    # One level for every crop: that of whole validation utterances (the corpus is loudness-normalised).
    pesq_model = PesqDisturbanceLoss(codec_cfg.sample_rate, float(PesqDisturbanceLoss.band_level(
        valid_clips.flatten(1)).median()), compensate=cfg.pesq_compensate) if cfg.lambda_pesq else None
    stoi_model = StoiLoss(codec_cfg.sample_rate).to(device) if cfg.lambda_stoi else None
    speaker = SpeakerConsistencyLoss(encoder).to(device) if cfg.lambda_speaker else None
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.loader_workers, worker_init_fn=CropDataset.seed_worker,
                                         persistent_workers=cfg.loader_workers > 0)
    log_file = open(out / "train.log", "a", encoding="utf-8") if is_main() else None
    started = last_ckpt = time.time()
    metrics: dict[str, float] = {}

    def save() -> None:
        if not is_main():
            return
        state = {"model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "step": step, "best": best, "tokens_id": tokens_id,
                 "codec_config": json.dumps(codec_cfg.to_dict()), "train_config": json.dumps(asdict(cfg))}
        save_checkpoint(state, ckpt_path)

    def validate_and_export(final: bool = False) -> dict[str, float]:
        """Validate; export the shipped model when quality at 3 kbps (or `focus_n_q`) is the best so far
        (lowest log-mel L1, or highest PESQ-WB with `select_by` "pesq")."""
        nonlocal best
        result = validate(model, valid_clips, eval_n_q, score_n_q if perceptual_metrics_available() else 0,
                          speaker, score_n_q, valid_voices, contrast)
        print(json.dumps({"step": step, "valid": result, "final": final}), file=log_file, flush=True)
        log.info("validation at step %d: %s", step, result)
        score = -result[f"pesq_q{score_n_q}"] if cfg.select_by == "pesq" else result[f"mel_q{score_n_q}"]
        if score < best:
            best = score
            save_codec(model, cfg.export, step, extra={"valid": result}, tokens_id=tokens_id)
        return result

    while step < cfg.steps:
        for crops, index, warps in loader:
            t0 = time.time()
            _set_train_mode(model, cfg.decoder_only)
            x = crops.to(device)
            n_q = _sample_n_q(x.shape[0], codec_cfg.n_q, cfg.dropout_full_prob, device, cfg.focus_n_q,
                              cfg.focus_prob)
            decoder_options: dict = {}
            if has_source:
                target_f0, target_voiced = pitch_targets(x, codec_cfg.sample_rate, model.decoder.hop)
                teach = random.random() < cfg.pitch_teacher
                decoder_options = {"with_extras": True, "teacher_pitch": target_f0 if teach else None}
            elif cfg.lambda_if:
                decoder_options = {"with_extras": True}
            if voices is not None:
                voice = voices.draw([data.speaker_of(i) for i in index.tolist()], warps.tolist()).to(device)
                unknown = torch.rand(len(voice), device=device) < cfg.voice_dropout
                decoder_options["speaker"] = torch.where(unknown[:, None], model.decoder.speaker.default, voice)
            adversarial = step >= cfg.adv_start
            # During the discriminator's warm-up the decoder holds still: its pass builds no graph, and the
            # discriminator judges its output only for its own step (not twice more for adversarial terms).
            warming = adversarial and step < cfg.adv_start + cfg.disc_warmup
            with torch.set_grad_enabled(not warming):
                if cfg.decoder_only:
                    with torch.no_grad():
                        q = model.quantize(x, n_q)
                    y = train_model(q.quantized, **decoder_options)
                else:
                    y, q = train_model(x, n_q, **decoder_options)
                y, extras = y if decoder_options.get("with_extras") else (y, {})
                extra_losses = {}
                if cfg.lambda_if:
                    extra_losses["if"] = instantaneous_frequency_loss(extras["phase_steps"], x, model.decoder.hop)
                if cfg.lambda_harmonic:   # the setup refused it without a source
                    extra_losses["harmonic"] = harmonic_amplitude_loss(extras["log_amplitudes"], x, target_f0,
                                                                       target_voiced, codec_cfg.sample_rate,
                                                                       model.decoder.hop)
                if has_source:
                    extra_losses["pitch"] = pitch_loss(model.decoder.source, extras["pitch_logits"], extras["voicing"],
                                                       target_f0, target_voiced)
                y, x = model.align(y, x)
                losses = {**spectral(y, x), **extra_losses}
                total = (spectral_total(losses, cfg.lambda_lin, cfg.lambda_log, cfg.lambda_mel)
                         + cfg.lambda_commit * q.commitment_loss)
                if cfg.lambda_phase:
                    losses["phase"] = phase(y, x)
                    total = total + cfg.lambda_phase * losses["phase"]
                if pesq_model is not None:
                    losses["pesq"] = pesq_model(x.flatten(1), y.flatten(1)).mean()
                    total = total + cfg.lambda_pesq * losses["pesq"]
                if stoi_model is not None:
                    losses["stoi"] = stoi_model(x.flatten(1), y.flatten(1)).mean()
                    total = total + cfg.lambda_stoi * losses["stoi"]
                if cfg.lambda_contrast:
                    losses["contrast"] = contrast(y, x)
                    total = total + cfg.lambda_contrast * losses["contrast"]
                if cfg.lambda_if:
                    total = total + cfg.lambda_if * losses["if"]
                if speaker is not None:
                    losses["speaker"] = speaker(y, x)
                    total = total + cfg.lambda_speaker * losses["speaker"]
                if has_source:
                    total = total + cfg.lambda_pitch * losses["pitch"]
                if cfg.lambda_harmonic:
                    total = total + cfg.lambda_harmonic * losses["harmonic"]
                if adversarial and not warming:
                    fake_logits, fake_feats = train_disc(y)
                    _, real_feats = train_disc(x)
                    losses["adv"] = generator_adversarial_loss(fake_logits)
                    losses["fm"] = feature_matching_loss(real_feats, fake_feats)
                    total = total + cfg.lambda_adv * losses["adv"] + cfg.lambda_fm * losses["fm"]
            for group in opt_g.param_groups + opt_d.param_groups:
                group["lr"] = _lr_at(step, cfg) * group.get("lr_scale", 1.0)
            opt_g.zero_grad(set_to_none=True)
            if not warming:
                total.backward()
                torch.nn.utils.clip_grad_norm_(trained.parameters(), 10.0)
                opt_g.step()
            if adversarial:
                real_logits, _ = train_disc(x)
                fake_logits, _ = train_disc(y.detach())
                d_loss = hinge_discriminator_loss(real_logits, fake_logits)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                losses["disc"] = d_loss
            step += 1
            if is_main() and step % cfg.log_every == 0:
                row = {"step": step, "sec_per_step": round(time.time() - t0, 3),
                       "lr": float(f"{_lr_at(step, cfg):.4g}"), "total": round(total.item(), 4),
                       "commit": round(q.commitment_loss.item(), 4),
                       **{k: round(v.item(), 4) for k, v in losses.items()}}
                print(json.dumps(row), file=log_file, flush=True)
                log.info("%s", row)
            if is_main() and step % cfg.valid_every == 0:
                metrics = validate_and_export()
                save()
                last_ckpt = time.time()
            if time.time() - last_ckpt > cfg.ckpt_minutes * 60:
                save()
                last_ckpt = time.time()
            out_of_time = cfg.max_minutes and time.time() - started > cfg.max_minutes * 60
            if step >= cfg.steps or out_of_time:
                break
        if cfg.max_minutes and time.time() - started > cfg.max_minutes * 60:
            break
    save()
    if is_main():
        metrics = validate_and_export(final=True)
        save()
        if cfg.export_last:
            save_codec(model, cfg.export_last, step, extra={"valid": metrics}, tokens_id=tokens_id)
            save_model_file(disc_path(cfg.export_last), disc.state_dict(), DISC_KIND, {}, step, dtype=torch.float32)
    if dist.is_initialized():
        dist.destroy_process_group()
    return {"step": step, **metrics}
