"""Where each text token is spoken: a CTC aligner over the token cache, for the backbone's alignment guide.

The diagonal guide (backbone.model.AlignmentGuide) assumes an even speaking
rate, so its band is wide (a fifth of the utterance) and the heads it trains
average over several words: measured in session 15, the backbone then barely
reads its text (validation loss with another sentence's text within 0.06 of its
own). This module finds the real alignment once, offline:

1. a small bidirectional conv net reads an utterance's codec codes (upsampled
   to twice the frame rate, so even fast speech has a frame per token) and is
   trained with CTC to emit its text tokens;
2. Viterbi forced alignment of its output gives the frame where each token
   starts;
3. `tts train align` writes those starts into a copy of the cache, and the
   guide then pulls the alignment heads to the token being spoken, a band of
   about one token.

Training only: generation never runs the aligner. Written by hand (a few conv
layers and a CTC Viterbi): torchaudio, which has forced_align, is not a
dependency and would need a build matching the pinned torch.
"""
from __future__ import annotations

import json
import logging
import pickle
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backbone.data import TokenCache, _flatten, _meta, _save, load_token_cache
from tts.modelfile import load_model_file, save_model_file
from tts.training import TrainerOptions, TrainingSetupError, save_checkpoint, warmup_cosine

log = logging.getLogger(__name__)
BLANK = 0   # CTC blank; text token t is class t + 1
KIND = "aligner"


@dataclass
class AlignerConfig:
    text_vocab: int
    n_codebooks: int
    card: int = 1024
    d: int = 192
    layers_before: int = 3          # residual conv blocks at the frame rate
    layers_after: int = 2           # and after upsampling
    kernel: int = 5
    upsample: int = 2


class _ConvBlock(nn.Module):
    def __init__(self, d: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, d)
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.conv(self.norm(x)))


