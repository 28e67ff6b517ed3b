"""AMQP message bytes in and out: batch envelopes, and the broker's annotations on delivery.

Messages are stored as the bytes the sender encoded, so every field the SDK exposes round-trips
untouched; only the header's delivery count and the broker-owned annotations are rewritten when a
message is handed out. The body sections are never decoded: the broker has no use for them, and
proton cannot turn every AMQP value into Python (a map keyed by binary gives unhashable
memoryview keys), while Service Bus carries any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proton import Data, Described, Message, symbol, timestamp, ulong

_HEADER_SECTION = 0x70
_DATA_SECTION = 0x75
_APP_PROPERTIES_SECTION = 0x74
_PROPERTIES_SECTION = 0x73
_ANNOTATIONS_SECTION = 0x72
_SECTION_CODES = range(0x70, 0x79)
# data, amqp-sequence, amqp-value, footer: what follows the properties, which the broker only copies
_BODY_SECTIONS = frozenset({0x75, 0x76, 0x77, 0x78})

_HEADER_PREFIX = b"\x00\x53\x70"

SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
ENQUEUED_TIME = symbol("x-opt-enqueued-time")
LOCKED_UNTIL = symbol("x-opt-locked-until")
SCHEDULED_TIME = symbol("x-opt-scheduled-enqueue-time")
MESSAGE_STATE = symbol("x-opt-message-state")
DEAD_LETTER_SOURCE = symbol("x-opt-deadletter-source")
DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"


def _sections(raw: bytes) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while offset < len(raw):
        data = Data()
        used = data.decode(raw[offset:])
        if used <= 0:
            raise ValueError("truncated AMQP message")
        section = data.get_object()
        if isinstance(section, Described) and isinstance(section.value, memoryview):
            # proton's views point into the Data buffer; copy before it goes away.
            section = Described(section.descriptor, bytes(section.value))
        out.append(section)
        offset += used
    return out


def _looks_like_message(payload: bytes) -> bool:
    return (
        len(payload) >= 3
        and payload[0] == 0
        and payload[1] == 0x53
        and (payload[2] in _SECTION_CODES)
    )


def split_batch(raw: bytes) -> list[bytes]:
    """The messages inside a Service Bus batch envelope, or `[raw]` for a single message.

    The SDK marks a batch by the transfer's message-format (0x80013700), which proton does not
    expose; a batch is recognised instead by its shape: data sections that each hold an encoded
    message, and no application properties of its own.
    """
    try:
        sections = _sections(raw)
    except (ValueError, TypeError):
        return [raw]
    inner: list[bytes] = []
    envelope_id: object = None
    for section in sections:
        if not isinstance(section, Described):
            return [raw]
        code = int(section.descriptor)
        if code == _APP_PROPERTIES_SECTION:
            return [raw]
        if code == _PROPERTIES_SECTION:
            envelope_id = section.value[0] if section.value else None
        if code == _DATA_SECTION:
            payload = bytes(section.value)
            if not _looks_like_message(payload):
                return [raw]
            inner.append(payload)
    if not inner:
        return [raw]
    # The SDK stamps its envelope with the first message's id (older SDKs send no properties);
    # a single message's id is its own, never that of bytes it carries as a body.
    if envelope_id is not None:
        try:
            first_id = _decoded(inner[0]).id
        except Exception:
            return [raw]
        if first_id is None or str(first_id) != str(envelope_id):
            return [raw]
    return inner


@dataclass(frozen=True, slots=True)
class SentFields:
    """What the broker needs from a message the client sent."""

    message_id: str | None
    session_id: str | None
    ttl_ms: int | None
    scheduled_ms: int | None


def read_sent_fields(raw: bytes) -> SentFields:
    message = _decoded(raw)
    annotations = message.annotations or {}
    scheduled = annotations.get(SCHEDULED_TIME)
    message_id = message.id
    return SentFields(
        message_id=None if message_id is None else str(message_id),
        session_id=message.group_id or None,
        ttl_ms=round(message.ttl * 1000) if message.ttl else None,
        scheduled_ms=int(scheduled) if scheduled else None,
    )


@dataclass(frozen=True, slots=True)
class BrokerStamp:
    """The broker-owned facts stamped on a message as it leaves."""

    sequence_number: int
    enqueued_ms: int
    delivery_count: int
    state: int
    locked_until_ms: int | None = None
    dead_letter_source: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None


def _decoded(raw: bytes) -> Message:
    """The message's header, annotations and properties; its body is left out (see above)."""
    message = Message()
    message.decode(
        b"".join(part for code, part in _section_bytes(raw) if code not in _BODY_SECTIONS)
    )
    return message


