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
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

# A trainer's best model, under its --out folder unless --export names another file (see _add_trainer_args).
BEST_EXPORT = "best.safetensors"

if TYPE_CHECKING:   # names for type hints only: the CLI imports its heavy modules inside each command
    import numpy as np

    from codec.bitstream import StreamHeader
    from codec.model import CodecModel
    from serve.generated.tts_pb2 import CodecInfo
    from tts.engine import Engine
    from tts.stream.decoder import ChunkedDecoder

# One thread per process is fastest on small CPUs; set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

EXIT_USAGE = 2


class UserError(Exception):
    """An error caused by input or environment, shown without a traceback."""


CODEC_HELP = "codec model file (default: the shipped one); it must be the one the backbone speaks"


def _user_errors() -> tuple[type[BaseException], ...]:
    from backbone.data import TokenCacheError
    from backbone.phonemes import PhonemizerError
    from tts.audio import AudioError
    from tts.corpus.common import OutputDirError
    from tts.corpus.engines import EngineMissingError
    from tts.corpus.importer import CorpusImportError
    from tts.corpus.manifest import ManifestError
    from tts.corpus.text import TextSourceError
    from codec.bitstream import BitstreamError
    from tts.modelfile import ModelFileError
    from tts.engine import ModelMismatchError, SynthesisError
    from tts.say import NoAudioDeviceError
    from tts.training import TrainingSetupError
    from voice.enroll import EnrollmentError
    from voice.store import VoiceStoreError

    return (UserError, SynthesisError, ModelMismatchError, NoAudioDeviceError, BitstreamError, ModelFileError,
            AudioError, OutputDirError, EngineMissingError, CorpusImportError, ManifestError, TextSourceError,
            FileNotFoundError, EnrollmentError, VoiceStoreError, TrainingSetupError, TokenCacheError, PhonemizerError)


# ---------------------------------------------------------------- data


def _cmd_data_build(args: argparse.Namespace) -> int:
    from tts.corpus.build import BuildConfig, build_corpus

    cfg = BuildConfig(out_dir=args.out, hours=args.hours, n_flite=args.flite_speakers,
                      n_espeak=args.espeak_speakers, n_festival=args.festival_speakers,
                      festival_share=args.festival_share, seed=args.seed, workers=args.workers)
    if cfg.hours <= 0:
        raise UserError("--hours must be positive")
    counts = (cfg.n_flite, cfg.n_espeak, cfg.n_festival)
    if min(counts) < 0 or not sum(counts):
        raise UserError("speaker counts must be zero or more, and at least one positive")
    if not 0 <= cfg.festival_share <= 1:
        raise UserError("--festival-share must be between 0 and 1")
    if cfg.n_festival and (cfg.n_flite or cfg.n_espeak) and not cfg.festival_share:
        raise UserError("festival speakers beside flite or espeak-ng ones speak only with --festival-share above 0")
    if cfg.festival_share and not cfg.n_festival:
        raise UserError("--festival-share needs --festival-speakers")
    stats = build_corpus(cfg)
    print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=2))
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from tts.corpus.importer import import_corpus

    stats = import_corpus(args.src, args.out, workers=args.workers, held_out=args.held_out)
    print(json.dumps({k: v for k, v in stats.items() if k != "problems"}, indent=2))
    if stats["skipped"]:
        print(f"{stats['skipped']} item(s) skipped; see {Path(args.out) / 'build.json'}", file=sys.stderr)
    return 0


def _cmd_data_real(args: argparse.Namespace) -> int:
    from tts.corpus.real_voices import build_real_corpus

    stats = build_real_corpus(args.out, workers=args.workers)
    print(json.dumps({k: v for k, v in stats.items() if k != "problems"}, indent=2))
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
    """The main job: speak a sentence with the shipped models into a WAV file, and play it where possible."""
    from tts.engine import Engine
    from tts.say import say

    _check_audio_out(args.out)
    engine = Engine.load()
    report = say(engine, args.text, engine.voice_embedding(args.voice), out=args.out)
    print(f"wrote {args.out}: {report.audio_seconds:.2f} s of speech, voice {args.voice}; {report.summary()}")
    play_or_report(Path(args.out))
    return 0


# ---------------------------------------------------------------- codec


def _cmd_codec_encode(args: argparse.Namespace) -> int:
    from codec.compress import encode_file
    from codec.loaders import load_codec

    from tts.audio import check_output_path

    if not args.kbps > 0:   # NaN too
        raise UserError(f"--kbps must be a positive number, not {args.kbps:g}")
    check_output_path(args.output, formats=None)
    model = load_codec(args.model)
    top, step = model.config.kbps(model.config.n_q), model.config.kbps(1)
    if args.kbps > top + step / 2:   # would be served at `top`: say so instead of writing another rate
        raise UserError(f"--kbps {args.kbps:g} is above this codec's highest bitrate; it encodes "
                        f"{step:g} to {top:g} kbps in steps of {step:g}")
    if args.voice is not None:
        return _encode_in_stored_voice(args, model)
    encoder = None
    if model.speaker_conditioned and not args.no_voice:   # the decoder follows the voice: the stream carries it
        from voice.encoder import load_encoder

        encoder = load_encoder(args.encoder)
        if encoder.model_id != model.speaker_encoder_id:
            raise UserError(f"this codec's decoder follows speaker encoder {model.speaker_encoder_id}, "
                            f"{args.encoder or 'the shipped one'} is {encoder.model_id}: give the one it follows "
                            f"(--encoder) or --no-voice")
    fit = None
    if args.fit_voice:
        if encoder is None:
            raise UserError("--fit-voice fits the voice the stream carries: it needs a codec whose decoder follows "
                            "the voice, without --no-voice")
        from codec.voice_fit import VoiceFitOptions

        fit = VoiceFitOptions()
    header = encode_file(model, args.input, args.output, args.kbps, encoder, fit)
    _print_encoded(args.output, header, "its voice")
    return 0


def _encode_in_stored_voice(args: argparse.Namespace, model: CodecModel) -> int:
    """`tts codec encode --voice NAME`: the stream carries an enrolled (or built-in) voice rather than its input's:
    with --fit-voice, that voice fitted to its enrollment clip (fitted once per decoder, then kept in the store)."""
    from codec.bitstream import StreamVoice
    from codec.compress import encode_file

    if args.no_voice:
        raise UserError("--voice names the voice the stream carries: leave out --no-voice (or leave out --voice, "
                        "and give it to `tts codec decode --voice` instead)")
    header = encode_file(model, args.input, args.output, args.kbps,
                         voice=StreamVoice.of(_stored_voice(args, model), model.speaker_encoder_id))
    _print_encoded(args.output, header, f"voice {args.voice!r}" + (" fitted" if args.fit_voice else ""))
    return 0


def _stored_voice(args: argparse.Namespace, model: CodecModel) -> np.ndarray:
    """`--voice NAME` from the store as `model`'s decoder takes it: the embedding, or with --fit-voice the voice
    fitted to its enrollment clip (voice/enroll.py: decoder_voice)."""
    from voice.enroll import decoder_voice, resolve_voice

    if not model.speaker_conditioned:
        raise UserError("--voice: this codec's decoder follows no voice")
    with _open_store(args) as store:
        if args.fit_voice:
            return decoder_voice(store, model, args.voice)
        return resolve_voice(store, args.voice, model.speaker_encoder_id).embedding


def _print_encoded(path: str, header: StreamHeader, voice_name: str) -> None:
    size = Path(path).stat().st_size
    voice = f"{voice_name} ({len(header.voice.pack())} bytes)" if header.voice else "no voice"
    print(f"{path}: {header.num_frames} frames, {header.n_q} quantizers = {header.kbps:.2f} kbps, {voice}, "
          f"{size} bytes ({size * 8 / max(header.num_samples / header.sample_rate, 1e-9) / 1000:.2f} kbps in all)")


def _cmd_codec_decode(args: argparse.Namespace) -> int:
    from codec.compress import decode_file, header_voice
    from codec.loaders import load_codec

    _check_audio_out(args.output)
    if not Path(args.input).is_file():
        raise UserError(f"codec stream not found: {args.input}")
    if args.fit_voice and args.voice is None:
        raise UserError("--fit-voice decodes in an enrolled voice fitted to its clip: name it with --voice")
    model = load_codec(args.model)
    stored = _stored_voice(args, model) if args.voice is not None else None
    header = decode_file(model, args.input, args.output, stored)
    voice = ""
    if stored is not None:
        voice = f", in voice {args.voice!r}" + (" fitted" if args.fit_voice else "")
    elif model.speaker_conditioned:   # say which voice it speaks in, and why where it is not the stream's
        if header_voice(model, header) is not None:
            voice = ", in its voice"
        elif header.voice is None:
            voice = ", in the decoder's default voice: the stream carries none"
        else:
            voice = (f", in the decoder's default voice: the stream's voice is speaker encoder "
                     f"{header.voice.encoder_id}'s, the decoder follows {model.speaker_encoder_id}'s")
    print(f"{args.output}: {header.num_samples / header.sample_rate:.2f} s at {header.sample_rate} Hz "
          f"({header.kbps:.2f} kbps stream{voice})")
    return 0


