"""`tts train backbone`: teacher-forced training on the token cache (CPU, CUDA, or DDP via torchrun).

Batches are drawn by length (similar lengths together, bounded by frames per
batch) so padding stays small. Validation loss on the corpus's validation
utterances decides which weights are exported. Checkpoints hold the config,
the optimiser and the step; re-running the same command resumes.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from backbone.aligner import even_starts
from backbone.data import TokenCache, load_token_cache
from backbone.model import (AlignmentGuide, Backbone, BackboneConfig, ReadingHead, backbone_weights, load_backbone,
                            save_backbone)
from tts.distributed import any_rank, is_main, setup_distributed
from tts.training import TrainerOptions, TrainingSetupError, save_checkpoint, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class BackboneTrainConfig(TrainerOptions):
    cache: str = "runs/backbone/tokens.npz"
    out_dir: str = "runs/backbone"
    export: str = "assets/backbone.safetensors"
    steps: int = 50_000
    frames_per_batch: int = 2000      # audio frames (25/s) per batch, summed over its utterances
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 500
    uncond_dropout: float = 0.0       # share of examples with no text and a zero speaker (for guidance)
    valid_every: int = 500
    model: dict = field(default_factory=dict)  # BackboneConfig overrides for a new run
    init_from: str = ""               # a new run starts from these weights (backbone file or checkpoint)
    new_text_tokens: bool = False     # with init_from: the cache's text tokens are new; text embeddings start afresh
    guide_weight: float = 0.0         # alignment guide (backbone.model.AlignmentGuide); 0 = off
    guide_sigma: float = 0.2
    guide_layers: tuple[int, ...] = (1, 2)
    guide_heads: int = 2
    guide_aligned: bool = False       # the guide follows the cache's token starts (tts train align), not the diagonal
    guide_token_sigma: float = 1.0    # its band, in text tokens
    reading_weight: float = 0.0       # backbone.model.ReadingHead on the cache's token starts; 0 = off
    read_pointer: int = 0             # a new run's model follows a read pointer with this many advance classes
                                      # (BackboneConfig.read_pointer; needs the cache's token starts)
    speaker_steps: bool = False       # the run's model adds the speaker to every audio step's input
                                      # (BackboneConfig.speaker_steps; gained on another model's weights at zero)
    new_lr_scale: float = 1.0         # learning rate of the modules that start afresh on --init-from weights, x lr

    def guide(self) -> AlignmentGuide | None:
        if not self.guide_weight:
            return None
        return AlignmentGuide(self.guide_weight, self.guide_sigma, tuple(self.guide_layers), self.guide_heads,
                              self.guide_token_sigma)


def initial_weights(path: str) -> tuple[dict, dict]:
    """(state dict, model config dict) from a backbone file or a training checkpoint (without training-only
    modules such as a ReadingHead)."""
    if path.endswith(".pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        return backbone_weights(state["model"]), state["model_config"]
    model = load_backbone(path)
    return model.state_dict(), model.config.to_dict()


def fresh_text_embeddings(state: dict, vocab: int, seed: int = 0) -> dict:
    """`state` with a new text embedding table of `vocab` rows, drawn at the old table's scale, for a model that
    keeps everything it learnt but reads other text tokens (e.g. phonemes instead of sub-word pieces)."""
    old = state["text_emb.weight"].float()
    generator = torch.Generator().manual_seed(seed)
    fresh = old.mean(0) + old.std() * torch.randn(vocab, old.shape[1], generator=generator)
    return {**state, "text_emb.weight": fresh.to(state["text_emb.weight"].dtype)}


NEW_MODULES = ("reading.", "pointer_emb.", "advance_head.", "speaker_step.")   # may start afresh on another
                                                                               # model's weights


def length_batches(cache: TokenCache, indices: list[int], frames_per_batch: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort within large pools by length, cut into batches of at most `frames_per_batch` frames."""
    order = indices[:]
    rng.shuffle(order)
    batches = []
    pool = 50 * max(1, frames_per_batch // 100)
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: cache.codes[i].shape[1])
        batch, longest = [], 0
        for i in chunk:
            n = cache.codes[i].shape[1] + len(cache.text_ids[i])
            if batch and max(longest, n) * (len(batch) + 1) > frames_per_batch:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, n)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def _tensors(cache: TokenCache, batch: list[int], rng: random.Random, device: torch.device, uncond: float):
    """Speaker [B, dim], text ids and codes of a batch; a share `uncond` of examples loses text and speaker."""
    speaker = torch.stack([torch.from_numpy(cache.embedding(i, rng)) for i in batch]).to(device)
    text = [torch.from_numpy(cache.text_ids[i].astype("int64")) for i in batch]
    codes = [torch.from_numpy(cache.codes[i].astype("int64")) for i in batch]
    if uncond:
        dropped = [rng.random() < uncond for _ in batch]
        speaker = speaker * torch.tensor([not d for d in dropped], device=device)[:, None]
        text = [t[:0] if d else t for t, d in zip(text, dropped)]
    return speaker, text, codes


