"""The command line: clear errors with a non-zero exit, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tts.cli import main


def test_missing_engine_names_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no flite, no espeak-ng
    assert main(["data", "build", "--out", str(tmp_path / "c"), "--hours", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install flite" in err and "Traceback" not in err


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["data", "build", "--out", str(blocker / "corpus"), "--hours", "0.01"]) == 2
    assert "not writable" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--flite-speakers", "0", "--espeak-speakers", "0"], "at least one positive"),
    (["--espeak-speakers", "-3"], "zero or more"),
    (["--festival-share", "1.5"], "between 0 and 1"),
    (["--festival-speakers", "10"], "--festival-share above 0"),
    (["--festival-share", "0.2"], "needs --festival-speakers"),
])
def test_bad_speaker_settings(tmp_path, capsys, args, message):
    assert main(["data", "build", "--out", str(tmp_path / "c"), "--hours", "0.01", *args]) == 2
    assert message in capsys.readouterr().err


def test_sample_of_missing_corpus(tmp_path, capsys):
    assert main(["data", "sample", str(tmp_path)]) == 2
    assert "tts data build" in capsys.readouterr().err


def test_import_missing_source(tmp_path, capsys):
    assert main(["data", "import", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "tts", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "data" in result.stdout


def test_say_does_without_transformers(tmp_path):
    """Speaking runs the backbone on its own step code: importing transformers took seconds of every start."""
    out = tmp_path / "hi.wav"
    script = (f"import sys; from tts.cli import main; code = main(['say', 'Hi.', '--out', {str(out)!r}]); "
              "print(code, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["0", "False"], result.stderr
    assert out.stat().st_size > 1000


def test_training_setup_errors_are_messages(tmp_path, capsys):
    """A trainer that cannot start (bad options, missing checkpoint) says why, with no traceback."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.jsonl").write_text("")
    runs = str(tmp_path / "runs")
    assert main(["train", "codec", "--corpus", str(corpus), "--out", runs, "--decoder-only"]) == 2
    assert "give --init-from" in capsys.readouterr().err
    assert main(["train", "voice", "--corpus", str(corpus), "--out", runs,
                 "--resume-from", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "no training checkpoint" in err and "Traceback" not in err


def test_no_trainer_writes_into_the_shipped_models_by_default(tmp_path):
    """A run without --export keeps its best model under its own --out folder: a smoke run once replaced
    assets/codec.safetensors. Shipping a model is a deliberate copy."""
    from tts.cli import _trainer_options, build_parser

    parser = build_parser()
    runs = tmp_path / "runs"
    for trainer, best in [("codec", "best.safetensors"), ("voice", "best.safetensors"),
                          ("backbone", "best.safetensors"), ("aligner", "aligner.pt")]:
        options = _trainer_options(parser.parse_args(["train", trainer, "--out", str(runs / trainer)]))
        assert options["export"] == str(runs / trainer / best)
        assert "assets" not in _trainer_options(parser.parse_args(["train", trainer]))["export"]
        mine = str(tmp_path / "mine.safetensors")
        assert _trainer_options(parser.parse_args(["train", trainer, "--export", mine]))["export"] == mine
    for maker in ("tokenizer", "phonemes"):
        assert "assets" not in parser.parse_args(["train", maker]).out


@pytest.mark.parametrize("command, out_flag", [
    (["say", "Hello.", "--backbone", "none.safetensors"], "--out"),   # the missing model would be the error
    (["codec", "decode", "in.sttc", "--model", "none.safetensors"], ""),  # if anything loaded first
    (["demo"], "--out"),
])
def test_an_output_file_that_cannot_be_written_is_refused_before_any_model_loads(command, out_flag, tmp_path,
                                                                                   capsys):
    (tmp_path / "a_file").write_text("not a folder")
    for out, message in [("x.mp3", "must end in .wav or .flac"), ("a_file/x.wav", "is a file, not a folder")]:
        assert main([*command, *([out_flag] if out_flag else []), str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_say_refuses_a_speaking_rate_out_of_range(tmp_path, capsys):
    assert main(["say", "Hello.", "--rate", "3", "--out", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert "speaking rate must be between 0.5 and 2.0" in err and "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


def test_codec_commands_refuse_a_bitrate_out_of_range_and_a_missing_stream(tmp_path, capsys):
    wav = tmp_path / "in.wav"
    sf.write(str(wav), np.zeros(1600, np.float32), 16000)
    assert main(["codec", "encode", str(wav), str(tmp_path / "x.sttc"), "--kbps", "999"]) == 2
    err = capsys.readouterr().err
    assert "above this codec's highest bitrate" in err and "Traceback" not in err
    assert not (tmp_path / "x.sttc").exists()
    assert main(["codec", "encode", str(wav), str(tmp_path / "x.sttc"), "--kbps", "nan"]) == 2
    assert "positive number" in capsys.readouterr().err
    assert main(["codec", "decode", str(tmp_path / "none.sttc"), str(tmp_path / "y.wav")]) == 2
    assert "codec stream not found" in capsys.readouterr().err
    assert not (tmp_path / "y.wav").exists()


def test_codec_file_carries_the_voice_the_shipped_decoder_follows(tmp_path, capsys):
    import torch

    from voice.encoder import load_encoder, save_encoder

    wav, t = tmp_path / "in.wav", np.arange(24_000) / 16_000
    sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    assert main(["codec", "encode", str(wav), str(tmp_path / "v.sttc")]) == 0
    assert "its voice (214 bytes)" in capsys.readouterr().out
    assert main(["codec", "decode", str(tmp_path / "v.sttc"), str(tmp_path / "v.wav")]) == 0
    assert "in its voice" in capsys.readouterr().out
    assert main(["codec", "encode", str(wav), str(tmp_path / "n.sttc"), "--no-voice"]) == 0
    assert (tmp_path / "v.sttc").stat().st_size - (tmp_path / "n.sttc").stat().st_size == 212
    capsys.readouterr()
    assert main(["codec", "decode", str(tmp_path / "n.sttc"), str(tmp_path / "n.wav")]) == 0
    assert "in the decoder's default voice: the stream carries none" in capsys.readouterr().out
    # A voice embedded by another speaker encoder is not followed, and the decode says why.
    from dataclasses import replace

    from codec.bitstream import read_stream, write_stream
    with open(tmp_path / "v.sttc", "rb") as f:
        header, codes = read_stream(f)
    with open(tmp_path / "x.sttc", "wb") as f:
        write_stream(f, replace(header, voice=replace(header.voice, encoder_id="0123456789abcdef")), codes)
    assert main(["codec", "decode", str(tmp_path / "x.sttc"), str(tmp_path / "x.wav")]) == 0
    assert "default voice: the stream's voice is speaker encoder 0123456789abcdef's" in capsys.readouterr().out
    # Another speaker encoder's voice would steer the decoder wrong: refused, and nothing is written.
    other = load_encoder()
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    save_encoder(other, tmp_path / "other.safetensors")
    assert main(["codec", "encode", str(wav), str(tmp_path / "o.sttc"), "--encoder",
                 str(tmp_path / "other.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "this codec's decoder follows speaker encoder" in err and "--no-voice" in err
    assert not (tmp_path / "o.sttc").exists()


def test_a_built_in_voice_cannot_be_deleted_or_exported_and_says_why(tmp_path, capsys):
    store = str(tmp_path / "voices.db")
    assert main(["voice", "delete", "slt", "--store", store]) == 2
    assert "'slt' is a built-in voice" in capsys.readouterr().err
    assert main(["voice", "export", "slt", str(tmp_path / "slt.voice"), "--store", store]) == 2
    assert "built-in voice" in capsys.readouterr().err and not (tmp_path / "slt.voice").exists()
