"""The shipped codec model: loads offline from the repository and reconstructs unseen speech."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from pystoi import stoi

from codec.bitstream import read_stream, write_stream
from codec.compress import compress_audio, decompress_codes
from codec.loaders import DEFAULT_CODEC, load_codec
from codec.losses import log_mel
from tts.audio import read_audio

CLIP = Path(__file__).parent / "assets" / "unseen_awb.flac"  # a voice held out of codec training


def _mel_l1(ref: np.ndarray, deg: np.ndarray) -> float:
    return float((log_mel(torch.from_numpy(deg)[None], 16_000) - log_mel(torch.from_numpy(ref)[None], 16_000))
                 .abs().mean())


def test_shipped_model_is_small_and_self_describing():
    assert DEFAULT_CODEC.stat().st_size < 20 * 2**20
    model = load_codec()
    assert model.config.frame_rate == 25 and model.config.n_q_for_kbps(3) == 12
    assert len(model.model_id) == 16 and model.train_step > 0


def test_shipped_model_reconstructs_unseen_speech_through_the_bitstream():
    model = load_codec()
    x = read_audio(CLIP).samples
    sizes, stois = {}, {}
    for kbps in (0.25, 3.0, 6.0):
        header, codes = compress_audio(model, x, 16_000, kbps)
        buf = io.BytesIO()
        write_stream(buf, header, codes)
        sizes[kbps] = len(buf.getvalue())
        header2, codes2 = read_stream(io.BytesIO(buf.getvalue()))
        y = decompress_codes(model, header2, codes2)
        assert len(y) == len(x) and np.isfinite(y).all()
        stois[kbps] = stoi(x, y, 16_000)
        if kbps == 3.0:
            # Quality floor (a trained model clears it with margin; noise or silence does not).
            assert stois[kbps] > 0.5, stois
            assert _mel_l1(x, y) < 1.3
    assert sizes[0.25] < sizes[3.0] < sizes[6.0]
    assert stois[6.0] > stois[0.25], stois


def test_bench_ceiling_row_decodes_the_unquantized_latent():
    """`tts bench codec`'s ceiling: the latent without codebooks is at least as close as one codebook."""
    from benchmarks.codec_bench import Row, format_table, unquantized_round_trip

    model = load_codec()
    x = read_audio(CLIP).samples
    ceiling = unquantized_round_trip(model, x)
    assert len(ceiling) == len(x) - model.delay and np.isfinite(ceiling).all()
    header, codes = compress_audio(model, x, 16_000, model.config.kbps(1))
    one_codebook = decompress_codes(model, header, codes)
    assert _mel_l1(x[:len(ceiling)], ceiling) < _mel_l1(x, one_codebook)
    nan = float("nan")
    table = format_table([Row("ours, no quantizer (ceiling)", nan, 1.0, 0.5, 0.7, nan),
                          Row("original audio", nan, nan, nan, nan, nan, voice_cosine=0.9, voice_closest=14 / 15)])
    assert "| ours, no quantizer (ceiling) | - | 1.00 | 0.500 | 0.700 | - | - | - | - | - | - |" in table
    assert "| original audio | - | - | - | - | - | - | - | - | 0.900 | 93 % |" in table


def test_bench_speed_runs_both_streaming_paths():
    """The speed columns time the same streaming work on PyTorch and on ONNX Runtime (figures, not limits)."""
    from benchmarks.codec_bench import streaming_ms_per_20ms
    from codec.onnx_runtime import CodecRuntime

    model = load_codec()
    for runtime in (None, CodecRuntime(model)):
        for frames in (1, 4):
            ms = streaming_ms_per_20ms(model, 4, seconds=0.8, chunk_frames=frames, runtime=runtime)
            assert np.isfinite(ms) and ms > 0


def test_attribution_swaps_the_original_magnitude_or_phase_in_the_band_asked():
    """`tts bench codec --attribution`'s rebuilt clips: a tone at 300 Hz and one at 3 kHz, decoded at half
    the level and inverted; the original's magnitudes below 1 kHz restore the low tone's level alone."""
    from benchmarks.codec_attribution import swapped

    t = np.arange(16_000) / 16_000
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t)
    x = (0.4 * low + 0.4 * high).astype(np.float32)
    y = -0.5 * x

    def level(signal: np.ndarray, tone: np.ndarray) -> float:
        middle = slice(2000, -2000)
        return float(2 * np.mean(signal[middle] * tone[middle]))

    np.testing.assert_allclose(swapped(x, y, "magnitude", None), -x, atol=1e-4)   # magnitudes, not phases
    np.testing.assert_allclose(swapped(x, y, "phase", None), 0.5 * x, atol=1e-4)  # phases, not magnitudes
    lows = swapped(x, y, "magnitude", 1000)
    assert abs(level(lows, low) + 0.4) < 0.01 and abs(level(lows, high) + 0.2) < 0.01
    np.testing.assert_allclose(swapped(x, y, "phase", 0), y, atol=1e-4)           # no bin below 0 Hz
