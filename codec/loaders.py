"""The one place where codec checkpoints are saved and loaded.

Shipped models are safetensors files (weights only, no pickle) whose metadata
holds the config JSON, a model id and the training step, so loading needs
only the file. A codec also has a tokens id: the id of its token vocabulary
(encoder and codebooks). It is the model id of the run that trained the
encoder, and a decoder-only fine-tune keeps it, so streams, token caches and
backbones made with the parent still fit. A speaker-conditioned decoder also
records the speaker encoder whose embeddings it follows (`speaker_encoder_id`).
Training checkpoints (with optimiser state) use torch.save and are loaded with
weights_only=True.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from codec.config import CodecConfig
from codec.model import CodecModel
from tts.modelfile import ASSETS, ModelFileError, read_model_file, save_model_file

DEFAULT_CODEC = ASSETS / "codec.safetensors"
# Training-only buffers of the EMA codebooks: not shipped, rebuilt when training restarts.
EMA_SUFFIXES = (".cluster_size", ".embed_avg", ".initialized")
__all__ = ["DEFAULT_CODEC", "EMA_SUFFIXES", "ModelFileError", "save_codec", "read_codec_file",
           "tokens_id_of", "speaker_encoder_id_of", "load_weights", "load_codec", "save_with_harmonics"]


def save_codec(model: CodecModel, path: str | Path, step: int = 0, extra: dict | None = None,
               dtype: torch.dtype = torch.float16, tokens_id: str = "") -> str:
    """Write a shipped-model file (float16 by default); returns the model id.

    The codebooks' EMA statistics are training-only and are dropped. `tokens_id`:
    the parent's, for a model whose encoder and codebooks were frozen (empty: its own model id).
    A speaker-conditioned model's `speaker_encoder_id` is recorded with it.
    """
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(EMA_SUFFIXES)}
    extra = {**(extra or {}), **({"tokens_id": tokens_id} if tokens_id else {}),
             **({"speaker_encoder_id": model.speaker_encoder_id} if model.speaker_conditioned else {})}
    return save_model_file(path, state, "codec", model.config.to_dict(), step, extra, dtype)


def _extra_of(meta: dict[str, str]) -> dict:
    """The free-form `extra` record of a model file's metadata ({} where absent or unreadable)."""
    try:
        extra = json.loads(meta.get("extra") or "{}")
    except json.JSONDecodeError:
        return {}
    return extra if isinstance(extra, dict) else {}


def tokens_id_of(meta: dict[str, str]) -> str:
    """The token-vocabulary id of a codec file from its metadata (see the module doc)."""
    return _extra_of(meta).get("tokens_id") or meta.get("model_id", "unknown")


def speaker_encoder_id_of(meta: dict[str, str]) -> str:
    """The speaker encoder a conditioned decoder follows ("" for a decoder that is not conditioned)."""
    return _extra_of(meta).get("speaker_encoder_id", "")


def read_codec_file(path: str | Path) -> tuple[CodecConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, float32 weights, metadata) of a codec model file, without building the model.

    Raises:
        ModelFileError: the file is missing or is not a codec model.
    """
    config, state, meta = read_model_file(path, "codec")
    try:
        return CodecConfig.from_dict(config), state, meta
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad codec config ({exc})") from exc


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
    model.tokens_id = tokens_id_of(meta)
    model.speaker_encoder_id = speaker_encoder_id_of(meta)
    model.train_step = int(meta.get("step", 0))
    return model.to(device).eval()


def save_with_harmonics(path: str | Path, out: str | Path, n_harmonics: int) -> str:
    """Copy a codec file whose harmonic source plays `n_harmonics` oscillators instead; returns the new model id.

    Why: the source's weights do not depend on the count (its envelope is over frequency bins, sampled at
    each harmonic), and a trained source leaves its upper harmonics silent (session 21: 16 to 100 gave the
    same PESQ), so fewer do no harm; the decode time on ONNX Runtime did not move measurably (32 vs 100).
    Encoder and codebooks are untouched: the tokens id stays the parent's, so token caches and backbones
    made with it still fit.
    """
    from dataclasses import replace

    config, state, meta = read_codec_file(path)
    if not config.decoder_harmonics:
        raise ModelFileError(f"{path} has no harmonic source")
    if n_harmonics < 1:
        raise ValueError(f"a harmonic source needs at least one harmonic; got {n_harmonics}")
    model = CodecModel(replace(config, decoder_harmonics=n_harmonics))
    load_weights(model, state, path)
    extra = {**json.loads(meta.get("extra") or "{}"), "harmonics_from": config.decoder_harmonics}
    return save_codec(model, out, int(meta.get("step", 0)), extra, tokens_id=tokens_id_of(meta))
