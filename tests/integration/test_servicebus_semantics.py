"""Service Bus semantics of the local broker, proven through the public SDK API only."""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote_plus

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusError,
)

from devhost.servicebus.launcher import BrokerProcess
from tests.fixtures.servicebus import assert_full, full_message

QUEUES = {
    "work": {
        "LockDuration": "PT2S",
        "MaxDeliveryCount": 3,
        "DefaultMessageTimeToLive": "PT1H",
        "DeadLetteringOnMessageExpiration": True,
        "RequiresDuplicateDetection": True,
        "DuplicateDetectionHistoryTimeWindow": "PT1M",
    },
    "plain": {"LockDuration": "PT30S"},
}


@pytest.fixture
def sb(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker(QUEUES)


@pytest.fixture
def client(sb: BrokerProcess) -> Iterator[ServiceBusClient]:
    # Few, quick retries: a test that expects an error should see it without minutes of backoff.
    with ServiceBusClient.from_connection_string(
        sb.connection_string, retry_total=1, retry_backoff_factor=0.1
    ) as c:
        yield c


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sas_token(uri: str, key_name: str, key: str, expiry: int) -> str:
    import base64
    import hashlib
    import hmac

    sig = base64.b64encode(
        hmac.new(key.encode(), f"{quote_plus(uri)}\n{expiry}".encode(), hashlib.sha256).digest()
    )
    return (
        f"SharedAccessSignature sr={quote_plus(uri)}&sig={quote_plus(sig)}"
        f"&se={expiry}&skn={key_name}"
    )


# -- authentication -------------------------------------------------------------------------------
def test_wrong_key_is_refused_with_the_sdk_authentication_error(sb: BrokerProcess) -> None:
    bad = sb.connection_string.replace("SAS_KEY_VALUE", "not-the-key")
    with ServiceBusClient.from_connection_string(bad, retry_total=0) as c:
        sender = c.get_queue_sender("plain")
        with pytest.raises(ServiceBusAuthenticationError):
            sender.send_messages(ServiceBusMessage("x"))


def test_expired_token_is_refused_and_a_fresh_one_accepted(sb: BrokerProcess) -> None:
    uri = f"sb://127.0.0.1:{sb.port}/plain"
    for expiry, ok in ((int(time.time()) - 60, False), (int(time.time()) + 600, True)):
        token = _sas_token(uri, "RootManageSharedAccessKey", "SAS_KEY_VALUE", expiry)
        conn = (
            f"Endpoint=sb://127.0.0.1:{sb.port};SharedAccessSignature={token};"
            "UseDevelopmentEmulator=true;"
        )
        with ServiceBusClient.from_connection_string(conn, retry_total=0) as c:
            sender = c.get_queue_sender("plain")
            if ok:
                with sender:
                    sender.send_messages(ServiceBusMessage("x"))
            else:
                with pytest.raises(ServiceBusAuthenticationError):
                    sender.send_messages(ServiceBusMessage("x"))


# -- sending: every field round-trips -------------------------------------------------------------
def test_single_and_batch_sends_round_trip_every_field(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        sender.send_messages(full_message(0))
        batch = sender.create_message_batch()
        for i in (1, 2, 3):
            batch.add_message(full_message(i))
        sender.send_messages(batch)
        sender.send_messages([full_message(4), full_message(5)])
    with client.get_queue_receiver("plain") as receiver:
        got = []
        while len(got) < 6:
            batch_in = receiver.receive_messages(max_message_count=10, max_wait_time=3)
            assert batch_in, "messages went missing"
            got.extend(batch_in)
        for m in got:
            receiver.complete_message(m)
    got.sort(key=lambda m: m.sequence_number)
    for i, m in enumerate(got):
        assert_full(m, i)
    seqs = [m.sequence_number for m in got]
    assert seqs == sorted(set(seqs))
    assert all(
        m.enqueued_time_utc and abs(m.enqueued_time_utc - _utcnow()) < dt.timedelta(seconds=30)
        for m in got
    )
    assert all(m.delivery_count == 0 for m in got)


# -- receiving ------------------------------------------------------------------------------------
def test_peek_lock_receive_honours_count_wait_and_prefetch(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(7)])
    with client.get_queue_receiver("plain", prefetch_count=5) as receiver:
        first = receiver.receive_messages(max_message_count=3, max_wait_time=3)
        assert 1 <= len(first) <= 3
        rest = []
        while len(first) + len(rest) < 7:
            more = receiver.receive_messages(max_message_count=10, max_wait_time=3)
            assert more
            rest.extend(more)
        for m in first + rest:
            assert m.lock_token is not None
            receiver.complete_message(m)
        started = time.monotonic()
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
        assert 0.5 < time.monotonic() - started < 5


def test_receive_and_delete_removes_messages(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
    with client.get_queue_receiver(
        "plain", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        got = []
        while len(got) < 3:
            more = receiver.receive_messages(max_message_count=3, max_wait_time=3)
            assert more
            got.extend(more)
        assert sorted(str(m) for m in got) == ["m0", "m1", "m2"]
    with client.get_queue_receiver("plain") as receiver:
        assert receiver.peek_messages(max_message_count=10) == []


# -- locks ----------------------------------------------------------------------------------------
def test_lock_until_renew_and_expiry_redelivers(client: ServiceBusClient) -> None:
    with client.get_queue_sender("work") as sender:
        sender.send_messages(ServiceBusMessage("locked", message_id=str(uuid.uuid4())))
    with client.get_queue_receiver("work") as receiver:
        (msg,) = receiver.receive_messages(max_message_count=1, max_wait_time=3)
        assert msg.locked_until_utc is not None
        left = msg.locked_until_utc - _utcnow()
        assert dt.timedelta(seconds=0.5) < left <= dt.timedelta(seconds=2.5)
        before = msg.locked_until_utc
        time.sleep(1.0)
        renewed = receiver.renew_message_lock(msg)
        assert renewed > before
        time.sleep(2.6)  # let the lock lapse
        with pytest.raises(MessageLockLostError):
            receiver.complete_message(msg)
        (again,) = receiver.receive_messages(max_message_count=1, max_wait_time=5)
        assert str(again) == "locked"
        assert again.delivery_count == 1
        assert again.sequence_number == msg.sequence_number
        receiver.complete_message(again)


def test_abandon_counts_and_max_delivery_count_dead_letters(client: ServiceBusClient) -> None:
    with client.get_queue_sender("work") as sender:
        sender.send_messages(ServiceBusMessage("poison", message_id=str(uuid.uuid4())))
    with client.get_queue_receiver("work") as receiver:
        counts = []
        for _ in range(3):
            (msg,) = receiver.receive_messages(max_message_count=1, max_wait_time=5)
            counts.append(msg.delivery_count)
            receiver.abandon_message(msg)
        assert counts == [0, 1, 2]
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
    with client.get_queue_receiver("work", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        (dead,) = dlq.receive_messages(max_message_count=1, max_wait_time=5)
        assert str(dead) == "poison"
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
        assert dead.dead_letter_error_description
        assert dead.dead_letter_source == "work"
        dlq.complete_message(dead)


def test_explicit_dead_letter_keeps_reason_and_description(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        sender.send_messages(ServiceBusMessage("bad"))
    with client.get_queue_receiver("plain") as receiver:
        (msg,) = receiver.receive_messages(max_message_count=1, max_wait_time=3)
        receiver.dead_letter_message(
            msg, reason="SchemaInvalid", error_description="tenant_id missing"
        )
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
    with client.get_queue_receiver("plain", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        peeked = dlq.peek_messages(max_message_count=5)
        assert [str(m) for m in peeked] == ["bad"]
        (dead,) = dlq.receive_messages(max_message_count=1, max_wait_time=3)
        assert dead.dead_letter_reason == "SchemaInvalid"
        assert dead.dead_letter_error_description == "tenant_id missing"
        assert dead.sequence_number == msg.sequence_number
        dlq.complete_message(dead)


def test_defer_and_receive_deferred(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        sender.send_messages(ServiceBusMessage("later"))
    with client.get_queue_receiver("plain") as receiver:
        (msg,) = receiver.receive_messages(max_message_count=1, max_wait_time=3)
        seq = msg.sequence_number
        receiver.defer_message(msg)
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
        (deferred,) = receiver.receive_deferred_messages([seq])
        assert str(deferred) == "later"
        assert deferred.lock_token is not None
        receiver.complete_message(deferred)
        with pytest.raises(ServiceBusError):
            receiver.receive_deferred_messages([seq])


# -- scheduling -----------------------------------------------------------------------------------
def test_scheduled_messages_appear_on_time_and_can_be_cancelled(client: ServiceBusClient) -> None:
    soon = _utcnow() + dt.timedelta(seconds=4)
    with client.get_queue_sender("plain") as sender:
        sender.send_messages(ServiceBusMessage("by-property", scheduled_enqueue_time_utc=soon))
        seqs = sender.schedule_messages(
            [ServiceBusMessage("scheduled"), ServiceBusMessage("cancelled")], soon
        )
        assert len(seqs) == 2
        assert all(isinstance(s, int) and s > 0 for s in seqs)
        sender.cancel_scheduled_messages(seqs[1])
    with client.get_queue_receiver("plain") as receiver:
        peeked = receiver.peek_messages(max_message_count=10)
        assert sorted(str(m) for m in peeked) == ["by-property", "scheduled"]
        assert receiver.receive_messages(max_message_count=5, max_wait_time=0.5) == []
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got.extend(receiver.receive_messages(max_message_count=5, max_wait_time=2))
        assert sorted(str(m) for m in got) == ["by-property", "scheduled"]
        assert all(m.scheduled_enqueue_time_utc is not None for m in got)
        for m in got:
            receiver.complete_message(m)


def test_peek_takes_no_lock_and_counts_no_delivery(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        sender.send_messages([ServiceBusMessage("p1"), ServiceBusMessage("p2")])
    with client.get_queue_receiver("plain") as receiver:
        peeked = receiver.peek_messages(max_message_count=5)
        assert [str(m) for m in peeked] == ["p1", "p2"]
        assert receiver.peek_messages(max_message_count=5, sequence_number=1) != []
        got = receiver.receive_messages(max_message_count=2, max_wait_time=3)
        assert {m.delivery_count for m in got} == {0}
        for m in got:
            receiver.complete_message(m)


# -- expiry and duplicates ------------------------------------------------------------------------
def test_expired_message_goes_to_dead_letter_queue(client: ServiceBusClient) -> None:
    with client.get_queue_sender("work") as sender:
        sender.send_messages(
            ServiceBusMessage(
                "stale", message_id=str(uuid.uuid4()), time_to_live=dt.timedelta(seconds=1)
            )
        )
    time.sleep(2.5)
    with client.get_queue_receiver("work") as receiver:
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
    with client.get_queue_receiver("work", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        (dead,) = dlq.receive_messages(max_message_count=1, max_wait_time=3)
        assert str(dead) == "stale"
        assert dead.dead_letter_reason == "TTLExpiredException"
        dlq.complete_message(dead)


def test_duplicate_message_ids_are_dropped_inside_the_window(client: ServiceBusClient) -> None:
    with client.get_queue_sender("work") as sender:
        sender.send_messages(ServiceBusMessage("one", message_id="dup"))
        sender.send_messages(ServiceBusMessage("two", message_id="dup"))
        sender.send_messages(ServiceBusMessage("three", message_id="other"))
    with client.get_queue_receiver("work") as receiver:
        got = []
        while True:
            more = receiver.receive_messages(max_message_count=5, max_wait_time=1)
            if not more:
                break
            got.extend(more)
        assert sorted(str(m) for m in got) == ["one", "three"]
        for m in got:
            receiver.complete_message(m)


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_queue_raises_entity_not_found_quickly(sb: BrokerProcess) -> None:
    started = time.monotonic()
    with ServiceBusClient.from_connection_string(sb.connection_string, retry_total=0) as c:
        with pytest.raises(MessagingEntityNotFoundError), c.get_queue_sender("nope") as s:
            s.send_messages(ServiceBusMessage("x"))
        with pytest.raises(MessagingEntityNotFoundError), c.get_queue_receiver("nope") as r:
            r.receive_messages(max_wait_time=1)
    assert time.monotonic() - started < 15


def test_oversized_message_is_refused_and_broker_keeps_serving(client: ServiceBusClient) -> None:
    with client.get_queue_sender("plain") as sender:
        with pytest.raises(ServiceBusError):
            sender.send_messages(ServiceBusMessage(b"x" * (300 * 1024)))
        sender.send_messages(ServiceBusMessage("small"))
    with client.get_queue_receiver("plain") as receiver:
        (msg,) = receiver.receive_messages(max_message_count=1, max_wait_time=3)
        assert str(msg) == "small"
        receiver.complete_message(msg)


def test_malformed_frames_close_only_that_connection(sb: BrokerProcess) -> None:
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"AMQP\x00\x01\x00\x00" + b"\xff" * 64):
        with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as raw:
            raw.sendall(garbage)
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass
    with ServiceBusClient.from_connection_string(sb.connection_string) as c:
        with c.get_queue_sender("plain") as s:
            s.send_messages(ServiceBusMessage("still here"))
        with c.get_queue_receiver("plain") as r:
            (msg,) = r.receive_messages(max_message_count=1, max_wait_time=3)
            assert str(msg) == "still here"
            r.complete_message(msg)


def test_unsupported_session_receiver_gets_a_clear_error(client: ServiceBusClient) -> None:
    receiver = client.get_queue_receiver("plain", session_id="s-1")
    with pytest.raises(ServiceBusError) as err, receiver:
        receiver.receive_messages(max_wait_time=1)
    assert "not supported" in str(err.value).lower() or "not-implemented" in str(err.value)


def test_logs_one_ready_line_and_stops_cleanly_on_sigterm(sb: BrokerProcess) -> None:
    with (
        ServiceBusClient.from_connection_string(sb.connection_string) as c,
        c.get_queue_sender("plain") as s,
    ):
        s.send_messages(ServiceBusMessage("kept"))
    assert sb.stop() == 0
    assert sb.log_path is not None
    log = sb.log_path.read_text()
    assert log.count("servicebus broker ready") == 1
    assert "servicebus broker stopped" in log
    sb.start()  # the same data dir: what was acknowledged before the stop is still there
    with (
        ServiceBusClient.from_connection_string(sb.connection_string) as c,
        c.get_queue_receiver("plain") as r,
    ):
        (msg,) = r.receive_messages(max_message_count=1, max_wait_time=3)
        assert str(msg) == "kept"
        r.complete_message(msg)
