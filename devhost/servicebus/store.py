"""SQLite persistence with group commit: writes of one reactor pass share one fsync.

The broker acknowledges a send or confirms a settlement only after `commit()` returns, so an
acknowledged message is on disk and a confirmed completion never reappears after a `kill -9`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    queue TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    message_id TEXT,
    session_id TEXT,
    enqueued_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    scheduled_ms INTEGER,
    state INTEGER NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    dl_reason TEXT,
    dl_description TEXT,
    PRIMARY KEY (queue, seq)
);
CREATE TABLE IF NOT EXISTS sequences (queue TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL, message_id TEXT NOT NULL, expires_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, message_id)
);
-- Queues created, changed or deleted at run time through the management surface (admin_http.py):
-- `properties` is QueueProperties as JSON; a deleted row hides a queue of the config file.
CREATE TABLE IF NOT EXISTS entities (
    name TEXT PRIMARY KEY, properties TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class EntityRow:
    """A queue the management surface created, changed or deleted (`deleted`)."""

    name: str
    properties: str
    created_ms: int
    updated_ms: int
    deleted: bool


@dataclass(slots=True)
class Row:
    queue: str
    seq: int
    payload: bytes
    message_id: str | None
    session_id: str | None
    enqueued_ms: int
    expires_ms: int | None
    scheduled_ms: int | None
    state: int
    delivery_count: int
    dead_lettered: bool
    dl_reason: str | None
    dl_description: str | None


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._in_tx = False

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    @property
    def dirty(self) -> bool:
        return self._in_tx

    def commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        self.commit()
        self._db.close()

    def insert(self, row: Row) -> None:
        self._begin()
        self._db.execute(
            "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.queue,
                row.seq,
                row.payload,
                row.message_id,
                row.session_id,
                row.enqueued_ms,
                row.expires_ms,
                row.scheduled_ms,
                row.state,
                row.delivery_count,
                int(row.dead_lettered),
                row.dl_reason,
                row.dl_description,
            ),
        )
        self._db.execute(
            "INSERT INTO sequences VALUES (?, ?)"
            " ON CONFLICT(queue) DO UPDATE SET last_seq=excluded.last_seq",
            (row.queue, row.seq),
        )

    def update(self, row: Row) -> None:
        self._begin()
        self._db.execute(
            "UPDATE messages SET state=?, delivery_count=?, dead_lettered=?, dl_reason=?,"
            " dl_description=? WHERE queue=? AND seq=?",
            (
                row.state,
                row.delivery_count,
                int(row.dead_lettered),
                row.dl_reason,
                row.dl_description,
                row.queue,
                row.seq,
            ),
        )

    def delete(self, queue: str, seq: int) -> None:
        self._begin()
        self._db.execute("DELETE FROM messages WHERE queue=? AND seq=?", (queue, seq))

    def remember_id(self, queue: str, message_id: str, expires_ms: int) -> None:
        self._begin()
        self._db.execute(
            "INSERT OR REPLACE INTO dedup VALUES (?,?,?)", (queue, message_id, expires_ms)
        )

    def forget_ids_before(self, now_ms: int) -> None:
        self._begin()
        self._db.execute("DELETE FROM dedup WHERE expires_ms <= ?", (now_ms,))

    def rows(self) -> Iterator[Row]:
        cursor = self._db.execute("SELECT * FROM messages ORDER BY queue, seq")
        for r in cursor:
            yield Row(
                queue=r[0],
                seq=r[1],
                payload=r[2],
                message_id=r[3],
                session_id=r[4],
                enqueued_ms=r[5],
                expires_ms=r[6],
                scheduled_ms=r[7],
                state=r[8],
                delivery_count=r[9],
                dead_lettered=bool(r[10]),
                dl_reason=r[11],
                dl_description=r[12],
            )

    def last_sequences(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT queue, last_seq FROM sequences").fetchall())

    def remembered_ids(self) -> Iterator[tuple[str, str, int]]:
        yield from self._db.execute("SELECT queue, message_id, expires_ms FROM dedup")

    def save_entity(self, name: str, properties: str, created_ms: int, updated_ms: int) -> None:
        self._begin()
        self._db.execute(
            "INSERT OR REPLACE INTO entities VALUES (?,?,?,?,0)",
            (name, properties, created_ms, updated_ms),
        )

    def delete_entity(self, name: str, now_ms: int) -> None:
        """Forget a queue and everything in it; the row stays as a tombstone."""
        self._begin()
        self._db.execute("DELETE FROM messages WHERE queue=?", (name,))
        self._db.execute("DELETE FROM sequences WHERE queue=?", (name,))
        self._db.execute("DELETE FROM dedup WHERE queue=?", (name,))
        self._db.execute(
            "INSERT INTO entities VALUES (?, '{}', ?, ?, 1)"
            " ON CONFLICT(name) DO UPDATE SET deleted=1, updated_ms=excluded.updated_ms",
            (name, now_ms, now_ms),
        )

    def entities(self) -> list[EntityRow]:
        rows = self._db.execute("SELECT * FROM entities ORDER BY name").fetchall()
        return [EntityRow(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]
