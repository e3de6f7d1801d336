"""Autoregressive generation: token frames as they are produced, for one request or many.

`BatchGenerator` runs one transformer step for every active request at once.
Requests join at any step (their prompt is prefilled alone, then their KV cache
is left-padded to the batch's length and masked) and leave when they finish
(their rows are dropped from the cache), so a server can batch the decoding
steps of concurrent streams. Each request samples with its own seeded
generator, so its output does not depend on what else is in the batch.

Guards: invalid ids are masked (PAD/BOS never sampled, EOS only on stream 0
and only after a minimum length), a length bound derived from the text ends any
run-on, and repetition-aware sampling (VALL-E 2) re-draws a token from the full
distribution when it already fills much of the recent window (anti-babbling).
A model trained with alignment heads also reports where in the text it reads;
EOS then waits until most of the text is read (no truncated sentences) and is
forced soon after the reading reaches its end (no babbling on after the last word).
A read-pointer model (backbone/model.py) says where it reads outright: each step
also samples how far its pointer advances, which the next step's input carries,
and EOS follows the pointer the same way.
"""
from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import torch

from backbone.fast import KVCache
from backbone.model import DWELL_FRAMES, Backbone, BackboneConfig


MIN_RATE, MAX_RATE = 0.5, 2.0   # speaking rates offered


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_window: int = 10
    repetition_threshold: float = 0.5     # re-draw a token that fills this share of the window
    min_seconds_per_char: float = 0.02    # EOS not allowed before this
    max_seconds_per_char: float = 0.2     # forced EOS after this (+ extra_seconds)
    extra_seconds: float = 1.0
    # With alignment heads (backbone.model.AlignmentGuide): EOS only once they have read `eos_min_read` of
    # the text (no truncated sentences; their reading lags the speech a little, so not all of it), and forced
    # after `end_hold_seconds` reading its last `end_margin_tokens` (no babbling on). The engine ends every
    # utterance with punctuation (tts.segment.utterance_text), so a read pointer's last token is the
    # closing pause: once there, speech is over. 0.4 s, not session 17's 1 s: "I." in one held-out voice
    # ran on to 1.2 s, 0.96 s at 0.6 (session 19; real "Who am I?" lasts 0.6 s).
    eos_min_read: float = 0.7
    end_margin_tokens: float = 2.0
    end_hold_seconds: float = 0.4
    # A read pointer moves on after dwelling this long on one token (no stalled speech).
    max_token_seconds: float = 1.0
    # A read-pointer model's speaking rate: its odds of moving on at each frame times this (0.5 - 2).
    speaking_rate: float = 1.0
    # Classifier-free guidance for a model trained with unconditional examples (1 = off): logits
    # u + w (c - u), u from the same audio with no text and no voice; sharper words and voice. 2 by
    # default (session 18: held-out WER 92 / 80 % at 1, 72 / 66 % at 2); models without it ignore it.
    guidance: float = 2.0

    def validate(self) -> None:
        if not (self.temperature >= 0 and self.top_k >= 0 and 0 < self.top_p <= 1 and self.guidance >= 0):
            raise ValueError("sampling needs temperature >= 0, top_k >= 0, 0 < top_p <= 1 and guidance >= 0")
        if not MIN_RATE <= self.speaking_rate <= MAX_RATE:
            raise ValueError(f"speaking rate must be between {MIN_RATE} and {MAX_RATE}")

    def validate_for(self, model: BackboneConfig) -> None:
        """`validate`, and what this backbone can do: a speaking rate needs a read pointer."""
        self.validate()
        if self.speaking_rate != 1.0 and not model.read_pointer:
            raise ValueError("this backbone has no read pointer: it cannot change its speaking rate")


@dataclass
class Request:
    """One utterance to generate: token ids, speaker embedding [speaker_dim], seed, text length in chars."""

    text_ids: list[int]
    speaker: torch.Tensor
    n_chars: int
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


def frame_bounds(n_chars: int, frame_rate: float, sampling: SamplingConfig) -> tuple[int, int]:
    """(min, max) frames for a text of `n_chars` spoken characters (at the speaking rate)."""
    rate = sampling.speaking_rate
    lo = int(n_chars * sampling.min_seconds_per_char / rate * frame_rate)
    hi = int(math.ceil((n_chars * sampling.max_seconds_per_char / rate + sampling.extra_seconds) * frame_rate))
    return lo, max(hi, lo + 1)


