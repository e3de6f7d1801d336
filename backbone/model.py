"""The backbone: a Llama-style decoder (transformers' LlamaModel) over speaker, text and audio.

One sequence per utterance:

    [speaker] [text tokens ...] [BOS] [audio step 1] ... [audio step F + K - 1]

The speaker embedding (from voice/) is projected to one prefix vector; text
tokens have their own table; an audio step's input is the sum of its K
delayed codebook embeddings (backbone/delay.py), and K linear heads predict
the next step's K codes. The transformer itself is `transformers.LlamaModel`,
so weights are a standard Llama state dict under `transformer.`.

A model with a read pointer (`BackboneConfig.read_pointer`, session 17) also knows, at every
audio step, which text token it is speaking: the step's input adds embeddings of that token,
the next one and how many frames the pointer has dwelt on it, and an advance head predicts how
many tokens the pointer moves before the next frame. Training takes the pointer from the CTC
aligner's token starts (backbone/aligner.py); generation moves it by sampling the advance head.
Why: a small model on a CPU budget never learnt to find its place in the text by attention
alone (sessions 13-16: output in the right voice, not the right words); given its place, it
only has to learn what a token sounds like, and EOS, truncation and run-on follow the pointer.

A model with `BackboneConfig.speaker_steps` (session 28) also adds a projection of the speaker
embedding to every audio step's input (BOS included; `Backbone.step_voice`), rather than only
offering it as the first position to attend to: new voices came out pulled towards the training
voices (closest to their own reference 43 % of the time, the codec's round trip 63 %). The
projection starts at zero, so a model gaining it starts from what it could already do.

Inference never runs LlamaModel (backbone/fast.py steps and prefills the same
weights faster), so a backbone loaded for inference holds the weights in
`LlamaWeights`, a container with LlamaModel's names and no code: the engine
then never imports transformers, which took about 3 s of a `tts say` start.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from backbone.delay import delay, loss_mask
from tts.modelfile import ASSETS, load_model_file, save_model_file

DEFAULT_BACKBONE = ASSETS / "backbone.safetensors"
KIND = "backbone"
RMS_NORM_EPS = 1e-5      # the transformer's settings that are not in BackboneConfig (LlamaConfig's defaults)
ROPE_THETA = 10000.0


@dataclass
class BackboneConfig:
    text_vocab: int = 384
    n_codebooks: int = 4            # first K quantizers of the codec
    card: int = 1024                # codes per codebook
    frame_rate: float = 25.0
    speaker_dim: int = 192
    d_model: int = 384
    n_layers: int = 6
    n_heads: int = 6
    ffn: int = 1024
    max_positions: int = 2048
    dropout: float = 0.0
    codec_id: str = ""              # the codec whose tokens this model speaks
    tokenizer_id: str = ""
    encoder_id: str = ""            # the speaker encoder whose embeddings condition it
    align_layers: tuple[int, ...] = ()   # layers whose first `align_heads` heads were trained to align
    align_heads: int = 0                 # (AlignmentGuide); inference reads them to place EOS
    unconditional: bool = False          # also trained without text and speaker: guidance is available
    read_pointer: int = 0                # > 0: the model follows a read pointer over its text (module doc);
                                         # its advance head has this many classes (0 .. n-1 tokens per frame)
    speaker_steps: bool = False          # the speaker is also added to every audio step's input (module doc)

    @property
    def pad(self) -> int:
        return self.card

    @property
    def bos(self) -> int:
        return self.card + 1

    @property
    def eos(self) -> int:
        return self.card + 2

    @property
    def audio_vocab(self) -> int:
        return self.card + 3

    @property
    def no_token(self) -> int:
        """The pointer's text id for "no token" (past the end, or an example without text)."""
        return self.text_vocab

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BackboneConfig":
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown backbone config keys {sorted(set(data) - known)}")
        data = dict(data)
        data["align_layers"] = tuple(data.get("align_layers", ()))
        return cls(**data)

    def llama(self):
        """The transformers.LlamaConfig of this model's transformer."""
        from transformers import LlamaConfig   # imported here: inference does without it (module doc)

        return LlamaConfig(hidden_size=self.d_model, intermediate_size=self.ffn, num_hidden_layers=self.n_layers,
                           num_attention_heads=self.n_heads, num_key_value_heads=self.n_heads,
                           max_position_embeddings=self.max_positions, vocab_size=1, attention_dropout=self.dropout,
                           rms_norm_eps=RMS_NORM_EPS, tie_word_embeddings=False, bos_token_id=None,
                           eos_token_id=None, pad_token_id=None)


