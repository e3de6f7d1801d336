"""The one place where codec checkpoints are saved and loaded.

Shipped models are safetensors files (weights only, no pickle) whose metadata
holds the config JSON, a model id and the training step, so loading needs
only the file. Training checkpoints (with optimiser state) use torch.save and
are loaded with weights_only=True.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from codec.config import CodecConfig
from codec.model import CodecModel

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CODEC = ASSETS / "codec.safetensors"
# Training-only buffers of the EMA codebooks: not shipped, rebuilt when training restarts.
EMA_SUFFIXES = (".cluster_size", ".embed_avg", ".initialized")


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not a codec model."""


def model_id_of(state: dict[str, torch.Tensor]) -> str:
    """Short content hash of the weights: streams record it to detect a model mismatch."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _inference_state(model: CodecModel, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights needed at inference, in `dtype`: EMA statistics of the codebooks are dropped."""
    keep = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(EMA_SUFFIXES):
            continue
        keep[name] = tensor.detach().to(dtype).contiguous().clone()
    return keep


def save_codec(model: CodecModel, path: str | Path, step: int = 0, extra: dict | None = None,
               dtype: torch.dtype = torch.float16) -> str:
    """Write a shipped-model file; returns the model id.

    Weights are stored in float16 by default (half the size: the codebooks alone
    are 24 x 1024 x 128 values) and computed in float32 after loading, because
    bf16/fp16 arithmetic is many times slower than fp32 on CPUs without AVX-512.
    """
    state = _inference_state(model, dtype)
    model_id = model_id_of(state)
    meta = {"config": json.dumps(model.config.to_dict()), "model_id": model_id, "step": str(step),
            "kind": "codec", "extra": json.dumps(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return model_id


def read_codec_file(path: str | Path) -> tuple[CodecConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, float32 weights, metadata) of a codec model file, without building the model.

    Raises:
        ModelFileError: the file is missing or is not a codec model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"codec model not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("kind") != "codec":
            raise ModelFileError(f"{path} is not a codec model file")
        config = CodecConfig.from_dict(json.loads(meta["config"]))
        state = {k: v.float() for k, v in load_file(str(path)).items()}
    except (OSError, json.JSONDecodeError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelFileError(f"cannot read codec model {path}: {exc}") from exc
    return config, state, meta


def load_weights(model: CodecModel, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load shipped weights into `model`; the codebooks' EMA buffers may be absent (they are not shipped).

    Raises:
        ModelFileError: the weights do not fit the model.
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(EMA_SUFFIXES)]
    if missing or unexpected:
        raise ModelFileError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for layer in model.quantizer.layers:
        layer.initialized.fill_(True)


def load_codec(path: str | Path | None = None, device: str = "cpu") -> CodecModel:
    """Load a codec model file (the shipped one by default) in eval mode, weight norm folded.

    Raises:
        ModelFileError: the file is missing or is not a codec model.
    """
    path = Path(path) if path is not None else DEFAULT_CODEC
    config, state, meta = read_codec_file(path)
    model = CodecModel(config)
    folded = not any(".parametrizations." in name for name in state)
    if folded:
        model.remove_weight_norm()
    load_weights(model, state, path)
    if not folded:
        model.remove_weight_norm()  # inference never needs the re-parametrisation
    model.model_id = meta.get("model_id", "unknown")
    model.train_step = int(meta.get("step", 0))
    return model.to(device).eval()
