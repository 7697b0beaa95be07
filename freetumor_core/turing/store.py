"""The answer store: one SQLite database per study, safe for several reader processes at once.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a committed transaction is
on disk before ``commit`` returns; each answer is one ``BEGIN IMMEDIATE`` transaction. A process
killed at any moment (SIGKILL included) leaves either the whole answer or nothing, and never a
corrupt file. Concurrent writers wait for each other (``busy_timeout``) instead of failing.

Locking of answers is the database's job: ``UNIQUE(reader, case_id)`` refuses a second answer even
when two processes race to submit the same one.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 60_000
CALLS = ("real", "synthetic")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (case_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS readers (
    name TEXT PRIMARY KEY,
    case_order TEXT NOT NULL,          -- JSON list of case ids, this reader's random order
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS views (
    reader TEXT NOT NULL REFERENCES readers(name),
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    shown_at TEXT NOT NULL,            -- first time the case was shown to the reader (UTC ISO 8601)
    PRIMARY KEY (reader, case_id)
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    reader TEXT NOT NULL REFERENCES readers(name),
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    call TEXT NOT NULL CHECK (call IN ('real', 'synthetic')),
    confidence INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    started_at TEXT,                   -- when the reader started on the case (UTC ISO 8601), if known
    answered_at TEXT NOT NULL,
    seconds_spent REAL,
    UNIQUE (reader, case_id)
);
"""


class AnswerLocked(InputError):
    """The reader already answered this case; answers cannot be changed."""