class _Norm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class _Linears(nn.Module):
    """Bias-free linear layers by name: {name: (out, in)}."""

    def __init__(self, shapes: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        for name, (n_out, n_in) in shapes.items():
            self.add_module(name, nn.Linear(n_in, n_out, bias=False))


class LlamaWeights(nn.Module):
    """The parameters of a `transformers.LlamaModel` under the same names, without its code (module doc)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        d, ffn = config.d_model, config.ffn
        self.layers = nn.ModuleList()
        for _ in range(config.n_layers):
            layer = nn.Module()
            layer.self_attn = _Linears({name: (d, d) for name in ("q_proj", "k_proj", "v_proj", "o_proj")})
            layer.mlp = _Linears({"gate_proj": (ffn, d), "up_proj": (ffn, d), "down_proj": (d, ffn)})
            layer.input_layernorm, layer.post_attention_layernorm = _Norm(d), _Norm(d)
            self.layers.append(layer)
        self.norm = _Norm(d)


class Backbone(nn.Module):
    """Speaker, text and audio embeddings, the transformer and the K heads (module doc).

    `inference_only`: the transformer's weights without transformers' code (`LlamaWeights`), for the
    step models of backbone/fast.py; such a model generates but cannot train.
    """

    def __init__(self, config: BackboneConfig, inference_only: bool = False) -> None:
        super().__init__()
        self.config = config
        d, k = config.d_model, config.n_codebooks
        self.speaker_proj = nn.Linear(config.speaker_dim, d)
        self.text_emb = nn.Embedding(config.text_vocab, d)
        self.audio_emb = nn.Embedding(k * config.audio_vocab, d)   # stream k uses rows k*V .. (k+1)*V - 1
        self.inference_only = inference_only
        if inference_only:
            self.transformer = LlamaWeights(config)
        else:
            from transformers import LlamaModel

            self.transformer = LlamaModel(config.llama())
            self.transformer.embed_tokens = None  # inputs are always embeddings
        self.heads = nn.Linear(d, k * config.audio_vocab)
        self.register_buffer("stream_offset", torch.arange(k) * config.audio_vocab, persistent=False)
        if config.read_pointer:
            # one table, three streams (as audio_emb): the token spoken now, the next one, frames dwelt on it
            self.pointer_emb = nn.Embedding(2 * (config.text_vocab + 1) + DWELL_FRAMES, d)
            offsets = torch.tensor([0, config.text_vocab + 1, 2 * (config.text_vocab + 1)])
            self.register_buffer("pointer_offset", offsets, persistent=False)
            self.advance_head = nn.Linear(d, config.read_pointer)
        if config.speaker_steps:
            self.speaker_step = nn.Linear(config.speaker_dim, d, bias=False)   # no bias: a zero speaker adds 0
            nn.init.zeros_(self.speaker_step.weight)
        self.model_id = "untrained"
        self._step_models: dict[tuple[bool, bool], object] = {}   # plain dict: not submodules, not in the state dict

    def step_model(self, quantized: bool = False, onnx: bool = False):
        """The inference twin for decoding steps, built once per loaded model and kind: backbone/fast.py's
        `StepModel` (`quantized`: int8 linears), or with `onnx` backbone/onnx_step.py's ONNX Runtime session.

        It copies the weights: after further training call `train()`/`eval()`, which drops it.
        """
        key = (quantized, onnx)
        if key not in self._step_models:
            from backbone.fast import StepModel
            from backbone.onnx_step import OnnxStepModel

            if onnx:
                self._step_models[key] = OnnxStepModel(self, quantized)
            else:
                self._step_models[key] = self.step_model().quantized() if quantized else StepModel(self)
        return self._step_models[key]

    def train(self, mode: bool = True) -> "Backbone":
        self._step_models.clear()
        return super().train(mode)

    # ------------------------------------------------------------ embeddings

    def embed_audio(self, steps: torch.Tensor) -> torch.Tensor:
        """steps [B, K, S] delayed tokens -> [B, S, d] (sum over the K streams)."""
        return self.audio_emb(steps + self.stream_offset[None, :, None]).sum(1)

    def embed_pointer(self, pointer: torch.Tensor) -> torch.Tensor:
        """pointer [..., 3] ids (token now, next token, dwell; `pointer_ids`) -> [..., d]."""
        return self.pointer_emb(pointer + self.pointer_offset).sum(-2)

    def step_voice(self, speaker: torch.Tensor) -> torch.Tensor:
        """speaker [B, speaker_dim] -> [B, d], what every audio step's input adds for that voice (zeros for a
        model without `speaker_steps`, and for the zero speaker of an unconditional row)."""
        if not self.config.speaker_steps:
            return speaker.new_zeros(speaker.shape[0], self.config.d_model)
        return self.speaker_step(speaker)

    def embed_step(self, tokens: torch.Tensor, voices: torch.Tensor | None = None) -> torch.Tensor:
        """One decoding step's input: tokens [B, K] (a read-pointer model: [B, K + 3], the pointer's ids
        after the codes), each row's `step_voice` [B, d] (None: none) -> [B, d]."""
        pointer = self.config.read_pointer
        x = step_embedding(tokens, self.audio_emb, self.stream_offset, self.pointer_emb if pointer else None,
                           self.pointer_offset if pointer else None)
        return x if voices is None else x + voices

    def embed_prompt(self, speaker: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """speaker [B, speaker_dim], text_ids [B, T] -> [B, 1 + T + 1, d]: speaker, text, BOS (with a read
        pointer, BOS also carries the pointer at the first token: it predicts frame 0; BOS is an audio step,
        so it carries `step_voice` too)."""
        b = text_ids.shape[0]
        bos = torch.full((b, self.config.n_codebooks, 1), self.config.bos, device=text_ids.device)
        bos = self.embed_audio(bos) + self.step_voice(speaker)[:, None]
        if self.config.read_pointer:
            first = torch.zeros(1, dtype=torch.long, device=text_ids.device)     # token 0, dwelt 0 frames
            bos = bos + torch.stack([self.embed_pointer(pointer_ids(t, first, first, self.config.no_token))
                                     for t in text_ids])
        return torch.cat([self.speaker_proj(speaker)[:, None], self.text_emb(text_ids), bos], 1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, S, d] -> logits [B, K, S, audio_vocab]."""
        b, s, _ = hidden.shape
        return self.heads(hidden).view(b, s, self.config.n_codebooks, self.config.audio_vocab).transpose(1, 2)

    # ------------------------------------------------------------ training

    def forward(self, speaker: torch.Tensor, text: list[torch.Tensor], codes: list[torch.Tensor],
                guide: "AlignmentGuide | None" = None, token_starts: list[torch.Tensor] | None = None) -> dict:
        """Teacher-forced loss over a batch of utterances.

        Args:
            speaker: [B, speaker_dim] embeddings; text: B token-id tensors; codes: B tensors [K, F].
            guide: when given, some heads are pulled towards a monotonic text alignment (see AlignmentGuide).
            token_starts: B tensors [N], the frame where each text token starts: the guide's band then
                follows them rather than the diagonal, and a ReadingHead (`self.reading`) learns from them.
                A read-pointer model needs them (its pointer and advance targets come from them).
        Returns:
            {"loss", "codes", "accuracy", "per_codebook", "alignment", "reading", "advance"}: "codes" is the
            cross-entropy over every code and EOS; "loss" adds to it the guide's penalty (0 without a guide),
            when the model has a ReadingHead and token_starts are given its loss ("reading", else None), and
            a read-pointer model's advance cross-entropy ("advance", else None), all already added to "loss"
            (the first two with weights).
        """
        if self.inference_only:
            raise RuntimeError("this backbone was loaded for inference only; load it with load_backbone(path)")
        cfg, device = self.config, speaker.device
        if cfg.read_pointer and token_starts is None:
            raise ValueError("a read-pointer backbone trains on token starts (tts train align)")
        rows, targets, masks, pointers = [], [], [], []
        for i in range(len(text)):
            steps = delay(codes[i].to(device), cfg.pad, cfg.eos)                  # [K, S]
            prompt = self.embed_prompt(speaker[i:i + 1], text[i].to(device)[None])[0]
            # step t's input: step t-1's tokens (and the voice, with speaker_steps)
            audio_in = self.embed_audio(steps[None, :, :-1])[0] + self.step_voice(speaker[i:i + 1])
            if cfg.read_pointer:   # query q (BOS is query 0) predicts frame q: it carries frame q's pointer
                position = spoken_tokens(token_starts[i].to(device), steps.shape[1])
                position[0] = 0                                          # generation starts there
                pointer = pointer_ids(text[i].to(device), position, dwell_frames(position), cfg.no_token)
                audio_in = audio_in + self.embed_pointer(pointer[1:])   # (BOS has frame 0's from embed_prompt)
                pointers.append(position)
            rows.append(torch.cat([prompt, audio_in]))
            targets.append(steps)
            masks.append(loss_mask(codes[i].shape[1], cfg.n_codebooks, device))
        lengths = [r.shape[0] for r in rows]
        longest = max(lengths)
        x = torch.stack([F.pad(r, (0, 0, 0, longest - r.shape[0])) for r in rows])
        attention = torch.tensor([[1] * n + [0] * (longest - n) for n in lengths], device=device)
        out = self.transformer(inputs_embeds=x, attention_mask=attention, output_attentions=guide is not None)
        hidden = out.last_hidden_state
        reading = self._reading_loss(hidden, text, codes, token_starts, lengths, [s.shape[1] for s in targets])
        losses, correct, count = [], 0, 0
        per_codebook = torch.zeros(cfg.n_codebooks, device=device)
        for i, steps in enumerate(targets):
            s = steps.shape[1]
            start = lengths[i] - s                                               # position of BOS
            logits = self.logits(hidden[i:i + 1, start:start + s])[0]            # [K, S, V]
            m = masks[i]
            picked = logits[m]                                                   # stream-major: stream 0 first
            ce = F.cross_entropy(picked, steps[m], reduction="none")
            losses.append(ce)
            correct += (picked.argmax(-1) == steps[m]).sum().item()
            count += int(m.sum())
            per_codebook += torch.stack([part.mean() for part in ce.detach().split(m.sum(1).tolist())])
        loss = codes_loss = torch.cat(losses).mean()
        advance = self._advance_loss(hidden, text, codes, pointers, lengths, [s.shape[1] for s in targets])
        if advance is not None:
            loss = loss + advance
        alignment = torch.zeros((), device=device)
        if guide is not None:
            text_lengths = [len(t) for t in text]
            alignment = guide.penalty(out.attentions, text_lengths, [s.shape[1] for s in targets], lengths,
                                      token_starts)
            loss = loss + guide.weight * alignment
        if reading is not None:
            loss = loss + self.reading.weight * reading
        return {"loss": loss, "codes": codes_loss.detach(), "accuracy": correct / max(1, count),
                "per_codebook": per_codebook / len(targets),
                "alignment": alignment.detach(), "reading": reading.detach() if reading is not None else None,
                "advance": advance.detach() if advance is not None else None}

    def _advance_loss(self, hidden: torch.Tensor, text: list[torch.Tensor], codes: list[torch.Tensor],
                      pointers: list[torch.Tensor], lengths: list[int], steps: list[int]) -> torch.Tensor | None:
        """A read-pointer model's advance cross-entropy: at the query of frame q (q < F - 1), how many tokens
        the pointer moves before frame q + 1 (None without a pointer)."""
        if not pointers:
            return None
        logits, targets = [], []
        for i, position in enumerate(pointers):
            n_frames = codes[i].shape[1]
            if not len(text[i]) or n_frames < 2:
                continue
            start = lengths[i] - steps[i]
            logits.append(self.advance_head(hidden[i, start:start + n_frames - 1]))
            targets.append((position[1:n_frames] - position[:n_frames - 1]).clamp(max=self.config.read_pointer - 1))
        if not logits:   # no example has text: 0, with the head still in the graph (DDP reduces every weight)
            return self.advance_head(hidden[:0, 0]).sum()
        return F.cross_entropy(torch.cat(logits), torch.cat(targets))

    def _reading_loss(self, hidden: torch.Tensor, text: list[torch.Tensor], codes: list[torch.Tensor],
                      token_starts: list[torch.Tensor] | None, lengths: list[int],
                      steps: list[int]) -> torch.Tensor | None:
        """The ReadingHead's loss over the examples that have text (None without the head or token starts)."""
        if getattr(self, "reading", None) is None or token_starts is None:
            return None
        device = hidden.device
        parts = [self.reading.loss(hidden[i, lengths[i] - steps[i]:lengths[i] - steps[i] + codes[i].shape[1]],
                                   text[i].to(device), token_starts[i].to(device))
                 for i in range(len(text)) if len(text[i])]
        return torch.stack(parts).mean() if parts else self.reading.proj(hidden[:0, 0]).sum()  # see _advance_loss


def spoken_tokens(starts: torch.Tensor, steps: int) -> torch.Tensor:
    """[steps]: the text token being spoken at frames 0 .. steps-1, from each token's first frame (before the
    first token: token 0; after the last frame: the last token). Audio query q predicts frame q of codebook 0."""
    frames = torch.arange(steps, device=starts.device)
    return (torch.searchsorted(starts, frames, right=True) - 1).clamp(min=0)


DWELL_FRAMES = 16   # a read pointer's dwell embedding counts 0 .. 15 frames on its token (then stays at 15)


def dwell_frames(position: torch.Tensor) -> torch.Tensor:
    """[S] frames the pointer has stayed on its token at each frame (0 where it just moved), from [S] positions."""
    frames = torch.arange(len(position), device=position.device)
    moved = torch.ones_like(position, dtype=torch.bool)
    moved[1:] = position[1:] != position[:-1]
    return frames - torch.cummax(torch.where(moved, frames, 0), 0).values


def step_embedding(tokens: torch.Tensor, audio_emb: nn.Embedding, stream_offset: torch.Tensor,
                   pointer_emb: nn.Embedding | None, pointer_offset: torch.Tensor | None) -> torch.Tensor:
    """tokens [B, K] (with a pointer table: [B, K + 3], the pointer's ids after the codes) -> [B, d].

    A function of the tables rather than a method so the ONNX step graph, which holds only the
    tables, embeds a step exactly as `Backbone.embed_step` does.
    """
    k = len(stream_offset)
    x = audio_emb(tokens[:, :k] + stream_offset[None]).sum(1)
    return x if pointer_emb is None else x + pointer_emb(tokens[:, k:] + pointer_offset[None]).sum(1)


def pointer_ids(text: torch.Tensor, position: torch.Tensor, dwell: torch.Tensor, no_token: int) -> torch.Tensor:
    """[S, 3] ids of a read pointer (the token spoken, the next one, the dwell) for text ids [N] and
    positions, dwells [S]. Past the end, or with no text, a token is `no_token`."""
    n = len(text)
    if n == 0:
        none = torch.full_like(position, no_token)
        return torch.stack([none, none, dwell.clamp(max=DWELL_FRAMES - 1)], -1)
    now = text[position.clamp(max=n - 1)]
    after = torch.where(position + 1 < n, text[(position + 1).clamp(max=n - 1)], no_token)
    return torch.stack([now, after, dwell.clamp(max=DWELL_FRAMES - 1)], -1)


class ReadingHead(nn.Module):
    """Training only: from each audio step's last hidden state, name the text token its frame speaks.

    The backbone predicts most of a frame's codes from the frames before it (speech
    changes slowly at 25 frames a second), so the codes alone reward reading the text
    only at phoneme changes: the session-15 model did almost as well with another
    sentence's text. This loss asks every step's state to hold what is being said,
    which it can only learn by reading the text at the right place (the targets
    come from the aligner's token starts). Its weights are dropped on export
    (`TRAINING_ONLY`): generation never uses it.
    """

    def __init__(self, d_model: int, text_vocab: int, weight: float) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, text_vocab)
        self.weight = weight

    def loss(self, hidden: torch.Tensor, text: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """hidden [F, d] (the queries that predict frames 0 .. F-1), text ids [N], token starts [N] -> mean CE."""
        return F.cross_entropy(self.proj(hidden), text[spoken_tokens(starts, hidden.shape[0])])


TRAINING_ONLY = ("reading.",)   # state-dict prefixes of modules a backbone file does not keep


def backbone_weights(state: dict) -> dict:
    """A state dict without the training-only modules (ReadingHead)."""
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}


