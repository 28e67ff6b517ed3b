"""One queue's state: Service Bus semantics kept in memory, every change written to the store.

Nothing here knows AMQP. The broker asks for the next message, locks it, and settles it by lock
token; the queue answers with the rules of peek-lock, delivery counts, dead-lettering, deferral,
scheduling, expiry and duplicate detection.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from devhost.servicebus.config import QueueProperties
from devhost.servicebus.store import Row, Store

ACTIVE, DEFERRED, SCHEDULED = 0, 1, 2

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"
EXPIRED_REASON = "TTLExpiredException"


class LockLost(Exception):
    """The lock token is unknown or its lock has expired."""


class MessageNotFound(Exception):
    """No message with that sequence number is in the state the operation needs."""


@dataclass(slots=True)
class Lock:
    token: uuid.UUID
    row: Row
    until_ms: int


class Queue:
    def __init__(self, name: str, props: QueueProperties, store: Store) -> None:
        self.name = name
        self.props = props
        self._store = store
        self._rows: dict[int, Row] = {}
        self._ready: list[int] = []
        self._dlq_ready: list[int] = []
        self._scheduled: list[tuple[int, int]] = []
        self._locks: dict[uuid.UUID, Lock] = {}
        self._locked_seqs: set[int] = set()
        self._seen_ids: dict[str, int] = {}
        self._last_seq = 0

    # -- loading -------------------------------------------------------------------------------
    def restore(self, rows: Iterable[Row], last_seq: int, seen: Iterable[tuple[str, int]]) -> None:
        """Rebuild from disk. Locks held before a crash are gone, so their messages are ready."""
        self._last_seq = last_seq
        for row in rows:
            self._rows[row.seq] = row
            self._last_seq = max(self._last_seq, row.seq)
            self._index(row)
        self._seen_ids = dict(seen)

    def _index(self, row: Row) -> None:
        if row.dead_lettered:
            heapq.heappush(self._dlq_ready, row.seq)
        elif row.state == ACTIVE:
            heapq.heappush(self._ready, row.seq)
        elif row.state == SCHEDULED and row.scheduled_ms is not None:
            heapq.heappush(self._scheduled, (row.scheduled_ms, row.seq))

    # -- sending -------------------------------------------------------------------------------
    def is_duplicate(self, message_id: str | None, now_ms: int) -> bool:
        if not self.props.requires_duplicate_detection or message_id is None:
            return False
        until = self._seen_ids.get(message_id)
        return until is not None and until > now_ms

    def enqueue(
        self,
        payload: bytes,
        *,
        message_id: str | None,
        session_id: str | None,
        ttl_ms: int | None,
        scheduled_ms: int | None,
        now_ms: int,
    ) -> Row | None:
        """Store a sent message; None when duplicate detection drops it (the send succeeds)."""
        if self.is_duplicate(message_id, now_ms):
            return None
        if self.props.requires_duplicate_detection and message_id is not None:
            until = now_ms + self.props.duplicate_window_ms
            self._seen_ids[message_id] = until
            self._store.remember_id(self.name, message_id, until)
        self._last_seq += 1
        effective_ttl = min(ttl_ms or self.props.default_ttl_ms, self.props.default_ttl_ms)
        start = max(now_ms, scheduled_ms or 0)
        state = SCHEDULED if scheduled_ms and scheduled_ms > now_ms else ACTIVE
        row = Row(
            queue=self.name,
            seq=self._last_seq,
            payload=payload,
            message_id=message_id,
            session_id=session_id,
            enqueued_ms=start,
            expires_ms=start + effective_ttl,
            scheduled_ms=scheduled_ms if state == SCHEDULED else None,
            state=state,
            delivery_count=0,
            dead_lettered=False,
            dl_reason=None,
            dl_description=None,
        )
        self._rows[row.seq] = row
        self._store.insert(row)
        self._index(row)
        return row

    def cancel_scheduled(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            row = self._rows.get(seq)
            if row is None or row.state != SCHEDULED:
                raise MessageNotFound(f"no scheduled message with sequence number {seq}")
        for seq in seqs:
            self._drop(self._rows[seq])

    # -- receiving -----------------------------------------------------------------------------
    def next_ready(self, dead_letter: bool, now_ms: int) -> Row | None:
        heap = self._dlq_ready if dead_letter else self._ready
        while heap:
            seq = heap[0]
            row = self._rows.get(seq)
            if (
                row is None
                or seq in self._locked_seqs
                or row.dead_lettered != dead_letter
                or row.state != ACTIVE
            ):
                heapq.heappop(heap)
                continue
            if not dead_letter and row.expires_ms is not None and row.expires_ms <= now_ms:
                heapq.heappop(heap)
                self._expire(row)
                continue
            return row
        return None

    def take(self, row: Row) -> None:
        """Receive-and-delete: the message is gone as it is handed out."""
        self._drop(row)

    def lock(self, row: Row, now_ms: int) -> Lock:
        lock = Lock(uuid.uuid4(), row, now_ms + self.props.lock_duration_ms)
        self._locks[lock.token] = lock
        self._locked_seqs.add(row.seq)
        return lock

    def lock_for(self, token: uuid.UUID, now_ms: int) -> Lock:
        lock = self._locks.get(token)
        if lock is None or lock.until_ms <= now_ms:
            raise LockLost(
                "The lock supplied is invalid. Either the lock expired, or the message has already "
                "been removed from the queue."
            )
        return lock

    def renew(self, token: uuid.UUID, now_ms: int) -> int:
        lock = self.lock_for(token, now_ms)
        lock.until_ms = now_ms + self.props.lock_duration_ms
        return lock.until_ms

    def _unlock(self, lock: Lock) -> None:
        self._locks.pop(lock.token, None)
        self._locked_seqs.discard(lock.row.seq)

    def complete(self, token: uuid.UUID, now_ms: int) -> None:
        lock = self.lock_for(token, now_ms)
        self._unlock(lock)
        self._drop(lock.row)

    def abandon(self, token: uuid.UUID, now_ms: int) -> None:
        lock = self.lock_for(token, now_ms)
        self._unlock(lock)
        self._count_failed_delivery(lock.row)

    def release(self, token: uuid.UUID, now_ms: int) -> None:
        """Handed back unprocessed (a prefetched message at close): no delivery is counted."""
        lock = self.lock_for(token, now_ms)
        self._unlock(lock)
        self._make_ready(lock.row)

    def defer(self, token: uuid.UUID, now_ms: int) -> None:
        lock = self.lock_for(token, now_ms)
        self._unlock(lock)
        row = lock.row
        row.state = DEFERRED
        row.delivery_count += 1
        self._store.update(row)

    def dead_letter(
        self, token: uuid.UUID, reason: str | None, description: str | None, now_ms: int
    ) -> None:
        lock = self.lock_for(token, now_ms)
        self._unlock(lock)
        if lock.row.dead_lettered:
            self._make_ready(lock.row)
            raise LockLost("a message in the dead-letter queue cannot be dead-lettered again")
        self._to_dead_letter(lock.row, reason, description)

    def expire_locks(self, now_ms: int) -> int:
        expired = [lock for lock in self._locks.values() if lock.until_ms <= now_ms]
        for lock in expired:
            self._unlock(lock)
            self._count_failed_delivery(lock.row)
        return len(expired)

    def activate_scheduled(self, now_ms: int) -> int:
        count = 0
        while self._scheduled and self._scheduled[0][0] <= now_ms:
            _, seq = heapq.heappop(self._scheduled)
            row = self._rows.get(seq)
            if row is None or row.state != SCHEDULED:
                continue
            row.state = ACTIVE
            row.enqueued_ms = max(row.enqueued_ms, now_ms)
            self._store.update(row)
            heapq.heappush(self._ready, seq)
            count += 1
        return count

    def forget_old_ids(self, now_ms: int) -> None:
        stale = [mid for mid, until in self._seen_ids.items() if until <= now_ms]
        for mid in stale:
            del self._seen_ids[mid]
        if stale:
            self._store.forget_ids_before(now_ms)

    # -- browsing and deferral -----------------------------------------------------------------
    def peek(self, from_seq: int, count: int, dead_letter: bool) -> list[Row]:
        rows = sorted(
            (
                r
                for seq, r in self._rows.items()
                if seq >= from_seq and r.dead_lettered == dead_letter
            ),
            key=lambda r: r.seq,
        )
        return rows[:count]

    def lock_deferred(self, seqs: Iterable[int], now_ms: int) -> list[Lock]:
        rows = []
        for seq in seqs:
            row = self._rows.get(seq)
            if row is None or row.state != DEFERRED or seq in self._locked_seqs:
                raise MessageNotFound(f"no deferred message with sequence number {seq}")
            rows.append(row)
        return [self.lock(row, now_ms) for row in rows]

    def take_deferred(self, seqs: Iterable[int]) -> list[Row]:
        rows = []
        for seq in seqs:
            row = self._rows.get(seq)
            if row is None or row.state != DEFERRED:
                raise MessageNotFound(f"no deferred message with sequence number {seq}")
            rows.append(row)
        for row in rows:
            self._drop(row)
        return rows

    def counts(self) -> dict[str, int]:
        rows = self._rows.values()
        return {
            "active": sum(1 for r in rows if r.state == ACTIVE and not r.dead_lettered),
            "scheduled": sum(1 for r in rows if r.state == SCHEDULED),
            "deferred": sum(1 for r in rows if r.state == DEFERRED and not r.dead_lettered),
            "dead_letter": sum(1 for r in rows if r.dead_lettered),
            "locked": len(self._locks),
        }

    def size_bytes(self) -> int:
        return sum(len(r.payload) for r in self._rows.values())

    # -- internals -----------------------------------------------------------------------------
    def _count_failed_delivery(self, row: Row) -> None:
        row.delivery_count += 1
        if not row.dead_lettered and row.delivery_count >= self.props.max_delivery_count:
            self._to_dead_letter(
                row,
                MAX_DELIVERY_REASON,
                f"Message could not be consumed after {self.props.max_delivery_count} "
                "delivery attempts.",
            )
            return
        self._store.update(row)
        self._make_ready(row)

    def _make_ready(self, row: Row) -> None:
        if row.dead_lettered:
            heapq.heappush(self._dlq_ready, row.seq)
        elif row.state == ACTIVE:
            heapq.heappush(self._ready, row.seq)

    def _to_dead_letter(self, row: Row, reason: str | None, description: str | None) -> None:
        row.dead_lettered = True
        row.state = ACTIVE
        row.dl_reason = reason
        row.dl_description = description
        self._store.update(row)
        heapq.heappush(self._dlq_ready, row.seq)

    def _expire(self, row: Row) -> None:
        if self.props.dead_letter_on_expiry:
            self._to_dead_letter(row, EXPIRED_REASON, "The message expired and was dead lettered.")
        else:
            self._drop(row)

    def expire_due(self, now_ms: int) -> None:
        """Expired messages move out even when nobody is receiving."""
        for row in [
            r
            for r in self._rows.values()
            if not r.dead_lettered
            and r.state == ACTIVE
            and r.seq not in self._locked_seqs
            and r.expires_ms is not None
            and r.expires_ms <= now_ms
        ]:
            self._expire(row)

    def _drop(self, row: Row) -> None:
        self._rows.pop(row.seq, None)
        self._store.delete(self.name, row.seq)
