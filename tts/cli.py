"""The `tts` command line: one entry point, one subcommand per job.

Errors the user can fix (missing engine, bad input, unwritable folder) are
printed as one clear line on stderr with a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Callable, Sequence

# One thread per process is fastest on small CPUs; set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

EXIT_USAGE = 2


class UserError(Exception):
    """An error caused by input or environment, shown without a traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from tts.audio import AudioError
    from tts.corpus.common import OutputDirError
    from tts.corpus.engines import EngineMissingError
    from tts.corpus.importer import CorpusImportError
    from tts.corpus.manifest import ManifestError
    from tts.corpus.text import TextSourceError
    from codec.bitstream import BitstreamError
    from codec.loaders import ModelFileError

    return (UserError, BitstreamError, ModelFileError, AudioError, OutputDirError, EngineMissingError, CorpusImportError,
            ManifestError, TextSourceError, FileNotFoundError)


# ---------------------------------------------------------------- data


def _cmd_data_build(args: argparse.Namespace) -> int:
    from tts.corpus.build import BuildConfig, build_corpus

    cfg = BuildConfig(out_dir=args.out, hours=args.hours, n_flite=args.flite_speakers,
                      n_espeak=args.espeak_speakers, seed=args.seed, workers=args.workers)
    if cfg.hours <= 0:
        raise UserError("--hours must be positive")
    stats = build_corpus(cfg)
    print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=2))
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from tts.corpus.importer import import_corpus

    stats = import_corpus(args.src, args.out, workers=args.workers)
    print(json.dumps({k: v for k, v in stats.items() if k != "problems"}, indent=2))
    if stats["skipped"]:
        print(f"{stats['skipped']} item(s) skipped; see {Path(args.out) / 'build.json'}", file=sys.stderr)
    return 0


def play_or_report(path: Path) -> None:
    """Play a file on the default output device, or say why it cannot."""
    from tts.audio import read_audio

    try:
        import sounddevice
        audio = read_audio(path)
        sounddevice.play(audio.samples, audio.sample_rate, blocking=True)
        print(f"played {path}")
    except Exception as exc:  # noqa: BLE001 - any audio-device failure means "no speakers here"
        print(f"(no audio output device: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
              f"the audio is in {path}")


def _cmd_data_sample(args: argparse.Namespace) -> int:
    from tts.corpus.manifest import audio_path, read_manifest

    corpus = Path(args.corpus)
    if not (corpus / "manifest.jsonl").is_file():
        raise UserError(f"{corpus} holds no manifest.jsonl: build one with 'tts data build --out {corpus}'")
    utterances = read_manifest(corpus)
    if not utterances:
        raise UserError(f"{corpus}/manifest.jsonl is empty")
    picks = random.Random(args.seed).sample(utterances, min(args.n, len(utterances)))
    for utt in picks:
        print(f"[{utt.split:6s}] {utt.speaker:32s} {utt.duration:5.2f}s  {utt.text}")
    if args.play:
        play_or_report(audio_path(corpus, picks[0]))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The project's main job until synthesis exists: a small corpus, summarised and sampled."""
    from tts.corpus.build import BuildConfig, build_corpus

    stats = build_corpus(BuildConfig(out_dir=args.out, hours=args.hours, n_flite=12, n_espeak=12,
                                     seed=args.seed))
    print(f"built {stats['hours'] * 60:.1f} min of speech, {stats['utterances']} utterances, "
          f"{stats['speakers']} speakers {stats['speakers_by_source']} in {stats['build_seconds']} s -> {args.out}")
    return _cmd_data_sample(argparse.Namespace(corpus=args.out, n=5, seed=args.seed, play=True))


# ---------------------------------------------------------------- codec


def _cmd_codec_encode(args: argparse.Namespace) -> int:
    from codec.compress import encode_file
    from codec.loaders import load_codec

    if args.kbps <= 0:
        raise UserError("--kbps must be positive")
    model = load_codec(args.model)
    header = encode_file(model, args.input, args.output, args.kbps)
    size = Path(args.output).stat().st_size
    print(f"{args.output}: {header.num_frames} frames, {header.n_q} quantizers = {header.kbps:.2f} kbps, "
          f"{size} bytes ({size * 8 / max(header.num_samples / header.sample_rate, 1e-9) / 1000:.2f} kbps with header)")
    return 0


def _cmd_codec_decode(args: argparse.Namespace) -> int:
    from codec.compress import decode_file
    from codec.loaders import load_codec

    header = decode_file(load_codec(args.model), args.input, args.output)
    print(f"{args.output}: {header.num_samples / header.sample_rate:.2f} s at {header.sample_rate} Hz "
          f"({header.kbps:.2f} kbps stream)")
    return 0


# ---------------------------------------------------------------- train