@dataclass(frozen=True)
class AlignmentGuide:
    """Guided attention (Tachibana et al. 2017, DCTTS) for a decoder-only model: a training-only loss.

    A text-to-speech model must learn which text a frame speaks; left alone, a
    small decoder-only model on a CPU budget takes tens of thousands of steps to
    find that alignment and babbles until it does. Here the first `heads` heads
    of the layers `layers` are alignment heads: at audio step s of S, their
    attention on text token n of N costs 1 - exp(-(n/N - s/S)^2 / (2 sigma^2)),
    and attention outside the text costs 1. The penalty only shapes training;
    inference is unchanged (and needs no duration).

    With `token_starts` (the frame where each text token starts, found by
    backbone/aligner.py) the band follows the real alignment instead of the
    diagonal: at the query that predicts frame f, text token n costs
    1 - exp(-(n - c)^2 / (2 token_sigma^2)), c the token spoken at frame f.
    """

    weight: float = 1.0
    sigma: float = 0.2
    layers: tuple[int, ...] = (1, 2)
    heads: int = 2
    token_sigma: float = 1.0

    def cost(self, n: int, s: int, starts: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """[S, N]: what each audio query pays per unit of attention on each text token."""
        grid_n = torch.arange(n, device=device, dtype=torch.float32)[None]
        if starts is None:
            grid_s = torch.arange(s, device=device, dtype=torch.float32)[:, None] / s
            return 1 - torch.exp(-(((grid_n + 0.5) / n - grid_s) ** 2) / (2 * self.sigma ** 2))
        spoken = spoken_tokens(starts.to(device), s)
        return 1 - torch.exp(-((grid_n - spoken[:, None].float()) ** 2) / (2 * self.token_sigma ** 2))

    def penalty(self, attentions: tuple[torch.Tensor, ...], text_lengths: list[int], audio_steps: list[int],
                row_lengths: list[int], token_starts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """attentions: per layer [B, H, L, L]; row layout [speaker, text (N), BOS + audio (S)] then padding."""
        total = []
        for i, (n, s) in enumerate(zip(text_lengths, audio_steps)):
            if n == 0:
                continue                                   # an unconditional example has nothing to align
            start = row_lengths[i] - s                     # BOS: the first audio query
            cost = self.cost(n, s, None if token_starts is None else token_starts[i], attentions[0].device)
            for layer in self.layers:
                a = attentions[layer][i, :self.heads, start:start + s, 1:1 + n]              # [h, S, N]
                total.append(((a * cost).sum(-1) + (1 - a.sum(-1))).mean())
        return torch.stack(total).mean() if total else torch.zeros((), device=attentions[0].device)


def save_backbone(model: Backbone, path: str | Path, step: int = 0, extra: dict | None = None) -> str:
    return save_model_file(path, backbone_weights(model.state_dict()), KIND, model.config.to_dict(), step, extra)


def load_backbone(path: str | Path | None = None, inference_only: bool = False) -> Backbone:
    """Load a backbone file (the shipped one by default), eval mode, float32; `inference_only`: without
    transformers' LlamaModel (see `Backbone`).

    Raises:
        ModelFileError: missing, not a backbone, or weights that do not fit.
    """
    path = Path(path) if path is not None else DEFAULT_BACKBONE
    model, meta = load_model_file(path, KIND,
                                  lambda config: Backbone(BackboneConfig.from_dict(config), inference_only))
    model.train_step = int(meta.get("step", 0))
    return model