@dataclass
class _Row:
    id: int
    request: Request
    generator: torch.Generator
    min_frames: int
    max_frames: int
    end_hold_steps: int
    max_dwell: int                      # steps a read pointer may stay on one token before it is moved on
    steps: list[list[int]] = field(default_factory=list)   # delayed tokens per step, [K] each
    n_frames: int | None = None         # F, known once stream 0 emitted EOS
    emitted: int = 0                    # frames handed out
    cancelled: bool = False

    aligned: bool = False               # the model has alignment heads: EOS follows the reading position
    reads: bool = False                 # the model has a read pointer: EOS follows it
    pointer: int = 0                    # the text token it speaks (read pointer)
    dwell: int = 0                      # frames the pointer has stayed there
    guided: bool = False                # classifier-free guidance: a second, unconditional cache row
    voice: torch.Tensor | None = None   # what each of its steps' inputs adds for its voice (Backbone.step_voice)
    text_position: float = 0.0          # where they read, in text tokens (0 .. N-1; centroid of attention)
    steps_at_end: int = 0               # decoding steps spent reading the text's end

    def follow(self, attention: torch.Tensor) -> None:
        """Update the reading position from the alignment heads' attention over the row's positions [L]."""
        n = len(self.request.text_ids)
        on_text = attention[1:1 + n]                       # position 0 is the speaker
        centroid = (on_text * torch.arange(n, dtype=on_text.dtype, device=on_text.device)).sum()
        self.text_position = float(centroid / on_text.sum().clamp_min(1e-6))
        self.steps_at_end += self.text_position >= n - self.request.sampling.end_margin_tokens

    def move(self, cumulative: list[float]) -> None:
        """Move the read pointer by a draw from its advance distribution (cumulative probabilities of moving
        0, 1, ... tokens). Always sampled, from the row's own generator: a greedy pointer that never
        advances on a hazard under one half would stall."""
        draw = float(torch.rand(1, generator=self.generator)) * cumulative[-1]
        step = min(bisect.bisect_left(cumulative, draw), len(cumulative) - 1)
        if self.dwell + 1 >= self.max_dwell:
            step = max(step, 1)
        last = len(self.request.text_ids) - 1
        moved = min(self.pointer + step, last)
        self.dwell = 0 if moved != self.pointer else self.dwell + 1
        self.pointer = moved
        self.steps_at_end += moved == last

    def pointer_ids(self, no_token: int) -> list[int]:
        """The read pointer's ids for the next step's input: `backbone.model.pointer_ids` for one row, in
        plain ints (it runs every step for every row)."""
        text, p = self.request.text_ids, self.pointer
        return [text[p], text[p + 1] if p + 1 < len(text) else no_token, min(self.dwell, DWELL_FRAMES - 1)]

    def may_end(self) -> bool:
        """EOS is allowed as far as the reading goes: no alignment heads, or enough of the text read."""
        last = len(self.request.text_ids) - 1
        if self.reads:
            return self.pointer >= last + 1 - self.request.sampling.end_margin_tokens
        return not self.aligned or self.text_position >= self.request.sampling.eos_min_read * last

    @property
    def done(self) -> bool:
        return self.cancelled or self.n_frames is not None and len(self.steps) >= self.n_frames + len(self.steps[0])


class _Plan(NamedTuple):
    """One row's next step while it is being sampled."""

    row: _Row
    logits: torch.Tensor          # [K, V]
    t: int                        # the step's index
    tokens: list[int | None]      # forced tokens set, free ones None until drawn
    free: list[int]               # streams to draw
    eos_ok: list[bool]            # per free stream: may it draw EOS


