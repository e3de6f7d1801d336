"""The backbone's decoding step on ONNX Runtime: the step model's logits at a fraction of the cost per call.

Why: a decoding step of the shipped backbone is about two hundred small operators, and on one CPU thread
PyTorch spends nearly all of a step dispatching them (about 4.4 ms with int8 linears, of which ~0.2 ms
is arithmetic; measured). ONNX Runtime runs the same graph with little cost per operator. We use the
library rather than writing fused kernels by hand.

The step is exported once per model, in memory, from `backbone.fast.StepModel` (its fused weights), as a
pure function: (last tokens, positions, the KV cache) -> (logits, alignment, this step's keys and values).
The cache stays in the generator's `KVCache`, read in place (its active rows are one contiguous block);
the new keys and values are written into it here, so the graph never copies the cache.

Attention reads the whole allocated cache length with positions at or past a row's length masked, plus
the step's own key, so one graph serves every length and batch size.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from backbone.fast import KVCache, StepModel
from backbone.model import step_embedding
from codec.onnx_runtime import export_session


class _StepGraph(nn.Module):
    """(tokens [B, K] (a read-pointer model: [B, K + 3], the pointer's ids after the codes), each row's voice
    [B, d] (`Backbone.step_voice`), positions [B], then per layer its keys and values [B, h, T, hd])
    -> (logits [B, K (+ 1), V], alignment [B, T], new keys, new values [L, B, h, hd])."""

    def __init__(self, step: StepModel, model: nn.Module) -> None:
        super().__init__()
        self.step = step
        self.audio_emb = model.audio_emb
        self.register_buffer("stream_offset", model.stream_offset.clone())
        self.pointer_emb = getattr(model, "pointer_emb", None)     # a read-pointer model: tokens [B, K + 3]
        self.register_buffer("pointer_offset", None if self.pointer_emb is None else model.pointer_offset.clone())

    def forward(self, tokens: torch.Tensor, voices: torch.Tensor, positions: torch.Tensor,
                *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.step
        b, length = tokens.shape[0], cache[0].shape[2]
        x = step_embedding(tokens, self.audio_emb, self.stream_offset, self.pointer_emb, self.pointer_offset)
        x = x + voices                                                              # [B, d]
        cos, sin = s.cos[positions][:, None], s.sin[positions][:, None]               # [B, 1, hd]
        slots = torch.arange(length)[None]                                          # [1, T]
        mask = torch.zeros(b, length).masked_fill(slots >= positions[:, None], float("-inf"))[:, None]  # [B, 1, T]
        scale = s.head_dim ** -0.5
        alignment = torch.zeros(b, length)
        new_keys, new_values = [], []

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            nonlocal alignment
            past_k, past_v = cache[2 * i], cache[2 * i + 1]                          # [B, h, T, hd]
            scores = torch.cat([torch.matmul(past_k, q[..., None])[..., 0] * scale + mask,
                                (q * k).sum(-1, keepdim=True) * scale], -1)           # [B, h, T + 1]
            weights = torch.softmax(scores, -1)
            if i in s.align_layers:   # the step's own weight sits at its position, as in StepModel
                own = weights[:, :s.align_heads, -1].sum(1, keepdim=True)
                alignment = alignment + weights[:, :s.align_heads, :-1].sum(1) + (slots == positions[:, None]) * own
            new_keys.append(k)
            new_values.append(v)
            return torch.matmul(weights[:, :, None, :-1], past_v)[:, :, 0] + weights[..., -1:] * v

        for i in range(len(s.qkv)):
            x = s.layer(i, x, cos, sin, attend)
        if s.align_layers:
            alignment = alignment / (len(s.align_layers) * s.align_heads)
        return s.logits(x), alignment, torch.stack(new_keys), torch.stack(new_values)


class OnnxStepModel:
    """`StepModel`'s interface (new_cache, __call__) on an ONNX Runtime session, CPU.

    Takes the last step's tokens [B, K] rather than their embeddings: the embedding sum is in the graph.
    `quantized`: the weight products in int8 (ONNX Runtime's dynamic quantisation; activations are scaled
    per call, as in `StepModel.quantized`, so a row's output then depends on the rows beside it).
    """

    takes_tokens = True

    def __init__(self, model: nn.Module, quantized: bool = False, threads: int = 1) -> None:
        if model.audio_emb.weight.device.type != "cpu":   # tracing would move the model's own modules
            raise ValueError("ONNX Runtime steps run on the CPU: load the backbone there")
        self.step = model.step_model()   # the float32 step model, the generator's prefill uses it too
        cfg = model.config
        graph = _StepGraph(self.step, model).eval()
        cache = self.step.new_cache(2)
        layers = [t for i in range(cfg.n_layers) for t in (cache.keys[i], cache.values[i])]
        width = cfg.n_codebooks + (3 if cfg.read_pointer else 0)
        example = (torch.zeros(2, width, dtype=torch.long), torch.zeros(2, cfg.d_model), torch.tensor([3, 5]), *layers)
        dynamic = {"in0": {0: "rows"}, "in1": {0: "rows"}, "in2": {0: "rows"},
                   **{f"in{3 + j}": {0: "rows", 2: "length"} for j in range(len(layers))}}
        self.session = export_session(graph, example, dynamic, 4, threads, _int8_weights if quantized else None)
        self.align_layers = self.step.align_layers
        self.d_model = cfg.d_model

    def new_cache(self, rows: int = 1) -> KVCache:
        return self.step.new_cache(rows)

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, cache: KVCache,
                 voices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens [B, K] (read pointer: [B, K + 3]) for the B rows of `cache` (in order), with each row's
        `Backbone.step_voice` [B, d] (None: zeros); appends each row's keys and values.

        Returns the next-step logits [B, K, V] and, with alignment heads, their mean attention [B, L].
        """
        b = tokens.shape[0]
        cache.reserve_step()
        positions = cache.lengths
        if voices is None:
            voices = torch.zeros(b, self.d_model)
        feed = {"in0": tokens.numpy(), "in1": voices.float().contiguous().numpy(), "in2": positions.numpy()}
        for i in range(cache.keys.shape[0]):
            feed[f"in{3 + 2 * i}"] = cache.keys[i, :b].numpy()       # contiguous: read in place
            feed[f"in{4 + 2 * i}"] = cache.values[i, :b].numpy()
        logits, alignment, new_keys, new_values = self.session.run(None, feed)
        rows = torch.arange(b)
        cache.keys[:, rows, :, positions] = torch.from_numpy(new_keys).transpose(0, 1)
        cache.values[:, rows, :, positions] = torch.from_numpy(new_values).transpose(0, 1)
        cache.lengths = positions + 1
        span = int(positions.max()) + 1
        return (torch.from_numpy(logits),
                torch.from_numpy(alignment[:, :span]) if self.align_layers else None)


def _int8_weights(onnx_model: bytes) -> bytes:
    """The model with its weight products (MatMul, Gemm with a constant operand) in int8.

    Products of two activations (attention scores and mixing) stay float32: quantising both operands
    per call costs accuracy for no speed at these sizes.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load_from_string(onnx_model).graph
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    between_activations = [n.name for n in graph.node
                           if n.op_type == "MatMul" and not any(i in constants for i in n.input)]
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "step.onnx"), Path(folder, "step.int8.onnx")
        source.write_bytes(onnx_model)
        logging.disable(logging.WARNING)   # its advice to pre-process, meant for image models
        try:
            # 7-bit weights (reduce_range): x86 without VNNI sums u8 x s8 products in saturating int16, which
            # full-range weights overflow (logits 40 % off on a test model; 1.4 % with it), per channel.
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                             nodes_to_exclude=between_activations, per_channel=True, reduce_range=True)
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()

