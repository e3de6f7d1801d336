"""The backbone's transformer re-laid for one-token decoding steps, with a preallocated KV cache.

Written by hand because it makes the product faster: on this CPU a decoding
step through `transformers.LlamaModel` spends most of its time outside the
matrix products (mask building, cache concatenation, module dispatch), and
its dynamic cache grows by concatenation every step. Here the same weights
(read from the Llama state dict, so checkpoints stay standard) are fused into
three products per layer (QKV, gate+up, down) plus the output projection, and
each generator owns a `KVCache` allocated once and grown in steps of 64 positions. Prompts
are prefilled here too (`StepModel.prefill`, causal attention over the prompt), so inference
needs no `transformers` code at all (backbone/model.py's `LlamaWeights`).

`StepModel.quantized()` gives the same model with int8 dynamically quantised
linear layers (torch.ao), about a quarter faster again on one thread.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from backbone.model import RMS_NORM_EPS, ROPE_THETA


GROWTH = 64   # cache length grows in steps of this: ONNX Runtime's step attends over the whole allocated length


class KVCache:
    """Keys and values of every layer and row: [layers, rows, heads, length, head_dim], rows of different lengths.

    Row r's first `lengths[r]` entries are valid; a row's next position is its length. A layer's active
    rows are one contiguous block, which ONNX Runtime reads in place (backbone/onnx_step.py).
    Its tensors are inference tensors, so every method runs in inference mode.
    """

    @torch.inference_mode()
    def __init__(self, n_layers: int, n_heads: int, head_dim: int, device: torch.device,
                 rows: int = 1, length: int = GROWTH) -> None:
        self.device = device
        self.keys = torch.zeros(n_layers, rows, n_heads, length, head_dim, device=device)
        self.values = torch.zeros_like(self.keys)
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    def _grow(self, rows: int, length: int) -> None:
        layers, have_rows, heads, have_length, head_dim = self.keys.shape
        if rows <= have_rows and length <= have_length:
            return
        new_rows = max(rows, have_rows)
        new_length = max(have_length, -(-length // GROWTH) * GROWTH)
        for name in ("keys", "values"):
            grown = torch.zeros(layers, new_rows, heads, new_length, head_dim, device=self.device)
            grown[:, :have_rows, :, :have_length] = getattr(self, name)
            setattr(self, name, grown)

    @torch.inference_mode()
    def add_row(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Append a row from a prefilled prompt: per layer [heads, n, head_dim]."""
        n = keys[0].shape[1]
        r = self.rows
        self._grow(r + 1, n + 1)
        self.keys[:, r, :, :n] = torch.stack(keys)
        self.values[:, r, :, :n] = torch.stack(values)
        self.lengths = torch.cat([self.lengths, torch.tensor([n], device=self.device)])

    @torch.inference_mode()
    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order (finished or cancelled requests leave)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.keys[:, :len(rows)] = self.keys[:, index]
        self.values[:, :len(rows)] = self.values[:, index]
        self.lengths = self.lengths[index]

    @torch.inference_mode()
    def reserve_step(self) -> None:
        """Room for one more entry in every row."""
        self._grow(self.rows, int(self.lengths.max()) + 1)