# ---------------------------------------------------------------- voices


def _open_store(args: argparse.Namespace):
    from voice.store import VoiceStore

    return VoiceStore(args.store)


def _cmd_voice_enroll(args: argparse.Namespace) -> int:
    from voice.encoder import load_encoder
    from voice.enroll import enroll

    path = Path(args.clip)
    if not path.is_file():
        raise UserError(f"clip not found: {path}")
    if args.fit_codec and not args.keep_clip:
        raise UserError("--fit-codec fits the codec's decoder to the clip, which the store must keep: add --keep-clip")
    engine = _voice_engine(args) if args.fit_codec else None   # refused before anything is stored
    with _open_store(args) as store:
        record = enroll(store, load_encoder(args.encoder), path.read_bytes(), args.name, args.consent,
                        keep_clip=args.keep_clip)
    print(f"enrolled voice {record.name!r} ({record.clip_seconds:.1f} s of speech) in {store.path}")
    if engine is not None:
        _fit_voice(args, engine, record.name)
    elif args.keep_clip:
        print(f"its speech is calibrated on first use (about 20 s, once), or now: tts voice fit {record.name}")
    return 0


def _voice_engine(args: argparse.Namespace) -> Engine:
    """The engine a voice is fitted for (its codec must follow voices)."""
    from tts.engine import Engine

    return _require_voice_decoder(Engine.load(codec=args.codec, backbone=args.backbone))


def _require_voice_decoder(engine: Engine) -> Engine:
    """`engine`, refused where its codec's decoder follows no voice (nothing to fit or calibrate)."""
    if not engine.codec.speaker_conditioned:
        raise UserError("this codec's decoder follows no voice: there is no voice to fit")
    return engine


def _fit_voice(args: argparse.Namespace, engine: Engine, name: str) -> None:
    """Fit voice `name`'s kept clip now (tens of seconds each), so that no later command waits for it; the store
    keeps both: the codec decoder's voice fitted to the clip's own codes (for `tts codec encode/decode --voice
    NAME --fit-voice`), and the decoder voice calibrated on the backbone's speech (`tts say --voice NAME` and the
    server use it)."""
    import time

    from tts.voice_calibration import calibrate_enrolled_voice, kept_speech_voice
    from voice.enroll import decoder_voice, kept_decoder_voice

    with _open_store(args) as store:
        for what, kept, fit in (
                ("the codec's voice", kept_decoder_voice(store, engine.codec, name),
                 lambda: decoder_voice(store, engine.codec, name)),
                ("its speech", kept_speech_voice(store, engine, name),
                 lambda: calibrate_enrolled_voice(store, engine, name))):
            if kept is not None:
                print(f"voice {name!r}: {what} is already fitted")
                continue
            started = time.perf_counter()
            result = fit()
            print(f"voice {name!r}: fitted {what} in {time.perf_counter() - started:.0f} s")
            if not getattr(result, "accepted", True):   # a calibration the speaker encoder refused
                print(f"voice {name!r}: the calibrated speech sounded less like the voice (speaker cosine "
                      f"{result.similarity_before:.2f} -> {result.similarity_after:.2f}), so its speech is "
                      "decoded in its own embedding")


def _cmd_voice_fit(args: argparse.Namespace) -> int:
    _fit_voice(args, _voice_engine(args), args.name)
    return 0


def _cmd_voice_list(args: argparse.Namespace) -> int:
    from voice.encoder import load_encoder
    from voice.enroll import all_voices

    current = load_encoder(args.encoder).model_id
    with _open_store(args) as store:
        voices = all_voices(store)
    if args.json:
        print(json.dumps([{**v.summary(), "stale": v.encoder_version != current} for v in voices], indent=1))
        return 0
    for v in voices:
        kind = "built-in" if v.preset else f"enrolled {v.created}"
        stale = "  STALE: embedded by another encoder" if v.encoder_version != current else ""
        print(f"{v.name:24s} {kind}{stale}")
    return 0


def _cmd_voice_show(args: argparse.Namespace) -> int:
    from voice.encoder import load_encoder
    from voice.enroll import StaleVoiceError, resolve_voice

    with _open_store(args) as store:
        current = load_encoder(args.encoder).model_id
        try:
            record, stale = resolve_voice(store, args.name, current), False
        except StaleVoiceError:
            record, stale = store.get(args.name), True
        # what `tts voice fit` kept: a codec decoder's id (its voice fitted to the clip's codes), and
        # "speech:CODEC:BACKBONE" (the decoder voice calibrated on that backbone's speech)
        fitted = [] if record.preset else sorted(store.decoder_voices(args.name))
    print(json.dumps({**record.summary(), "stale": stale, "fitted_for": fitted}, indent=1))
    return 0


def _cmd_voice_delete(args: argparse.Namespace) -> int:
    from voice.presets import refuse_built_in

    refuse_built_in(args.name, "deleted")
    with _open_store(args) as store:
        store.delete(args.name)
    print(f"deleted voice {args.name!r}")
    return 0


def _cmd_voice_export(args: argparse.Namespace) -> int:
    from voice.presets import refuse_built_in

    refuse_built_in(args.name, "exported (every install has it)")
    with _open_store(args) as store:
        store.export(args.name, args.file)
    print(f"exported voice {args.name!r} to {args.file}")
    return 0