class CtcAligner(nn.Module):
    """codes [B, K, F] -> log-probabilities [B, F * upsample, text_vocab + 1] (class 0: blank)."""

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.n_codebooks * config.card, config.d)
        self.register_buffer("offset", torch.arange(config.n_codebooks) * config.card, persistent=False)
        self.before = nn.Sequential(*[_ConvBlock(config.d, config.kernel) for _ in range(config.layers_before)])
        self.after = nn.Sequential(*[_ConvBlock(config.d, config.kernel) for _ in range(config.layers_after)])
        self.out = nn.Linear(config.d, config.text_vocab + 1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.emb(codes + self.offset[None, :, None]).sum(1).transpose(1, 2)      # [B, d, F]
        x = self.before(x).repeat_interleave(self.config.upsample, dim=2)
        x = self.after(x).transpose(1, 2)
        return self.out(x).log_softmax(-1)


def _batch(cache: TokenCache, batch: list[int], device: torch.device):
    """Padded codes [B, K, F], input lengths (upsampled), flat targets (+1 for the blank) and target lengths."""
    codes = [torch.from_numpy(cache.codes[i].astype("int64")) for i in batch]
    longest = max(c.shape[1] for c in codes)
    padded = torch.stack([F.pad(c, (0, longest - c.shape[1])) for c in codes]).to(device)
    texts = [torch.from_numpy(cache.text_ids[i].astype("int64")) + 1 for i in batch]
    return padded, torch.tensor([c.shape[1] for c in codes]), torch.cat(texts).to(device), \
        torch.tensor([len(t) for t in texts])


def ctc_loss(model: CtcAligner, cache: TokenCache, batch: list[int], device: torch.device) -> torch.Tensor:
    codes, frames, targets, target_lengths = _batch(cache, batch, device)
    log_probs = model(codes)
    return F.ctc_loss(log_probs.transpose(0, 1), targets, frames * model.config.upsample, target_lengths,
                      blank=BLANK, reduction="mean", zero_infinity=True)


def forced_align(log_probs: np.ndarray, tokens: np.ndarray) -> np.ndarray | None:
    """Viterbi CTC alignment: the first output frame of each token, or None when the frames cannot hold them.

    log_probs [T, V + 1] (class 0 blank), tokens [N] (text ids, without the +1).
    """
    n_frames, n = len(log_probs), len(tokens)
    if n == 0:
        return np.zeros(0, np.int64)
    states = np.zeros(2 * n + 1, np.int64)
    states[1::2] = tokens + 1
    emit = log_probs[:, states]                                         # [T, S]
    can_skip = np.zeros(len(states), bool)                              # s-2 -> s: between different tokens
    can_skip[3::2] = states[3::2] != states[1:-2:2]
    score = np.full(len(states), -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((n_frames, len(states)), np.int8)
    for t in range(1, n_frames):
        from_prev = np.concatenate([[-np.inf], score[:-1]])
        from_skip = np.where(can_skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        options = np.stack([score, from_prev, from_skip])
        back[t] = options.argmax(0)
        score = options.max(0) + emit[t]
    end = len(states) - 1 if n_frames == 1 or score[-1] >= score[-2] else len(states) - 2
    if not np.isfinite(score[end]):
        return None
    path = np.empty(n_frames, np.int64)
    for t in range(n_frames - 1, -1, -1):
        path[t] = end
        end -= int(back[t, end])     # int8 steps: keep the index a Python int
    starts = np.full(n, -1, np.int64)
    for t in range(n_frames - 1, -1, -1):           # backwards: the first frame of each token wins
        if path[t] % 2:
            starts[path[t] // 2] = t
    return starts if (starts >= 0).all() else None


def greedy_tokens(log_probs: np.ndarray) -> list[int]:
    """Best-path CTC decoding: log_probs [T, V + 1] -> the text ids heard (repeats merged, blanks dropped)."""
    best = log_probs.argmax(-1)
    keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != BLANK)
    return (best[keep] - 1).tolist()


def even_starts(n_tokens: int, frames: int) -> np.ndarray:
    """Token starts spread evenly: the diagonal, for an utterance the aligner could not place."""
    return (np.arange(n_tokens) * frames / max(1, n_tokens)).astype(np.int64)


@dataclass
class AlignerTrainConfig(TrainerOptions):
    cache: str = "runs/backbone/cache_ph.npz"
    out_dir: str = "runs/aligner"
    export: str = "runs/aligner/aligner.pt"
    steps: int = 2000
    lr: float = 2e-3
    valid_every: int = 250
    frames_per_batch: int = 4000
    warmup_steps: int = 100


@torch.no_grad()
def token_error_rate(model: CtcAligner, cache: TokenCache, indices: list[int], device: torch.device) -> dict:
    """CTC loss and greedy-decoding token error rate: how well the aligner hears the text it will place."""
    from backbone.train import length_batches
    from benchmarks.intelligibility import word_errors

    model.eval()
    errors = total = 0
    losses = []
    for batch in length_batches(cache, indices, 4000, random.Random(0)):
        losses.append(ctc_loss(model, cache, batch, device).item())
        codes, frames, _, _ = _batch(cache, batch, device)
        log_probs = model(codes).cpu().numpy()
        for row, i in enumerate(batch):
            heard = greedy_tokens(log_probs[row, :int(frames[row]) * model.config.upsample])
            errors += word_errors(cache.text_ids[i].tolist(), heard)
            total += len(cache.text_ids[i])
    model.train()
    return {"valid_ctc": round(float(np.mean(losses)), 4), "valid_ter": round(errors / max(1, total), 4)}


def train_aligner(cfg: AlignerTrainConfig) -> dict:
    """Train (or resume) the CTC aligner on a token cache; exports the weights with the lowest validation
    token error rate.

    `out_dir/last.pt` (model, optimiser, step, best) is written every `ckpt_minutes` and at the end, so a
    run stopped by `--max-minutes` or killed goes on when the same command is run again (from the start
    of a new pass over the data).
    """
    from backbone.train import length_batches

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    cache = load_token_cache(cfg.cache)
    train_idx, valid_idx = cache.indices("train"), cache.indices("valid")[:400]
    if not train_idx or not valid_idx:
        raise TrainingSetupError(f"{cfg.cache} needs training and validation utterances")
    config = AlignerConfig(text_vocab=int(cache.meta["text_vocab"]), n_codebooks=int(cache.meta["n_codebooks"]))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    resume = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None
    if resume and resume["config"] != asdict(config):
        raise TrainingSetupError(f"{ckpt_path} is an aligner for another cache ({resume['config']}): "
                                 "give a new --out")
    model = CtcAligner(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    step, best, epoch = 0, {"valid_ter": float("inf"), "step": -1}, 0
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        step, best, epoch = resume["step"], resume["best"], resume["epoch"]
        log.info("resumed from %s at step %d", ckpt_path, step)

    def checkpoint() -> None:
        save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "config": asdict(config),
                         "step": step, "best": best, "epoch": epoch}, ckpt_path)

    first_step, started = step, time.time()
    last_ckpt = started
    log_file = open(out / "train.log", "a", encoding="utf-8")

    def out_of_time() -> bool:
        return bool(cfg.max_minutes) and time.time() - started > cfg.max_minutes * 60

    while step < cfg.steps and not out_of_time():
        epoch += 1
        for batch in length_batches(cache, train_idx, cfg.frames_per_batch, random.Random(cfg.seed + epoch)):
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, floor=0.05)
            loss = ctc_loss(model, cache, batch, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            metrics = {}
            if step % cfg.log_every == 0:
                metrics = {"step": step, "ctc": round(loss.item(), 4),
                           "sec_per_step": round((time.time() - started) / (step - first_step), 3)}
            if step % cfg.valid_every == 0 or step == cfg.steps:
                metrics.update(token_error_rate(model, cache, valid_idx, device), step=step)
                if metrics["valid_ter"] < best["valid_ter"]:
                    best = {"valid_ter": metrics["valid_ter"], "step": step}
                    save_aligner(model, cfg.export, step, best, cache.meta)
            if metrics:
                log.info("%s", metrics)
                log_file.write(json.dumps(metrics) + "\n")
                log_file.flush()
            if time.time() - last_ckpt > cfg.ckpt_minutes * 60:
                checkpoint()
                last_ckpt = time.time()
            if step >= cfg.steps or out_of_time():
                break
    checkpoint()
    return {"step": step, "best": best}


def save_aligner(model: CtcAligner, path: str | Path, step: int, best: dict, cache_meta: dict) -> None:
    """The aligner's export: a torch checkpoint, or with a .safetensors path a model file (tts/modelfile.py,
    float16 weights) as the bench's reader ships (benchmarks/token_reader.py)."""
    if Path(path).suffix == ".safetensors":
        save_model_file(path, model.state_dict(), KIND, asdict(model.config), step,
                        {"best": best, "cache_meta": cache_meta})
    else:
        save_checkpoint({"model": model.state_dict(), "config": asdict(model.config), "step": step, "best": best,
                         "cache_meta": cache_meta}, path)


def load_aligner(path: str | Path) -> tuple[CtcAligner, dict]:
    """The aligner of a checkpoint or model file (eval mode) and the meta of the cache it was trained on."""
    if not Path(path).is_file():
        raise TrainingSetupError(f"no aligner at {path}: train one with 'tts train aligner'")
    if Path(path).suffix == ".safetensors":
        model, meta = load_model_file(path, KIND, lambda config: CtcAligner(AlignerConfig(**config)))
        return model, json.loads(meta["extra"])["cache_meta"]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = CtcAligner(AlignerConfig(**state["config"]))
        model.load_state_dict(state["model"])
        return model.eval(), state["cache_meta"]
    except KeyError as exc:      # last.pt keeps no cache meta: only the export names the tokens it reads
        raise TrainingSetupError(f"{path} is not an aligner's export (no {exc}): give the file of its --export") \
            from exc
    except (RuntimeError, TypeError, ValueError, OSError, pickle.UnpicklingError) as exc:
        raise TrainingSetupError(f"{path} is not an aligner (torch.load: {type(exc).__name__})") from exc


@torch.no_grad()
def align_token_cache(cache_path: str | Path, aligner_path: str | Path, out: str | Path,
                      batch_frames: int = 8000) -> dict:
    """A copy of the cache with `token_starts`: for each utterance, the frame (at the codec's rate) where each of
    its text tokens starts. Utterances the aligner cannot place get even starts (counted). Written atomically."""
    from backbone.train import length_batches

    model, trained_on = load_aligner(aligner_path)
    cache = load_token_cache(cache_path)
    for key in ("tokenizer_id", "codec_id"):
        if cache.meta[key] != trained_on[key]:
            raise TrainingSetupError(f"{aligner_path} was trained on a cache with another {key} than {cache_path}")
    starts: list[np.ndarray] = [None] * len(cache.ids)   # type: ignore[list-item]
    unplaced = 0
    all_idx = list(range(len(cache.ids)))
    for n, batch in enumerate(length_batches(cache, all_idx, batch_frames, random.Random(0))):
        codes, frames, _, _ = _batch(cache, batch, torch.device("cpu"))
        log_probs = model(codes).numpy()
        for row, i in enumerate(batch):
            found = forced_align(log_probs[row, :int(frames[row]) * model.config.upsample], cache.text_ids[i])
            if found is None:
                unplaced += 1
                starts[i] = even_starts(len(cache.text_ids[i]), int(frames[row]))
            else:
                starts[i] = found // model.config.upsample
        if (n + 1) % 50 == 0:
            log.info("aligned %d batches", n + 1)
    with np.load(Path(cache_path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    flat, offsets = _flatten([s.astype(np.int16) for s in starts])
    if not np.array_equal(offsets, arrays["text_offsets"]):
        raise TrainingSetupError("token starts do not line up with the cache's texts")
    arrays["token_starts"] = flat
    meta = _meta(arrays["meta"])
    meta["aligned_unplaced"] = unplaced
    arrays["meta"] = np.array(repr(meta))
    _save(Path(out), arrays)
    return {"utterances": len(cache.ids), "unplaced": unplaced}
