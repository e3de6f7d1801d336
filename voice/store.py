"""The enrollment store: enrolled voices kept durably in SQLite.

SQLite (stdlib, embedded) gives what enrollment needs without a server:
atomic transactions (a process killed mid-write leaves the previous state),
WAL mode so readers never block the writer, and a busy timeout so several
processes enrolling at once queue instead of failing. Names are unique by
constraint, so two processes racing for one name cannot both win.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

EXPORT_FORMAT = "tts-voice"
EXPORT_VERSION = 1
MAX_CONSENT_CHARS = 2000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    created         TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    embedding       BLOB NOT NULL,
    dim             INTEGER NOT NULL CHECK (dim > 0 AND length(embedding) = 4 * dim),
    clip_seconds    REAL NOT NULL,
    clip_sha256     TEXT NOT NULL,
    consent         TEXT NOT NULL CHECK (length(trim(consent)) > 0),
    clip            BLOB,
    clip_format     TEXT
);
CREATE TABLE IF NOT EXISTS decoder_voices (
    voice_id        TEXT NOT NULL,
    codec_id        TEXT NOT NULL,
    voice           BLOB NOT NULL CHECK (length(voice) > 0 AND length(voice) % 4 = 0),
    PRIMARY KEY (voice_id, codec_id)
);
"""


class VoiceStoreError(ValueError):
    """A store operation cannot be done (unknown voice, name taken, bad export file)."""


