"""What the tenant proof tests share: fixed key rings, a runtime with proofs required over the
in-memory ports, signed messages and requests, and a byte-for-byte snapshot of a tenant's blobs.

- `KEYS`: one active key per devhost tenant, fixed secrets (so failures reproduce).
- `StaticKeys`: a KeySource over a dict the test may change (rotate, retire).
- `proven_runtime(...)`: `memory_runtime` with `TenantProofs(REQUIRED)` and the proving ports.
- `signed(...)`: an `InboundMessage` as a tenant app would send it, proven (or not) by a signer.
- `blobs_of(store, tenant)`: every blob under `<tenant>/` in every container, as bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.contracts import REQUEST_TYPE
from shared.inference.rejections import RejectionLog
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.security.keys import CachedKeys, KeyRing, KeyState, TenantKey
from shared.security.sign import TenantSigner
from shared.security.tenant_check import ProofMode, TenantProofs
from shared.security.tenant_replay import MemorySeenIds
from shared.security.tenant_senders import ProvingReplySender
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, read_registry_file
from tests.fakes import RecordingReplySender, ScriptedModel, fixed_clock, memory_runtime

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
NOW = fixed_clock()  # 2025-01-02T03:04:05Z, the clock of memory_runtime
CREATED = datetime(2024, 12, 1, tzinfo=UTC)


def key(key_id: str, secret: str) -> TenantKey:
    return TenantKey(key_id, secret, KeyState.ACTIVE, CREATED)


def fresh_keys() -> dict[str, KeyRing]:
    return {
        tenant: KeyRing(tenant, (key(f"k-{tenant}-1", f"secret-of-{tenant}-0123456789abcdef"),))
        for tenant in ("tailwind", "contoso", "fabrikam")
    }


@dataclass
class StaticKeys:
    rings: dict[str, KeyRing] = field(default_factory=fresh_keys)
    reads: int = 0

    async def ring(self, tenant_id: str) -> KeyRing | None:
        self.reads += 1
        return self.rings.get(tenant_id)

    async def close(self) -> None:
        return None


def signer(keys: StaticKeys, tenant: str, key_id: str | None = None) -> TenantSigner:
    ring = keys.rings[tenant]
    chosen = ring.find(key_id) if key_id else ring.signing_key()
    assert chosen is not None
    return TenantSigner(tenant, chosen.id, chosen.secret or "")


def registry() -> Registry:
    return read_registry_file(ROOT / "devhost" / "registry.json", env=ENV)


@dataclass
class Proven:
    """A runtime with proofs required, and the fakes it runs on."""

    runtime: Runtime
    keys: StaticKeys
    store: MemoryBlobStore
    model: ScriptedModel
    replies: RecordingReplySender


def proven_runtime(keys: StaticKeys | None = None) -> Proven:
    keys = keys or StaticKeys()
    store, model, replies = MemoryBlobStore(), ScriptedModel(), RecordingReplySender()
    rt = memory_runtime(registry(), model=model, replies=replies, store=store)
    rt.tenant_proofs = TenantProofs(
        ProofMode.REQUIRED,
        keys=CachedKeys(keys, ttl_s=0.0, miss_refresh_s=0.0),
        seen=MemorySeenIds(),
        rejections=RejectionLog(store),
        clock=rt.clock,
    )
    rt.replies = ProvingReplySender(replies, rt.tenant_proofs)
    return Proven(rt, keys, store, model, replies)


def request_body(tenant: str, request_id: str, text: str = "hello", **extra: Any) -> bytes:
    return json.dumps(
        {
            "tenant_id": tenant,
            "request_id": request_id,
            "messages": [{"role": "user", "content": text}],
            "parameters": {"max_tokens": 20},
            **extra,
        }
    ).encode()


def signed(
    by: TenantSigner | None,
    body: bytes,
    *,
    message_id: str,
    reply_to: str | None = None,
    enqueued_time: datetime = NOW,
    at: datetime | None = None,
    contract_type: str = REQUEST_TYPE,
    properties: dict[str, Any] | None = None,
    signed_message_id: str | None = None,
    signed_body: bytes | None = None,
    delivery_count: int = 1,
) -> InboundMessage:
    """The message as the broker hands it over; `signed_*` sign something other than what is
    sent (a tampered message)."""
    props = dict(properties or {})
    if by is not None:
        props |= by.message_properties(
            body if signed_body is None else signed_body,
            message_id=signed_message_id or message_id,
            reply_to=reply_to,
            contract_type=contract_type,
            at=int((at or enqueued_time).timestamp()),
        )
    return InboundMessage(
        body=body,
        message_id=message_id,
        reply_to=reply_to,
        application_properties=props,
        delivery_count=delivery_count,
        enqueued_time=enqueued_time,
    )


def blobs_of(store: MemoryBlobStore, tenant: str) -> dict[tuple[str, str], bytes]:
    """Every blob of `tenant` (its prefix in any container), and its metadata, byte for byte."""
    return {
        key: bytes(data) + json.dumps(store.metadata.get(key, {}), sort_keys=True).encode()
        for key, data in store.blobs.items()
        if key[1].startswith(f"{tenant}/")
    }


def rejections_of(store: MemoryBlobStore) -> dict[str, dict[str, Any]]:
    return {name: json.loads(store.text("rejected", name)) for name in store.names("rejected")}
