"""Shipped model files: safetensors weights with the config in the metadata.

One format for every model of the product (codec, speaker encoder, backbone):
weights only (no pickle, so a file can never run code), the config JSON, a
`kind` so one model's file is never loaded as another's, a content-hash model
id and the training step. Loading needs only the file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or holds another kind of model."""


def model_id_of(state: dict[str, torch.Tensor], config: dict) -> str:
    """Short content hash of the weights and config: streams and voices record it to detect a model change.

    The config counts because it can change outputs with the same weights (a speaker
    encoder's window length moves every embedding), and a stored voice must then be stale.
    """
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_model_file(path: str | Path, state: dict[str, torch.Tensor], kind: str, config: dict,
                    step: int = 0, extra: dict | None = None, dtype: torch.dtype = torch.float16) -> str:
    """Write weights (cast to `dtype`) and metadata atomically; returns the model id.

    float16 storage halves the file; models compute in float32 after loading,
    because half-precision arithmetic is many times slower on CPUs without AVX-512.
    """
    state = {k: v.detach().to(dtype).contiguous().clone() for k, v in state.items()}
    model_id = model_id_of(state, config)
    meta = {"config": json.dumps(config), "model_id": model_id, "step": str(step), "kind": kind,
            "extra": json.dumps(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return model_id


def read_model_file(path: str | Path, kind: str) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    """(config dict, float32 weights, metadata) of a model file of `kind`.

    Raises:
        ModelFileError: the file is missing, unreadable, or not a `kind` model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{kind} model not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("kind") != kind:
            raise ModelFileError(f"{path} is not a {kind} model file (it holds {meta.get('kind', 'no kind')!r})")
        config = json.loads(meta["config"])
        state = {k: v.float() for k, v in load_file(str(path)).items()}
    except (OSError, json.JSONDecodeError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelFileError(f"cannot read {kind} model {path}: {exc}") from exc
    return config, state, meta


def load_model_file(path: str | Path, kind: str, build: Callable[[dict], torch.nn.Module]
                    ) -> tuple[torch.nn.Module, dict[str, str]]:
    """Build a model from a `kind` file's config with `build`, load its weights strictly; eval mode.

    Sets `model.model_id` from the file. Raises ModelFileError for a bad config or weights that do not fit.
    """
    config, state, meta = read_model_file(path, kind)
    try:
        model = build(config)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} does not fit the {kind} model ({exc})") from exc
    model.model_id = meta.get("model_id", "unknown")
    return model.eval(), meta
