"""Rejection records: `rejected/<tenant or _unknown>/<message_id>.json`, one per bad message.

A message is filed under its tenant only when the registry knows that tenant; anything else goes
under `_unknown`, so a message cannot create or write into a prefix of a tenant by naming it.
Message ids come from the sender; one that is not safe as a blob name is replaced by its hash
(`shared.security.paths.safe_or_hashed`; the names come from `owner_path`).
"""

from __future__ import annotations

from shared.contracts import RejectionRecord
from shared.security.paths import owner_path, safe_or_hashed
from shared.storage import names
from shared.storage.blob_store import BlobStore


def safe_message_id(message_id: str) -> str:
    return safe_or_hashed(message_id)


def rejection_blob_name(known_tenant_id: str | None, message_id: str, kind: str = "") -> str:
    """`<tenant>/<message id>.json`; other contracts than inference.request file theirs under
    `<tenant>/<kind>/` (feedback rejections under `<tenant>/feedback/`)."""
    folders = (kind,) if kind else ()
    owner = known_tenant_id or None
    return owner_path(owner, *folders, safe_message_id(message_id), suffix=".json")


class RejectionLog:
    def __init__(self, store: BlobStore, container: str = names.REJECTED_CONTAINER) -> None:
        self._store = store
        self._container = container

    async def write(
        self, record: RejectionRecord, *, known_tenant_id: str | None, kind: str = ""
    ) -> str:
        """Store the record (a redelivery rewrites the same blob); returns its name."""
        name = rejection_blob_name(known_tenant_id, record.message_id, kind)
        await self._store.put(self._container, name, record.model_dump_json().encode("utf-8"))
        return name