@dataclass(frozen=True)
class Answer:
    """One submitted answer. Times are UTC ISO 8601; ``seconds_spent`` is ``None`` when the start
    time is unknown."""

    reader: str
    case_id: str
    call: str
    confidence: int
    comment: str
    started_at: str | None
    answered_at: str
    seconds_spent: float | None

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def parse_time(text: str, what: str = "time") -> datetime:
    """Parse an ISO 8601 time; a time without zone is taken as UTC.

    Raises:
        InputError: not ISO 8601.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be ISO 8601 (e.g. 2025-01-31T14:05:00+00:00), got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def reader_order(case_ids: Sequence[str]) -> list[str]:
    """A new reader's case order: a shuffle from the operating system's secret random source.

    Nothing stored or guessable (no seed, no name) determines it, so an order cannot be replayed;
    it is saved in the database at the reader's first use and stays the same from then on.
    """
    order = sorted(case_ids)
    secrets.SystemRandom().shuffle(order)
    return order


class Store:
    """Access to one study database. Each call opens its own connection, so a ``Store`` may be used
    from any thread, and many processes may hold one for the same file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- connections ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as error:
            raise InputError(f"not a readable study database: {error}", self.path) from None
        return connection

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            # IMMEDIATE takes the write lock up front: no deadlock between readers upgrading to write.
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise InputError(f"study database error: {error}", self.path) from None
        finally:
            connection.close()

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], case_ids: Sequence[str], study_id: str) -> Store:
        """Create the database with its cases (inserted in sorted order). Refuses to overwrite an
        existing file. No seed is stored: the study folder must not let anyone replay its draws."""
        store = cls(path)
        if store.path.exists():
            raise InputError("study database already exists", store.path)
        with store._transaction(write=True) as connection:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            meta = {"schema_version": SCHEMA_VERSION, "study_id": study_id}
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
            connection.executemany("INSERT INTO cases (case_id) VALUES (?)", [(c,) for c in sorted(case_ids)])
        return store

    def check(self) -> dict[str, object]:
        """Open the database and check it: integrity, schema version. Returns the ``meta`` table.

        Raises:
            InputError: not a SQLite file, corrupt, or not a study database.
        """
        if not self.path.is_file():
            raise InputError("study database not found", self.path)
        with self._transaction(write=False) as connection:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise InputError(f"study database is corrupt: {result}", self.path)
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not {"meta", "cases", "readers", "answers", "views"} <= tables:
                raise InputError("not a study database (tables missing)", self.path)
            meta = {
                key: json.loads(value) for key, value in connection.execute("SELECT key, value FROM meta")
            }
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise InputError(
                f"study database schema {meta.get('schema_version')} is not the supported {SCHEMA_VERSION}",
                self.path,
            )
        return meta

    def integrity(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        with self._transaction(write=False) as connection:
            return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))

    # -- cases and readers ----------------------------------------------------------------------
    def case_ids(self) -> list[str]:
        with self._transaction(write=False) as connection:
            return [row[0] for row in connection.execute("SELECT case_id FROM cases ORDER BY case_id")]

    def readers(self) -> list[str]:
        with self._transaction(write=False) as connection:
            return [row[0] for row in connection.execute("SELECT name FROM readers ORDER BY name")]

    def order(self, reader: str) -> list[str]:
        """The reader's case order, drawn at random and saved on first use."""
        with self._transaction(write=False) as connection:
            row = connection.execute("SELECT case_order FROM readers WHERE name = ?", (reader,)).fetchone()
        if row:
            return json.loads(row[0])
        order = reader_order(self.case_ids())
        with self._transaction(write=True) as connection:
            # Two processes may register the same reader at once: the first order saved wins.
            connection.execute(
                "INSERT OR IGNORE INTO readers (name, case_order, created_at) VALUES (?, ?, ?)",
                (reader, json.dumps(order), utc_now()),
            )
            row = connection.execute("SELECT case_order FROM readers WHERE name = ?", (reader,)).fetchone()
        return json.loads(row[0])

    def answered(self, reader: str) -> set[str]:
        with self._transaction(write=False) as connection:
            rows = connection.execute("SELECT case_id FROM answers WHERE reader = ?", (reader,))
            return {row[0] for row in rows}

    def record_view(self, reader: str, case_id: str) -> str:
        """Note when ``reader`` first saw ``case_id``; returns that first time."""
        with self._transaction(write=True) as connection:
            connection.execute(
                "INSERT OR IGNORE INTO views (reader, case_id, shown_at) VALUES (?, ?, ?)",
                (reader, case_id, utc_now()),
            )
            row = connection.execute(
                "SELECT shown_at FROM views WHERE reader = ? AND case_id = ?", (reader, case_id)
            ).fetchone()
        return row[0]

    # -- answers --------------------------------------------------------------------------------
    def submit(
        self,
        reader: str,
        case_id: str,
        call: str,
        confidence: int,
        comment: str = "",
        started_at: str | None = None,
    ) -> Answer:
        """Store one answer in its own transaction; durable on return.

        ``started_at`` defaults to when the case was first shown to the reader (if it was).

        Raises:
            AnswerLocked: the reader already answered this case.
            InputError: database errors.
        """
        answered_at = utc_now()
        with self._transaction(write=True) as connection:
            existing = connection.execute(
                "SELECT answered_at FROM answers WHERE reader = ? AND case_id = ?", (reader, case_id)
            ).fetchone()
            if existing:
                raise AnswerLocked(
                    f"reader '{reader}' already answered case '{case_id}' (at {existing[0]}); "
                    "answers are locked once submitted",
                    self.path,
                )
            if started_at is None:
                row = connection.execute(
                    "SELECT shown_at FROM views WHERE reader = ? AND case_id = ?", (reader, case_id)
                ).fetchone()
                started_at = row[0] if row else None
            seconds = None
            if started_at is not None:
                seconds = round((parse_time(answered_at) - parse_time(started_at)).total_seconds(), 3)
            try:
                connection.execute(
                    "INSERT INTO answers (reader, case_id, call, confidence, comment, started_at, "
                    "answered_at, seconds_spent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (reader, case_id, call, confidence, comment, started_at, answered_at, seconds),
                )
            except sqlite3.IntegrityError as error:
                raise AnswerLocked(
                    f"reader '{reader}' already answered case '{case_id}'; answers are locked once "
                    f"submitted ({error})",
                    self.path,
                ) from None
        return Answer(reader, case_id, call, confidence, comment, started_at, answered_at, seconds)

    def answers(self, reader: str | None = None) -> list[Answer]:
        """Submitted answers (of one reader, or all), in submission order."""
        query = (
            "SELECT reader, case_id, call, confidence, comment, started_at, answered_at, seconds_spent "
            "FROM answers"
        )
        with self._transaction(write=False) as connection:
            if reader is None:
                rows = connection.execute(query + " ORDER BY id").fetchall()
            else:
                rows = connection.execute(query + " WHERE reader = ? ORDER BY id", (reader,)).fetchall()
        return [Answer(*row) for row in rows]
