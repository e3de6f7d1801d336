"""The backbone's training data: a compact cache of codec tokens, text tokens and speaker embeddings.

The corpus is tokenised once (`tts train backbone` builds the cache when it is
missing): each utterance's first K codec codes (int16), its normalised text and
sentencepiece ids, and per speaker several embeddings of different clips, so
the model learns from the spread of embeddings a user's clip will have. The
cache is a single .npz of a few tens of MB: it is what travels to a GPU machine
instead of the audio. It records the codec, tokenizer and encoder ids, and a
cache made with other models is refused.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import multiprocessing
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from backbone.tokenizer import TextTokenizer
from codec.model import CodecModel
from tts.audio import played_faster
from tts.corpus.manifest import Utterance, audio_path, read_manifest
from tts.text import normalize_text
from voice.encoder import SpeakerEncoder
from voice.verification import cut_clips, speaker_streams

log = logging.getLogger(__name__)
EMBEDDINGS_PER_SPEAKER = 8


class TokenCacheError(ValueError):
    """The cache is missing, damaged or was made with other models."""


@dataclass
class TokenCache:
    ids: list[str]
    speakers: list[str]
    splits: list[str]
    texts: list[str]                      # normalised
    text_ids: list[np.ndarray]            # int32
    codes: list[np.ndarray]               # int16 [K, F]
    speaker_names: list[str]
    speaker_embeddings: np.ndarray        # [S, E, D] float32
    meta: dict
    token_starts: list[np.ndarray] | None = None   # per text token, the frame where it starts (backbone/aligner.py)

    def indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def embedding(self, i: int, rng: random.Random) -> np.ndarray:
        """A random one of the utterance's speaker embeddings."""
        return self.speaker_embeddings[self._spk[self.speakers[i]], rng.randrange(self.speaker_embeddings.shape[1])]

    def __post_init__(self) -> None:
        self._spk = {name: i for i, name in enumerate(self.speaker_names)}


