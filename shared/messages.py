"""A message as a handler sees it: the bytes and broker properties, free of any SDK or host type.

`function_app.py` builds one from `azure.functions.ServiceBusMessage`; the local host and the tests
build one directly. Handlers never see the trigger's own types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class InboundMessage:
    body: bytes
    message_id: str
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    delivery_count: int | None = None
    enqueued_time: datetime | None = None

    def property_text(self, name: str) -> str | None:
        """An application property as text (the broker may hand over str, bytes or numbers)."""
        value = self.application_properties.get(name)
        if value is None:
            return None
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return str(value)
