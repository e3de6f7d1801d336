"""Re-target a trained backbone to a new codec's tokens, as a starting point for fine-tuning.

Why: when the codec is retrained end to end its codebooks move, and the same
audio gets other token ids (between the session-11 codec and its joint-trained
successor only 17 % of the first codebook's ids agree, and almost none of the others).
Retraining the backbone from scratch costs days of this CPU. But the transformer
itself (text alignment, prosody, voice) does not depend on the ids: only the
audio embedding table and the output heads do. Encoding the same corpus with
both codecs gives, per codebook, how often new id j sits where old id i sat;
each new id's embedding and head row start as that mixture of the old rows.
The special tokens (pad, BOS, EOS) keep theirs.
"""
from __future__ import annotations

import numpy as np
import torch

from backbone.data import TokenCache, TokenCacheError
from backbone.model import Backbone


def code_correspondence(old: TokenCache, new: TokenCache, card: int) -> np.ndarray:
    """[K, card, card]: row j of codebook k is P(old id | new id j) over frames of the same audio.

    A new id never seen in the corpus gets the old ids' overall frequency.
    """
    if old.ids != new.ids:
        raise TokenCacheError("the two caches must hold the same utterances in the same order")
    k = old.codes[0].shape[0]
    if new.codes[0].shape[0] != k:
        raise TokenCacheError(f"the caches model {k} and {new.codes[0].shape[0]} codebooks")
    counts = np.zeros((k, card, card), np.float64)
    for uid, a, b in zip(old.ids, old.codes, new.codes):
        if a.shape != b.shape:
            raise TokenCacheError(f"{uid}: {a.shape[1]} frames in one cache, {b.shape[1]} in the other")
        for q in range(k):
            np.add.at(counts[q], (b[q].astype(np.int64), a[q].astype(np.int64)), 1)
    for q in range(k):
        unseen = counts[q].sum(1) == 0
        counts[q, unseen] = counts[q].sum(0)
    return counts / counts.sum(2, keepdims=True)


@torch.no_grad()
def retarget(model: Backbone, correspondence: np.ndarray, codec_id: str) -> Backbone:
    """Rewrite `model`'s audio embeddings and heads for the new ids (in place); it then speaks codec `codec_id`."""
    cfg = model.config
    card, vocab = cfg.card, cfg.audio_vocab
    if correspondence.shape != (cfg.n_codebooks, card, card):
        raise ValueError(f"correspondence must be [{cfg.n_codebooks}, {card}, {card}]; got {correspondence.shape}")
    mix = torch.from_numpy(correspondence).to(model.heads.weight)
    for q in range(cfg.n_codebooks):
        rows = slice(q * vocab, q * vocab + card)
        model.audio_emb.weight[rows] = mix[q] @ model.audio_emb.weight[rows]
        model.heads.weight[rows] = mix[q] @ model.heads.weight[rows]
        model.heads.bias[rows] = mix[q] @ model.heads.bias[rows]
    cfg.codec_id = codec_id
    model.train(model.training)   # drops the step models built from the old weights
    return model