def _flatten(arrays: list[np.ndarray], axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([a.shape[axis] for a in arrays], dtype=np.int64)
    return np.concatenate(arrays, axis=axis), np.concatenate([[0], np.cumsum(lengths)])


def _utterance_codes(codec: CodecModel, corpus: str | Path, utt: Utterance, n_codebooks: int,
                     rate: float = 1.0) -> np.ndarray:
    """The first K codes of one utterance's audio played `rate` times faster (`played_faster`), int16 [K, F]."""
    x, sr = sf.read(str(audio_path(corpus, utt)), dtype="float32")
    if sr != codec.config.sample_rate:
        raise TokenCacheError(f"{utt.id}: {sr} Hz audio, the codec expects {codec.config.sample_rate} Hz")
    x = played_faster(x, rate, sr)
    return codec.encode(torch.from_numpy(x)[None, None], n_codebooks)[0].numpy().astype(np.int16)


def build_token_cache(corpus: str | Path, out: str | Path, codec: CodecModel, tokenizer: TextTokenizer,
                      encoder: SpeakerEncoder, n_codebooks: int, splits: tuple[str, ...] = ("train", "valid", "test",
                      "unseen"), max_hours_per_split: float | None = None, seed: int = 0, workers: int = 1,
                      codec_path: str | Path | None = None) -> dict:
    """Tokenise a corpus (see module doc); writes `out` atomically and returns its metadata.

    `workers` > 1 encodes the audio in that many processes, which load the codec from `codec_path` (the file
    `codec` was loaded from): 30 h take about 50 minutes on one CPU thread.
    """
    rng = random.Random(seed)
    utts = []
    for split in splits:
        part = read_manifest(corpus, [split])
        rng.shuffle(part)
        if max_hours_per_split is not None:
            kept, total = [], 0.0
            for u in part:
                if total >= max_hours_per_split * 3600:
                    break
                kept.append(u)
                total += u.duration
            part = kept
        utts += part
    if not utts:
        raise TokenCacheError(f"{corpus} has no utterances in {splits}")
    texts = [normalize_text(u.text) for u in utts]
    text_ids = [np.asarray(tokenizer.encode(t, normalized=True), dtype=np.int32) for t in texts]
    if workers > 1:
        if codec_path is None:
            raise ValueError("parallel workers load the codec from codec_path")
        codes = _encode_parallel(corpus, codec_path, utts, n_codebooks, workers)
    else:
        codes = []
        with torch.inference_mode():
            for n, u in enumerate(utts):
                codes.append(_utterance_codes(codec, corpus, u, n_codebooks))
                if (n + 1) % 500 == 0:
                    log.info("tokenised %d / %d utterances", n + 1, len(utts))
    speaker_names = sorted({u.speaker for u in utts})
    embeddings = speaker_embeddings(corpus, utts, encoder, speaker_names)
    flat_codes, code_offsets = _flatten(codes)
    flat_text, text_offsets = _flatten(text_ids)
    meta = {"codec_id": codec.tokens_id, "tokenizer_id": tokenizer.id, "text_vocab": tokenizer.vocab_size,
            "encoder_id": encoder.model_id, "n_codebooks": n_codebooks, "frame_rate": codec.config.frame_rate,
            "utterances": len(utts),
            "hours": round(sum(c.shape[1] for c in codes) / codec.config.frame_rate / 3600, 2)}
    _save(Path(out), dict(ids=np.array([u.id for u in utts]), speakers=np.array([u.speaker for u in utts]),
                        splits=np.array([u.split for u in utts]), texts=np.array(texts), codes=flat_codes,
                        code_offsets=code_offsets, text=flat_text, text_offsets=text_offsets,
                        speaker_names=np.array(speaker_names), speaker_embeddings=embeddings,
                        meta=np.array(repr(meta))))
    return meta


def speaker_embeddings(corpus: str | Path, utts: list, encoder: SpeakerEncoder,
                       speaker_names: list[str], rates: dict[str, float] | None = None) -> np.ndarray:
    """[S, E, D]: for each speaker, embeddings of E different 6-s clips of its audio (played `rates[name]` times
    faster where given)."""
    wanted, rates = set(speaker_names), rates or {}
    sr = encoder.config.sample_rate
    streams = speaker_streams(corpus, [u for u in utts if u.speaker in wanted], sr,
                              max_seconds=EMBEDDINGS_PER_SPEAKER * 6.0 * max([1.0, *rates.values()]))
    streams = {name: played_faster(x, rates.get(name, 1.0), sr) for name, x in streams.items()}
    out = np.zeros((len(speaker_names), EMBEDDINGS_PER_SPEAKER, encoder.config.embedding_dim), np.float32)
    for s, name in enumerate(speaker_names):
        clips, _ = cut_clips({name: streams[name]}, 6.0, EMBEDDINGS_PER_SPEAKER, encoder.config.sample_rate)
        clips = clips or [streams[name]]
        for e in range(EMBEDDINGS_PER_SPEAKER):
            out[s, e] = encoder.embed(clips[e % len(clips)], encoder.config.sample_rate)
    return out


def refresh_speaker_embeddings(path: str | Path, corpus: str | Path, encoder: SpeakerEncoder) -> tuple[dict, str]:
    """Recompute a cache's speaker embeddings with another encoder (the codes stay); rewrites it atomically.

    Returns (the new metadata, the encoder id the cache had before)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _meta(arrays["meta"])
    cached = set(arrays["ids"].tolist())
    utts = [u for u in read_manifest(corpus) if u.id in cached]
    arrays["speaker_embeddings"] = speaker_embeddings(corpus, utts, encoder, arrays["speaker_names"].tolist())
    previous, meta["encoder_id"] = meta["encoder_id"], encoder.model_id
    arrays["meta"] = np.array(repr(meta))
    _save(path, arrays)
    return meta, previous


def _encode_utterances(corpus: str, codec_path: str, utts: list[Utterance], n_codebooks: int,
                       rates: list[float] | None = None) -> list[np.ndarray]:
    """One worker's share of `_encode_parallel`: the first K codes (int16) of these utterances (each played
    `rates[i]` times faster where given)."""
    from codec.loaders import load_codec

    torch.set_num_threads(1)
    codec = load_codec(codec_path).eval()
    out = []
    with torch.inference_mode():
        for utt, rate in zip(utts, rates or [1.0] * len(utts), strict=True):
            out.append(_utterance_codes(codec, corpus, utt, n_codebooks, rate))
            if len(out) % 1000 == 0:
                print(f"worker: encoded {len(out)} / {len(utts)} utterances", flush=True)   # a spawned process: no log
    return out


def _encode_parallel(corpus: str | Path, codec_path: str | Path, utts: list[Utterance], n_codebooks: int,
                     workers: int, rates: list[float] | None = None) -> list[np.ndarray]:
    """The first K codes of each utterance (played `rates[i]` times faster where given), in order, encoded by
    `workers` processes of one thread each."""
    from concurrent.futures import ProcessPoolExecutor

    rates = rates or [1.0] * len(utts)
    shares = [utts[w::workers] for w in range(workers)]
    if workers == 1:
        done = [_encode_utterances(str(corpus), str(codec_path), utts, n_codebooks, rates)]
    else:   # spawned, not forked: a forked torch with live threads can hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_encode_utterances, [str(corpus)] * workers, [str(codec_path)] * workers, shares,
                                 [n_codebooks] * workers, [rates[w::workers] for w in range(workers)]))
    codes: list[np.ndarray] = [None] * len(utts)   # type: ignore[list-item]
    for w, share in enumerate(done):
        codes[w::workers] = share
    return codes


def recode_token_cache(path: str | Path, out: str | Path, corpus: str | Path, codec_path: str | Path,
                       workers: int = 1) -> dict:
    """A copy of a cache whose codes come from another codec (texts and speaker embeddings stay, and the token
    starts of an aligned cache where the new codec has the same frames); written atomically.

    For a new codec whose tokens differ: the backbone is then re-targeted (backbone/retarget.py) and fine-tuned.
    `workers` processes encode in parallel, one thread each. Returns the new metadata.
    """
    from codec.loaders import read_codec_file, tokens_id_of

    config, _, codec_meta = read_codec_file(codec_path)   # its ids, without building the model here
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _meta(arrays["meta"])
    by_id = {u.id: u for u in read_manifest(corpus)}
    missing = [uid for uid in arrays["ids"].tolist() if uid not in by_id]
    if missing:
        raise TokenCacheError(f"{len(missing)} cached utterances are not in {corpus} (e.g. {sorted(missing)[0]})")
    utts = [by_id[uid] for uid in arrays["ids"].tolist()]
    codes = _encode_parallel(corpus, codec_path, utts, meta["n_codebooks"], workers)
    same_frames = config.frame_rate == meta["frame_rate"] and np.array_equal(
        np.diff(arrays["code_offsets"]), [c.shape[-1] for c in codes])
    if not same_frames:
        # The token starts place the text in time, frame by frame: they hold for a codec with the old frames
        # (its rate and count), not for other frames. Align the new cache again.
        arrays.pop("token_starts", None)
    arrays["codes"], arrays["code_offsets"] = _flatten(codes)
    meta.update(codec_id=tokens_id_of(codec_meta), frame_rate=config.frame_rate)
    arrays["meta"] = np.array(repr(meta))
    _save(Path(out), arrays)
    return meta


def warped_speaker_name(speaker: str, rate: float) -> str:
    return f"{speaker}@{_rate_name(rate)}"


def _rate_name(rate: float) -> str:
    """A playback rate as warped speakers' names carry it: rates that read alike are one voice."""
    return f"{rate:g}"