def _param_groups(model: Backbone, fresh: set[str], fresh_scale: float) -> list[dict]:
    """AdamW's parameter groups: the modules that started afresh on another model's weights (`fresh`: state-dict
    names) learn at `fresh_scale` times the rate, so a zero-initialised addition catches up with weights that
    have already learnt; each group's "lr_scale" says its multiple."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n not in fresh], "lr_scale": 1.0},
              {"params": [p for n, p in named if n in fresh], "lr_scale": fresh_scale}]
    return [g for g in groups if g["params"]]


def _lr_at(step: int, cfg: BackboneTrainConfig) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, floor=0.1)


TEXT_MODES = ("own", "other", "none")


def _swapped_texts(cache: TokenCache, indices: list[int]) -> dict[int, int]:
    """Each utterance paired with the one next to it by text length: another text of about its length."""
    by_length = sorted(indices, key=lambda i: (len(cache.text_ids[i]), i))
    other = {i: i for i in indices}
    for a, b in zip(by_length[0::2], by_length[1::2]):
        other[a], other[b] = b, a
    return other


@torch.no_grad()
def validate(model: Backbone, cache: TokenCache, indices: list[int], device: torch.device,
             frames_per_batch: int, text: str = "own") -> dict:
    """Teacher-forced loss over `indices`. `text`: each utterance's own text, "other" (the text of another
    utterance of about the same length) or "none": how far the model's predictions depend on what it reads.
    A read-pointer model reads its own text at the aligner's token starts, another text spread evenly.

    Returns valid_loss (the codes' cross-entropy), valid_per_codebook and, with a read pointer,
    valid_advance (the advance head's cross-entropy)."""
    if text not in TEXT_MODES:
        raise ValueError(f"text must be one of {TEXT_MODES}")
    model.eval()
    rng = random.Random(0)
    other = _swapped_texts(cache, indices) if text == "other" else {}
    total, advance, n = 0.0, 0.0, 0
    per_codebook = torch.zeros(model.config.n_codebooks)
    for batch in length_batches(cache, indices, frames_per_batch, rng):
        speaker, texts, codes = _tensors(cache, batch, rng, device, 0.0)
        if text == "other":
            texts = [torch.from_numpy(cache.text_ids[other[i]].astype("int64")) for i in batch]
        elif text == "none":
            texts = [t[:0] for t in texts]
        starts = None
        if model.config.read_pointer:
            starts = [torch.from_numpy(cache.token_starts[i].astype("int64")) if text == "own"
                      else torch.from_numpy(even_starts(len(t), c.shape[1])) for i, t, c in zip(batch, texts, codes)]
        out = model(speaker, texts, codes, token_starts=starts)
        total += out["codes"].item() * len(batch)
        advance += (out["advance"].item() if out["advance"] is not None else 0.0) * len(batch)
        per_codebook += out["per_codebook"].cpu() * len(batch)
        n += len(batch)
    model.train()
    return {"valid_loss": round(total / max(1, n), 4),
            "valid_per_codebook": [round(v, 3) for v in (per_codebook / max(1, n)).tolist()],
            **({"valid_advance": round(advance / max(1, n), 4)} if model.config.read_pointer else {})}


def text_reliance(path: str, cache_path: str, utterances: int = 300, device: str = "cpu") -> dict:
    """Validation loss of a backbone file (or checkpoint) on its cache's validation utterances with their own text,
    another's and none. A model that reads its text scores far better with its own; one that babbles in the
    right voice does not care (the shipped piece backbone of session 14: 5.018 / 5.066 / 5.080)."""
    state, config = initial_weights(path)
    model = Backbone(BackboneConfig.from_dict(config)).to(device)
    model.load_state_dict(state)
    cache = load_token_cache(cache_path, {"codec_id": model.config.codec_id,
                                          "tokenizer_id": model.config.tokenizer_id})
    indices = cache.indices("valid")[:utterances]
    if not indices:
        raise TrainingSetupError(f"{cache_path} has no validation utterances")
    result = {"utterances": len(indices)}
    for mode in TEXT_MODES:
        result[mode] = validate(model, cache, indices, torch.device(device), 2000, mode)
    return result


def train_backbone(cfg: BackboneTrainConfig) -> dict:
    """Train (or resume) and export the best weights by validation loss; returns the final state."""
    torch.set_num_threads(cfg.threads)
    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    resume = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None
    cache = load_token_cache(cfg.cache)
    meta = cache.meta
    init_state = None
    if resume:
        model_cfg = BackboneConfig.from_dict(resume["model_config"])
    elif cfg.init_from:
        init_state, init_config = initial_weights(cfg.init_from)
        model_cfg = BackboneConfig.from_dict(init_config)
        if cfg.new_text_tokens:
            if "text_vocab" not in meta:
                raise TrainingSetupError(f"{cfg.cache} does not record its text vocabulary: rebuild or retokenize it")
            init_state = fresh_text_embeddings(init_state, meta["text_vocab"], cfg.seed)
            model_cfg.tokenizer_id, model_cfg.text_vocab = meta["tokenizer_id"], meta["text_vocab"]
    else:
        model_cfg = BackboneConfig(**{"n_codebooks": meta["n_codebooks"], "frame_rate": meta["frame_rate"],
                                      "text_vocab": meta.get("text_vocab", BackboneConfig.text_vocab),
                                      "codec_id": meta["codec_id"], "tokenizer_id": meta["tokenizer_id"],
                                      "encoder_id": meta["encoder_id"],
                                      "speaker_dim": int(cache.speaker_embeddings.shape[-1]), **cfg.model})
    for key in ("codec_id", "tokenizer_id", "n_codebooks"):
        if getattr(model_cfg, key) != meta[key]:
            raise TrainingSetupError(f"{cfg.cache} has {key} {meta[key]!r} but the run was started with "
                             f"{getattr(model_cfg, key)!r}: rebuild the cache or start a new --out")
    model_cfg.encoder_id = meta["encoder_id"]  # embeddings may be refreshed for a newer encoder
    if not resume and cfg.read_pointer:
        model_cfg.read_pointer = cfg.read_pointer
    if not resume and cfg.speaker_steps:
        model_cfg.speaker_steps = True
    torch.manual_seed(cfg.seed)
    model = Backbone(model_cfg).to(device)
    needs_starts = (cfg.guide_aligned and bool(cfg.guide_weight)) or bool(cfg.reading_weight) \
        or bool(model_cfg.read_pointer)
    if needs_starts and cache.token_starts is None:
        raise TrainingSetupError(f"{cfg.cache} has no token starts (for the aligned guide, the reading loss or a "
                                 "read pointer): make them with 'tts train aligner' and 'tts train align'")
    if cfg.reading_weight:
        model.reading = ReadingHead(model_cfg.d_model, model_cfg.text_vocab, cfg.reading_weight).to(device)
    fresh: dict = {}
    if init_state is not None:
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith(NEW_MODULES) and k not in init_state}
        if "pointer_emb.weight" in fresh:    # at the scale of the audio embeddings it is added to
            fresh["pointer_emb.weight"] = fresh["pointer_emb.weight"] * init_state["audio_emb.weight"].float().std()
        model.load_state_dict({**fresh, **init_state})
        log.info("new run starts from the weights of %s (new: %s)", cfg.init_from,
                 sorted({k.split(".")[0] for k in fresh}) or "none")
    guide = cfg.guide()
    if guide is not None:
        bad = [layer for layer in guide.layers if not 0 <= layer < model_cfg.n_layers]
        if bad or not 0 < guide.heads <= model_cfg.n_heads:
            raise TrainingSetupError(f"alignment guide layers {list(guide.layers)} / heads {guide.heads} do not fit a "
                             f"{model_cfg.n_layers}-layer, {model_cfg.n_heads}-head model")
        model.transformer.set_attn_implementation("eager")   # the guide needs the attention weights
        model_cfg.align_layers, model_cfg.align_heads = tuple(guide.layers), guide.heads  # saved: inference reads them
    # the fresh modules' names are kept in the checkpoint: a resumed run rebuilds the same parameter groups
    fresh_names = set(resume.get("fresh", [])) if resume else set(fresh)
    opt = torch.optim.AdamW(_param_groups(model, fresh_names, cfg.new_lr_scale), lr=cfg.lr,
                            weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    step, best = 0, {"valid_loss": float("inf"), "step": -1}
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        step, best = resume["step"], resume["best"]
        log.info("resumed from %s at step %d", ckpt_path, step)
    # Saved: generation may use classifier-free guidance only if this run keeps the unconditional branch
    # trained (one started from an unconditional model without --uncond-dropout lets it drift).
    model_cfg.unconditional = cfg.uncond_dropout > 0
    if is_main():
        log.info("backbone: %.2f M parameters, %d training utterances (%.1f h)",
                 sum(p.numel() for p in model.parameters()) / 1e6, len(cache.indices("train")), meta["hours"])
    net = DistributedDataParallel(model) if dist.is_initialized() else model
    train_idx, valid_idx = cache.indices("train"), cache.indices("valid")
    if not train_idx:
        raise TrainingSetupError(f"{cfg.cache} has no training utterances")

    def checkpoint() -> None:
        save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                         "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
                         "fresh": sorted(fresh_names)}, ckpt_path)

    log_file = open(out / "train.log", "a", encoding="utf-8") if is_main() else None
    started = last_ckpt = time.time()
    out_of_time = False
    first_step, epoch = step, step
    model.train()
    while step < cfg.steps:
        rng = random.Random(cfg.seed * 1_000_003 + epoch)
        epoch += 1
        batches = length_batches(cache, train_idx, cfg.frames_per_batch, rng)
        batches = batches[: len(batches) // world * world][rank::world]   # same count on every rank
        for batch in batches:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg) * group.get("lr_scale", 1.0)   # (old checkpoints: none)
            starts = [torch.from_numpy(cache.token_starts[i].astype("int64")) for i in batch] \
                if needs_starts else None
            result = net(*_tensors(cache, batch, rng, device, cfg.uncond_dropout), guide=guide, token_starts=starts)
            opt.zero_grad(set_to_none=True)
            result["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            metrics = {}
            if step % cfg.log_every == 0:
                metrics = {"step": step, "loss": round(result["loss"].item(), 4),
                           "acc": round(result["accuracy"], 3), "align": round(result["alignment"].item(), 4),
                           **({"read": round(result["reading"].item(), 4)} if result["reading"] is not None else {}),
                           **({"adv": round(result["advance"].item(), 4)} if result["advance"] is not None else {}),
                           "lr": round(_lr_at(step, cfg), 6),
                           "sec_per_step": round((time.time() - started) / (step - first_step), 3)}
            out_of_time = any_rank(bool(cfg.max_minutes) and time.time() - started > cfg.max_minutes * 60)
            # the last step is validated too when time runs out, so a run cut short keeps its last stretch
            if (step % cfg.valid_every == 0 or step == cfg.steps or out_of_time) and is_main() and valid_idx:
                metrics.update(validate(model, cache, valid_idx, device, cfg.frames_per_batch), step=step)
                if metrics["valid_loss"] < best["valid_loss"]:
                    best = {"valid_loss": metrics["valid_loss"], "step": step}
                    model_id = save_backbone(model, cfg.export, step, best)
                    log.info("exported %s (step %d, id %s)", cfg.export, step, model_id)
            if metrics and log_file:
                log.info("%s", metrics)
                log_file.write(json.dumps(metrics) + "\n")
                log_file.flush()
            if is_main() and time.time() - last_ckpt > cfg.ckpt_minutes * 60:
                checkpoint()
                last_ckpt = time.time()
            if step >= cfg.steps or out_of_time:
                break
        if step >= cfg.steps or out_of_time:
            break
    if is_main():
        if not valid_idx:
            save_backbone(model, cfg.export, step, {"valid_loss": None})
        checkpoint()
    return {"step": step, "best": best}
