"""The `$management` operations the SDK sends, answered the way Service Bus answers them.

Request and response shapes follow azure-servicebus's `_common/mgmt_handlers.py` and
`_transport/_pyamqp_transport.py`: a map body, `operation` in the application properties, and
`statusCode` / `statusDescription` / `errorCondition` on the reply.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proton import Array, Data, Message, symbol, timestamp

from devhost.servicebus.codec import BrokerStamp, read_sent_fields, stamp
from devhost.servicebus.entity import LockLost, MessageNotFound, Queue
from devhost.servicebus.store import Row

VENDOR = "com.microsoft:"
StampFn = Callable[[Queue, Row, int | None], BrokerStamp]


@dataclass
class Reply:
    status: int
    description: str
    body: Any = None
    condition: str | None = None
    queue: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.properties:
            self.properties = {"statusCode": self.status, "statusDescription": self.description}
            if self.condition:
                self.properties["errorCondition"] = symbol(self.condition)


def cbs_reply(status: int, description: str) -> Reply:
    return Reply(
        status,
        description,
        properties={"status-code": status, "status-description": description},
    )


def _ok(queue: Queue, body: Any = None, status: int = 200) -> Reply:
    return Reply(status, "OK" if status == 200 else "No Content", body=body, queue=queue.name)


def _error(status: int, condition: str, description: str) -> Reply:
    return Reply(status, description, condition=condition)


def _elements(value: Any) -> list[Any]:
    if isinstance(value, Array):
        return list(value.elements)
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"expected an array, got {type(value).__name__}")


def _tokens(body: dict[Any, Any]) -> list[uuid.UUID]:
    return [
        t if isinstance(t, uuid.UUID) else uuid.UUID(str(t)) for t in _elements(body["lock-tokens"])
    ]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def handle(
    queue: Queue, dead_letter: bool, request: Message, now_ms: int, stamp_of: StampFn
) -> Reply:
    operation = str((request.properties or {}).get("operation", ""))
    body = request.body if isinstance(request.body, dict) else {}
    handler = _OPERATIONS.get(operation)
    if handler is None:
        return _error(
            501,
            "amqp:not-implemented",
            f"The operation '{operation}' is not supported by the local broker.",
        )
    try:
        return handler(queue, dead_letter, body, now_ms, stamp_of)
    except LockLost as exc:
        return _error(410, VENDOR + "message-lock-lost", str(exc))
    except MessageNotFound as exc:
        return _error(404, VENDOR + "message-not-found", str(exc))
    except (KeyError, ValueError, TypeError) as exc:
        return _error(400, VENDOR + "argument-error", f"Bad request for {operation}: {exc!r}")


def _renew_lock(queue: Queue, _dl: bool, body: dict[Any, Any], now: int, _s: StampFn) -> Reply:
    expirations = [timestamp(queue.renew(token, now)) for token in _tokens(body)]
    return _ok(queue, {"expirations": Array(None, Data.TIMESTAMP, *expirations)})


def _peek(
    queue: Queue, dead_letter: bool, body: dict[Any, Any], _now: int, stamp_of: StampFn
) -> Reply:
    start = int(body.get("from-sequence-number", 1))
    count = int(body.get("message-count", 1))
    rows = queue.peek(start, count, dead_letter)
    if not rows:
        return _ok(queue, None, status=204)
    return _ok(
        queue, {"messages": [{"message": stamp(r.payload, stamp_of(queue, r, None))} for r in rows]}
    )


def _receive_by_sequence(
    queue: Queue, _dl: bool, body: dict[Any, Any], now: int, stamp_of: StampFn
) -> Reply:
    seqs = [int(s) for s in _elements(body["sequence-numbers"])]
    peek_lock = int(body.get("receiver-settle-mode", 1)) == 1
    if not peek_lock:
        rows = queue.take_deferred(seqs)
        return _ok(
            queue,
            {"messages": [{"message": stamp(r.payload, stamp_of(queue, r, None))} for r in rows]},
        )
    locks = queue.lock_deferred(seqs, now)
    return _ok(
        queue,
        {
            "messages": [
                {
                    "lock-token": lock.token,
                    "message": stamp(lock.row.payload, stamp_of(queue, lock.row, lock.until_ms)),
                }
                for lock in locks
            ]
        },
    )


def _schedule(queue: Queue, _dl: bool, body: dict[Any, Any], now: int, _s: StampFn) -> Reply:
    seqs: list[int] = []
    for entry in _elements(body["messages"]):
        raw = bytes(entry["message"])
        fields = read_sent_fields(raw)
        row = queue.enqueue(
            raw,
            message_id=fields.message_id,
            session_id=fields.session_id,
            ttl_ms=fields.ttl_ms,
            scheduled_ms=fields.scheduled_ms,
            now_ms=now,
        )
        seqs.append(row.seq if row is not None else 0)
    return _ok(queue, {"sequence-numbers": Array(None, Data.LONG, *seqs)})


def _cancel(queue: Queue, _dl: bool, body: dict[Any, Any], _now: int, _s: StampFn) -> Reply:
    queue.cancel_scheduled([int(s) for s in _elements(body["sequence-numbers"])])
    return _ok(queue)


def _update_disposition(
    queue: Queue, _dl: bool, body: dict[Any, Any], now: int, _s: StampFn
) -> Reply:
    status = _text(body["disposition-status"])
    tokens = _tokens(body)
    for token in tokens:
        queue.lock_for(token, now)
    for token in tokens:
        if status == "completed":
            queue.complete(token, now)
        elif status == "abandoned":
            queue.abandon(token, now)
        elif status == "defered":
            queue.defer(token, now)
        elif status == "suspended":
            queue.dead_letter(
                token,
                _text(body.get("deadletter-reason")),
                _text(body.get("deadletter-description")),
                now,
            )
        else:
            raise ValueError(f"unknown disposition-status {status!r}")
    return _ok(queue)


_OPERATIONS: dict[str, Callable[[Queue, bool, dict[Any, Any], int, StampFn], Reply]] = {
    VENDOR + "renew-lock": _renew_lock,
    VENDOR + "peek-message": _peek,
    VENDOR + "receive-by-sequence-number": _receive_by_sequence,
    VENDOR + "schedule-message": _schedule,
    VENDOR + "cancel-scheduled-message": _cancel,
    VENDOR + "update-disposition": _update_disposition,
}
