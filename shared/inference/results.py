"""Results by request id: `results/<tenant_id>/<request_id>.json`, written once.

The blob is the idempotency record: a redelivered request whose result exists is answered from
it, without a model call. It is created with If-None-Match: *, so of two instances racing on one
request only the first write lands. Its metadata says whether the reply was sent, so a crash
between writing the result and sending the reply is repaired by the redelivery.

An idempotency key is not a side door: each result keeps `request_sha256`, the digest of the
canonical request it answers (`request_digest`: messages, parameters, feature, and any field a
later version adds, never the transport properties). A request whose id has a result with another
digest is refused `request_id_reused` by the handler (`same_request`), and `save` raises
`RequestIdReused` when it loses a race to a different request with the same id, so the first
request's answer is never sent for the second. A result stored before digests were kept (none)
is taken as the same request.

Names come from `shared.security.paths.tenant_path` (UnsafeId for an id that is not safe).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from shared.contracts import InferenceRequest, InferenceResult
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore

REPLY_SENT_AT = "reply_sent_at"
REPLY_NOTE = "reply_note"


# What identifies a request besides its content: the key itself, and the contract's constants.
_NOT_CONTENT = frozenset({"type", "version", "tenant_id", "request_id"})


def result_blob_name(tenant_id: str, request_id: str) -> str:
    return tenant_path(tenant_id, request_id, suffix=".json")


def request_digest(request: InferenceRequest) -> str:
    """sha256 (hex) of the request's canonical JSON: every field but the ids and the contract's
    constants, defaults left out (so `"parameters": {}` and no parameters are one request, and a
    field added later with a default changes no digest), keys sorted, UTF-8."""
    content = request.model_dump(mode="json", exclude=set(_NOT_CONTENT), exclude_defaults=True)
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RequestIdReused(Exception):
    """A result exists for this tenant's request id, for a different request."""

    def __init__(self, tenant_id: str, request_id: str) -> None:
        super().__init__(f"{tenant_id}/{request_id}: the id answers another request")
        self.tenant_id = tenant_id
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class StoredResult:
    body: bytes
    reply_sent: bool

    @property
    def request_sha256(self) -> str | None:
        """The digest kept with the result (None: stored before digests were kept)."""
        try:
            value = json.loads(self.body).get("request_sha256")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def same_request(self, digest: str) -> bool:
        """Does this result answer a request with this digest?"""
        kept = self.request_sha256
        return kept is None or kept == digest


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
        one another instance wrote first for the same request); RequestIdReused when that one
        answers a different request (the host redelivers; the redelivery is refused)."""
        body = result.model_dump_json().encode("utf-8")
        name = result_blob_name(result.tenant_id, result.request_id)
        if await self._store.create(self._container, name, body):
            return StoredResult(body=body, reply_sent=False)
        existing = await self.get(result.tenant_id, result.request_id)
        if existing is None:  # written and deleted in between: not a case worth a loop
            raise RuntimeError(f"result {name} vanished while being written")
        if result.request_sha256 is not None and not existing.same_request(result.request_sha256):
            raise RequestIdReused(result.tenant_id, result.request_id)
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
