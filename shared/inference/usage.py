"""Per-tenant usage metering: one JSON line per model call, in `usage/<tenant>/<yyyy-mm-dd>.jsonl`.

Lines are appended to append blobs (one append per line, so concurrent writers never interleave
within a line). An append blob holds 50,000 appends; a tenant that makes more calls in a day
continues in `<yyyy-mm-dd>.1.jsonl`, `.2.jsonl`, ... (readers take every `<day>*.jsonl`).
Each line carries the request id, so a reader can tell a redelivered call from a new one.
"""

from __future__ import annotations

from shared.contracts import UsageRecord
from shared.storage import names
from shared.storage.blob_store import AppendLimitReached, BlobStore

_MAX_PARTS = 1000


def usage_blob_name(tenant_id: str, day: str, part: int = 0) -> str:
    suffix = f".{part}" if part else ""
    return f"{tenant_id}/{day}{suffix}.jsonl"


class UsageMeter:
    def __init__(self, store: BlobStore, container: str = names.USAGE_CONTAINER) -> None:
        self._store = store
        self._container = container
        # The part each (tenant, day) is known to have reached, so full blobs are skipped.
        self._parts: dict[tuple[str, str], int] = {}

    async def record(self, usage: UsageRecord) -> str:
        """Append one line; returns the blob it went to."""
        day = usage.at.date().isoformat()
        line = usage.model_dump_json().encode("utf-8") + b"\n"
        key = (usage.tenant_id, day)
        part = self._parts.get(key, 0)
        while part < _MAX_PARTS:
            name = usage_blob_name(usage.tenant_id, day, part)
            try:
                await self._store.append(self._container, name, line)
            except AppendLimitReached:
                part += 1
                self._parts[key] = part
                continue
            return name
        raise RuntimeError(f"usage of {usage.tenant_id} on {day} exceeds {_MAX_PARTS} blobs")
