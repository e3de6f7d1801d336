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
    tmp.chmod(0o644)        # safetensors writes owner-only files; a model file is for everyone to read
    tmp.replace(path)
    return model_id


def model_kind(path: str | Path) -> str:
    """The `kind` a model file says it holds ("" if none). Raises ModelFileError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("kind", "")
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(f"cannot read model {path}: {exc}") from exc


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


def average_model_files(paths: list[str | Path], out: str | Path, weights: list[float] | None = None) -> str:
    """Write the weighted mean of model files of one kind and config to `out`; returns its model id.

    Why: weight averaging of a fine-tune with the model it started from (a "model soup", as in
    WiSE-FT) keeps most of what the fine-tune gained and much of what it lost, at no inference cost.
    Only models that share an ancestor average well: this checks kind, config and tensor shapes,
    not ancestry. The result's metadata names the files' model ids and weights and keeps what the
    files' `extra` metadata agree on (an aligner's cache meta, a codec's token vocabulary id), not
    what differs (a validation loss); it is stored in the first file's precision.

    Raises:
        ModelFileError: fewer than two files, a bad weight list, or files that do not match.
    """
    if len(paths) < 2:
        raise ModelFileError("averaging needs at least two model files")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths) or min(weights) < 0 or sum(weights) <= 0:
        raise ModelFileError(f"need one non-negative weight per model file ({len(paths)}), not all zero")
    config, total, meta = read_model_file(paths[0], model_kind(paths[0]))
    kind = meta["kind"]
    total = {name: tensor * weights[0] for name, tensor in total.items()}
    sources, steps = [meta.get("model_id", "unknown")], [int(meta.get("step", 0))]
    shared_extra = _extra_of(meta, paths[0])
    for path, weight in zip(paths[1:], weights[1:]):
        other_config, state, other_meta = read_model_file(path, kind)
        if other_config != config:
            raise ModelFileError(f"{path} has another config than {paths[0]}: only one model's fine-tunes average")
        if state.keys() != total.keys() or any(state[k].shape != total[k].shape for k in total):
            raise ModelFileError(f"{path} has other tensors than {paths[0]}")
        for name in total:
            total[name] += state[name] * weight
        other_extra = _extra_of(other_meta, path)
        shared_extra = {k: v for k, v in shared_extra.items() if k in other_extra and other_extra[k] == v}
        sources.append(other_meta.get("model_id", "unknown"))
        steps.append(int(other_meta.get("step", 0)))
    scale = 1.0 / sum(weights)
    averaged = {name: tensor * scale for name, tensor in total.items()}
    extra = {**shared_extra, "averaged_from": sources, "weights": [w * scale for w in weights]}
    with safe_open(str(paths[0]), framework="pt") as f:          # stored as the first file is (float16 if shipped)
        dtype = f.get_tensor(next(iter(f.keys()))).dtype
    return save_model_file(out, averaged, kind, config, step=max(steps), extra=extra, dtype=dtype)


def _extra_of(meta: dict[str, str], path: str | Path) -> dict:
    try:
        extra = json.loads(meta.get("extra") or "{}")
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: unreadable extra metadata ({exc})") from exc
    return extra if isinstance(extra, dict) else {}