def stamp(raw: bytes, facts: BrokerStamp) -> bytes:
    message = _decoded(raw)
    message.delivery_count = facts.delivery_count
    annotations = dict(message.annotations or {})
    annotations[SEQUENCE_NUMBER] = facts.sequence_number
    annotations[ENQUEUED_TIME] = timestamp(facts.enqueued_ms)
    annotations[MESSAGE_STATE] = facts.state
    if facts.locked_until_ms is not None:
        annotations[LOCKED_UNTIL] = timestamp(facts.locked_until_ms)
    if facts.dead_letter_source is not None:
        annotations[DEAD_LETTER_SOURCE] = facts.dead_letter_source
        props = dict(message.properties or {})
        if facts.dead_letter_reason is not None:
            props[DEAD_LETTER_REASON] = facts.dead_letter_reason
        if facts.dead_letter_description is not None:
            props[DEAD_LETTER_DESCRIPTION] = facts.dead_letter_description
        message.properties = props
    out = bytearray(_full_header(message))
    rewritten = {_ANNOTATIONS_SECTION: annotations}
    if facts.dead_letter_source is not None:
        rewritten[_APP_PROPERTIES_SECTION] = message.properties
    for code, section in _section_bytes(raw):
        if code == _HEADER_SECTION or code in rewritten:
            continue
        if code > _ANNOTATIONS_SECTION and _ANNOTATIONS_SECTION in rewritten:
            out += _encode_section(_ANNOTATIONS_SECTION, rewritten.pop(_ANNOTATIONS_SECTION))
        if code > _APP_PROPERTIES_SECTION and _APP_PROPERTIES_SECTION in rewritten:
            out += _encode_section(_APP_PROPERTIES_SECTION, rewritten.pop(_APP_PROPERTIES_SECTION))
        out += section
    for code, value in rewritten.items():
        out += _encode_section(code, value)
    return bytes(out)


def _section_bytes(raw: bytes) -> list[tuple[int, bytes]]:
    """Each section's descriptor code and encoded bytes, without converting its value."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        data = Data()
        used = data.decode(raw[offset:])
        if used <= 0:
            raise ValueError("truncated AMQP message")
        out.append((_descriptor_code(data), raw[offset : offset + used]))
        offset += used
    return out


def _descriptor_code(data: Data) -> int:
    """The numeric descriptor of the described value `data` holds (-1 when it has none)."""
    data.rewind()
    if data.next() != Data.DESCRIBED:
        return -1
    data.enter()
    data.next()
    descriptor = data.get_object()
    data.exit()
    return int(descriptor) if isinstance(descriptor, int) else -1


def _encode_section(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def _full_header(message: Message) -> bytes:
    """The header with all five fields written out.

    proton drops trailing default fields (even the whole header), and the SDK then reports
    `delivery_count` as None; Service Bus always sends it.
    """
    ttl_ms = round(message.ttl * 1000) if message.ttl else None
    fields = (
        (b"\x41" if message.durable else b"\x42")
        + b"\x50"
        + bytes([message.priority & 0xFF])
        + (b"\x40" if ttl_ms is None else b"\x70" + ttl_ms.to_bytes(4, "big"))
        + (b"\x41" if message.first_acquirer else b"\x42")
        + b"\x70"
        + int(message.delivery_count).to_bytes(4, "big")
    )
    body = b"\x05" + fields
    return _HEADER_PREFIX + b"\xc0" + bytes([len(body)]) + body
