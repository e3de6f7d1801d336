"""Exported ONNX graphs kept on disk between runs, keyed by everything that shapes them.

Why: the engine exports its ONNX Runtime steps (codec encoder and decoder, backbone step, its int8
version) each time a model is loaded; the int8 backbone step alone took 1.9 s of `tts say`'s start.
The key is a hash of the traced module's weights, the example inputs' shapes, the export options,
the torch and onnxruntime versions and the source of the packages that define the graphs, so a
changed model, option or line of code can never pick up a stale graph. A damaged file is rebuilt.

Where: $TTS_CACHE, else $XDG_CACHE_HOME/tts, else ~/.cache/tts (an `onnx/` folder in it);
TTS_CACHE=off turns it off. A folder that cannot be written only costs the time saved.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
PACKAGES = ("codec", "backbone")          # the code that defines the exported graphs
T = TypeVar("T")


def cache_dir() -> Path | None:
    """The folder of cached graphs; None when caching is off."""
    setting = os.environ.get("TTS_CACHE", "")
    if setting.lower() == "off":
        return None
    root = Path(setting) if setting else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tts"
    return root / "onnx"


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """A hash of the graph-defining packages' source and of the library versions."""
    import onnxruntime

    digest = hashlib.sha256(f"{torch.__version__} {onnxruntime.__version__}".encode())
    root = Path(__file__).resolve().parent.parent
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def graph_key(module: nn.Module, inputs: tuple[torch.Tensor, ...], *options: object) -> str:
    """The cache key of `module` traced on `inputs` with these export options.

    The module's repr is part of it: a setting that is not a weight must show there (`extra_repr`).
    """
    digest = hashlib.sha256(_code_version().encode())
    digest.update(repr((module, [(tuple(x.shape), str(x.dtype)) for x in inputs], options)).encode())
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def cached(key: str, build: Callable[[], bytes], load: Callable[[bytes], T]) -> T:
    """load(the graph stored under `key`), else load(build()) after storing what was built."""
    folder = cache_dir()
    path = folder / f"{key}.onnx" if folder is not None else None
    if path is not None and path.is_file():
        try:
            return load(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - a damaged or unreadable file is rebuilt, never fatal
            log.warning("cached graph %s is unusable (%s); rebuilding it", path, exc)
    graph = build()
    if path is not None:
        part = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as tmp:
                part = Path(tmp.name)
                tmp.write(graph)
            os.replace(part, path)   # atomic: readers see the whole file or none
        except OSError as exc:
            log.debug("cannot keep the exported graph in %s: %s", folder, exc)
            if part is not None:
                part.unlink(missing_ok=True)
    return load(graph)
