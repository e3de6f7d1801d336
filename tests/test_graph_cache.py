"""tts/graph_cache.py: exported graphs are reused only for the same weights and settings, and damage is rebuilt."""
from __future__ import annotations

import torch
from torch import nn

from tts.graph_cache import cache_dir, cached, graph_key


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((3,), factor))
        self.offset = 0

    def extra_repr(self) -> str:
        return f"offset={self.offset}"


def test_key_follows_weights_settings_inputs_and_options():
    x = (torch.zeros(2, 3),)
    a, b = _Scale(1.0), _Scale(1.0)
    assert graph_key(a, x, "int8") == graph_key(b, x, "int8")
    b.offset = 1
    assert graph_key(a, x) != graph_key(b, x)                  # a setting shown by extra_repr
    assert graph_key(a, x) != graph_key(_Scale(2.0), x)       # other weights
    assert graph_key(a, x) != graph_key(a, (torch.zeros(2, 4),))
    assert graph_key(a, x) != graph_key(a, x, "int8")


def test_cached_builds_once_and_rebuilds_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_CACHE", str(tmp_path))
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"graph"

    def load(graph: bytes) -> str:
        if graph != b"graph":
            raise ValueError("damaged")
        return graph.decode()

    assert cached("k", build, load) == "graph" and cached("k", build, load) == "graph"
    assert len(builds) == 1 and (tmp_path / "onnx" / "k.onnx").read_bytes() == b"graph"
    (tmp_path / "onnx" / "k.onnx").write_bytes(b"gra")          # truncated
    assert cached("k", build, load) == "graph" and len(builds) == 2
    assert (tmp_path / "onnx" / "k.onnx").read_bytes() == b"graph"
    assert not list((tmp_path / "onnx").glob("*.part"))


def test_cache_can_be_off_and_an_unwritable_folder_only_costs_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_CACHE", "off")
    assert cache_dir() is None
    assert cached("k", lambda: b"g", bytes.decode) == "g"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TTS_CACHE", str(blocker))
    assert cached("k", lambda: b"g", bytes.decode) == "g"


def test_engine_steps_come_back_from_the_cache_unchanged(tmp_path, monkeypatch):
    """The exported ONNX Runtime steps (codec and int8 backbone) read back from disk give the same outputs."""
    from backbone.onnx_step import OnnxStepModel
    from tests.test_backbone import tiny_model

    monkeypatch.setenv("TTS_CACHE", str(tmp_path))
    model = tiny_model()
    tokens = torch.zeros(1, model.config.n_codebooks, dtype=torch.long)
    first = OnnxStepModel(model, quantized=True)
    stored = sorted((tmp_path / "onnx").iterdir())
    second = OnnxStepModel(model, quantized=True)
    assert sorted((tmp_path / "onnx").iterdir()) == stored and len(stored) == 1
    def logits(step: OnnxStepModel) -> torch.Tensor:
        cache = step.new_cache()
        prompt = [torch.randn(cfg.n_heads, 3, cfg.d_model // cfg.n_heads, generator=torch.Generator().manual_seed(i))
                  for i in range(cfg.n_layers)]
        cache.add_row(prompt, prompt)
        return step(tokens, cache)[0]

    cfg = model.config
    assert torch.equal(logits(first), logits(second))
    OnnxStepModel(model, quantized=False)
    assert len(list((tmp_path / "onnx").iterdir())) == 2
