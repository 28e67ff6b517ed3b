"""The Service Bus management API's ATOM documents: a queue's description in, entries and feeds out.

Shapes, as Service Bus writes them (and `azure.servicebus.management` reads them):

    PUT /<queue>            <entry><content type="application/xml"><QueueDescription>
                              <LockDuration>PT1M</LockDuration><MaxDeliveryCount>10</...> ...
    201 / 200               <entry><id/><title>queue</title><published/><updated/><content>
                              <QueueDescription> every property, CountDetails (runtime counts)
    GET /<missing queue>    200 with an empty <feed> (that is how Service Bus says "not found")
    GET /$Resources/queues  <feed> of entries, `$skip` / `$top` paging with a rel="next" link
    errors                  <Error><Code>409</Code><Detail>...</Detail></Error>

Only queue properties the broker implements are read from a request (`config.QueueProperties`);
the rest of a description (partitioning, express, size limits) is answered with Service Bus's
defaults. `ParseError` says what is wrong with a request body.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devhost.servicebus.config import QueueProperties, parse_duration_ms

ATOM = "http://www.w3.org/2005/Atom"
SB = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
# TimeSpan.MaxValue: what Service Bus answers for "never" (auto delete on idle).
NEVER = "P10675199DT2H48M5.4775807S"


# QueueDescription element -> (QueueProperties alias, kind)
_READ: dict[str, tuple[str, str]] = {
    "LockDuration": ("LockDuration", "duration"),
    "MaxDeliveryCount": ("MaxDeliveryCount", "int"),
    "DefaultMessageTimeToLive": ("DefaultMessageTimeToLive", "duration"),
    "DeadLetteringOnMessageExpiration": ("DeadLetteringOnMessageExpiration", "bool"),
    "RequiresDuplicateDetection": ("RequiresDuplicateDetection", "bool"),
    "DuplicateDetectionHistoryTimeWindow": ("DuplicateDetectionHistoryTimeWindow", "duration"),
    "RequiresSession": ("RequiresSession", "bool"),
}


class ParseError(ValueError):
    """The request body is not a queue description the broker can use."""


@dataclass(frozen=True)
class QueueView:
    """What the management API tells about one queue."""

    name: str
    properties: QueueProperties
    counts: dict[str, int]
    size_bytes: int
    created_ms: int
    updated_ms: int


def parse_queue_description(body: bytes) -> dict[str, Any]:
    """The properties a create or update request sets, keyed as `QueueProperties` aliases."""
    try:
        root = ET.fromstring(body) if body.strip() else ET.Element(f"{{{ATOM}}}entry")
    except ET.ParseError as exc:
        raise ParseError(f"the body is not XML: {exc}") from None
    description = root.find(f"{{{ATOM}}}content/{{{SB}}}QueueDescription")
    if description is None and root.tag == f"{{{SB}}}QueueDescription":
        description = root
    found: dict[str, Any] = {}
    for child in [] if description is None else list(description):
        local = child.tag.rpartition("}")[2]
        if local not in _READ or child.text is None:
            continue
        alias, kind = _READ[local]
        text = child.text.strip()
        try:
            if kind == "duration":
                found[alias] = parse_duration_ms(text)
            elif kind == "int":
                found[alias] = int(text)
            else:
                found[alias] = text.lower() == "true"
        except ValueError as exc:
            raise ParseError(f"{local}: {exc}") from None
    return found


def format_duration(ms: int) -> str:
    """Milliseconds as the ISO 8601 duration Service Bus writes (`PT1M`, `P14D`, `PT1.5S`)."""
    days, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = rest / 1000
    text = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds:
        clock += f"{seconds:g}S"
    if clock:
        text += "T" + clock
    return text if text != "P" else "PT0S"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _description(view: QueueView) -> ET.Element:
    p = view.properties
    d = ET.Element(f"{{{SB}}}QueueDescription")
    values: list[tuple[str, str]] = [
        ("LockDuration", format_duration(p.lock_duration_ms)),
        ("MaxSizeInMegabytes", "1024"),
        ("RequiresDuplicateDetection", str(p.requires_duplicate_detection).lower()),
        ("RequiresSession", str(p.requires_session).lower()),
        ("DefaultMessageTimeToLive", format_duration(p.default_ttl_ms)),
        ("DeadLetteringOnMessageExpiration", str(p.dead_letter_on_expiry).lower()),
        ("DuplicateDetectionHistoryTimeWindow", format_duration(p.duplicate_window_ms)),
        ("MaxDeliveryCount", str(p.max_delivery_count)),
        ("EnableBatchedOperations", "true"),
        ("SizeInBytes", str(view.size_bytes)),
        ("MessageCount", str(sum(v for k, v in view.counts.items() if k != "locked"))),
        ("IsAnonymousAccessible", "false"),
    ]
    for tag, text in values:
        _sub(d, f"{{{SB}}}{tag}", text)
    _sub(d, f"{{{SB}}}AuthorizationRules")
    for tag, text in (
        ("Status", "Active"),
        ("CreatedAt", _time(view.created_ms)),
        ("UpdatedAt", _time(view.updated_ms)),
        ("AccessedAt", _time(view.updated_ms)),
        ("SupportOrdering", "true"),
    ):
        _sub(d, f"{{{SB}}}{tag}", text)
    counts = _sub(d, f"{{{SB}}}CountDetails")
    for tag, key in (
        ("ActiveMessageCount", "active"),
        ("DeadLetterMessageCount", "dead_letter"),
        ("ScheduledMessageCount", "scheduled"),
        ("TransferMessageCount", ""),
        ("TransferDeadLetterMessageCount", ""),
    ):
        _sub(counts, f"{{{COUNTS}}}{tag}", str(view.counts.get(key, 0)))
    for tag, text in (
        ("AutoDeleteOnIdle", NEVER),
        ("EnablePartitioning", "false"),
        ("EntityAvailabilityStatus", "Available"),
        ("EnableExpress", "false"),
    ):
        _sub(d, f"{{{SB}}}{tag}", text)
    return d


def _entry(view: QueueView, base_url: str, namespace: str) -> ET.Element:
    entry = ET.Element(f"{{{ATOM}}}entry")
    _sub(entry, f"{{{ATOM}}}id", f"{base_url}/{view.name}")
    _sub(entry, f"{{{ATOM}}}title", view.name, type="text")
    _sub(entry, f"{{{ATOM}}}published", _time(view.created_ms))
    _sub(entry, f"{{{ATOM}}}updated", _time(view.updated_ms))
    author = _sub(entry, f"{{{ATOM}}}author")
    _sub(author, f"{{{ATOM}}}name", namespace)
    _sub(entry, f"{{{ATOM}}}link", rel="self", href=f"{base_url}/{view.name}")
    content = _sub(entry, f"{{{ATOM}}}content", type="application/xml")
    content.append(_description(view))
    return entry


def _bytes(element: ET.Element) -> bytes:
    data: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=False)
    return data


def queue_entry(view: QueueView, base_url: str, namespace: str) -> bytes:
    return _bytes(_entry(view, base_url, namespace))


def feed(
    views: Iterable[QueueView],
    base_url: str,
    namespace: str,
    *,
    title: str = "Queues",
    next_link: str | None = None,
) -> bytes:
    """A feed of entries; with no views, what Service Bus answers for an entity it lacks."""
    root = ET.Element(f"{{{ATOM}}}feed")
    _sub(root, f"{{{ATOM}}}title", title, type="text")
    _sub(root, f"{{{ATOM}}}id", base_url)
    _sub(root, f"{{{ATOM}}}updated", _time(int(datetime.now(UTC).timestamp() * 1000)))
    _sub(root, f"{{{ATOM}}}link", rel="self", href=base_url)
    if next_link:
        _sub(root, f"{{{ATOM}}}link", rel="next", href=next_link)
    for view in views:
        root.append(_entry(view, base_url, namespace))
    return _bytes(root)


def error(code: int, detail: str) -> bytes:
    root = ET.Element("Error")
    _sub(root, "Code", str(code))
    _sub(root, "Detail", detail)
    return _bytes(root)
