"""Messages per second and send-to-receive latency through the local broker, beside the SDK alone.

Round trip: the aio SDK sends N messages in batches while, on the same event loop, a receiver with
`prefetch_count` takes them in peek-lock mode and completes each (this SDK waits for the broker's
confirmation, which the broker gives only after its group commit). Each message carries its send
time in `application_properties`; latency is receive time minus send time, and throughput is N
over the time from the first send to the last completion. Clients are connected and warmed up
before the clock starts.

Baseline, measured in the same run: the SDK alone doing the client's share of the same work with
no broker and no network: build the N messages, add them to batches (which encodes them), encode
each batch as the transfer payload, then decode every message's bytes into a
`ServiceBusReceivedMessage` and read its timestamp. Both sides scale with the same CPU, so the
ratio, round trip over SDK alone, says how much of the client's own ceiling the broker, the
sockets and peek-lock settlement leave, and compares across machines where raw numbers do not.

The sender is not paced: all N are offered at once, so latency percentiles include the time a
message waits behind the backlog, which is what a burst of N costs end to end.

A second line runs the round trip in RECEIVE_AND_DELETE mode on the same broker: the ratio of
peek-lock to it is what locks and durable, confirmed completions cost.

    python -m bench.servicebus_roundtrip --messages 5000 --batch 100 --prefetch 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
)
from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.message import BatchMessage
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender

from devhost.servicebus.launcher import BrokerProcess

PEEK_LOCK_QUEUE = "bench-peek-lock"
RECEIVE_AND_DELETE_QUEUE = "bench-receive-and-delete"
SENT_AT = "sent_at"  # time.time() as a double: the SDK sends Python ints as 32-bit
BODY = json.dumps({"tenant_id": "bench", "request_id": "0" * 36, "text": "x" * 200})


@dataclass(frozen=True)
class Result:
    messages: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    def percentile(self, p: float) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(p) - 1]


def message(i: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        BODY, message_id=f"m-{i}", application_properties={SENT_AT: time.time(), "n": i}
    )


def write_config(path: Path) -> Path:
    props = {"LockDuration": "PT1M", "MaxDeliveryCount": 10, "RequiresDuplicateDetection": False}
    queues = [{"Name": q, "Properties": props} for q in (PEEK_LOCK_QUEUE, RECEIVE_AND_DELETE_QUEUE)]
    doc = {"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": queues}]}}
    path.write_text(json.dumps(doc))
    return path


# -- baseline: the SDK alone ----------------------------------------------------------------------
def sdk_alone(count: int, batch_size: int) -> Result:
    """Build, batch and encode N messages, then decode each into what a receiver hands out."""
    latencies: list[float] = []
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        batch = ServiceBusMessageBatch(
            max_size_in_bytes=1024 * 1024, amqp_transport=PyamqpTransport
        )
        for i in range(start, min(count, start + batch_size)):
            batch.add_message(message(i))
        envelope = batch._message  # the pyamqp message the sender transfers
        payload = bytearray()
        encode_payload(payload, BatchMessage(*envelope))
        for encoded in envelope[5]:
            received = ServiceBusReceivedMessage(
                decode_payload(memoryview(encoded)),
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                receiver=None,
            )
            latencies.append(_latency_ms(received))
    return Result(count, time.perf_counter() - started, latencies)


# -- the round trip through the broker ------------------------------------------------------------
def _latency_ms(m: ServiceBusReceivedMessage) -> float:
    sent = (m.application_properties or {})[SENT_AT.encode()]
    if not isinstance(sent, float):
        raise TypeError(f"{SENT_AT} is {sent!r}, not the float that was sent")
    return (time.time() - sent) * 1000


async def _send(sender: ServiceBusSender, first: int, count: int, batch_size: int) -> None:
    for start in range(first, first + count, batch_size):
        batch = await sender.create_message_batch()
        for i in range(start, min(first + count, start + batch_size)):
            batch.add_message(message(i))
        await sender.send_messages(batch)


async def _receive(
    receiver: ServiceBusReceiver, count: int, prefetch: int, complete: bool
) -> list[float]:
    latencies: list[float] = []
    seen: set[str] = set()
    while len(latencies) < count:
        batch = await receiver.receive_messages(max_message_count=prefetch, max_wait_time=10)
        if not batch:
            raise RuntimeError(f"received {len(latencies)} of {count}, then nothing for 10 s")
        for m in batch:
            latencies.append(_latency_ms(m))
            seen.add(m.message_id or "")
            if complete:
                await receiver.complete_message(m)
    if len(seen) != count:
        raise RuntimeError(f"{count} deliveries but {len(seen)} distinct messages")
    return latencies


async def round_trip(
    connection_string: str, queue: str, count: int, batch_size: int, prefetch: int
) -> Result:
    mode = (
        ServiceBusReceiveMode.PEEK_LOCK
        if queue == PEEK_LOCK_QUEUE
        else ServiceBusReceiveMode.RECEIVE_AND_DELETE
    )
    complete = mode == ServiceBusReceiveMode.PEEK_LOCK
    async with (
        ServiceBusClient.from_connection_string(connection_string) as client,
        client.get_queue_sender(queue) as sender,
        client.get_queue_receiver(queue, receive_mode=mode, prefetch_count=prefetch) as receiver,
    ):
        # Warm up: connections, links and the management link are open before the clock starts.
        await _send(sender, -batch_size, batch_size, batch_size)
        await _receive(receiver, batch_size, prefetch, complete)
        started = time.perf_counter()
        receiving = asyncio.create_task(_receive(receiver, count, prefetch, complete))
        await _send(sender, 0, count, batch_size)
        latencies = await receiving
        return Result(count, time.perf_counter() - started, latencies)


def _line(label: str, r: Result) -> str:
    return (
        f"{label:<44} {r.per_second:9.0f} msgs/s   "
        f"p50 {r.percentile(50):7.1f} ms   p99 {r.percentile(99):7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=200)
    args = parser.parse_args()
    if min(args.messages, args.batch, args.prefetch) < 1:
        parser.error("--messages, --batch and --prefetch must be at least 1")

    baseline = sdk_alone(args.messages, args.batch)
    with tempfile.TemporaryDirectory(prefix="bench-servicebus-") as tmp:
        broker = BrokerProcess(
            Path(tmp) / "data",
            config=write_config(Path(tmp) / "config.json"),
            log_path=Path(tmp) / "broker.log",
        )
        broker.start()
        try:
            peek_lock = asyncio.run(
                round_trip(
                    broker.connection_string,
                    PEEK_LOCK_QUEUE,
                    args.messages,
                    args.batch,
                    args.prefetch,
                )
            )
            receive_and_delete = asyncio.run(
                round_trip(
                    broker.connection_string,
                    RECEIVE_AND_DELETE_QUEUE,
                    args.messages,
                    args.batch,
                    args.prefetch,
                )
            )
        finally:
            broker.stop()

    print(f"messages: {args.messages}, batch: {args.batch}, prefetch: {args.prefetch}")
    print(f"{'SDK alone (build, batch, encode, decode)':<44} {baseline.per_second:9.0f} msgs/s")
    print(_line("round trip, PEEK_LOCK + complete", peek_lock))
    print(_line("round trip, RECEIVE_AND_DELETE", receive_and_delete))
    print(
        "round trip (peek-lock) / SDK alone ratio:     "
        f"{peek_lock.per_second / baseline.per_second:9.3f}"
    )
    print(
        "peek-lock / receive-and-delete ratio:         "
        f"{peek_lock.per_second / receive_and_delete.per_second:9.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
