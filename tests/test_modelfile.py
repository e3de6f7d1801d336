"""Model files: averaging (`tts train average`) and its refusals."""
import json

import pytest
import torch
from safetensors import safe_open

from tts.cli import main
from tts.modelfile import ModelFileError, average_model_files, read_model_file, save_model_file

CONFIG = {"dim": 4}


def _write(path, value: float, kind: str = "backbone", config: dict = CONFIG, shape=(2, 4), extra=None) -> str:
    state = {"w": torch.full(shape, value), "b": torch.arange(4.0) * value}
    return save_model_file(path, state, kind, config, step=int(value * 10), dtype=torch.float32, extra=extra)


def test_average_is_the_weighted_mean_and_names_its_sources(tmp_path):
    first = _write(tmp_path / "a.safetensors", 1.0, extra={"cache_meta": {"vocab": 82}, "valid_loss": 4.1})
    second = _write(tmp_path / "b.safetensors", 3.0, extra={"cache_meta": {"vocab": 82}, "valid_loss": 4.0})
    out = tmp_path / "avg.safetensors"
    model_id = average_model_files([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], out, [3.0, 1.0])
    config, state, meta = read_model_file(out, "backbone")
    assert config == CONFIG and meta["model_id"] == model_id and int(meta["step"]) == 30
    assert torch.allclose(state["w"], torch.full((2, 4), 1.5))            # 0.75 * 1 + 0.25 * 3
    assert torch.allclose(state["b"], torch.arange(4.0) * 1.5)
    extra = json.loads(meta["extra"])
    assert extra["averaged_from"] == [first, second] and extra["weights"] == [0.75, 0.25]
    assert extra["cache_meta"] == {"vocab": 82} and "valid_loss" not in extra   # what they agree on, only


def test_average_refuses_models_that_do_not_match(tmp_path):
    _write(tmp_path / "a.safetensors", 1.0)
    _write(tmp_path / "codec.safetensors", 1.0, kind="codec")
    _write(tmp_path / "other.safetensors", 1.0, config={"dim": 8})
    _write(tmp_path / "shape.safetensors", 1.0, shape=(4, 2))
    a = tmp_path / "a.safetensors"
    for other, words in (("codec.safetensors", "not a backbone"), ("other.safetensors", "another config"),
                         ("shape.safetensors", "other tensors"), ("missing.safetensors", "not found")):
        with pytest.raises(ModelFileError, match=words):
            average_model_files([a, tmp_path / other], tmp_path / "out.safetensors")
    with pytest.raises(ModelFileError, match="at least two"):
        average_model_files([a], tmp_path / "out.safetensors")
    with pytest.raises(ModelFileError, match="weight"):
        average_model_files([a, a], tmp_path / "out.safetensors", [1.0, -1.0])
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_average_writes_the_file_or_fails_clearly(tmp_path, capsys):
    _write(tmp_path / "a.safetensors", 1.0)
    _write(tmp_path / "b.safetensors", 2.0)
    out = tmp_path / "avg.safetensors"
    assert main(["train", "average", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--out", str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        assert f.get_tensor("w").dtype == torch.float32                   # the sources' precision
        assert torch.allclose(f.get_tensor("w"), torch.full((2, 4), 1.5))
    assert main(["train", "average", str(tmp_path / "a.safetensors"), str(tmp_path / "nope.safetensors"),
                 "--out", str(tmp_path / "bad.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()
