"""Service Bus queue triggers: a PEEK_LOCK receiver per function, driven as the real host does.

- At most `maxConcurrentCalls` invocations in flight: the receiver asks only for as many
  messages as there are free slots, so no message waits (and burns its lock) behind others.
- Each message's lock is renewed while its function runs, up to `maxAutoLockRenewalDuration`.
- Success: completed (when `autoCompleteMessages`); exception or timeout: abandoned, so the
  queue redelivers it and dead-letters it after its MaxDeliveryCount.
- A receive or connection error is logged and the receiver reopened with backoff.
- Stop: no new messages; in-flight invocations get the grace period, then are cancelled and
  their messages abandoned; then the renewer and receiver are closed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessage as FunctionMessage
from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusReceiver,
    ServiceBusSession,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import ServiceBusError

from devhost.host.discovery import FunctionSpec
from devhost.host.invocation import Invoker
from devhost.host.options import ServiceBusOptions
from shared.structured_logging import key_values, without_none

log = logging.getLogger("devhost.host")

MAX_BACKOFF_S = 30.0
QUICK_EMPTIES_BEFORE_REOPEN = 5


class LinkLost(Exception):
    """The receiver's link stopped delivering without an error from the SDK."""


_MAX_JSON_DEPTH = 100
_MAX_REPR = 256 * 1024