def is_warped_speaker(speaker: str) -> bool:
    """Whether a cache's speaker is a corpus speaker played faster (`warped_speaker_name`)."""
    return "@" in speaker


def warp_token_cache(path: str | Path, out: str | Path, corpus: str | Path, codec_path: str | Path,
                     encoder: SpeakerEncoder, rates: list[float], share: float, workers: int = 1,
                     seed: int = 0) -> dict:
    """A copy of a cache with more training voices: each training speaker played `rate` times faster is a new
    speaker ("name@rate") for each of `rates`, on a random `share` of its training utterances, encoded by the
    codec, with embeddings of its own played-faster audio and the token starts moved to the new frames.

    Why: a backbone trained on a hundred voices answers a new voice with the nearest of them (session 28: its
    output is as close to an unseen voice's reference as that voice's nearest training voice is). Voices in
    between, in pitch, formants and tempo, give it more than a hundred points to learn the speaker space from.
    A cache that has warped speakers already takes more rates (other than its own): only its own speakers are
    played faster, and each call is one more round in `meta["warped"]`. Written atomically; returns the new
    metadata.
    """
    from codec.loaders import read_codec_file, tokens_id_of

    from tts.training import TrainingSetupError

    if not rates or any(not 0.5 <= r <= 2.0 or r == 1.0 for r in rates):
        raise TrainingSetupError(f"playback rates must be 0.5-2 and not 1: {rates}")
    if not 0.0 < share <= 1.0:
        raise TrainingSetupError(f"the share of utterances must be in (0, 1]: {share}")
    _, _, codec_meta = read_codec_file(codec_path)
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _meta(arrays["meta"])
    for key, have in (("codec_id", tokens_id_of(codec_meta)), ("encoder_id", encoder.model_id)):
        if meta[key] != have:
            raise TokenCacheError(f"{path} was made with {key} {meta[key]!r}, not {have!r}")
    rounds = meta.get("warped", [])
    rounds = [rounds] if isinstance(rounds, dict) else rounds          # a cache of one round before session 38
    taken = sorted({_rate_name(r) for one in rounds for r in one["rates"]} & {_rate_name(r) for r in rates})
    if taken:
        raise TokenCacheError(f"{path} already has speakers warped at rates {', '.join(taken)}")
    cache = load_token_cache(path)
    by_id = {u.id: u for u in read_manifest(corpus)}
    rng = random.Random(seed)
    chosen: list[tuple[int, float]] = []            # (cache index, rate)
    by_speaker: dict[str, list[int]] = {}
    for i in cache.indices("train"):
        if not is_warped_speaker(cache.speakers[i]):
            by_speaker.setdefault(cache.speakers[i], []).append(i)
    for speaker in sorted(by_speaker):
        for rate in rates:
            own = by_speaker[speaker]
            chosen += [(i, rate) for i in sorted(rng.sample(own, max(1, round(share * len(own)))))]
    missing = [cache.ids[i] for i, _ in chosen if cache.ids[i] not in by_id]
    if missing:
        raise TokenCacheError(f"{len(missing)} cached utterances are not in {corpus} (e.g. {missing[0]})")
    utts = [dataclasses.replace(by_id[cache.ids[i]], id=warped_speaker_name(cache.ids[i], rate),
                                speaker=warped_speaker_name(cache.speakers[i], rate)) for i, rate in chosen]
    codes = _encode_parallel(corpus, codec_path, [by_id[cache.ids[i]] for i, _ in chosen], meta["n_codebooks"],
                             workers, [rate for _, rate in chosen])
    names = sorted({u.speaker for u in utts})
    source_rates = {warped_speaker_name(s, r): r for s in by_speaker for r in rates}
    embeddings = speaker_embeddings(corpus, utts, encoder, names, source_rates)
    arrays["ids"] = np.concatenate([arrays["ids"], [u.id for u in utts]])
    arrays["speakers"] = np.concatenate([arrays["speakers"], [u.speaker for u in utts]])
    arrays["splits"] = np.concatenate([arrays["splits"], ["train"] * len(utts)])
    arrays["texts"] = np.concatenate([arrays["texts"], [cache.texts[i] for i, _ in chosen]])
    arrays["codes"], arrays["code_offsets"] = _flatten(cache.codes + codes)
    arrays["text"], arrays["text_offsets"] = _flatten(cache.text_ids + [cache.text_ids[i] for i, _ in chosen])
    if cache.token_starts is not None:   # a token starting at frame t of the source starts at t / rate
        moved = [np.minimum(np.round(cache.token_starts[i] / rate), c.shape[1] - 1).astype(np.int16)
                 for (i, rate), c in zip(chosen, codes)]
        arrays["token_starts"], _ = _flatten([s.astype(np.int16) for s in cache.token_starts] + moved)
    arrays["speaker_names"] = np.concatenate([arrays["speaker_names"], names])
    arrays["speaker_embeddings"] = np.concatenate([arrays["speaker_embeddings"], embeddings])
    rounds = [*rounds, {"rates": list(rates), "share": share, "utterances": len(utts), "speakers": len(names)}]
    meta.update(utterances=len(arrays["ids"]), warped=rounds,
                hours=round(len(arrays["codes"][0]) / meta["frame_rate"] / 3600, 2))
    arrays["meta"] = np.array(repr(meta))
    _save(Path(out), arrays)
    return meta


