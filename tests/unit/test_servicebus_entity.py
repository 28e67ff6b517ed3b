"""One queue's Service Bus rules, on a real SQLite store in tmp_path and a clock passed by hand.

The restore tests crash for real: a forked child does the work, commits where the broker would,
and SIGKILLs itself with a transaction open; the parent then rebuilds the queue from the file the
way `server.build_broker` does.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.servicebus.config import QueueProperties
from devhost.servicebus.entity import (
    ACTIVE,
    DEFERRED,
    EXPIRED_REASON,
    MAX_DELIVERY_REASON,
    SCHEDULED,
    LockLost,
    MessageNotFound,
    Queue,
)
from devhost.servicebus.store import Row, Store

T0 = 1_900_000_000_000  # a fixed "now" in ms; tests move it by hand
LOCK_MS = 30_000
NAME = "work"


def props(**overrides: Any) -> QueueProperties:
    doc: dict[str, Any] = {
        "LockDuration": "PT30S",
        "MaxDeliveryCount": 3,
        "DefaultMessageTimeToLive": "PT1H",
        "DeadLetteringOnMessageExpiration": True,
        "RequiresDuplicateDetection": True,
        "DuplicateDetectionHistoryTimeWindow": "PT1M",
    }
    doc.update(overrides)
    return QueueProperties.model_validate(doc)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "servicebus.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()


@pytest.fixture
def queue(store: Store) -> Queue:
    return Queue(NAME, props(), store)


def send(
    q: Queue,
    body: str,
    *,
    now: int = T0,
    message_id: str | None = None,
    ttl_ms: int | None = None,
    scheduled_ms: int | None = None,
) -> Row:
    row = q.enqueue(
        body.encode(),
        message_id=message_id if message_id is not None else str(uuid.uuid4()),
        session_id=None,
        ttl_ms=ttl_ms,
        scheduled_ms=scheduled_ms,
        now_ms=now,
    )
    assert row is not None
    return row


def receive(q: Queue, now: int = T0, dead_letter: bool = False) -> tuple[Row, uuid.UUID]:
    """What the broker does for one peek-lock delivery."""
    row = q.next_ready(dead_letter, now)
    assert row is not None, "nothing ready"
    return row, q.lock(row, now).token


def drain(q: Queue, now: int = T0, dead_letter: bool = False) -> list[bytes]:
    bodies = []
    while (row := q.next_ready(dead_letter, now)) is not None:
        bodies.append(row.payload)
        q.complete(q.lock(row, now).token, now)
    return bodies


def restored(db: Path, p: QueueProperties | None = None) -> tuple[Queue, Store]:
    """The queue as `server.build_broker` rebuilds it from the file."""
    s = Store(db)
    q = Queue(NAME, p or props(), s)
    q.restore(
        [r for r in s.rows() if r.queue == NAME],
        s.last_sequences().get(NAME, 0),
        [(mid, until) for qn, mid, until in s.remembered_ids() if qn == NAME],
    )
    return q, s


# -- peek-lock ------------------------------------------------------------------------------------
def test_fifo_order_and_increasing_sequence_numbers(queue: Queue) -> None:
    seqs = [send(queue, f"m{i}").seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert drain(queue) == [f"m{i}".encode() for i in range(5)]
    assert queue.counts()["active"] == 0


def test_a_locked_message_is_handed_to_no_one_else(queue: Queue) -> None:
    send(queue, "a")
    send(queue, "b")
    first, _ = receive(queue)
    second, _ = receive(queue)
    assert (first.payload, second.payload) == (b"a", b"b")
    assert queue.next_ready(False, T0) is None
    assert queue.counts()["locked"] == 2


def test_complete_removes_and_a_second_complete_is_lock_lost(queue: Queue) -> None:
    send(queue, "a")
    _, token = receive(queue)
    queue.complete(token, T0)
    assert queue.counts() == {
        "active": 0,
        "scheduled": 0,
        "deferred": 0,
        "dead_letter": 0,
        "locked": 0,
    }
    with pytest.raises(LockLost):
        queue.complete(token, T0)
    with pytest.raises(LockLost):
        queue.complete(uuid.uuid4(), T0)


def test_abandon_counts_a_delivery_and_max_delivery_count_dead_letters(queue: Queue) -> None:
    send(queue, "poison")
    counts = []
    for _ in range(3):
        row, token = receive(queue)
        counts.append(row.delivery_count)
        queue.abandon(token, T0)
    assert counts == [0, 1, 2]
    assert queue.next_ready(False, T0) is None
    dead, token = receive(queue, dead_letter=True)
    assert dead.payload == b"poison"
    assert dead.dl_reason == MAX_DELIVERY_REASON
    assert dead.dl_description
    assert "3" in dead.dl_description
    assert dead.delivery_count == 3
    queue.complete(token, T0)
    assert queue.counts()["dead_letter"] == 0


def test_release_hands_back_without_counting_a_delivery(queue: Queue) -> None:
    send(queue, "prefetched")
    for _ in range(5):
        _, token = receive(queue)
        queue.release(token, T0)
    row, _ = receive(queue)
    assert row.delivery_count == 0


def test_explicit_dead_letter_keeps_reason_and_description(queue: Queue) -> None:
    send(queue, "bad")
    _, token = receive(queue)
    queue.dead_letter(token, "SchemaInvalid", "tenant_id missing", T0)
    assert queue.next_ready(False, T0) is None
    dead, _ = receive(queue, dead_letter=True)
    assert (dead.dl_reason, dead.dl_description) == ("SchemaInvalid", "tenant_id missing")
    assert queue.counts()["dead_letter"] == 1


def test_a_refused_dead_letter_of_a_dead_lettered_message_leaves_it_in_the_dlq(
    queue: Queue,
) -> None:
    # BROKER BUG: Queue.dead_letter unlocks before it refuses, and never makes the row ready
    # again, so the message vanishes from the dead-letter queue until the broker restarts.
    send(queue, "bad")
    _, token = receive(queue)
    queue.dead_letter(token, "first", None, T0)
    _, dlq_token = receive(queue, dead_letter=True)
    assert queue.next_ready(True, T0) is None  # what the dispatcher asks next, given credit
    with pytest.raises(LockLost):
        queue.dead_letter(dlq_token, "again", None, T0)
    again, _ = receive(queue, dead_letter=True)
    assert again.payload == b"bad"
    assert again.dl_reason == "first"


# -- locks ----------------------------------------------------------------------------------------
def test_lock_expiry_counts_a_delivery_and_makes_the_message_ready(queue: Queue) -> None:
    send(queue, "slow")
    row, token = receive(queue)
    assert queue.expire_locks(T0 + LOCK_MS - 1) == 0
    assert queue.next_ready(False, T0 + LOCK_MS - 1) is None
    # Past the lock, settling fails even before the sweep has run.
    with pytest.raises(LockLost):
        queue.complete(token, T0 + LOCK_MS)
    assert queue.expire_locks(T0 + LOCK_MS) == 1
    again, new_token = receive(queue, now=T0 + LOCK_MS)
    assert again.seq == row.seq
    assert again.delivery_count == 1
    assert new_token != token
    with pytest.raises(LockLost):
        queue.complete(token, T0 + LOCK_MS)
    queue.complete(new_token, T0 + LOCK_MS)


def test_expired_locks_reaching_max_delivery_count_dead_letter(queue: Queue) -> None:
    send(queue, "crashy consumer")
    now = T0
    for _ in range(3):
        receive(queue, now=now)
        now += LOCK_MS
        queue.expire_locks(now)
    assert queue.next_ready(False, now) is None
    dead, _ = receive(queue, now=now, dead_letter=True)
    assert dead.dl_reason == MAX_DELIVERY_REASON


def test_renew_extends_the_lock(queue: Queue) -> None:
    send(queue, "long job")
    _, token = receive(queue)
    until = queue.renew(token, T0 + 20_000)
    assert until == T0 + 20_000 + LOCK_MS
    assert queue.expire_locks(T0 + LOCK_MS + 1) == 0
    queue.complete(token, T0 + LOCK_MS + 1)
    with pytest.raises(LockLost):
        queue.renew(token, T0 + LOCK_MS + 2)


# -- expiry ---------------------------------------------------------------------------------------
def test_ttl_expiry_dead_letters_when_the_queue_says_so(queue: Queue) -> None:
    send(queue, "stale", ttl_ms=1_000)
    send(queue, "fresh")
    assert queue.next_ready(False, T0 + 999) is not None
    assert drain(queue, now=T0 + 1_000) == [b"fresh"]
    dead, _ = receive(queue, now=T0 + 1_000, dead_letter=True)
    assert dead.payload == b"stale"
    assert dead.dl_reason == EXPIRED_REASON


def test_ttl_expiry_drops_the_message_otherwise(store: Store) -> None:
    q = Queue(NAME, props(DeadLetteringOnMessageExpiration=False), store)
    send(q, "stale", ttl_ms=1_000)
    q.expire_due(T0 + 1_000)
    assert q.counts()["active"] == 0
    assert q.counts()["dead_letter"] == 0


def test_expiry_moves_messages_without_a_receiver(queue: Queue) -> None:
    send(queue, "stale", ttl_ms=1_000)
    queue.expire_due(T0 + 999)
    assert queue.counts()["dead_letter"] == 0
    queue.expire_due(T0 + 1_000)
    assert queue.counts() == {
        "active": 0,
        "scheduled": 0,
        "deferred": 0,
        "dead_letter": 1,
        "locked": 0,
    }


def test_a_locked_message_does_not_expire_under_its_receiver(queue: Queue) -> None:
    send(queue, "in hand", ttl_ms=1_000)
    _, token = receive(queue)
    queue.expire_due(T0 + 5_000)
    assert queue.counts()["dead_letter"] == 0
    queue.complete(token, T0 + 5_000)


def test_the_message_ttl_is_capped_by_the_queue_default(queue: Queue) -> None:
    row = send(queue, "forever", ttl_ms=10 * 86_400_000)
    assert row.expires_ms == T0 + 3_600_000
    assert send(queue, "default").expires_ms == T0 + 3_600_000
    assert send(queue, "short", ttl_ms=5_000).expires_ms == T0 + 5_000


# -- duplicate detection --------------------------------------------------------------------------
def test_duplicates_are_dropped_inside_the_window_only(queue: Queue) -> None:
    assert send(queue, "one", message_id="dup").seq == 1
    assert (
        queue.enqueue(
            b"two", message_id="dup", session_id=None, ttl_ms=None, scheduled_ms=None, now_ms=T0 + 1
        )
        is None
    )
    # The window runs from the first send; after it, the id is new again.
    later = T0 + 60_000
    queue.forget_old_ids(later)
    assert send(queue, "three", message_id="dup", now=later).seq == 2
    assert drain(queue, now=later) == [b"one", b"three"]


def test_without_duplicate_detection_every_send_is_kept(store: Store) -> None:
    q = Queue(NAME, props(RequiresDuplicateDetection=False), store)
    send(q, "one", message_id="same")
    send(q, "two", message_id="same")
    assert drain(q) == [b"one", b"two"]


def test_a_completed_message_id_is_still_a_duplicate_inside_the_window(queue: Queue) -> None:
    send(queue, "one", message_id="dup")
    drain(queue)
    assert queue.is_duplicate("dup", T0 + 59_999)
    assert not queue.is_duplicate("dup", T0 + 60_000)


# -- scheduling -----------------------------------------------------------------------------------
def test_scheduled_messages_activate_on_time(queue: Queue) -> None:
    at = T0 + 10_000
    row = send(queue, "later", scheduled_ms=at)
    assert row.state == SCHEDULED
    assert row.expires_ms == at + 3_600_000
    assert queue.counts()["scheduled"] == 1
    assert queue.activate_scheduled(at - 1) == 0
    assert queue.next_ready(False, at - 1) is None
    assert queue.activate_scheduled(at) == 1
    ready, _ = receive(queue, now=at)
    assert (ready.payload, ready.state) == (b"later", ACTIVE)


def test_a_schedule_in_the_past_is_ready_at_once(queue: Queue) -> None:
    assert send(queue, "overdue", scheduled_ms=T0 - 5_000).state == ACTIVE
    assert drain(queue) == [b"overdue"]


def test_cancel_removes_scheduled_messages_all_or_nothing(queue: Queue) -> None:
    a = send(queue, "a", scheduled_ms=T0 + 10_000)
    b = send(queue, "b", scheduled_ms=T0 + 10_000)
    active = send(queue, "active")
    with pytest.raises(MessageNotFound):
        queue.cancel_scheduled([a.seq, active.seq])
    assert queue.counts()["scheduled"] == 2
    queue.cancel_scheduled([a.seq])
    with pytest.raises(MessageNotFound):
        queue.cancel_scheduled([a.seq])
    queue.activate_scheduled(T0 + 10_000)
    assert sorted(drain(queue, now=T0 + 10_000)) == [b"active", b"b"]
    assert b.seq == a.seq + 1


# -- deferral -------------------------------------------------------------------------------------
def test_deferred_messages_are_received_only_by_sequence_number(queue: Queue) -> None:
    row = send(queue, "later")
    send(queue, "other")
    _, token = receive(queue)
    queue.defer(token, T0)
    assert drain(queue) == [b"other"]
    assert queue.counts()["deferred"] == 1
    (lock,) = queue.lock_deferred([row.seq], T0)
    assert lock.row.state == DEFERRED
    with pytest.raises(MessageNotFound):
        queue.lock_deferred([row.seq], T0)  # already locked
    queue.complete(lock.token, T0)
    with pytest.raises(MessageNotFound):
        queue.lock_deferred([row.seq], T0)


def test_an_abandoned_or_expired_deferred_message_stays_deferred(store: Store) -> None:
    queue = Queue(NAME, props(MaxDeliveryCount=10), store)
    row = send(queue, "later")
    _, token = receive(queue)
    queue.defer(token, T0)
    (lock,) = queue.lock_deferred([row.seq], T0)
    queue.abandon(lock.token, T0)
    assert queue.next_ready(False, T0) is None
    (lock,) = queue.lock_deferred([row.seq], T0)
    queue.expire_locks(T0 + LOCK_MS)
    assert queue.next_ready(False, T0 + LOCK_MS) is None
    assert queue.counts()["deferred"] == 1


def test_deferred_messages_can_be_taken_in_receive_and_delete_mode(queue: Queue) -> None:
    row = send(queue, "later")
    _, token = receive(queue)
    queue.defer(token, T0)
    with pytest.raises(MessageNotFound):
        queue.take_deferred([row.seq, row.seq + 100])
    assert [r.payload for r in queue.take_deferred([row.seq])] == [b"later"]
    assert queue.counts()["deferred"] == 0


def test_a_deferred_dead_lettered_message_is_received_only_by_sequence_number(
    queue: Queue,
) -> None:
    # BROKER BUG: defer() marks a dead-lettered row DEFERRED, but next_ready(dead_letter=True)
    # never checks the state: the row, still at the head of the DLQ heap (or pushed back there
    # by an abandon or a lock expiry), is handed out again by an ordinary DLQ receive.
    send(queue, "bad")
    _, token = receive(queue)
    queue.dead_letter(token, "r", None, T0)
    row, dlq_token = receive(queue, dead_letter=True)
    queue.defer(dlq_token, T0)
    assert queue.next_ready(True, T0) is None
    (lock,) = queue.lock_deferred([row.seq], T0)
    queue.abandon(lock.token, T0)
    assert queue.next_ready(True, T0) is None


# -- peek -----------------------------------------------------------------------------------------
def test_peek_sees_every_state_and_takes_no_lock(queue: Queue) -> None:
    send(queue, "active")
    send(queue, "scheduled", scheduled_ms=T0 + 10_000)
    send(queue, "locked")
    row = send(queue, "deferred")
    while (r := queue.next_ready(False, T0)) is not None and r.seq != row.seq:
        queue.lock(r, T0)
    assert r is not None
    queue.defer(queue.lock(r, T0).token, T0)
    assert [r.payload for r in queue.peek(1, 10, False)] == [
        b"active",
        b"scheduled",
        b"locked",
        b"deferred",
    ]
    assert [r.seq for r in queue.peek(3, 1, False)] == [3]
    assert queue.peek(1, 10, True) == []


# -- restore after a crash ------------------------------------------------------------------------
def crash_after(db: Path, work: Callable[[Queue, Store], None]) -> None:
    """Run `work` in a forked child on a queue over `db`, then SIGKILL it mid-transaction."""

    def child() -> None:
        s = Store(db)
        work(Queue(NAME, props(), s), s)
        os.kill(os.getpid(), signal.SIGKILL)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL, "the child failed before its crash"


def test_restore_keeps_committed_work_and_forgets_uncommitted_work(db: Path) -> None:
    def work(q: Queue, s: Store) -> None:
        for body in ("done", "kept", "locked"):
            send(q, body)
        s.commit()
        _, token = receive(q)
        q.complete(token, T0)  # committed: must stay gone
        receive(q)  # "kept" locked, never settled
        s.commit()
        _, token = receive(q)  # "locked"
        q.complete(token, T0)  # not committed: must come back
        send(q, "never acknowledged")  # not committed: must not appear

    crash_after(db, work)
    q, s = restored(db)
    try:
        rows = drain_rows(q)
        assert [(r.payload, r.delivery_count) for r in rows] == [(b"kept", 0), (b"locked", 0)]
        assert q.counts()["locked"] == 0
        # Sequence numbers continue after the last committed one, never reusing a completed one.
        assert send(q, "next").seq == 4
    finally:
        s.close()


def drain_rows(q: Queue, now: int = T0) -> list[Row]:
    rows = []
    while (row := q.next_ready(False, now)) is not None:
        rows.append(row)
        q.complete(q.lock(row, now).token, now)
    return rows


def test_restore_keeps_every_state(db: Path) -> None:
    def work(q: Queue, s: Store) -> None:
        send(q, "scheduled", scheduled_ms=T0 + 10_000)  # seq 1
        for body in ("deferred", "dead", "abandoned"):  # seq 2, 3, 4
            send(q, body)
        send(q, "once", message_id="dedup-me")  # seq 5
        _, token = receive(q)
        q.defer(token, T0)
        _, token = receive(q)
        q.dead_letter(token, "SchemaInvalid", "tenant_id missing", T0)
        _, token = receive(q)
        q.abandon(token, T0)
        s.commit()

    crash_after(db, work)
    q, s = restored(db)
    try:
        assert q.counts() == {
            "active": 2,
            "scheduled": 1,
            "deferred": 1,
            "dead_letter": 1,
            "locked": 0,
        }
        assert q.is_duplicate("dedup-me", T0 + 1)
        rows = drain_rows(q)
        assert [(r.payload, r.delivery_count) for r in rows] == [
            (b"abandoned", 1),
            (b"once", 0),
        ]
        (lock,) = q.lock_deferred([2], T0)
        assert lock.row.payload == b"deferred"
        q.complete(lock.token, T0)
        dead, _ = receive(q, dead_letter=True)
        assert (dead.payload, dead.dl_reason, dead.dl_description) == (
            b"dead",
            "SchemaInvalid",
            "tenant_id missing",
        )
        assert q.activate_scheduled(T0 + 10_000) == 1
        assert [r.payload for r in drain_rows(q, T0 + 10_000)] == [b"scheduled"]
    finally:
        s.close()


def test_restore_after_a_clean_close_loses_nothing(db: Path) -> None:
    s = Store(db)
    q = Queue(NAME, props(), s)
    for i in range(3):
        send(q, f"m{i}")
    s.close()  # what the broker does on SIGTERM: commit and close
    q2, s2 = restored(db)
    try:
        assert drain(q2) == [b"m0", b"m1", b"m2"]
    finally:
        s2.close()


def test_a_deferred_dead_lettered_message_stays_deferred_after_restart(db: Path) -> None:
    # BROKER BUG: Queue._index pushes every dead-lettered row onto the DLQ ready heap whatever its
    # state, so after a restart a message deferred in the DLQ is handed out by an ordinary receive.
    def work(q: Queue, s: Store) -> None:
        send(q, "bad")
        _, token = receive(q)
        q.dead_letter(token, "r", None, T0)
        _, token = receive(q, dead_letter=True)
        q.defer(token, T0)
        s.commit()

    crash_after(db, work)
    q, s = restored(db)
    try:
        assert q.next_ready(True, T0) is None
        (lock,) = q.lock_deferred([1], T0)
        assert lock.row.dl_reason == "r"
    finally:
        s.close()