class StepModel(nn.Module):
    """One decoding step for a batch of rows: audio-step embeddings [B, d] -> next-step logits [B, K, V]
    (a read-pointer model: [B, K + 1, V], see `logits`)."""

    takes_tokens = False    # it takes the step's embeddings (backbone/onnx_step.py's twin takes tokens)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        cfg = model.config
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.eps = RMS_NORM_EPS
        self.in_norm = nn.ParameterList()
        self.post_norm = nn.ParameterList()
        self.qkv, self.out, self.gate_up, self.down = (nn.ModuleList() for _ in range(4))
        with torch.no_grad():
            for layer in model.transformer.layers:
                att, mlp = layer.self_attn, layer.mlp
                self.in_norm.append(nn.Parameter(layer.input_layernorm.weight.detach().clone()))
                self.post_norm.append(nn.Parameter(layer.post_attention_layernorm.weight.detach().clone()))
                self.qkv.append(_fused([att.q_proj, att.k_proj, att.v_proj]))
                self.out.append(_fused([att.o_proj]))
                self.gate_up.append(_fused([mlp.gate_proj, mlp.up_proj]))
                self.down.append(_fused([mlp.down_proj]))
            self.final_norm = nn.Parameter(model.transformer.norm.weight.detach().clone())
            self.heads = copy.deepcopy(model.heads)
            self.advance = copy.deepcopy(model.advance_head) if cfg.read_pointer else None
        self.n_codebooks, self.audio_vocab = cfg.n_codebooks, cfg.audio_vocab
        self.align_layers, self.align_heads = set(cfg.align_layers), cfg.align_heads
        # Llama's default rotary embedding (LlamaRotaryEmbedding, rope_type "default": no scaling)
        inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)
        positions = torch.arange(cfg.max_positions, dtype=torch.float32)
        freqs = positions[:, None] * inv_freq[None]
        angles = torch.cat([freqs, freqs], -1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.to(model.text_emb.weight.device)
        self.eval()

    def extra_repr(self) -> str:   # settings that shape the exported graph (tts/graph_cache.py keys on it)
        return (f"heads={self.n_heads}, head_dim={self.head_dim}, eps={self.eps}, codebooks={self.n_codebooks}, "
                f"vocab={self.audio_vocab}, align={sorted(self.align_layers)}x{self.align_heads}, "
                f"pointer={0 if self.advance is None else self.advance.out_features}")

    def new_cache(self, rows: int = 1) -> KVCache:
        return KVCache(len(self.qkv), self.n_heads, self.head_dim, self.cos.device, rows)

    def quantized(self) -> "StepModel":
        """A copy whose linear layers are int8 (dynamic quantisation, CPU)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch marks its quantised tensor creation as deprecated
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(self).cpu(), {nn.Linear}, dtype=torch.qint8)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    def layer(self, i: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Layer i on one position per row, x [B, d] -> [B, d]. `attend(i, q, k, v)` (each [B, h, hd], rotated)
        returns the attention output, h * hd values per row: the PyTorch step and the ONNX Runtime graph
        (backbone/onnx_step.py) differ only in where the keys and values live."""
        b = x.shape[0]
        q, k, v = self.qkv[i](self._norm(x, self.in_norm[i])).view(b, 3, self.n_heads, self.head_dim).unbind(1)
        att = attend(i, self._rotate(q, cos, sin), self._rotate(k, cos, sin), v)
        x = x + self.out[i](att.reshape(b, -1))
        gate, up = self.gate_up[i](self._norm(x, self.post_norm[i])).chunk(2, -1)
        return x + self.down[i](F.silu(gate) * up)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden state [B, d] -> next-step logits [B, K, V]; a read-pointer model's are [B, K + 1, V],
        the last row its advance logits (padded with -inf): one output, so the ONNX graph and every caller
        of the step keep their shape of interface."""
        b = x.shape[0]
        x = self._norm(x, self.final_norm)
        logits = self.heads(x).view(b, self.n_codebooks, self.audio_vocab)
        if self.advance is None:
            return logits
        advance = self.advance(x)
        padding = torch.full((b, self.audio_vocab - advance.shape[1]), float("-inf"), device=x.device)
        return torch.cat([logits, torch.cat([advance, padding], 1)[:, None]], 1)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, d] for the B rows of `cache` (in order); appends each row's keys and values.

        Returns the next-step logits [B, K, V] and, for a model with alignment heads, their mean
        attention over each row's positions [B, L] (None otherwise).
        """
        b = x.shape[0]
        cache.reserve_step()
        positions = cache.lengths
        rows = torch.arange(b, device=x.device)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]      # [B, 1, hd]
        span = int(positions.max()) + 1
        visible = (torch.arange(span, device=x.device)[None] <= positions[:, None])[:, None, None]  # [B,1,1,L]
        alignment = torch.zeros(b, span, device=x.device) if self.align_layers else None

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            nonlocal alignment
            cache.keys[i, rows, :, positions] = k
            cache.values[i, rows, :, positions] = v
            keys, values = cache.keys[i, :b, :, :span], cache.values[i, :b, :, :span]
            if i in self.align_layers:
                alignment = alignment + self._attention(q[:, :self.align_heads], keys[:, :self.align_heads], visible)
            return F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=visible)

        for i in range(len(self.qkv)):
            x = self.layer(i, x, cos, sin, attend)
        cache.lengths = positions + 1
        if alignment is not None:
            alignment = alignment / (len(self.align_layers) * self.align_heads)
        return self.logits(x), alignment

    @torch.inference_mode()
    def prefill(self, prompt: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """A prompt's embeddings [n, d] through every layer, causal attention, into a new row of `cache`;
        returns the next step's logits [K, V]. The n positions go through `layer` as a batch of n."""
        n = prompt.shape[0]
        if n > self.cos.shape[0]:
            raise ValueError(f"prompt of {n} positions is longer than the model's {self.cos.shape[0]}")
        keys, values = [], []

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys.append(k.transpose(0, 1))          # [h, n, hd]
            values.append(v.transpose(0, 1))
            mixed = F.scaled_dot_product_attention(q.transpose(0, 1), keys[-1], values[-1], is_causal=True)
            return mixed.transpose(0, 1)

        x = prompt
        for i in range(len(self.qkv)):
            x = self.layer(i, x, self.cos[:n, None], self.sin[:n, None], attend)
        cache.add_row(keys, values)
        return self.logits(x[-1:])[0]

    def _attention(self, q: torch.Tensor, keys: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Attention weights of one query per row, summed over heads: q [B, h, hd], keys [B, h, L, hd] -> [B, L]."""
        scores = torch.einsum("bhd,bhld->bhl", q, keys) / self.head_dim ** 0.5
        return torch.softmax(scores.masked_fill(~visible[:, 0], float("-inf")), -1).sum(1)


def _fused(linears: list[nn.Linear]) -> nn.Linear:
    """One bias-free Linear computing the given ones side by side (outputs concatenated)."""
    weight = torch.cat([m.weight.detach() for m in linears])
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device)
    fused.weight.copy_(weight)
    return fused
