"""Concurrent senders and competing receivers on one queue, through the SDK (threads and aio).

Every delivery is written in a ledger with the receiver, the lock token, the delivery count, when
`receive_messages` returned it and when the receiver began to settle it. From the ledger:
every sent message is completed exactly once; a message is redelivered only where the rules say
(here: abandoned once on purpose; locks are far longer than the test); and no two receivers hold
one message at once: a redelivery is handed out only after the previous holder began to settle.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.exceptions import MessageLockLostError

from devhost.servicebus.launcher import BrokerProcess

QUEUE = "shared"
QUEUES: dict[str, dict[str, Any]] = {
    QUEUE: {"LockDuration": "PT60S", "MaxDeliveryCount": 10},
    "short-locks": {"LockDuration": "PT2S", "MaxDeliveryCount": 10},
}
SENDERS = 4
RECEIVERS = 4
PER_SENDER = 250
TOTAL = SENDERS * PER_SENDER
PREFETCH = (0, 0, 10, 25)  # a mix: receivers that pull per call and receivers that prefetch
DEADLINE_S = 45.0


def message_id(sender: int, n: int) -> str:
    return f"s{sender}-{n:04d}"


def abandon_first_time(mid: str) -> bool:
    """Every 7th message is abandoned on its first delivery, to force redeliveries."""
    return int(mid.split("-")[1]) % 7 == 0


def outgoing(sender: int, n: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        f"{sender}:{n}",
        message_id=message_id(sender, n),
        application_properties={"sender": sender, "n": n},
    )


def chunks(sender: int) -> list[list[ServiceBusMessage]]:
    """Single sends and batches of 10, interleaved."""
    out: list[list[ServiceBusMessage]] = []
    n = 0
    while n < PER_SENDER:
        size = 1 if len(out) % 3 == 0 else 10
        out.append([outgoing(sender, i) for i in range(n, min(PER_SENDER, n + size))])
        n += size
    return out


@dataclass
class Delivery:
    message_id: str
    receiver: int
    sequence_number: int
    lock_token: str
    delivery_count: int
    received_at: float
    settle_started_at: float = 0.0
    outcome: str = ""


@dataclass
class Ledger:
    deliveries: list[Delivery] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    completed: set[str] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def received(self, receiver: int, m: ServiceBusReceivedMessage, at: float) -> Delivery:
        d = Delivery(
            message_id=m.message_id or "",
            receiver=receiver,
            sequence_number=m.sequence_number or 0,
            lock_token=str(m.lock_token),
            delivery_count=m.delivery_count or 0,
            received_at=at,
        )
        with self.lock:
            self.deliveries.append(d)
        return d

    def settling(self, d: Delivery) -> str:
        """The outcome to apply; stamps the time settlement begins."""
        d.settle_started_at = time.monotonic()
        d.outcome = (
            "abandon" if d.delivery_count == 0 and abandon_first_time(d.message_id) else "complete"
        )
        return d.outcome

    def settled(self, d: Delivery) -> None:
        if d.outcome != "complete":
            return
        with self.lock:
            self.completed.add(d.message_id)
            if len(self.completed) >= TOTAL:
                self.done.set()

    def acked(self, ids: list[str]) -> None:
        with self.lock:
            self.acknowledged.update(ids)


def check(ledger: Ledger) -> None:
    assert not ledger.errors, f"workers failed: {ledger.errors!r}"
    every = {message_id(s, n) for s in range(SENDERS) for n in range(PER_SENDER)}
    assert ledger.acknowledged == every
    assert ledger.completed == every

    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for d in ledger.deliveries:
        by_id[d.message_id].append(d)
    assert set(by_id) == every, "a delivery of a message that was never sent"
    for mid, ds in by_id.items():
        ds.sort(key=lambda d: d.received_at)
        expected = ["abandon", "complete"] if abandon_first_time(mid) else ["complete"]
        assert [d.outcome for d in ds] == expected, f"{mid}: {ds}"
        assert [d.delivery_count for d in ds] == list(range(len(ds))), f"{mid}: {ds}"
        assert len({d.sequence_number for d in ds}) == 1, f"{mid}: {ds}"
        for before, after in itertools.pairwise(ds):
            # Held by one receiver at a time: the next holder got it only after the previous
            # holder had begun to settle it.
            assert after.received_at > before.settle_started_at, f"{mid} held twice: {ds}"

    seqs = {ds[0].sequence_number for ds in by_id.values()}
    assert len(seqs) == TOTAL, "two messages share a sequence number"
    tokens = [d.lock_token for d in ledger.deliveries]
    assert len(set(tokens)) == len(tokens), "a lock token was handed out twice"
    per_receiver = {
        r: sum(1 for d in ledger.deliveries if d.receiver == r) for r in range(RECEIVERS)
    }
    assert all(per_receiver.values()), f"a receiver was starved: {per_receiver}"


def assert_queue_empty(connection_string: str, queue: str = QUEUE) -> None:
    with (
        ServiceBusClient.from_connection_string(connection_string) as client,
        client.get_queue_receiver(queue) as receiver,
    ):
        assert receiver.peek_messages(max_message_count=10, sequence_number=1) == []


@pytest.fixture
def sb(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker(QUEUES)


# -- threads and the sync SDK ---------------------------------------------------------------------
def test_threads_each_message_is_completed_once_and_held_by_one_receiver(
    sb: BrokerProcess,
) -> None:
    ledger = Ledger()
    ready = threading.Barrier(SENDERS + RECEIVERS)

    def send(sender: int) -> None:
        try:
            with (
                ServiceBusClient.from_connection_string(sb.connection_string) as client,
                client.get_queue_sender(QUEUE) as s,
            ):
                ready.wait(30)
                for chunk in chunks(sender):
                    s.send_messages(chunk if len(chunk) > 1 else chunk[0])
                    ledger.acked([m.message_id or "" for m in chunk])
        except BaseException as exc:
            ledger.errors.append(exc)
            ledger.done.set()

    def receive(receiver: int) -> None:
        try:
            with (
                ServiceBusClient.from_connection_string(sb.connection_string) as client,
                client.get_queue_receiver(QUEUE, prefetch_count=PREFETCH[receiver]) as r,
            ):
                ready.wait(30)
                while not ledger.done.is_set():
                    batch = r.receive_messages(max_message_count=10, max_wait_time=0.5)
                    at = time.monotonic()
                    for m in batch:
                        d = ledger.received(receiver, m, at)
                        if ledger.settling(d) == "abandon":
                            r.abandon_message(m)
                        else:
                            r.complete_message(m)
                        ledger.settled(d)
        except BaseException as exc:
            ledger.errors.append(exc)
            ledger.done.set()

    threads = [threading.Thread(target=receive, args=(i,)) for i in range(RECEIVERS)]
    threads += [threading.Thread(target=send, args=(i,)) for i in range(SENDERS)]
    for t in threads:
        t.start()
    finished = ledger.done.wait(DEADLINE_S)
    ledger.done.set()
    for t in threads:
        t.join(30)
    assert finished, f"only {len(ledger.completed)} of {TOTAL} completed in {DEADLINE_S}s"
    check(ledger)
    assert_queue_empty(sb.connection_string)


# -- asyncio and the aio SDK ----------------------------------------------------------------------
async def test_aio_each_message_is_completed_once_and_held_by_one_receiver(
    sb: BrokerProcess,
) -> None:
    ledger = Ledger()
    ready = asyncio.Barrier(SENDERS + RECEIVERS)
    finished = asyncio.Event()

    def stop() -> None:
        ledger.done.set()
        finished.set()

    async def send(sender: int) -> None:
        try:
            async with (
                AsyncServiceBusClient.from_connection_string(sb.connection_string) as client,
                client.get_queue_sender(QUEUE) as s,
            ):
                await ready.wait()
                for chunk in chunks(sender):
                    await s.send_messages(chunk if len(chunk) > 1 else chunk[0])
                    ledger.acked([m.message_id or "" for m in chunk])
        except BaseException as exc:
            ledger.errors.append(exc)
            stop()

    async def receive(receiver: int) -> None:
        try:
            async with (
                AsyncServiceBusClient.from_connection_string(sb.connection_string) as client,
                client.get_queue_receiver(QUEUE, prefetch_count=PREFETCH[receiver]) as r,
            ):
                await ready.wait()
                while not ledger.done.is_set():
                    batch = await r.receive_messages(max_message_count=10, max_wait_time=0.5)
                    at = time.monotonic()
                    for m in batch:
                        d = ledger.received(receiver, m, at)
                        if ledger.settling(d) == "abandon":
                            await r.abandon_message(m)
                        else:
                            await r.complete_message(m)
                        ledger.settled(d)
                    if ledger.done.is_set():
                        finished.set()
        except BaseException as exc:
            ledger.errors.append(exc)
            stop()

    tasks = [asyncio.create_task(receive(i)) for i in range(RECEIVERS)]
    tasks += [asyncio.create_task(send(i)) for i in range(SENDERS)]
    try:
        async with asyncio.timeout(DEADLINE_S):
            await finished.wait()
    except TimeoutError:
        pytest.fail(f"only {len(ledger.completed)} of {TOTAL} completed in {DEADLINE_S}s")
    finally:
        stop()
        await asyncio.wait(tasks, timeout=30)
    check(ledger)
    assert_queue_empty(sb.connection_string)


# -- at-least-once across receivers ---------------------------------------------------------------
def test_a_lapsed_lock_passes_the_message_to_another_receiver(sb: BrokerProcess) -> None:
    """Receiver A takes a message and stalls past the lock; B gets it with one more delivery
    counted, and A's late complete is refused rather than settling what B now holds."""
    with (
        ServiceBusClient.from_connection_string(sb.connection_string, retry_total=0) as client,
        client.get_queue_sender("short-locks") as sender,
        client.get_queue_receiver("short-locks") as a,
        client.get_queue_receiver("short-locks") as b,
    ):
        sender.send_messages(ServiceBusMessage("slow", message_id="slow"))
        (held,) = a.receive_messages(max_message_count=1, max_wait_time=5)
        assert b.receive_messages(max_message_count=1, max_wait_time=0.5) == []
        (taken,) = b.receive_messages(max_message_count=1, max_wait_time=5)
        assert taken.message_id == "slow"
        assert taken.sequence_number == held.sequence_number
        assert (held.delivery_count, taken.delivery_count) == (0, 1)
        with pytest.raises(MessageLockLostError):
            a.complete_message(held)
        b.complete_message(taken)
        assert a.receive_messages(max_message_count=1, max_wait_time=0.5) == []
    assert_queue_empty(sb.connection_string, "short-locks")