def _cmd_train_codec(args: argparse.Namespace) -> int:
    from codec.train import TrainConfig, train

    cfg = TrainConfig(corpus=args.corpus, out_dir=args.out, export=args.export, steps=args.steps,
                      batch_size=args.batch_size, adv_start=args.adv_start, device=args.device,
                      threads=args.threads, max_minutes=args.max_minutes, lr=args.lr,
                      valid_every=args.valid_every, log_every=args.log_every, init_from=args.init_from)
    if not (Path(args.corpus) / "manifest.jsonl").is_file():
        raise UserError(f"{args.corpus} holds no manifest.jsonl: build one with 'tts data build'")
    print(json.dumps(train(cfg)))
    return 0


# ---------------------------------------------------------------- bench


def _cmd_bench_codec(args: argparse.Namespace) -> int:
    from benchmarks.codec_bench import format_table, run
    from codec.loaders import load_codec

    model = load_codec(args.model)
    print(f"codec {model.model_id} (step {model.train_step}), {args.utterances} utterances of unseen speakers "
          f"from {args.corpus}")
    print(format_table(run(model, args.corpus, n_utts=args.utterances)))
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts", description="Streaming text-to-speech with voice cloning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job: build a small corpus and play a sample of it")
    demo.add_argument("--out", default="data/demo")
    demo.add_argument("--hours", type=float, default=0.05)
    demo.add_argument("--seed", type=int, default=1234)
    demo.set_defaults(func=_cmd_demo)

    data = sub.add_parser("data", help="training corpora").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="synthesise the offline multi-speaker corpus (flite + espeak-ng)")
    build.add_argument("--out", default="data/corpus", help="output folder (default: data/corpus)")
    build.add_argument("--hours", type=float, default=30.0, help="hours of speech to plan (default: 30)")
    build.add_argument("--flite-speakers", type=int, default=72)
    build.add_argument("--espeak-speakers", type=int, default=60)
    build.add_argument("--seed", type=int, default=1234)
    build.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    build.set_defaults(func=_cmd_data_build)

    imp = data.add_parser("import", help="turn your recordings (wav+txt pairs or LibriTTS) into a corpus")
    imp.add_argument("src", help="folder of recordings")
    imp.add_argument("--out", required=True, help="output corpus folder")
    imp.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    imp.set_defaults(func=_cmd_data_import)

    sample = data.add_parser("sample", help="print (and play) a few utterances of a corpus")
    sample.add_argument("corpus", nargs="?", default="data/corpus")
    sample.add_argument("-n", type=int, default=5)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--play", action="store_true", help="play the first one on the speakers")
    sample.set_defaults(func=_cmd_data_sample)

    codec = sub.add_parser("codec", help="neural codec: encode/decode files").add_subparsers(
        dest="codec_command", required=True)
    enc = codec.add_parser("encode", help="audio file -> codec stream")
    enc.add_argument("input")
    enc.add_argument("output")
    enc.add_argument("--kbps", type=float, default=3.0, help="bitrate (default 3; 0.25 kbps per quantizer)")
    enc.add_argument("--model", default=None, help="codec model file (default: the shipped one)")
    enc.set_defaults(func=_cmd_codec_encode)
    dec = codec.add_parser("decode", help="codec stream -> WAV")
    dec.add_argument("input")
    dec.add_argument("output")
    dec.add_argument("--model", default=None)
    dec.set_defaults(func=_cmd_codec_decode)

    train = sub.add_parser("train", help="train the models").add_subparsers(dest="train_command", required=True)
    tc = train.add_parser("codec", help="train the neural codec (resumes from OUT/last.pt)")
    tc.add_argument("--corpus", default="data/corpus")
    tc.add_argument("--out", default="runs/codec")
    tc.add_argument("--export", default="assets/codec.safetensors", help="where the best model is written")
    tc.add_argument("--steps", type=int, default=100_000)
    tc.add_argument("--batch-size", type=int, default=8)
    tc.add_argument("--lr", type=float, default=3e-4)
    tc.add_argument("--adv-start", type=int, default=20_000, help="step at which the discriminator joins")
    tc.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    tc.add_argument("--threads", type=int, default=1)
    tc.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long (0: no limit)")
    tc.add_argument("--valid-every", type=int, default=500)
    tc.add_argument("--log-every", type=int, default=25)
    tc.add_argument("--init-from", default="",
                    help="start a new run from a shipped codec file, e.g. assets/codec.safetensors")
    tc.set_defaults(func=_cmd_train_codec)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    bc = bench.add_parser("codec", help="codec vs libopus: PESQ-WB, STOI, log-mel, CPU time")
    bc.add_argument("--corpus", default="data/corpus")
    bc.add_argument("--model", default=None)
    bc.add_argument("--utterances", type=int, default=40)
    bc.set_defaults(func=_cmd_bench_codec)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