class ServiceBusQueueListener:
    def __init__(
        self,
        spec: FunctionSpec,
        queue_name: str,
        client: ServiceBusClient,
        options: ServiceBusOptions,
        invoker: Invoker,
        *,
        receive_wait_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.queue_name = queue_name
        self._client = client
        self._options = options
        self._invoker = invoker
        self._receive_wait_s = receive_wait_s
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._renewer: AutoLockRenewer | None = None
        self._receiver: ServiceBusReceiver | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._failures = 0
        self._quick_empties = 0

    def describe(self) -> str:
        return f"{self.spec.name}: Service Bus queue {self.queue_name!r}"

    @property
    def in_flight(self) -> int:
        return len(self._handlers)

    async def start(self) -> None:
        """Open the receiver once (so a wrong queue name is reported at startup), then receive
        in the background. A failure to open is logged; the loop keeps trying."""
        self._renewer = AutoLockRenewer(
            max_lock_renewal_duration=self._options.max_auto_lock_renewal_s,
            on_lock_renew_failure=self._lock_renewal_ended,
        )
        try:
            self._receiver = await self._open()
        except Exception as exc:  # a broker not up yet is no reason to fail the host
            self._event(
                logging.WARNING,
                "servicebus.open_failed",
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
        self._loop_task = asyncio.create_task(self._run(), name=f"servicebus:{self.spec.name}")

    async def stop(self, grace_s: float) -> None:
        self._stopping.set()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), self._receive_wait_s + 5)
            except TimeoutError:
                self._loop_task.cancel()
                await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=grace_s)
            if pending:
                self._event(logging.WARNING, "servicebus.grace_expired", cancelled=len(pending))
                for task in pending:
                    task.cancel()  # the invocation ends CANCELLED; its message is abandoned
                await asyncio.wait(pending, timeout=10)
        # Settled messages leave the renewer within its 1 s tick; the receiver closes meanwhile.
        await asyncio.gather(
            self._renewer.close() if self._renewer is not None else asyncio.sleep(0),
            self._close_receiver(),
        )

    async def _lock_renewal_ended(
        self, renewable: ServiceBusReceivedMessage | ServiceBusSession, error: Exception | None
    ) -> None:
        """A lock could not be renewed while its message was being handled: the message will be
        redelivered, and settling it after the function returns will fail."""
        self._event(
            logging.WARNING,
            "servicebus.lock_renewal_ended",
            message_id=getattr(renewable, "message_id", None),
            error_type=type(error).__name__ if error is not None else None,
            max_auto_lock_renewal_s=self._options.max_auto_lock_renewal_s,
        )

    async def _open(self) -> ServiceBusReceiver:
        receiver = self._client.get_queue_receiver(
            self.queue_name,
            receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
            prefetch_count=self._options.prefetch_count,
        )
        try:
            await receiver.__aenter__()
        except BaseException:
            await receiver.close()
            raise
        return receiver

    async def _close_receiver(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            try:
                await receiver.close()
            except ServiceBusError as exc:
                self._event(logging.DEBUG, "servicebus.close_failed", error_type=type(exc).__name__)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._receiver is None:
                    self._receiver = await self._open()
                    self._event(logging.INFO, "servicebus.receiver_opened")
                await self._receive(self._receiver)
            except Exception as exc:  # whatever the SDK raises, the host stays up
                self._failures += 1
                backoff = min(2.0 ** (self._failures - 1), MAX_BACKOFF_S)
                self._event(
                    logging.WARNING,
                    "servicebus.receive_failed",
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                    failures=self._failures,
                    retry_in_s=backoff,
                )
                # A fresh receiver: the SDK's does not reliably reopen its link after the
                # connection dropped. Messages still held on the old one cannot be settled; they
                # come back when their locks expire, as with a crashed instance.
                await self._close_receiver()
                await _wait_any((self._stopping,), limit_s=backoff)

    async def _receive(self, receiver: ServiceBusReceiver) -> None:
        while not self._stopping.is_set():
            free = self._options.max_concurrent_calls - len(self._handlers)
            if free <= 0:
                self._slot_freed.clear()
                await _wait_any((self._slot_freed, self._stopping))
                continue
            asked_at = time.monotonic()
            batch = await receiver.receive_messages(
                max_message_count=free, max_wait_time=self._receive_wait_s
            )
            self._check_link(batch, time.monotonic() - asked_at)
            self._failures = 0
            for message in batch:
                if self._stopping.is_set():
                    await self._settle(receiver.abandon_message, message, "abandon")
                    continue
                if self._renewer is not None and self._options.max_auto_lock_renewal_s > 0:
                    self._renewer.register(receiver, message)
                task = asyncio.create_task(self._handle(receiver, message))
                self._handlers.add(task)
                task.add_done_callback(self._handler_done)

    def _check_link(self, batch: list[ServiceBusReceivedMessage], took_s: float) -> None:
        """A receive that comes back empty at once, again and again, is a link the SDK lost
        without saying so (e.g. its decoder refused a message: an AMQP value nested deeper than
        it accepts); raise so `_run` opens a fresh receiver. The message it could not take comes
        back when its lock expires and is dead-lettered by MaxDeliveryCount, while the messages
        behind it flow again."""
        if batch or took_s >= self._receive_wait_s / 10:
            self._quick_empties = 0
            return
        self._quick_empties += 1
        if self._quick_empties >= QUICK_EMPTIES_BEFORE_REOPEN:
            self._quick_empties = 0
            raise LinkLost(f"{QUICK_EMPTIES_BEFORE_REOPEN} empty receives in a row, each at once")

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # A bug of the host, not of the function (that is an outcome): the lock expires
            # and the message is redelivered.
            self._event(
                logging.ERROR,
                "servicebus.handler_crashed",
                exc_info=error,
                error_type=type(error).__name__,
            )

    async def _handle(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage
    ) -> None:
        fields = without_none(message_id=message.message_id, delivery_count=delivery_count(message))
        try:
            argument = to_function_message(message)
        except Exception as exc:  # a message the host cannot convert
            self._event(
                logging.ERROR, "servicebus.convert_failed", error_type=type(exc).__name__, **fields
            )
            await self._settle(receiver.abandon_message, message, "abandon")
            return
        invocation = await self._invoker.invoke(
            self.spec, argument, {**fields, "queue": self.queue_name}
        )
        if invocation.succeeded:
            if self._options.auto_complete_messages:
                await self._settle(receiver.complete_message, message, "complete")
        else:
            await self._settle(receiver.abandon_message, message, "abandon")

    async def _settle(
        self,
        action: Callable[[ServiceBusReceivedMessage], Awaitable[None]],
        message: ServiceBusReceivedMessage,
        what: str,
    ) -> None:
        try:
            await action(message)
        except (ServiceBusError, ValueError) as exc:
            # Lock lost, link closed: the broker redelivers it when its lock expires.
            self._event(
                logging.WARNING,
                f"servicebus.{what}_failed",
                message_id=message.message_id,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )

    def _event(
        self, level: int, event: str, *, exc_info: BaseException | None = None, **fields: Any
    ) -> None:
        extra = without_none(event=event, function=self.spec.name, queue=self.queue_name, **fields)
        log.log(level, key_values(extra), extra=extra, exc_info=exc_info)


async def _wait_any(events: tuple[asyncio.Event, ...], limit_s: float | None = None) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def to_function_message(message: ServiceBusReceivedMessage) -> FunctionMessage:
    """The `func.ServiceBusMessage` the Python worker builds from the host's trigger data."""
    properties = decode_properties(message.application_properties)
    lock_token = None if message.lock_token is None else str(message.lock_token)
    state = message.state
    return FunctionMessage(
        body=body_bytes(message),
        trigger_metadata=_metadata(message, properties, lock_token),
        application_properties=properties,
        user_properties=dict(properties),
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        dead_letter_error_description=message.dead_letter_error_description,
        dead_letter_reason=message.dead_letter_reason,
        dead_letter_source=message.dead_letter_source,
        delivery_count=delivery_count(message),
        enqueued_sequence_number=message.enqueued_sequence_number,
        enqueued_time_utc=message.enqueued_time_utc,
        expires_at_utc=message.expires_at_utc,
        label=message.subject,
        locked_until=message.locked_until_utc,
        lock_token=lock_token,
        message_id=message.message_id or "",
        partition_key=message.partition_key,
        reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id,
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time_utc,
        sequence_number=message.sequence_number,
        session_id=message.session_id,
        state=None if state is None else int(state),
        subject=message.subject,
        time_to_live=message.time_to_live,
        to=message.to,
    )


def delivery_count(message: ServiceBusReceivedMessage) -> int | None:
    """1 on the first delivery, as the Functions host (the .NET SDK) reports it. Service Bus puts
    the count of earlier deliveries in the AMQP header, which the Python SDK passes on as is."""
    raw = message.delivery_count
    return None if raw is None else raw + 1


def body_bytes(message: ServiceBusReceivedMessage) -> bytes:
    """The body as the Functions host hands it to a Python function, for every body section the
    SDK can send; never raises, so no message is dead-lettered for its body's shape alone.

    - data sections: their bytes, joined;
    - an AMQP value that is binary or a string (the SDK gives both as bytes): those bytes;
    - any other value (null, bool, numbers, uuid, timestamp, list, map, ...) and amqp-sequence
      sections: JSON text, as the host's JSON conversion of the value (non-.NET senders, e.g.
      JMS/Qpid, put their payload there: Azure/azure-sdk-for-net#6912). Map keys become strings;
      binary (and AMQP strings and symbols, which the SDK decodes to bytes) becomes text when it is
      UTF-8, else base64 as .NET writes a byte[]; one sequence section is its list, several a list
      of lists; a non-finite number becomes its name as a string;
    - anything that still cannot be written: the value's repr, so the function can reject it
      (`invalid_json`) and log why.
    """
    try:
        body = message.body
        if message.body_type == AmqpMessageBodyType.DATA:
            if isinstance(body, bytes | bytearray | memoryview):
                return bytes(body)
            return b"".join(bytes(part) for part in body)
        if isinstance(body, bytes | bytearray | memoryview):
            return bytes(body)
        if isinstance(body, str):
            return body.encode("utf-8", "surrogatepass")
        if message.body_type == AmqpMessageBodyType.SEQUENCE:
            sections = [json_value(section) for section in body]
            body = sections[0] if len(sections) == 1 else sections
        return json.dumps(json_value(body), allow_nan=False).encode("utf-8")
    except Exception:  # whatever the value, the function gets bytes
        return _repr_bytes(message)


def json_value(value: Any, depth: int = 0) -> Any:
    """An AMQP value decoded by the SDK as plain JSON data (str keys, no bytes, finite numbers)."""
    if depth > _MAX_JSON_DEPTH:
        raise ValueError("the value is nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _binary_text(bytes(value))
    if isinstance(value, Mapping):
        return {_json_key(k): json_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, Iterable):
        return [json_value(item, depth + 1) for item in value]
    return str(value)


def _json_key(key: Any) -> str:
    if isinstance(key, bytes | bytearray | memoryview):
        return _binary_text(bytes(key))
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    return str(key)


def _binary_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


def _repr_bytes(message: ServiceBusReceivedMessage) -> bytes:
    try:
        return repr(message.body)[:_MAX_REPR].encode("utf-8", "backslashreplace")
    except Exception:  # a repr that fails too: an empty body, still no dead letter
        return b""


def decode_properties(raw: Mapping[Any, Any] | None) -> dict[str, Any]:
    """Application properties with str keys and str (not bytes) text values, as the host gives
    them to the worker."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        name = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            with suppress(UnicodeDecodeError):  # binary that is not text stays bytes
                value = value.decode("utf-8")  # noqa: PLW2901
        out[name] = value
    return out


def _metadata(
    message: ServiceBusReceivedMessage, properties: dict[str, Any], lock_token: str | None
) -> dict[str, meta.Datum]:
    def text(value: Any) -> meta.Datum:
        return meta.Datum(None if value is None else str(value), "string")

    def number(value: int | None) -> meta.Datum:
        return meta.Datum(value, "int")

    def when(value: Any) -> meta.Datum:
        return meta.Datum(None if value is None else value.isoformat(), "string")

    ttl = message.time_to_live
    return {
        "MessageId": text(message.message_id),
        "DeliveryCount": number(delivery_count(message)),
        "SequenceNumber": number(message.sequence_number),
        "EnqueuedTimeUtc": when(message.enqueued_time_utc),
        "ExpiresAtUtc": when(message.expires_at_utc),
        "LockedUntil": when(message.locked_until_utc),
        "LockToken": text(lock_token),
        "ContentType": text(message.content_type),
        "CorrelationId": text(message.correlation_id),
        "Subject": text(message.subject),
        "Label": text(message.subject),
        "ReplyTo": text(message.reply_to),
        "ReplyToSessionId": text(message.reply_to_session_id),
        "SessionId": text(message.session_id),
        "To": text(message.to),
        "TimeToLive": text(None if ttl is None else _timespan(ttl)),
        "ApplicationProperties": meta.Datum(json.dumps(properties, default=_jsonable), "json"),
        "UserProperties": meta.Datum(json.dumps(properties, default=_jsonable), "json"),
    }


def _timespan(value: timedelta) -> str:
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    prefix = f"{days}." if days else ""
    return f"{prefix}{hours:02d}:{minutes:02d}:{seconds:02d}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
