"""Per-tenant usage metering: one JSON line per model call, in `usage/<tenant>/<yyyy-mm-dd>.jsonl`.

Lines are appended to append blobs (one append per line, so concurrent writers never interleave
within a line). An append blob holds 50,000 appends; a tenant that makes more calls in a day
continues in `<yyyy-mm-dd>.1.jsonl`, `.2.jsonl`, ... (readers take every `<day>*.jsonl`).
Each line carries the request id, so a reader can tell a redelivered call from a new one.
"""

from __future__ import annotations

from shared.contracts import UsageRecord
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.storage.json_lines import JsonLinesLog, part_name


def usage_blob_name(tenant_id: str, day: str, part: int = 0) -> str:
    return part_name(tenant_path(tenant_id, day), part)


class UsageMeter:
    def __init__(self, store: BlobStore, container: str = names.USAGE_CONTAINER) -> None:
        self._log = JsonLinesLog(store, container)

    async def record(self, usage: UsageRecord) -> str:
        """Append one line; returns the blob it went to."""
        day = usage.at.date().isoformat()
        line = usage.model_dump_json().encode("utf-8")
        appended = await self._log.append(tenant_path(usage.tenant_id, day), line)
        return appended.blob