def retokenize_token_cache(path: str | Path, out: str | Path, tokenizer) -> dict:
    """A copy of a cache whose text ids come from another tokenizer (e.g. phonemes); codes and speaker embeddings
    stay. Written atomically; returns the new metadata."""
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _meta(arrays["meta"])
    ids = [np.asarray(tokenizer.encode(t, normalized=True), dtype=np.int32) for t in arrays["texts"].tolist()]
    arrays["text"], arrays["text_offsets"] = _flatten(ids)
    arrays.pop("token_starts", None)        # they placed the old tokens
    meta.update(tokenizer_id=tokenizer.id, text_vocab=tokenizer.vocab_size)
    arrays["meta"] = np.array(repr(meta))
    _save(Path(out), arrays)
    return meta


def _meta(stored: np.ndarray) -> dict:
    """The cache's metadata (stored as the repr of a dict of plain values)."""
    return ast.literal_eval(str(stored))


def _save(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_token_cache(path: str | Path, expect: dict | None = None) -> TokenCache:
    """Read a cache; `expect` ({"codec_id": ..., ...}) must match its metadata.

    Raises:
        TokenCacheError: missing, damaged, or made with other models.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenCacheError(f"token cache not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = _meta(z["meta"])
            co, to = z["code_offsets"], z["text_offsets"]
            flat_codes, flat_text = z["codes"], z["text"]
            cache = TokenCache(ids=z["ids"].tolist(), speakers=z["speakers"].tolist(), splits=z["splits"].tolist(),
                               texts=z["texts"].tolist(),
                               text_ids=[flat_text[to[i]:to[i + 1]] for i in range(len(to) - 1)],
                               codes=[flat_codes[:, co[i]:co[i + 1]] for i in range(len(co) - 1)],
                               speaker_names=z["speaker_names"].tolist(),
                               speaker_embeddings=z["speaker_embeddings"], meta=meta)
            if "token_starts" in z.files:
                flat_starts = z["token_starts"]
                cache.token_starts = [flat_starts[to[i]:to[i + 1]] for i in range(len(to) - 1)]
    except (OSError, KeyError, ValueError, SyntaxError) as exc:
        raise TokenCacheError(f"cannot read token cache {path}: {exc}") from exc
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise TokenCacheError(f"{path} was made with {key} {meta.get(key)!r}, not {value!r}: delete it to rebuild")
    return cache