class BatchGenerator:
    """Steps every active request together; `step()` returns the frames each completed.

    Prompts are prefilled by the model's float32 step model (backbone/fast.py); decoding
    steps run on its step model of the kind asked for (float32, int8 weights when
    `quantized`, on ONNX Runtime with `onnx`, backbone/onnx_step.py) over this
    generator's own preallocated KV cache, one cache row per request.
    """

    def __init__(self, model: Backbone, quantized: bool = False, onnx: bool = False) -> None:
        self.model = model
        self.cfg = model.config
        self.step_model = model.step_model(quantized, onnx)
        self.prefill_model = model.step_model()
        self.rows: list[_Row] = []
        self.cache: KVCache = self.step_model.new_cache()
        self._ids = itertools.count()

    @property
    def active(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------ join / leave

    @torch.inference_mode()
    def add(self, request: Request) -> int:
        """Prefill a request's prompt and join it to the batch; returns its row id."""
        request.sampling.validate_for(self.cfg)
        cfg, device = self.cfg, self.model.text_emb.weight.device
        text = torch.tensor([request.text_ids], dtype=torch.long, device=device)
        prompt = self.model.embed_prompt(request.speaker.to(device).float()[None], text)
        n = prompt.shape[1]
        lo, hi = frame_bounds(request.n_chars, cfg.frame_rate, request.sampling)
        if n + hi + cfg.n_codebooks > cfg.max_positions:
            raise ValueError(f"text too long for one utterance ({len(request.text_ids)} tokens); split it")
        s = request.sampling
        # A seed is taken modulo 2**64, the generator's range (where -1 is already 2**64 - 1): any int, and the
        # largest uint64 a gRPC client may send plus a segment's offset, seeds it instead of overflowing.
        generator = torch.Generator(device="cpu").manual_seed(request.seed % 2**64)
        row = _Row(next(self._ids), request, generator, lo, hi,
                   round(s.end_hold_seconds * cfg.frame_rate),
                   max(1, round(s.max_token_seconds / s.speaking_rate * cfg.frame_rate)), aligned=cfg.align_heads > 0,
                   guided=cfg.unconditional and s.guidance != 1.0, reads=cfg.read_pointer > 0)
        row.voice = self.model.step_voice(request.speaker.to(device).float()[None])[0]
        logits = self._prefill(prompt)
        if row.guided:   # its unconditional twin: no speaker, no text; its cache row follows the request's
            unconditional = self.model.embed_prompt(torch.zeros_like(request.speaker, device=device).float()[None],
                                                    text[:, :0])
            logits = self._guide(logits, self._prefill(unconditional), request.sampling.guidance)
        self.rows.append(row)
        self._sample_and_move([(row, logits)])
        return row.id

    def _prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Run a prompt [1, n, d] through the float32 step model into a new cache row; its next-step logits [K, V]."""
        return self.prefill_model.prefill(prompt[0], self.cache)

    def _guide(self, conditional: torch.Tensor, unconditional: torch.Tensor, weight: float) -> torch.Tensor:
        """Classifier-free guidance: push the logits away from what the model says with no text or voice
        (a read pointer's advance row, after the K code rows, keeps the conditional logits)."""
        k = self.cfg.n_codebooks
        guided = unconditional[:k] + weight * (conditional[:k] - unconditional[:k])
        return torch.cat([guided, conditional[k:]])

    def _sample_and_move(self, batch: list[tuple[_Row, torch.Tensor]]) -> None:
        """`_sample` the codes of each row's next step from its logits [K (+ 1), V]; a read-pointer model's
        rows then move their pointer by the last row (advance logits)."""
        k = self.cfg.n_codebooks
        self._sample([(row, logits[:k]) for row, logits in batch])
        moving = [(row, logits) for row, logits in batch if row.n_frames is None]   # after EOS it no longer matters
        if self.cfg.read_pointer and moving:
            advance = torch.stack([logits[k, :self.cfg.read_pointer] for _, logits in moving]).float()
            rates = torch.tensor([math.log(row.request.sampling.speaking_rate) for row, _ in moving])
            advance[:, 1:] += rates[:, None]                  # odds of moving on, times the speaking rate
            cumulative = torch.softmax(advance, -1).cumsum(-1).tolist()   # one go for the batch
            for (row, _), row_cumulative in zip(moving, cumulative):
                row.move(row_cumulative)

    def _pointer(self, row: _Row, twin: bool) -> list[int]:
        """The ids a read pointer adds to the row's next step input; a guided row's unconditional twin
        reads no text."""
        if twin:
            return [self.cfg.no_token, self.cfg.no_token, min(row.dwell, DWELL_FRAMES - 1)]
        return row.pointer_ids(self.cfg.no_token)

    def _cache_rows(self) -> list[int]:
        """Index into `rows` of every cache row, in cache order (a guided row has two)."""
        return [i for i, r in enumerate(self.rows) for _ in range(1 + r.guided)]

    def _voices(self, owners: list[int], twins: list[bool]) -> torch.Tensor:
        """[C, d]: each cache row's step voice; a guided row's unconditional twin has none (zero speaker)."""
        voices = [self.rows[i].voice for i in owners]
        return torch.stack([torch.zeros_like(v) if twin else v for v, twin in zip(voices, twins)])

    def _drop_finished(self) -> None:
        if any(r.done for r in self.rows):
            self.cache.keep([c for c, i in enumerate(self._cache_rows()) if not self.rows[i].done])
            self.rows = [r for r in self.rows if not r.done]

    def cancel(self, row_id: int) -> None:
        """Remove a request (client gone) before its next step."""
        for row in self.rows:
            if row.id == row_id:
                row.cancelled = True
        self._drop_finished()

    # ------------------------------------------------------------ stepping

    def _allowed(self, row: _Row, t: int, k: int) -> tuple[int | None, bool]:
        """(forced token or None, may emit EOS) for stream k at step t."""
        cfg = self.cfg
        if t - k < 0:
            return cfg.pad, False
        if row.n_frames is not None and t - k >= row.n_frames:
            return (cfg.eos if t - k == row.n_frames else cfg.pad), False
        if k == 0 and (t >= row.max_frames or row.steps_at_end > row.end_hold_steps):
            return cfg.eos, False
        return None, k == 0 and t >= row.min_frames and row.may_end()

    def _sample(self, batch: list[tuple[_Row, torch.Tensor]]) -> None:
        """Choose the K tokens of each row's next step from its logits [K, V].

        The free streams of every row with the same sampling settings are drawn in one go (a few
        operators per step, not per row); each row still draws its uniforms from its own generator,
        so its tokens do not depend on the rows beside it.
        """
        cfg = self.cfg
        plans: list[_Plan] = []
        groups: dict[tuple, list[_Plan]] = {}      # by sampling settings
        for row, logits in batch:
            t = len(row.steps)
            plan = _Plan(row, logits, t, [], [], [])
            for k in range(cfg.n_codebooks):
                forced, may_end = self._allowed(row, t, k)
                plan.tokens.append(forced)
                if forced is None:
                    plan.free.append(k)
                    plan.eos_ok.append(may_end)
            if plan.free:
                s = row.request.sampling
                groups.setdefault((s.temperature, s.top_k, s.top_p), []).append(plan)
            plans.append(plan)
        for members in groups.values():
            masked = torch.cat([p.logits[p.free] for p in members]).float()   # [free streams of the group, V]
            masked[:, cfg.card:] = float("-inf")
            at = 0
            for p in members:
                for j, k in enumerate(p.free):
                    if p.eos_ok[j]:
                        masked[at + j, cfg.eos] = p.logits[k, cfg.eos]
                at += len(p.free)
            drawn = self._draw(masked, members[0].row.request.sampling,
                               [(p.row.generator, len(p.free)) for p in members])
            at = 0
            for p in members:
                s = p.row.request.sampling
                for j, k in enumerate(p.free):
                    recent = [step[k] for step in p.row.steps[-s.repetition_window:]]
                    token = drawn[at + j]
                    if s.temperature and recent and recent.count(token) >= s.repetition_threshold * s.repetition_window:
                        # re-draw from the full distribution (VALL-E 2's repetition-aware sampling)
                        token = int(torch.multinomial(torch.softmax(masked[at + j], -1), 1, generator=p.row.generator))
                    p.tokens[k] = token
                at += len(p.free)
        for p in plans:
            if p.tokens[0] == cfg.eos and p.row.n_frames is None:
                p.row.n_frames = p.t
            p.row.steps.append(p.tokens)

    @staticmethod
    def _draw(logits: torch.Tensor, s: SamplingConfig, draws: list[tuple[torch.Generator, int]]) -> list[int]:
        """One token per row of logits [m, V]: greedy, or temperature + top-k + top-p sampling; `draws`
        says whose generator draws how many of the rows, in order.

        Written for few operators per call (this runs as often as the transformer): one `topk` gives the
        candidates already sorted for top-p, and the draw is one uniform per row looked up in the
        cumulative distribution (torch.multinomial costs ~0.15 ms a call on one CPU thread, more than all
        the rest together).
        """
        if s.temperature == 0:
            return logits.argmax(-1).tolist()
        n = min(s.top_k, logits.shape[-1]) if s.top_k else logits.shape[-1]
        values, candidates = torch.topk(logits / s.temperature, n, dim=-1)     # sorted, most likely first
        probs = torch.softmax(values, -1)
        if s.top_p < 1:   # the smallest head of the list whose mass reaches top_p
            probs = probs.masked_fill(probs.cumsum(-1) - probs > s.top_p, 0.0)
        cumulative = probs.cumsum(-1)
        uniform = torch.cat([torch.rand(count, 1, generator=g) for g, count in draws]) * cumulative[:, -1:]
        choice = torch.searchsorted(cumulative, uniform).clamp_max(n - 1)
        return candidates.gather(-1, choice)[:, 0].tolist()

    def _new_frames(self, row: _Row) -> list[torch.Tensor]:
        """Frames whose K codes are all known and not yet handed out."""
        k = self.cfg.n_codebooks
        ready = len(row.steps) - (k - 1)
        if row.n_frames is not None:
            ready = min(ready, row.n_frames)
        frames = []
        while row.emitted < ready:
            f = row.emitted
            frames.append(torch.tensor([row.steps[f + i][i] for i in range(k)]))
            row.emitted += 1
        return frames

    @torch.inference_mode()
    def step(self) -> dict[int, tuple[list[torch.Tensor], bool]]:
        """One transformer step for every active row: {row id: (new frames [K] each, finished)}."""
        live = [r for r in self.rows if not r.done]
        if live:
            device = self.cache.device
            owners = self._cache_rows()
            twins = [c > 0 and owners[c - 1] == i for c, i in enumerate(owners)]    # a guided row's second row
            last = [self.rows[i].steps[-1] for i in owners]                                 # [C][K]
            if self.cfg.read_pointer:
                last = [tokens + self._pointer(self.rows[i], twin) for i, twin, tokens in zip(owners, twins, last)]
            last = torch.tensor(last, device=device)                                        # [C, K (+ 3)]
            voices = self._voices(owners, twins)                                            # [C, d]
            if self.step_model.takes_tokens:
                logits, attention = self.step_model(last, self.cache, voices)    # [C, K (+ 1), V]
            else:
                logits, attention = self.step_model(self.model.embed_step(last, voices), self.cache)
            c, batch = 0, []
            for row in self.rows:
                if attention is not None and not row.reads:
                    row.follow(attention[c])
                row_logits = logits[c]
                if row.guided:
                    row_logits = self._guide(row_logits, logits[c + 1], row.request.sampling.guidance)
                c += 1 + row.guided
                if not row.done:
                    batch.append((row, row_logits))
            self._sample_and_move(batch)
        # Frames completed since the last call, including any the prefill's first sample completed.
        results = {row.id: (self._new_frames(row), row.done) for row in self.rows}
        self._drop_finished()
        return results


def generate_frames(model: Backbone, request: Request, quantized: bool = False,
                    onnx: bool = False) -> Iterator[torch.Tensor]:
    """Yield one request's frames ([K] codes each) as they are produced."""
    batch = BatchGenerator(model, quantized, onnx)
    row = batch.add(request)
    while batch.active:
        frames, _ = batch.step().get(row, ([], False))
        yield from frames


def generate_batch(model: Backbone, requests: list[Request], onnx: bool = False) -> list[torch.Tensor]:
    """Generate several requests together (float32 steps); returns codes [K, F] for each, in order."""
    batch = BatchGenerator(model, onnx=onnx)
    ids = [batch.add(r) for r in requests]
    out: dict[int, list[torch.Tensor]] = {i: [] for i in ids}
    while batch.active:
        for row, (frames, _) in batch.step().items():
            out[row] += frames
    k = model.config.n_codebooks
    return [torch.stack(out[i], 1) if out[i] else torch.zeros(k, 0, dtype=torch.long) for i in ids]
