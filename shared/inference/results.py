"""Results by request id: `results/<tenant_id>/<request_id>.json`, written once.

The blob is the idempotency record: a redelivered request whose result exists is answered from
it, without a model call. It is created with If-None-Match: *, so of two instances racing on one
request only the first write lands. Its metadata says whether the reply was sent, so a crash
between writing the result and sending the reply is repaired by the redelivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.contracts import InferenceResult
from shared.storage import names
from shared.storage.blob_store import BlobStore

REPLY_SENT_AT = "reply_sent_at"
REPLY_NOTE = "reply_note"


def result_blob_name(tenant_id: str, request_id: str) -> str:
    return f"{tenant_id}/{request_id}.json"


@dataclass(frozen=True, slots=True)
class StoredResult:
    body: bytes
    reply_sent: bool


class ResultStore:
    def __init__(self, store: BlobStore, container: str = names.RESULTS_CONTAINER) -> None:
        self._store = store
        self._container = container

    async def get(self, tenant_id: str, request_id: str) -> StoredResult | None:
        blob = await self._store.read(self._container, result_blob_name(tenant_id, request_id))
        if blob is None:
            return None
        return StoredResult(body=blob.data, reply_sent=REPLY_SENT_AT in blob.metadata)

    async def save(self, result: InferenceResult) -> StoredResult:
        """Write the result unless one exists; returns the one that is stored now (ours, or the
        one another instance wrote first)."""
        body = result.model_dump_json().encode("utf-8")
        name = result_blob_name(result.tenant_id, result.request_id)
        if await self._store.create(self._container, name, body):
            return StoredResult(body=body, reply_sent=False)
        existing = await self.get(result.tenant_id, result.request_id)
        if existing is None:  # written and deleted in between: not a case worth a loop
            raise RuntimeError(f"result {name} vanished while being written")
        return existing

    async def mark_reply_sent(
        self, tenant_id: str, request_id: str, at: datetime, *, note: str | None = None
    ) -> None:
        """Record that the reply is done with: sent, or (`note`) found undeliverable for good."""
        name = result_blob_name(tenant_id, request_id)
        metadata = {REPLY_SENT_AT: at.isoformat()}
        if note is not None:
            metadata[REPLY_NOTE] = note
        await self._store.set_metadata(self._container, name, metadata)