class VoiceNotFoundError(VoiceStoreError, KeyError):
    """No voice of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class VoiceExistsError(VoiceStoreError):
    """A voice of that name already exists."""


@dataclass(frozen=True)
class VoiceRecord:
    """One enrolled voice (or a built-in preset, with `preset=True`)."""

    id: str
    name: str
    created: str
    encoder_version: str
    embedding: np.ndarray
    clip_seconds: float
    clip_sha256: str
    consent: str
    has_clip: bool = False
    preset: bool = False

    def summary(self) -> dict:
        """JSON-friendly metadata (no embedding, no clip)."""
        return {"id": self.id, "name": self.name, "created": self.created, "encoder_version": self.encoder_version,
                "dim": int(self.embedding.shape[0]), "clip_seconds": round(self.clip_seconds, 2),
                "clip_sha256": self.clip_sha256, "consent": self.consent, "has_clip": self.has_clip,
                "preset": self.preset}


def default_store_path() -> Path:
    """$TTS_HOME/voices.db, else ~/.local/share/tts/voices.db."""
    home = os.environ.get("TTS_HOME") or Path.home() / ".local" / "share" / "tts"
    return Path(home) / "voices.db"


def validate_name(name: str) -> str:
    """Names are 1-64 characters: letters, digits, space, '-', '_', '.'; no leading/trailing space."""
    if not isinstance(name, str) or not name or name != name.strip() or len(name) > 64:
        raise VoiceStoreError(f"invalid voice name {name!r}: use 1-64 characters without leading/trailing spaces")
    if not all(ch.isalnum() or ch in " -_." for ch in name):
        raise VoiceStoreError(f"invalid voice name {name!r}: use letters, digits, space, '-', '_' or '.'")
    return name


def validate_consent(consent: str | None) -> str:
    """Consent is required: a non-blank statement the user affirmed (at most 2000 characters)."""
    if consent is None or not str(consent).strip():
        raise VoiceStoreError("a consent statement is required to enroll a voice "
                              "(for example: \"I am the speaker in this clip and I consent to cloning my voice\")")
    if len(consent) > MAX_CONSENT_CHARS:
        raise VoiceStoreError(f"the consent statement is {len(consent)} characters; at most {MAX_CONSENT_CHARS}")
    return consent.strip()


def _check_decoder_voice(voice: np.ndarray) -> np.ndarray:
    vec = np.asarray(voice, dtype=np.float32).reshape(-1)
    if vec.size == 0 or not np.isfinite(vec).all():
        raise VoiceStoreError("a decoder voice must be a finite, non-empty vector")
    return vec


def _check_embedding(embedding: np.ndarray) -> np.ndarray:
    emb = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if emb.size == 0 or not np.isfinite(emb).all() or abs(float(np.linalg.norm(emb)) - 1.0) > 1e-3:
        raise VoiceStoreError("a voice embedding must be a finite unit-length vector")
    return emb


class VoiceStore:
    """Enrolled voices in one SQLite file; safe to use from several processes and threads at once.

    Each thread gets its own connection (sqlite3 connections must stay in the
    thread that made them; WAL lets them read and write side by side).
    """

    def __init__(self, path: str | Path | None = None, timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db.executescript(_SCHEMA)
        except OSError as exc:
            raise VoiceStoreError(f"cannot open the voice store {self.path}: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None,
                                     check_same_thread=False)
                self._use_wal(db)
                db.execute("PRAGMA synchronous=FULL")  # a committed voice survives power loss too
            except sqlite3.Error as exc:
                raise VoiceStoreError(f"cannot open the voice store {self.path}: {exc}") from exc
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL, waiting up to `timeout_s` for other connections doing the same.

        Why by hand: switching the journal mode needs the file to itself, and SQLite answers a
        connection that would wait on another one switching at the same moment with "database is
        locked" at once, without its busy timeout (seen with four processes opening a new store). A
        refused switch can also return the old mode instead of raising; both are retried.
        """
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                    return
                refusal: sqlite3.Error = sqlite3.OperationalError("journal mode not switched to WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                refusal = exc
            if time.monotonic() > deadline:
                raise refusal
            time.sleep(0.01)

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> "VoiceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writes

    def add(self, name: str, embedding: np.ndarray, encoder_version: str, consent: str, clip_seconds: float,
            clip_sha256: str, clip: bytes | None = None, clip_format: str | None = None,
            created: str | None = None) -> VoiceRecord:
        """Insert a voice in one transaction; the name must be free.

        Raises:
            VoiceStoreError / VoiceExistsError: bad name, no consent, bad embedding, name taken.
        """
        name, consent, emb = validate_name(name), validate_consent(consent), _check_embedding(embedding)
        record = VoiceRecord(id=uuid.uuid4().hex, name=name, created=created or datetime.now(timezone.utc).isoformat(
            timespec="seconds"), encoder_version=encoder_version, embedding=emb, clip_seconds=float(clip_seconds),
            clip_sha256=clip_sha256, consent=consent, has_clip=clip is not None)
        try:
            self._db.execute(
                "INSERT INTO voices (id, name, created, encoder_version, embedding, dim, clip_seconds, clip_sha256,"
                " consent, clip, clip_format) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (record.id, name, record.created, encoder_version, emb.tobytes(), int(emb.size), record.clip_seconds,
                 clip_sha256, consent, clip, clip_format))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) and "name" in str(exc):
                raise VoiceExistsError(f"a voice named {name!r} already exists; choose another name "
                                       f"or delete it first") from exc
            raise VoiceStoreError(f"cannot store voice {name!r}: {exc}") from exc
        return record

    def delete(self, name: str) -> None:
        """Remove a voice and its decoder voices. Raises VoiceNotFoundError when there is none of that name."""
        with self._transaction() as db:
            self._forget_decoder_voices(db, name)
            if db.execute("DELETE FROM voices WHERE name = ?", (name,)).rowcount == 0:
                raise VoiceNotFoundError(f"no enrolled voice named {name!r}")

    def update_embedding(self, name: str, embedding: np.ndarray, encoder_version: str) -> None:
        """Replace a voice's embedding after re-embedding its stored clip with a newer encoder (its decoder voices,
        fitted from the old embedding, are dropped with it)."""
        emb = _check_embedding(embedding)
        with self._transaction() as db:
            self._forget_decoder_voices(db, name)
            cur = db.execute("UPDATE voices SET embedding = ?, dim = ?, encoder_version = ? WHERE name = ?",
                             (emb.tobytes(), int(emb.size), encoder_version, name))
            if cur.rowcount == 0:
                raise VoiceNotFoundError(f"no enrolled voice named {name!r}")

    def set_decoder_voice(self, name: str, codec_id: str, voice: np.ndarray,
                          fitted_from: np.ndarray | None = None) -> bool:
        """Keep the voice fitted to `name`'s clip for the codec decoder `codec_id` (codec/voice_fit.py), replacing
        an earlier one: fitting takes tens of seconds, so a voice is fitted once per decoder.

        `fitted_from`: the embedding the fit started from. A fit is long enough for another process to re-embed
        the voice meanwhile; then nothing is kept and the answer is False (fit again from the new embedding).
        """
        vec = _check_decoder_voice(voice)
        with self._transaction() as db:
            row = db.execute("SELECT id, embedding FROM voices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise VoiceNotFoundError(f"no enrolled voice named {name!r}")
            if fitted_from is not None and bytes(row[1]) != np.asarray(fitted_from, dtype=np.float32).tobytes():
                return False
            self._put_decoder_voice(db, row[0], codec_id, vec)
        return True

    @staticmethod
    def _put_decoder_voice(db: sqlite3.Connection, voice_id: str, codec_id: str, voice: np.ndarray) -> None:
        db.execute("INSERT OR REPLACE INTO decoder_voices (voice_id, codec_id, voice) VALUES (?,?,?)",
                   (voice_id, codec_id, voice.tobytes()))

    @staticmethod
    def _forget_decoder_voices(db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM decoder_voices WHERE voice_id IN (SELECT id FROM voices WHERE name = ?)", (name,))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Statements that stand or fall together (the connection is otherwise in autocommit)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ------------------------------------------------------------ reads

    _COLUMNS = "id, name, created, encoder_version, embedding, clip_seconds, clip_sha256, consent, clip IS NOT NULL"

    @staticmethod
    def _record(row: tuple) -> VoiceRecord:
        return VoiceRecord(id=row[0], name=row[1], created=row[2], encoder_version=row[3],
                           embedding=np.frombuffer(row[4], dtype=np.float32).copy(), clip_seconds=row[5],
                           clip_sha256=row[6], consent=row[7], has_clip=bool(row[8]))

    def get(self, name: str) -> VoiceRecord:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM voices WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise VoiceNotFoundError(f"no enrolled voice named {name!r}")
        return self._record(row)

    def list(self) -> list[VoiceRecord]:
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM voices ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    def clip(self, name: str) -> tuple[bytes, str] | None:
        """The stored clip (bytes, format) of a voice enrolled with keep_clip, else None."""
        row = self._db.execute("SELECT clip, clip_format FROM voices WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise VoiceNotFoundError(f"no enrolled voice named {name!r}")
        return None if row[0] is None else (bytes(row[0]), row[1])

    def decoder_voice(self, name: str, codec_id: str) -> np.ndarray | None:
        """The voice fitted to `name`'s clip for codec decoder `codec_id`, or None where none was kept."""
        row = self._db.execute("SELECT d.voice FROM decoder_voices d JOIN voices v ON v.id = d.voice_id "
                               "WHERE v.name = ? AND d.codec_id = ?", (name, codec_id)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def decoder_voices(self, name: str) -> dict[str, np.ndarray]:
        """Every decoder voice kept for `name`, by codec id."""
        rows = self._db.execute("SELECT d.codec_id, d.voice FROM decoder_voices d JOIN voices v ON v.id = d.voice_id "
                                "WHERE v.name = ? ORDER BY d.codec_id", (name,)).fetchall()
        return {codec_id: np.frombuffer(blob, dtype=np.float32).copy() for codec_id, blob in rows}

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ------------------------------------------------------------ export / import

    def export(self, name: str, path: str | Path) -> None:
        """Write a portable JSON file with the embedding, its metadata and (if kept) the clip."""
        record, clip = self.get(name), self.clip(name)
        data = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, **record.summary(),
                "embedding": [float(v) for v in record.embedding]}
        data.pop("preset")
        if clip is not None:
            data["clip"] = {"format": clip[1], "base64": base64.b64encode(clip[0]).decode("ascii")}
        # Optional (readers of this version that predate it ignore it): the fitted decoder voices, so the
        # importing store need not fit them again (tens of seconds each) or, without the clip, cannot.
        decoder_voices = self.decoder_voices(name)
        if decoder_voices:
            data["decoder_voices"] = [{"codec_id": codec_id, "float32_base64": base64.b64encode(v.tobytes()).decode(
                "ascii")} for codec_id, v in decoder_voices.items()]
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)

    def import_file(self, path: str | Path, name: str | None = None) -> VoiceRecord:
        """Add the voice of an exported file (optionally under another name)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceStoreError(f"cannot read voice file {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise VoiceStoreError(f"{path} is not a voice export file")
        if data.get("version") != EXPORT_VERSION:
            raise VoiceStoreError(f"{path} has export version {data.get('version')!r}; this build reads "
                                  f"version {EXPORT_VERSION}")
        try:
            clip = data.get("clip")
            clip_bytes = base64.b64decode(clip["base64"], validate=True) if clip else None
            decoder_voices = [(str(d["codec_id"]), _check_decoder_voice(np.frombuffer(
                base64.b64decode(d["float32_base64"], validate=True), dtype=np.float32)))
                for d in data.get("decoder_voices") or []]
            with self._transaction() as db:   # the voice and its decoder voices stand or fall together
                record = self.add(name or data["name"], np.asarray(data["embedding"], dtype=np.float32),
                                  str(data["encoder_version"]), data.get("consent"), float(data["clip_seconds"]),
                                  str(data["clip_sha256"]), clip_bytes, clip["format"] if clip else None,
                                  created=str(data["created"]) if data.get("created") else None)
                for codec_id, voice in decoder_voices:
                    self._put_decoder_voice(db, record.id, codec_id, voice)
            return record
        except (KeyError, TypeError, ValueError) as exc:   # binascii.Error is a ValueError
            if isinstance(exc, VoiceStoreError):
                raise
            raise VoiceStoreError(f"{path} is a damaged voice export file ({exc})") from exc