def _cmd_voice_import(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        record = store.import_file(args.file, args.name)
    print(f"imported voice {record.name!r}")
    return 0


def _cmd_voice_reembed(args: argparse.Namespace) -> int:
    from voice.encoder import load_encoder
    from voice.enroll import reembed

    with _open_store(args) as store:
        record = reembed(store, load_encoder(args.encoder), args.name)
    print(f"re-embedded voice {record.name!r} with encoder {record.encoder_version}")
    return 0


def _cmd_voice_presets(args: argparse.Namespace) -> int:
    from voice.encoder import load_encoder
    from voice.presets import PRESETS_FILE, build_presets

    _require_corpus(args.corpus)
    data = build_presets(args.corpus, load_encoder(args.encoder), args.out or PRESETS_FILE)
    print(f"{len(data['voices'])} preset voices for encoder {data['encoder_version']}: "
          f"{', '.join(v['name'] for v in data['voices'])}")
    return 0


# ---------------------------------------------------------------- train


def _cmd_train_codec(args: argparse.Namespace) -> int:
    from codec.train import TrainConfig, train

    cfg = TrainConfig(corpus=args.corpus, extra_corpora=args.extra_corpus, batch_size=args.batch_size,
                      adv_start=args.adv_start, disc_warmup=args.disc_warmup,
                      init_from=args.init_from, decoder_only=args.decoder_only, focus_n_q=args.focus_n_q,
                      decay_from=args.decay_from, lr_final=args.lr_final, select_by=args.select_by,
                      lambda_phase=args.phase_loss, lambda_if=args.if_loss, lambda_pitch=args.pitch_loss,
                      lambda_contrast=args.contrast_loss, lambda_harmonic=args.harmonic_loss,
                      lambda_pesq=args.pesq_loss, pesq_compensate=args.pesq_compensate,
                      lambda_stoi=args.stoi_loss,
                      pitch_teacher=args.pitch_teacher, lambda_speaker=args.speaker_loss,
                      speaker_conditioning=args.speaker_conditioning, voice_dropout=args.voice_dropout,
                      speaker_encoder=args.speaker_encoder or "", voice_warp=args.voice_warp,
                      loader_workers=args.loader_workers, export_last=args.export_last or "",
                      init_disc=args.init_disc or "",
                      codec={k: v for k, v in (("decoder", args.decoder), ("decoder_phase", args.decoder_phase),
                                               ("decoder_harmonics", args.harmonics)) if v is not None},
                      **_trainer_options(args))
    for corpus in [args.corpus, *args.extra_corpus]:
        _require_corpus(corpus)
    print(json.dumps(train(cfg)))
    return 0


def _trainer_options(args: argparse.Namespace) -> dict:
    """The tts.training.TrainerOptions fields set by `_add_trainer_args`."""
    export = args.export or str(Path(args.out) / args.export_name)
    return dict(out_dir=args.out, export=export, steps=args.steps, lr=args.lr, valid_every=args.valid_every,
                device=args.device, threads=args.threads, max_minutes=args.max_minutes, log_every=args.log_every)


def _sampling_config(args: argparse.Namespace):
    """backbone.generate.SamplingConfig from the sampling flags a command has (--temperature, --guidance,
    --rate), checked."""
    from backbone.generate import SamplingConfig

    given = {k: getattr(args, k, None) for k in ("temperature", "guidance", "speaking_rate")}
    sampling = SamplingConfig(**{k: v for k, v in given.items() if v is not None})
    try:
        sampling.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return sampling


def _require_corpus(corpus: str) -> None:
    if not (Path(corpus) / "manifest.jsonl").is_file():
        raise UserError(f"{corpus} holds no manifest.jsonl: build one with 'tts data build'")


def _cmd_train_voice(args: argparse.Namespace) -> int:
    from voice.train import VoiceTrainConfig, train_voice

    _require_corpus(args.corpus)
    overrides = {"pitch_bins": args.pitch_bins, "window_seconds": args.window_seconds,
                 "window_hop_seconds": args.window_hop}
    cfg = VoiceTrainConfig(corpus=args.corpus, batch_size=args.batch_size, init_from=args.init_from,
                           resume_from=args.resume_from, warp_factors=tuple(args.warp_factors),
                           encoder={k: v for k, v in overrides.items() if v is not None},
                           max_seconds_per_speaker=args.seconds_per_speaker, **_trainer_options(args))
    print(json.dumps(train_voice(cfg)))
    return 0


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from backbone.tokenizer import train_tokenizer

    _require_corpus(args.corpus)
    print(json.dumps(train_tokenizer(args.corpus, args.out, args.vocab_size)))
    return 0


def _cmd_train_phonemes(args: argparse.Namespace) -> int:
    from backbone.phonemes import train_phoneme_inventory
    from backbone.tokenizer import training_texts

    _require_corpus(args.corpus)
    print(json.dumps(train_phoneme_inventory(training_texts(args.corpus), args.out, args.voice)))
    return 0


def _cmd_train_retokenize(args: argparse.Namespace) -> int:
    from backbone.data import retokenize_token_cache
    from backbone.tokenizer import load_tokenizer

    meta = retokenize_token_cache(args.cache, args.out, load_tokenizer(args.tokenizer))
    print(json.dumps({"cache": args.out, **meta}))
    return 0


def _cmd_train_aligner(args: argparse.Namespace) -> int:
    from backbone.aligner import AlignerTrainConfig, train_aligner

    cfg = AlignerTrainConfig(**_trainer_options(args), cache=args.cache, frames_per_batch=args.batch_frames)
    print(json.dumps(train_aligner(cfg)))
    return 0


def _cmd_train_align(args: argparse.Namespace) -> int:
    from backbone.aligner import align_token_cache

    print(json.dumps({"cache": args.out, **align_token_cache(args.cache, args.aligner, args.out)}))
    return 0


def _cmd_train_reembed(args: argparse.Namespace) -> int:
    from backbone.data import refresh_speaker_embeddings
    from voice.encoder import load_encoder

    _require_corpus(args.corpus)
    meta, before = refresh_speaker_embeddings(args.cache, args.corpus, load_encoder(args.encoder))
    print(json.dumps({"cache": args.cache, "encoder_id": meta["encoder_id"], "was": before}))
    return 0


def _cmd_train_warp(args: argparse.Namespace) -> int:
    from backbone.data import warp_token_cache
    from codec.loaders import DEFAULT_CODEC
    from voice.encoder import load_encoder

    _require_corpus(args.corpus)
    meta = warp_token_cache(args.cache, args.out, args.corpus, args.codec or DEFAULT_CODEC,
                            load_encoder(args.encoder), args.rates, args.share, args.workers, args.seed)
    print(json.dumps({"cache": args.out, **meta}))
    return 0


def _cmd_train_average(args: argparse.Namespace) -> int:
    from tts.modelfile import average_model_files

    model_id = average_model_files(args.models, args.out, args.weights)
    print(json.dumps({"model": args.out, "model_id": model_id, "averaged_from": args.models}))
    return 0


def _cmd_train_recode(args: argparse.Namespace) -> int:
    from backbone.data import load_token_cache, recode_token_cache
    from backbone.model import load_backbone, save_backbone
    from backbone.retarget import code_correspondence, retarget
    from tts.training import TrainingSetupError

    _require_corpus(args.corpus)
    old = load_token_cache(args.cache)
    model = load_backbone(args.backbone) if args.backbone else None
    if model is not None and model.config.codec_id != old.meta["codec_id"]:   # checked before the long encode
        raise TrainingSetupError(f"{args.backbone} speaks codec {model.config.codec_id}, "
                                 f"but {args.cache} holds codec {old.meta['codec_id']}'s tokens")
    meta = recode_token_cache(args.cache, args.out, args.corpus, args.codec, args.workers)
    report = {"cache": args.out, **meta}
    if model is not None:
        retarget(model, code_correspondence(old, load_token_cache(args.out), model.config.card), meta["codec_id"])
        report["backbone"] = args.backbone_out
        report["backbone_id"] = save_backbone(model, args.backbone_out, 0, {"retargeted_from": model.model_id})
    print(json.dumps(report))
    return 0


def _cmd_train_backbone(args: argparse.Namespace) -> int:
    from backbone.train import BackboneTrainConfig, train_backbone

    cache = Path(args.cache)
    if not cache.is_file():
        from backbone.data import build_token_cache
        from backbone.tokenizer import load_tokenizer
        from codec.loaders import DEFAULT_CODEC, load_codec
        from voice.encoder import load_encoder

        _require_corpus(args.corpus)
        print(f"tokenising {args.corpus} into {cache} (once) ...", file=sys.stderr)
        build_token_cache(args.corpus, cache, load_codec(), load_tokenizer(args.tokenizer), load_encoder(),
                          args.codebooks, max_hours_per_split=args.max_hours or None, workers=args.workers,
                          codec_path=DEFAULT_CODEC)
    model = {k: v for k, v in {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads,
                                "ffn": args.ffn, "dropout": args.dropout}.items() if v}
    cfg = BackboneTrainConfig(cache=str(cache), frames_per_batch=args.batch_frames, model=model,
                              init_from=args.init_from, new_text_tokens=args.new_text_tokens,
                              uncond_dropout=args.uncond_dropout, warmup_steps=args.warmup_steps,
                              guide_weight=args.guide, guide_sigma=args.guide_sigma,
                              guide_layers=tuple(args.guide_layers), guide_heads=args.guide_heads,
                              guide_aligned=args.guide_aligned, guide_token_sigma=args.guide_token_sigma,
                              reading_weight=args.reading, read_pointer=args.read_pointer,
                              speaker_steps=args.speaker_steps, new_lr_scale=args.new_lr_scale,
                              **_trainer_options(args))
    print(json.dumps(train_backbone(cfg)))
    return 0


# ---------------------------------------------------------------- say


def _cmd_say(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tts.engine import Engine, SynthesisOptions
    from tts.say import say
    from voice.store import VoiceStore

    text = _say_text(args.text)
    if args.sample_rate is not None and not 8000 <= args.sample_rate <= 48000:
        raise UserError(f"--sample-rate must be between 8000 and 48000 Hz; got {args.sample_rate}")
    _check_audio_out(args.out)
    if not args.out and not args.play:
        args.play = True
    if args.calibrate_clone and not args.clone:
        raise UserError("--calibrate-clone calibrates a --clone CLIP voice; an enrolled voice is calibrated anyway")
    clip = _read_clip(args.clone) if args.clone else None
    engine = Engine.load(backbone=args.backbone, codec=args.codec, store=VoiceStore(args.store) if args.store else None)
    options = SynthesisOptions(seed=args.seed, sampling=_sampling_config(args))
    segments = engine.segments(text, options)   # empty or unspeakable text fails before any model work
    speaker = engine.clone_embedding(clip) if clip is not None else engine.voice_embedding(args.voice)
    if clip is None:      # a calibrated enrolled voice, calibrated now if never (and its clip kept)
        decoder_voice = engine.speech_voice(
            args.voice, calibrate=not args.no_calibrate,
            on_calibrate=lambda: print(f"voice {args.voice!r}: calibrating its speech for this codec and backbone, "
                                       "once (about 20 s; --no-calibrate skips it)", file=sys.stderr))
    elif args.calibrate_clone:
        _require_voice_decoder(engine)
        print("calibrating the clone's speech on its clip (about 20 s)", file=sys.stderr)
        decoder_voice = engine.clone_speech_voice(clip, speaker)
    else:
        decoder_voice = None
    bar = None

    def on_segment(index: int, total: int) -> None:
        nonlocal bar
        if total > 1 and bar is None:
            bar = tqdm(total=total, unit="segment", disable=not sys.stderr.isatty(), file=sys.stderr)
        if bar is not None and index:
            bar.update(1)

    report = say(engine, segments, speaker, options, out=args.out, play=args.play, sample_rate=args.sample_rate,
                 on_segment=on_segment, decoder_voice=decoder_voice)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()
    if args.out:
        print(f"wrote {args.out} ({report.audio_seconds:.2f} s)", file=sys.stderr)
    if args.verbose:
        print(report.summary(), file=sys.stderr)
    return 0


def _check_audio_out(path: str | None) -> None:
    """Refuse an output file that cannot be written (name, folder, permission) before any model loads."""
    from tts.audio import check_output_path

    if path:
        check_output_path(path)


def _say_text(argument: str | None) -> str:
    from tts.say import read_text_argument

    text = read_text_argument(argument)
    if not text.strip():
        raise UserError("no text to speak: give it as an argument or on standard input")
    return text


def _read_clip(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the clip {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- serve / client


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from serve.server import ServerConfig, serve_forever
    from tts.engine import Engine
    from voice.store import VoiceStore

    max_streams = ServerConfig.max_streams if args.max_streams is None else args.max_streams
    if max_streams < 1:
        raise UserError("--max-streams must be at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UserError("TLS needs both --tls-cert and --tls-key")
    logging.getLogger("tts.serve").setLevel(logging.INFO)
    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    store = VoiceStore(args.store)
    engine = Engine.load(backbone=args.backbone, codec=args.codec, store=store)
    config = ServerConfig(host=args.host, port=args.port, token=args.token or os.environ.get("TTS_TOKEN"),
                          tls_cert=args.tls_cert, tls_key=args.tls_key, max_streams=max_streams,
                          calibrate_voices=not args.no_calibrate)
    asyncio.run(serve_forever(engine, store, config))
    return 0


def _client(args: argparse.Namespace):
    from serve.client import TtsClient

    return TtsClient(args.target, token=args.token or os.environ.get("TTS_TOKEN"), tls_ca=args.tls_ca)


def _rpc_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """gRPC failures as one line: the status and the server's message."""
    def run(args: argparse.Namespace) -> int:
        import grpc

        try:
            return func(args)
        except grpc.RpcError as exc:
            raise UserError(f"{exc.code().name}: {exc.details()}") from None
    return run


def _cmd_client_say(args: argparse.Namespace) -> int:
    import torch

    from codec.bitstream import unpack_frames
    from codec.compress import STREAM_SUFFIX
    from serve.stubs import pb
    from tts.say import deliver

    text = _say_text(args.text)
    keep_packets = bool(args.out) and Path(args.out).suffix.lower() == STREAM_SUFFIX
    if keep_packets:   # the server's codec packets, kept as they come in a stream file (`tts codec decode` plays it)
        if args.encoding not in (None, "codec"):
            raise UserError(f"a {STREAM_SUFFIX} file holds codec packets: leave out --encoding {args.encoding} "
                            f"or write a .wav / .flac")
        args.encoding = "codec"
        from tts.audio import check_output_path

        check_output_path(args.out, formats=None)
    else:
        _check_audio_out(args.out)
    if not args.out and not args.play:
        args.play = True
    pcm_wanted = args.play or not keep_packets   # a .sttc alone needs no decoding, and no codec here
    encoding = {"linear16": pb.LINEAR16, "float32": pb.FLOAT32, "codec": pb.CODEC}[args.encoding or "linear16"]
    with _client(args) as client:
        stream = client.stream(text, voice=args.voice, encoding=encoding, sample_rate=args.sample_rate or 0,
                               seed=args.seed, codec_kbps=args.kbps, speaking_rate=args.rate)
        first = next(stream)          # fails here, before any audio device opens, on a bad request
        rate = first.format.sample_rate_hz
        info = first.format.codec
        packets: list = []            # each chunk's codes [frames, n_q], for a stream file
        decoder = pace = None
        if encoding == pb.CODEC and pcm_wanted:
            decoder = _codec_packet_decoder(info)
            if info.speaking_rate not in (0.0, 1.0):   # the packets keep the voice's pace: the listener sets it
                from tts.stream.tempo import TempoStretcher

                pace = TempoStretcher(info.speaking_rate, decoder.sample_rate)

        def paced(pcm: np.ndarray) -> Iterator[np.ndarray]:
            """The PCM at the stream's speaking rate; empty pieces left out."""
            out = pace.push(pcm) if pace is not None else pcm
            if len(out):
                yield out

        remaining = [first.remaining_seconds_estimate]

        def pcm_chunks():
            for chunk in [first, *stream]:
                remaining[0] = chunk.remaining_seconds_estimate
                if encoding != pb.CODEC:
                    yield client.pcm(chunk)
                    continue
                packets.append(unpack_frames(chunk.audio, info.n_q, info.bits_per_code))
                if decoder is not None:
                    for pcm in decoder.push(list(torch.from_numpy(packets[-1]).long())):
                        yield from paced(pcm)
            if decoder is not None and (tail := decoder.flush()) is not None:
                yield from paced(tail)
            if pace is not None and len(rest := pace.flush()):
                yield rest

        if not pcm_wanted:
            for _ in pcm_chunks():
                pass
        else:
            ttfa, elapsed, seconds, stats = deliver(pcm_chunks(), rate, None if keep_packets else args.out,
                                                    args.play, lambda: remaining[0])
    if keep_packets:
        header = _write_packets(args.out, packets, info, rate)
        pace_note = "" if args.rate in (None, 1.0) else ", at the voice's own pace: a file keeps no speaking rate"
        print(f"wrote {args.out} ({header.num_samples / rate:.2f} s, {header.n_q} quantizers = {header.kbps:.2f} "
              f"kbps, {'its voice' if header.voice else 'no voice'}{pace_note})", file=sys.stderr)
    elif args.out:
        print(f"wrote {args.out} ({seconds:.2f} s)", file=sys.stderr)
    if args.verbose and pcm_wanted:
        print(f"time to first audio {ttfa * 1000:.0f} ms (after the first chunk arrived), {seconds:.2f} s of audio "
              f"in {elapsed:.2f} s, underruns {stats.underruns}", file=sys.stderr)
    return 0


def _codec_packet_decoder(info: CodecInfo) -> ChunkedDecoder:
    """A streaming decoder for a server's codec packets (`CodecInfo`), in the stream's voice where the local
    codec's decoder follows the same speaker encoder; UserError if its tokens are not the server's."""
    from codec.compress import followed_voice, require_tokens
    from codec.loaders import load_codec
    from tts.stream.decoder import ChunkedDecoder

    codec = load_codec()
    require_tokens(codec, info.model_id, "the server's stream")
    voice = None
    if len(info.voice_embedding):   # a server that names no encoder predates voice_encoder_id: trusted, as before
        voice = followed_voice(codec, list(info.voice_embedding), info.voice_encoder_id or codec.speaker_encoder_id)
    return ChunkedDecoder(codec, speaker=voice)   # the stream's voice, for a conditioned decoder


def _write_packets(path: str, packets: list, info: CodecInfo, sample_rate: int) -> StreamHeader:
    """The server's codec packets as a stream file, with their voice where the server sent one."""
    import numpy as np

    from codec.bitstream import StreamHeader, StreamVoice
    from codec.compress import write_stream_file

    codes = np.concatenate(packets) if packets else np.zeros((0, info.n_q), np.int64)
    voice = None
    if len(info.voice_embedding) and info.voice_encoder_id:
        voice = StreamVoice.of(np.asarray(info.voice_embedding, np.float32), info.voice_encoder_id)
    header = StreamHeader(sample_rate=sample_rate, hop_length=info.hop_length, n_q=info.n_q,
                          bits_per_code=info.bits_per_code, num_samples=len(codes) * info.hop_length,
                          num_frames=len(codes), model_id=info.model_id, voice=voice)
    write_stream_file(path, header, codes)
    return header


def _cmd_client_enroll(args: argparse.Namespace) -> int:
    with _client(args) as client:
        voice = client.enroll(args.name, _read_clip(args.clip), args.consent, args.keep_clip)
    print(f"enrolled {voice.name} ({voice.clip_seconds:.1f} s of speech)")
    return 0


def _cmd_client_voices(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for voice in client.voices():
            calibrated = "\tcalibrated" if voice.calibrated else ""
            print(f"{voice.name}\t{'preset' if voice.preset else 'enrolled'}\t{voice.clip_seconds:.1f} s{calibrated}")
    return 0


# ---------------------------------------------------------------- bench


def _cmd_bench_codec(args: argparse.Namespace) -> int:
    from benchmarks.codec_bench import format_comparisons, format_table, paired_comparisons, run
    from codec.loaders import load_codec
    from voice.encoder import load_encoder

    _require_corpus(args.corpus)
    model = load_codec(args.model)
    encoder = load_encoder(args.encoder)
    print(f"codec {model.model_id} (step {model.train_step}), {args.utterances} utterances of unseen speakers "
          f"from {args.corpus}; voice by speaker encoder {encoder.model_id}")
    if args.attribution:
        from benchmarks import codec_attribution

        print(f"at {args.attribution:g} kbps, in the voice the stream carries:")
        print(codec_attribution.format_table(codec_attribution.run(model, args.corpus, args.utterances,
                                                                   args.attribution, encoder)))
        return 0
    rows = run(model, args.corpus, n_utts=args.utterances, encoder=encoder, fit_voices=args.fit_voice)
    print(format_table(rows))
    print("\npaired with Opus on the same clips (the issue's targets):")
    print(format_comparisons(paired_comparisons(rows)))
    return 0


def _cmd_bench_voice(args: argparse.Namespace) -> int:
    from benchmarks.voice_bench import format_report, run
    from voice.encoder import load_encoder

    _require_corpus(args.corpus)
    encoder = load_encoder(args.encoder)
    print(format_report(run(encoder, args.corpus, clips_per_speaker=args.clips_per_speaker)))
    return 0


def _cmd_bench_tts(args: argparse.Namespace) -> int:
    from benchmarks.tts_bench import format_report, run
    from tts.engine import Engine

    corpus = args.corpus if (Path(args.corpus) / "manifest.jsonl").is_file() else None
    print(format_report(run(Engine.load(backbone=args.backbone, codec=args.codec), args.voice, args.seeds, corpus)))
    return 0


def _cmd_bench_backbone(args: argparse.Namespace) -> int:
    from benchmarks.backbone_bench import format_report, run, speed_report, speed_table
    from tts.engine import Engine

    if args.text_reliance:   # teacher-forced, on the token cache: no synthesis, no recogniser
        from backbone.model import DEFAULT_BACKBONE
        from backbone.train import text_reliance

        result = text_reliance(args.backbone or str(DEFAULT_BACKBONE), args.text_reliance, args.utterances)
        print(f"text reliance, {result['utterances']} validation utterances, teacher-forced loss (per codebook): "
              + "; ".join(f"{label} {result[mode]['valid_loss']:.4f} {result[mode]['valid_per_codebook']}"
                          for mode, label in (("own", "own text"), ("other", "another's text of its length"),
                                              ("none", "no text"))))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    engine = Engine.load(backbone=args.backbone, codec=args.codec)
    if args.speed_only:   # no corpus needed: a unit-norm voice stands in for a reference
        import numpy as np

        dim = engine.backbone.config.speaker_dim
        result = {"speed": speed_table(engine, np.full(dim, dim ** -0.5, np.float32), _sampling_config(args))}
        print("\n".join(speed_report(result)))
    else:
        _require_corpus(args.corpus)
        from benchmarks.token_reader import shipped_reader

        reader = shipped_reader(engine.codec, engine.tokenizer, args.reader)
        result = run(engine, args.corpus, args.utterances, args.sentences, seed=args.seed,
                     sampling=_sampling_config(args), reader=reader, calibrated=not args.no_calibrated)
        print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _cmd_bench_serve(args: argparse.Namespace) -> int:
    import tempfile

    from benchmarks.serve_bench import format_report, run
    from tts.engine import Engine
    from voice.store import VoiceStore

    levels = [int(n) for n in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        store = VoiceStore(Path(tmp) / "voices.db")
        print(format_report(run(Engine.load(backbone=args.backbone, codec=args.codec), store, levels,
                                args.while_calibrating)))
    return 0


# ---------------------------------------------------------------- parser


def _add_trainer_args(p: argparse.ArgumentParser, name: str, steps: int, batch_size: int | None, lr: float,
                      valid_every: int, export_name: str = BEST_EXPORT) -> None:
    """Options every trainer shares (same names, same meaning).

    The best model goes under the run's own folder unless --export says otherwise: a run never
    replaces the shipped model in assets/ by default (shipping is a deliberate copy)."""
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--out", default=f"runs/{name}", help="checkpoints and train.log")
    p.add_argument("--export", default=None,
                   help=f"where the best model is written (default: OUT/{export_name}; to ship it, copy it into "
                   f"assets/)")
    p.set_defaults(export_name=export_name)
    p.add_argument("--steps", type=int, default=steps)
    if batch_size is not None:
        p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long (0: no limit)")
    p.add_argument("--valid-every", type=int, default=valid_every)
    p.add_argument("--log-every", type=int, default=25)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts", description="Streaming text-to-speech with voice cloning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job: speak a sentence with the shipped model (WAV, and play it)")
    demo.add_argument("--text", default="Hello! This is a streaming text to speech engine, speaking on your CPU.")
    demo.add_argument("--voice", default="slt")
    demo.add_argument("--out", default="hello.wav")
    demo.set_defaults(func=_cmd_demo)

    sp = sub.add_parser("say", help="speak text (argument or stdin) to a WAV file or the speakers")
    sp.add_argument("text", nargs="?", help="text to speak; '-' or absent: read standard input")
    who = sp.add_mutually_exclusive_group()
    who.add_argument("--voice", default="slt", help="preset or enrolled voice (see 'tts voices'); default slt")
    who.add_argument("--clone", metavar="CLIP", help="clone the voice of a 3-30 s clip (not stored)")
    sp.add_argument("--out", help="write the audio here (.wav or .flac, 16-bit)")
    sp.add_argument("--play", action="store_true", help="also play it (the default when there is no --out)")
    sp.add_argument("--seed", type=int, default=0, help="sampling seed: same seed, same audio")
    sp.add_argument("--temperature", type=float, default=None, help="sampling temperature (0 = greedy; default 0.8)")
    sp.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance weight (1 = off; used when the model was trained for it)")
    sp.add_argument("--rate", dest="speaking_rate", type=float, default=None,
                    help="speaking rate, 0.5-2 (1 = the voice's own), at the voice's pitch")
    sp.add_argument("--sample-rate", type=int, default=None, help="output sample rate (default: the codec's, 16000)")
    sp.add_argument("--backbone", default=None, help="backbone model file (default: the shipped one)")
    sp.add_argument("--codec", default=None, help=CODEC_HELP)
    sp.add_argument("--store", default=None, help="voice store (default: $TTS_HOME/voices.db)")
    sp.add_argument("--calibrate-clone", action="store_true",
                    help="with --clone: decode in a voice calibrated on the clip first (about 20 s; closer to the "
                         "voice, as an enrolled voice is after `tts voice fit`)")
    sp.add_argument("--no-calibrate", action="store_true",
                    help="an enrolled voice (with its clip kept) that has no calibration for these models is not "
                         "calibrated now (about 20 s, once): its speech is decoded in its embedding")
    sp.set_defaults(func=_cmd_say)

    sv = sub.add_parser("serve", help="run the gRPC server")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=50051)
    sv.add_argument("--token", default=None, help="require 'authorization: Bearer TOKEN' (or set TTS_TOKEN)")
    sv.add_argument("--tls-cert", default=None)
    sv.add_argument("--tls-key", default=None)
    sv.add_argument("--max-streams", type=int, default=None,
                    help="concurrent synthesis streams, more are refused with RESOURCE_EXHAUSTED (default: "
                         "serve.server.ServerConfig's, 12: what one core keeps in real time)")
    sv.add_argument("--backbone", default=None)
    sv.add_argument("--codec", default=None, help=CODEC_HELP)
    sv.add_argument("--store", default=None, help="voice store (default: $TTS_HOME/voices.db)")
    sv.add_argument("--no-calibrate", action="store_true",
                    help="do not calibrate enrolled voices' speech in the background (after an enrollment that "
                         "keeps its clip, or on a voice's first request)")
    sv.set_defaults(func=_cmd_serve)

    cl = sub.add_parser("client", help="talk to a running server").add_subparsers(dest="client_command",
                                                                                 required=True)
    for name, func, helptext in (("say", _cmd_client_say, "stream speech from the server to a file or the speakers"),
                                 ("enroll", _cmd_client_enroll, "enroll a voice on the server"),
                                 ("voices", _cmd_client_voices, "list the server's voices")):
        c = cl.add_parser(name, help=helptext)
        c.add_argument("--target", default="127.0.0.1:50051")
        c.add_argument("--token", default=None)
        c.add_argument("--tls-ca", default=None, help="CA certificate for a TLS server")
        c.set_defaults(func=_rpc_errors(func))
        if name == "say":
            c.add_argument("text", nargs="?")
            c.add_argument("--voice", default="")
            c.add_argument("--out", help="a .wav / .flac, or a .sttc to keep the server's codec packets as a stream")
            c.add_argument("--play", action="store_true")
            c.add_argument("--seed", type=int, default=0)
            c.add_argument("--sample-rate", type=int, default=None)
            c.add_argument("--encoding", choices=["linear16", "float32", "codec"], default=None,
                           help="what the server sends (default: linear16; codec for a .sttc --out)")
            c.add_argument("--kbps", type=float, default=0.0, help="codec bitrate (codec encoding)")
            c.add_argument("--rate", type=float, default=None, help="speaking rate, 0.5-2 (1 = the voice's own)")
        elif name == "enroll":
            c.add_argument("clip")
            c.add_argument("--name", required=True)
            c.add_argument("--consent", required=True)
            c.add_argument("--keep-clip", action="store_true")

    data = sub.add_parser("data", help="training corpora").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="synthesise the offline multi-speaker corpus (flite + espeak-ng; "
                                          "festival's voices for a codec's extra corpus)")
    build.add_argument("--out", default="data/corpus", help="output folder (default: data/corpus)")
    build.add_argument("--hours", type=float, default=30.0, help="hours of speech to plan (default: 30)")
    build.add_argument("--flite-speakers", type=int, default=72)
    build.add_argument("--espeak-speakers", type=int, default=60)
    build.add_argument("--festival-speakers", type=int, default=0,
                       help="speakers from festival's ten voices (accented English: for 'tts train codec "
                            "--extra-corpus', not the backbone)")
    build.add_argument("--festival-share", type=float, default=0.0,
                       help="share of utterances festival speaks beside the other engines")
    build.add_argument("--seed", type=int, default=1234)
    build.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    build.set_defaults(func=_cmd_data_build)

    imp = data.add_parser("import", help="turn your recordings (wav+txt pairs or LibriTTS) into a corpus")
    imp.add_argument("src", help="folder of recordings")
    imp.add_argument("--out", required=True, help="output corpus folder")
    imp.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    imp.add_argument("--held-out", nargs="+", metavar="SPEAKER",
                     help="these speakers (sub-folders) are held out of training: the benches' `unseen` voices "
                          "(default: a tenth of the speakers, where there are five or more)")
    imp.set_defaults(func=_cmd_data_import)

    real = data.add_parser("real", help="a corpus of real human voices from Debian packages (English ones held out)")
    real.add_argument("--out", default="data/real", help="output corpus folder")
    real.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    real.set_defaults(func=_cmd_data_real)

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
    enc.add_argument("--no-voice", action="store_true",
                     help="leave out the input's voice (about 200 bytes a stream), which a decoder that follows "
                          "the voice speaks in; without it, such a decoder uses its default voice")
    enc.add_argument("--encoder", default=None, help="speaker encoder that embeds the voice (default: the shipped "
                                                     "one, which the shipped codec follows)")
    enc.add_argument("--fit-voice", action="store_true",
                     help="fit the voice the stream carries to the input's first 10 s (codec/voice_fit.py): a new "
                          "voice decodes closer to the input, for 4 352 more bytes and up to 40 s of CPU; with "
                          "--voice, that voice fitted to its enrollment clip, once, then kept in the store")
    enc.add_argument("--voice", default=None, metavar="NAME",
                     help="carry this enrolled or built-in voice instead of the input's (for many short "
                          "recordings of one enrolled speaker; add --fit-voice for the best rendering)")
    enc.add_argument("--store", default=None, help="voice store file for --voice (default: $TTS_HOME/voices.db or "
                                                   "~/.local/share/tts/voices.db)")
    enc.set_defaults(func=_cmd_codec_encode)
    dec = codec.add_parser("decode", help="codec stream -> WAV")
    dec.add_argument("input")
    dec.add_argument("output")
    dec.add_argument("--model", default=None)
    dec.add_argument("--voice", default=None, metavar="NAME",
                     help="decode in this enrolled or built-in voice instead of the stream's (a stream encoded "
                          "with --no-voice saves the voice's bytes when the listener holds the voice)")
    dec.add_argument("--fit-voice", action="store_true",
                     help="with --voice: that voice fitted to its enrollment clip (fitted once, then kept)")
    dec.add_argument("--store", default=None, help="voice store file for --voice (default: $TTS_HOME/voices.db or "
                                                   "~/.local/share/tts/voices.db)")
    dec.set_defaults(func=_cmd_codec_decode)

    voice = sub.add_parser("voice", help="enroll and manage voices").add_subparsers(dest="voice_command",
                                                                                     required=True)

    def voice_cmd(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = voice.add_parser(name, help=help_text)
        p.add_argument("--store", default=None, help="voice store file (default: $TTS_HOME/voices.db or "
                                                     "~/.local/share/tts/voices.db)")
        p.add_argument("--encoder", default=None, help="speaker encoder file (default: the shipped one)")
        p.set_defaults(func=func)
        return p

    ve = voice_cmd("enroll", _cmd_voice_enroll, "enroll a voice from a 3-30 s clip of one speaker")
    ve.add_argument("clip", help="wav, flac or ogg file")
    ve.add_argument("--name", required=True)
    ve.add_argument("--consent", required=True,
                    help="the consent statement the speaker affirmed (stored with the voice)")
    ve.add_argument("--keep-clip", action="store_true", help="also store the clip (to re-embed it later)")
    ve.add_argument("--fit-codec", action="store_true", help="also fit the voice to the kept clip now, as 'tts voice "
                    "fit' (needs --keep-clip)")
    ve.add_argument("--codec", default=None, help="with --fit-codec: codec model file (default: the shipped one)")
    ve.add_argument("--backbone", default=None, help="with --fit-codec: backbone model file (default: the shipped one)")
    voice_cmd("list", _cmd_voice_list, "list built-in and enrolled voices").add_argument("--json", action="store_true")
    voice_cmd("show", _cmd_voice_show, "show one voice's metadata").add_argument("name")
    voice_cmd("delete", _cmd_voice_delete, "delete an enrolled voice").add_argument("name")
    vx = voice_cmd("export", _cmd_voice_export, "write a voice to a portable file")
    vx.add_argument("name")
    vx.add_argument("file")
    vi = voice_cmd("import", _cmd_voice_import, "add a voice from an exported file")
    vi.add_argument("file")
    vi.add_argument("--name", default=None, help="store it under another name")
    voice_cmd("reembed", _cmd_voice_reembed, "re-embed a voice from its kept clip").add_argument("name")
    vf = voice_cmd("fit", _cmd_voice_fit, "fit a voice to its kept clip now (about a minute, once per codec and "
                   "backbone): its speech in 'tts say' and the server, and 'tts codec ... --voice NAME --fit-voice'")
    vf.add_argument("name")
    vf.add_argument("--codec", default=None, help="codec model file (default: the shipped one)")
    vf.add_argument("--backbone", default=None, help="backbone model file (default: the shipped one)")
    vp = voice_cmd("presets", _cmd_voice_presets, "rebuild the built-in voices from a corpus (developers)")
    vp.add_argument("--corpus", default="data/corpus")
    vp.add_argument("--out", default=None)
    vs = sub.add_parser("voices", help="list voices (same as 'tts voice list')")
    vs.add_argument("--store", default=None)
    vs.add_argument("--encoder", default=None)
    vs.add_argument("--json", action="store_true")
    vs.set_defaults(func=_cmd_voice_list)

    train = sub.add_parser("train", help="train the models").add_subparsers(dest="train_command", required=True)
    tc = train.add_parser("codec", help="train the neural codec (resumes from OUT/last.pt)")
    _add_trainer_args(tc, "codec", steps=100_000, batch_size=8, lr=3e-4, valid_every=500)
    tc.add_argument("--adv-start", type=int, default=20_000, help="step at which the discriminator joins")
    tc.add_argument("--disc-warmup", type=int, default=0,
                    help="for this many steps from --adv-start only the discriminator learns (a new discriminator "
                         "joining a trained decoder: e.g. --adv-start 54114 --disc-warmup 500 from the shipped codec)")
    tc.add_argument("--init-from", default="",
                    help="start a new run from a shipped codec file, e.g. assets/codec.safetensors")
    tc.add_argument("--decoder-only", action="store_true",
                    help="fine-tune only the decoder of --init-from: same tokens, so the backbone still fits")
    tc.add_argument("--decoder", choices=["seanet", "istft"], default=None,
                    help="decoder of a new run, or with --decoder-only a new decoder for --init-from's tokens")
    tc.add_argument("--decoder-phase", choices=["absolute", "integrated"], default=None,
                    help="ISTFT decoder: predict each spectrum's phase, or how far it moves per hop (summed over "
                         "time: coherent harmonics); with --decoder-only, switches a trained decoder's phase head")
    tc.add_argument("--harmonics", type=int, default=None,
                    help="ISTFT decoder: a harmonic source with this many oscillators at the pitch's multiples "
                         "for the voiced part (0: none); with --decoder-only, added to a trained decoder")
    tc.add_argument("--pitch-loss", type=float, default=1.0,
                    help="weight of a harmonic source's pitch and voicing loss against the real audio's")
    tc.add_argument("--pitch-teacher", type=float, default=0.0,
                    help="share of steps where a harmonic source sounds at the real audio's pitch instead of its "
                         "own, so its amplitudes learn while its pitch is still poor")
    tc.add_argument("--focus-n-q", type=int, default=0,
                    help="train half the examples at exactly this many quantizers (the backbone's: 4)")
    tc.add_argument("--decay-from", type=int, default=0,
                    help="from this step the lr falls (cosine) to --lr-final at --steps (default: constant lr)")
    tc.add_argument("--lr-final", type=float, default=1e-5)
    tc.add_argument("--phase-loss", type=float, default=0.0,
                    help="weight of the phase-derivative loss (instantaneous frequency and group delay against "
                         "the real audio's), which teaches a decoder harmonics without a discriminator; 0: off")
    tc.add_argument("--contrast-loss", type=float, default=0.0,
                    help="weight of the harmonic contrast loss: how peaked the 1-4 kHz spectrum of loud frames "
                         "is against the real audio's, wherever the peaks are (a decoder that smears harmonics "
                         "into their valleys); 0: off")
    tc.add_argument("--harmonic-loss", type=float, default=0.0,
                    help="weight of the harmonic amplitude loss: how far a harmonic source's amplitudes sit "
                         "from the real voice's harmonics beyond 3 dB either way, in log units (revives "
                         "harmonics that training silenced, whose gradient had vanished); 0: off")
    tc.add_argument("--pesq-loss", type=float, default=0.0,
                    help="weight of the PESQ loss: P.862's disturbance between the real and the decoded audio "
                         "(Bark-band loudness, added energy charged more than missing), the model the benchmark's "
                         "PESQ-WB scores with; 0: off")
    tc.add_argument("--pesq-compensate", action="store_true",
                    help="let the PESQ loss forgive a static filter and slow gain changes, as P.862 does (a "
                         "decoder then tilts its spectrum where PESQ does not look; STOI and log-mel do)")
    tc.add_argument("--stoi-loss", type=float, default=0.0,
                    help="weight of the STOI loss: 1 - the correlation of third-octave band envelopes over "
                         "384-ms segments between the real and the decoded audio (the benchmark's STOI); 0: off")
    tc.add_argument("--if-loss", type=float, default=0.0,
                    help="weight of the instantaneous-frequency loss: an integrated-phase decoder's phase moves "
                         "against the real audio's, bin by bin (with --decoder-only); 0: off")
    tc.add_argument("--speaker-loss", type=float, default=0.0,
                    help="weight of the speaker consistency loss (1 - cosine of a frozen speaker encoder's "
                         "embeddings of output and input), which keeps held-out voices recognisable; 0: off")
    tc.add_argument("--speaker-encoder", default=None,
                    help="speaker encoder file for --speaker-loss and --speaker-conditioning (default: the shipped "
                         "one)")
    tc.add_argument("--speaker-conditioning", action="store_true",
                    help="ISTFT decoder: steer it by the speaker's embedding, as the engine steers it by the voice "
                         "it speaks in (with --decoder-only: added to a trained decoder, starting as it was)")
    tc.add_argument("--voice-dropout", type=float, default=0.0,
                    help="with --speaker-conditioning: share of crops decoded in the default voice (the training "
                         "voices' mean), so a bitstream decoded without its voice keeps the voice it carries")
    tc.add_argument("--voice-warp", type=float, default=0.0,
                    help="play each training crop faster or slower by up to this share (0.15: x0.87-1.15), moving "
                         "pitch and formants as another vocal tract would: more voices to learn from (with "
                         "--speaker-conditioning, each voice's references are embedded at five warps and a crop "
                         "gets the one at its own); 0: off")
    tc.add_argument("--extra-corpus", action="append", default=[], metavar="FOLDER",
                    help="another corpus whose training utterances join the crops (repeatable): more voices, e.g. "
                         "festival's ('tts data build --out data/festival --flite-speakers 0 --espeak-speakers 0 "
                         "--festival-speakers 40 --hours 4'); validation stays on --corpus")
    tc.add_argument("--select-by", choices=["mel", "pesq"], default="mel",
                    help="export the checkpoint with the best validation log-mel distance, or the best PESQ-WB "
                         "(for adversarial training, which trades a little log-mel for sound; needs the bench extra)")
    tc.add_argument("--loader-workers", type=int, default=0,
                    help="processes that read (and warp) training crops beside the trainer; on a GPU the main "
                         "process alone cannot keep up (default 0: read in the main process)")
    tc.add_argument("--export-last", default=None,
                    help="also export the last weights here when the run ends (--export keeps the best), and "
                         "the discriminator's beside them (NAME.disc.safetensors) for --init-disc")
    tc.add_argument("--init-disc", default=None,
                    help="a new run's discriminator starts from this file (an --export-last's .disc.safetensors), "
                         "so adversarial training continued from an export keeps its critic")
    tc.set_defaults(func=_cmd_train_codec)
    tv = train.add_parser("voice", help="train the speaker encoder (resumes from OUT/last.pt)")
    _add_trainer_args(tv, "voice", steps=2500, batch_size=48, lr=2e-3, valid_every=250)
    tv.add_argument("--seconds-per-speaker", type=float, default=600.0,
                    help="audio loaded per training speaker (bounds memory)")
    tv.add_argument("--init-from", default="",
                    help="start a new run from an encoder file, e.g. assets/voice_encoder.safetensors")
    tv.add_argument("--warp-factors", type=float, nargs="+", default=[1.0],
                    help="speaker augmentation: each speaker at each playback rate is its own class, "
                         "e.g. 0.9 0.95 1 1.05 1.1")
    tv.add_argument("--pitch-bins", type=int, default=None,
                    help="rows of the periodicity (pitch) input, e.g. 64; with --init-from the encoder grows that "
                         "input with zero weights, so it starts as the old one")
    tv.add_argument("--resume-from", default="",
                    help="continue another run's training checkpoint (e.g. runs/voice/last.pt: weights, head, "
                         "optimizer, step) in --out, its best reset; --window-seconds/--window-hop may change")
    tv.add_argument("--window-seconds", type=float, default=None,
                    help="longest stretch embedded in one pass; longer clips average windows")
    tv.add_argument("--window-hop", type=float, default=None, help="hop between those windows, in seconds")
    tv.set_defaults(func=_cmd_train_voice)

    tr = train.add_parser("reembed", help="recompute a token cache's speaker embeddings with another speaker "
                          "encoder (then fine-tune the backbone on it: the voices' space changed)")
    tr.add_argument("--cache", required=True, help="token cache to update in place")
    tr.add_argument("--encoder", default=None, help="speaker encoder file (default: the shipped one)")
    tr.add_argument("--corpus", default="data/corpus")
    tr.set_defaults(func=_cmd_train_reembed)

    tw = train.add_parser("warp", help="add training voices to a token cache: each training speaker played faster "
                          "or slower (pitch, formants and tempo) is a new speaker, encoded by the codec; a cache "
                          "warped already takes more rates")
    tw.add_argument("--cache", required=True, help="token cache (aligned or not) to copy")
    tw.add_argument("--out", required=True, help="the new token cache")
    tw.add_argument("--rates", type=float, nargs="+", default=[0.88, 0.94, 1.06, 1.12],
                    help="playback rates, one new speaker per training speaker and rate (default 0.88 0.94 1.06 1.12)")
    tw.add_argument("--share", type=float, default=0.1,
                    help="share of each speaker's training utterances warped per rate (default 0.1)")
    tw.add_argument("--codec", default=None,
                    help="codec file (default: the shipped one); it must be the one the cache was made with")
    tw.add_argument("--encoder", default=None,
                    help="speaker encoder file (default: the shipped one); it must be the one the cache was made with")
    tw.add_argument("--corpus", default="data/corpus")
    tw.add_argument("--workers", type=int, default=1, help="encoding processes (one thread each)")
    tw.add_argument("--seed", type=int, default=0)
    tw.set_defaults(func=_cmd_train_warp)

    tg = train.add_parser("average", help="the weighted mean of model files of one kind and config: a fine-tune "
                          "averaged with the model it started from keeps most of its gain and less of its loss")
    tg.add_argument("models", nargs="+", help="two or more model files (codec, voice or backbone; all one kind)")
    tg.add_argument("--out", required=True, help="the averaged model file")
    tg.add_argument("--weights", type=float, nargs="+", default=None,
                    help="one weight per model (default: equal); normalised to sum to 1")
    tg.set_defaults(func=_cmd_train_average)

    rc = train.add_parser("recode", help="re-tokenise a token cache with a new codec (texts and speaker embeddings "
                          "stay) and re-target a backbone to its tokens, to fine-tune with --init-from")
    rc.add_argument("--cache", required=True, help="token cache made with the old codec")
    rc.add_argument("--out", required=True, help="the new token cache")
    rc.add_argument("--codec", required=True, help="the new codec file")
    rc.add_argument("--corpus", default="data/corpus")
    rc.add_argument("--workers", type=int, default=1, help="encoding processes (one thread each)")
    rc.add_argument("--backbone", default="", help="a backbone speaking the old codec, to re-target")
    rc.add_argument("--backbone-out", default="runs/backbone/retargeted.safetensors")
    rc.set_defaults(func=_cmd_train_recode)

    tt = train.add_parser("tokenizer", help="train the sentencepiece text tokenizer on a corpus's transcripts")
    tt.add_argument("--corpus", default="data/corpus")
    tt.add_argument("--out", default="runs/tokenizer/tokenizer.model", help="(copy it into assets/ to ship it)")
    tt.add_argument("--vocab-size", type=int, default=384)
    tt.set_defaults(func=_cmd_train_tokenizer)
    tp = train.add_parser("phonemes", help="make the phoneme inventory (espeak-ng) of a corpus's transcripts, "
                          "the text tokens of a phoneme backbone")
    tp.add_argument("--corpus", default="data/corpus")
    tp.add_argument("--out", default="runs/phonemes/phonemes.json", help="(copy it into assets/ to ship it)")
    tp.add_argument("--voice", default="en-us", help="espeak-ng voice whose pronunciations are used")
    tp.set_defaults(func=_cmd_train_phonemes)
    rt = train.add_parser("retokenize", help="a copy of a token cache with its texts cut by another tokenizer "
                          "(codes and speaker embeddings stay)")
    rt.add_argument("--cache", required=True, help="existing token cache")
    rt.add_argument("--out", required=True, help="the new token cache")
    rt.add_argument("--tokenizer", required=True, help="phoneme inventory (.json) or sentencepiece model")
    rt.set_defaults(func=_cmd_train_retokenize)
    ta = train.add_parser("aligner", help="train the CTC aligner that finds where each text token of a token cache "
                          "is spoken (for the backbone's read pointer or alignment guide)")
    _add_trainer_args(ta, "aligner", steps=3000, batch_size=None, lr=2e-3, valid_every=250,
                      export_name="aligner.pt")
    ta.add_argument("--cache", default="runs/backbone/cache_ph.npz", help="token cache to learn from")
    ta.add_argument("--batch-frames", type=int, default=4000, help="codec frames per batch")
    ta.set_defaults(func=_cmd_train_aligner)
    tl = train.add_parser("align", help="a copy of a token cache with the frame where each text token starts "
                          "(a read pointer or the alignment guide learns from them)")
    tl.add_argument("--cache", required=True, help="existing token cache")
    tl.add_argument("--aligner", default="runs/aligner/aligner.pt", help="from 'tts train aligner'")
    tl.add_argument("--out", required=True, help="the new token cache")
    tl.set_defaults(func=_cmd_train_align)
    tb = train.add_parser("backbone", help="train the backbone (tokenises the corpus once; resumes from OUT/last.pt)")
    _add_trainer_args(tb, "backbone", steps=50_000, batch_size=None, lr=1e-3, valid_every=500)
    tb.add_argument("--cache", default="runs/backbone/tokens.npz", help="token cache (built from --corpus if missing)")
    tb.add_argument("--batch-frames", type=int, default=2000, help="audio frames per batch")
    tb.add_argument("--codebooks", type=int, default=4, help="codec quantizers modelled (when building the cache)")
    tb.add_argument("--max-hours", type=float, default=0.0, help="hours per split put in the cache (0: all)")
    tb.add_argument("--tokenizer", default=None,
                    help="text tokens of a new cache: sentencepiece model (default) or phoneme inventory (.json)")
    tb.add_argument("--workers", type=int, default=1, help="encoding processes when building the cache")
    tb.add_argument("--new-text-tokens", action="store_true",
                    help="with --init-from: the cache's text tokens differ from the model's; start the text "
                         "embeddings afresh and keep the rest")
    for flag in ("--d-model", "--layers", "--heads", "--ffn"):
        tb.add_argument(flag, type=int, default=0, help="model shape for a new run (0: default)")
    tb.add_argument("--dropout", type=float, default=0.0, help="attention dropout for a new run")
    tb.add_argument("--init-from", default="", help="a new run starts from these weights (.safetensors or last.pt)")
    tb.add_argument("--warmup-steps", type=int, default=500, help="steps of linear learning-rate warm-up")
    tb.add_argument("--uncond-dropout", type=float, default=0.0,
                    help="share of examples trained with no text and no speaker (enables guidance; try 0.1)")
    tb.add_argument("--guide", type=float, default=0.0,
                    help="weight of the alignment guide that teaches some heads a monotonic text alignment (0: off)")
    tb.add_argument("--guide-sigma", type=float, default=0.2, help="width of the guide's diagonal band")
    tb.add_argument("--guide-layers", type=int, nargs="+", default=[1, 2], help="layers with alignment heads")
    tb.add_argument("--guide-heads", type=int, default=2, help="alignment heads per guided layer (the first ones)")
    tb.add_argument("--guide-aligned", action="store_true",
                    help="the guide follows the token starts of an aligned cache ('tts train align'), not a diagonal")
    tb.add_argument("--guide-token-sigma", type=float, default=1.0, help="width of the aligned guide's band, in tokens")
    tb.add_argument("--reading", type=float, default=0.0,
                    help="weight of the reading loss: each audio step names the text token it speaks (needs an "
                         "aligned cache; training only, not in the exported model; 0: off)")
    tb.add_argument("--read-pointer", type=int, default=0, metavar="CLASSES",
                    help="a new run's model follows a read pointer over its text, moved by an advance head of "
                         "CLASSES classes (0 .. CLASSES-1 tokens per frame; 4 is plenty); needs an aligned cache "
                         "('tts train align'); 0: off")
    tb.add_argument("--speaker-steps", action="store_true",
                    help="the run's model adds the speaker embedding to every audio step's input, not only as its "
                         "first position (on --init-from weights it starts at zero)")
    tb.add_argument("--new-lr-scale", type=float, default=1.0,
                    help="learning rate of modules that start afresh on --init-from weights, as a multiple of --lr")
    tb.set_defaults(func=_cmd_train_backbone)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    bc = bench.add_parser("codec", help="codec vs libopus: PESQ-WB, STOI, log-mel, CPU time")
    bc.add_argument("--corpus", default="data/corpus")
    bc.add_argument("--model", default=None)
    bc.add_argument("--utterances", type=int, default=40)
    bc.add_argument("--encoder", default=None, help="speaker encoder for the voice columns (default: the shipped one)")
    bc.add_argument("--attribution", type=float, default=0, metavar="KBPS",
                    help="instead of the table: at this bitrate, how far the original's magnitudes or phases, in all "
                         "bins or below 1 and 4 kHz, would lift the scores (where the codec loses them)")
    bc.add_argument("--fit-voice", action="store_true",
                    help="also decode in each speaker's voice fitted to its enrollment clip (codec/voice_fit.py; "
                         "about 35 s a speaker)")
    bc.set_defaults(func=_cmd_bench_codec)
    bv = bench.add_parser("voice", help="speaker verification EER on held-out speakers, embedding time")
    bv.add_argument("--corpus", default="data/corpus")
    bv.add_argument("--encoder", default=None)
    bv.add_argument("--clips-per-speaker", type=int, default=12)
    bv.set_defaults(func=_cmd_bench_voice)
    bt = bench.add_parser("tts", help="time to first audio, real-time factor, underruns, memory (one stream)")
    bt.add_argument("--backbone", default=None)
    bt.add_argument("--codec", default=None, help=CODEC_HELP)
    bt.add_argument("--voice", default="slt")
    bt.add_argument("--seeds", type=int, default=3)
    bt.add_argument("--corpus", default="data/corpus", help="for the recogniser's baseline WER (if present)")
    bt.set_defaults(func=_cmd_bench_tts)
    bb = bench.add_parser("backbone", help="held-out intelligibility (WER against real audio), voice similarity, "
                          "robustness (run-on, truncation, repeats), steps/s at batch 1 and 8")
    bb.add_argument("--backbone", default=None)
    bb.add_argument("--codec", default=None, help=CODEC_HELP)
    bb.add_argument("--corpus", default="data/corpus")
    bb.add_argument("--utterances", type=int, default=30, help="per held-out split")
    bb.add_argument("--sentences", type=int, default=100, help="robustness sentences of 1-60 words")
    bb.add_argument("--seed", type=int, default=0, help="picks the utterances, voices and sentences, and seeds "
                    "sampling: another seed is another draw of the same figures")
    bb.add_argument("--json", default="", help="also write the figures to this file")
    bb.add_argument("--speed-only", action="store_true", help="only the steps/s figures (no corpus needed)")
    bb.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance weight (default: the engine's)")
    bb.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature (default: the engine's, 0.8)")
    bb.add_argument("--reader", default="auto", metavar="ALIGNER",
                    help="also read the output with this CTC aligner (tts train aligner on the engine's tokens): a "
                         "phoneme error rate and a repeat check that do not depend on pocketsphinx; default: the "
                         "shipped one where it reads the engine's tokens; 'none' to skip")
    bb.add_argument("--no-calibrated", action="store_true",
                    help="skip decoding new speakers' sentences in voices calibrated on the backbone's speech (as "
                         "`tts voice fit` makes them; about 20 s a voice)")
    bb.add_argument("--text-reliance", default="", metavar="CACHE",
                    help="only: teacher-forced loss on this token cache's validation utterances (--utterances of "
                         "them) with their own text, another's and none")
    bb.set_defaults(func=_cmd_bench_backbone)
    bs = bench.add_parser("serve", help="N concurrent gRPC streaming clients over loopback")
    bs.add_argument("--backbone", default=None)
    bs.add_argument("--codec", default=None, help=CODEC_HELP)
    bs.add_argument("--streams", default="1,2,4,8,12,16", help="comma-separated concurrency levels")
    bs.add_argument("--while-calibrating", action="store_true",
                    help="each level starts with an enrollment the server calibrates while the streams run")
    bs.set_defaults(func=_cmd_bench_serve)
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
    except BrokenPipeError:  # output piped into 'head' and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
