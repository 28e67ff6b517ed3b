"""Enforcing tenant proofs: the one call each handler makes before anything reaches a model or a
tenant's data.

    refusal = await proofs.refused(message, contracts.REQUEST_TYPE)    Service Bus handlers
        None: the message proves the tenant its body names (or names none: the contract check
              rejects it); go on.
        Refusal(reason, detail, tenant_id, request_id): it does not. A rejection record is
              already written under `rejected/_unknown/` (`<message id>.json`; feedback:
              `feedback/<message id>.json`), a WARNING `tenant_proof.refused` logged; the caller
              completes the message and does nothing else: no model call, no result, no reply,
              no batch count, nothing under the claimed tenant's prefixes.
    refusal = await proofs.check_http(tenant_id, method, url, headers, body)     HTTP endpoints
        None, or a Refusal whose `http_status` (401) and `http_body()` are the answer. The key is
        the route tenant's, and the path signed is the route's, so the tenant in the route is
        the proven one.
    properties = await proofs.prove_copy(body, message_id=..., reply_to=..., at=...)
        The app's own copies onto `inference-requests` (rescheduled requests, batch rows)
        proven with the tenant's newest key (`tenant_senders`).

Reasons (`proof.ProofReason`): `tenant_proof_missing`, `tenant_proof_invalid`,
`tenant_proof_expired`, `tenant_proof_replayed`, `tenant_key_retired`. A record holds the
reason, a detail that names what was wrong, the claimed tenant and request ids and the message
id: never the secret, never the signature.

`ProofMode.OFF` (`TENANT_PROOF=off`, and a `Runtime` built by hand, as the unit tests that
predate proofs build theirs) checks nothing and proves nothing. `REQUIRED` (the default of every
runtime built from settings: Azure and devhost) refuses what does not prove its tenant; with no
key store configured, every message is refused (fail closed), never served unproven.

The key store raising (Key Vault or the file unreachable) propagates: the message is redelivered,
as when storage is down.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from shared.contracts import (
    FEEDBACK_TYPE,
    REQUEST_ID_PATTERN,
    TENANT_ID_PATTERN,
    RejectionRecord,
)
from shared.inference.rejections import RejectionLog
from shared.messages import InboundMessage
from shared.security import proof
from shared.security.keys import CachedKeys, KeyRing
from shared.security.proof import ProofError, ProofReason
from shared.security.tenant_replay import MemorySeenIds, SeenIds
from shared.structured_logging import key_values, without_none

log = logging.getLogger(__name__)

# The rejection record's type and folder per contract (inference: `_unknown/<id>.json`).
_RECORD: Final = {FEEDBACK_TYPE: ("feedback.rejected", "feedback")}
_INFERENCE_RECORD: Final = ("inference.rejected", "")
_UNSIGNABLE: Final = (
    "a proven field (message id, reply_to, path) holds a line break or non-UTF-8 text"
)


class ProofMode(StrEnum):
    REQUIRED = "required"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str
    tenant_id: str | None
    request_id: str | None = None

    @property
    def http_status(self) -> int:
        return 401

    def http_body(self) -> bytes:
        return json.dumps(
            without_none(error=self.reason, detail=self.detail, tenant_id=self.tenant_id)
        ).encode("utf-8")


@dataclass
class TenantProofs:
    mode: ProofMode = ProofMode.OFF
    keys: CachedKeys | None = None
    seen: SeenIds = field(default_factory=MemorySeenIds)
    rejections: RejectionLog | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    window_s: int = proof.WINDOW_S

    @property
    def replay_ttl_s(self) -> int:
        return 2 * self.window_s + 60

    async def refused(self, message: InboundMessage, contract_type: str) -> Refusal | None:
        """Check; on a refusal also record it (under `_unknown`) and log it."""
        refusal = await self.check_message(message, contract_type)
        if refusal is None:
            return None
        record_type, kind = _RECORD.get(contract_type, _INFERENCE_RECORD)
        blob = None
        if self.rejections is not None:
            record = RejectionRecord(
                type=record_type,  # type: ignore[arg-type]
                reason=refusal.reason,
                detail=refusal.detail,
                tenant_id=refusal.tenant_id,
                request_id=refusal.request_id,
                message_id=message.message_id,
                delivery_count=message.delivery_count,
                rejected_at=self.clock(),
            )
            blob = await self.rejections.write(record, known_tenant_id=None, kind=kind)
        _log(refusal, via="servicebus", message_id=message.message_id, rejection_blob=blob)
        return refusal

    async def check_message(self, message: InboundMessage, contract_type: str) -> Refusal | None:
        if self.mode is ProofMode.OFF:
            return None
        tenant_id, request_id = _claims(message.body)
        if tenant_id is None:
            return None  # names no tenant: the contract check rejects it, under _unknown
        try:
            presented = proof.presented(message.application_properties)
            canonical = proof.canonical_message(
                tenant_id=tenant_id,
                message_id=message.message_id,
                reply_to=message.reply_to,
                contract_type=contract_type,
                body_digest=proof.body_sha256(message.body),
                at=presented.at,
                key_id=presented.key_id,
            )
        except ProofError as exc:
            return Refusal(exc.reason, exc.detail, tenant_id, request_id)
        except ValueError:  # a line break, or text UTF-8 cannot encode (UnicodeEncodeError)
            return Refusal(ProofReason.INVALID, _UNSIGNABLE, tenant_id, request_id)
        reference = message.enqueued_time or self.clock()
        delivery = message.enqueued_time.isoformat() if message.enqueued_time else None
        return await self._verify(
            tenant_id,
            presented,
            canonical,
            reference=reference,
            proof_id=message.message_id,
            delivery=delivery,
            request_id=request_id,
        )

    async def check_http(
        self,
        tenant_id: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Refusal | None:
        """None when the request proves `tenant_id` (the route's); else the refusal (logged)."""
        if self.mode is ProofMode.OFF:
            return None
        refusal = await self._check_http(tenant_id, method, url, headers, body)
        if refusal is not None:
            _log(refusal, via="http", method=method.upper(), path=urlsplit(url).path[:200])
        return refusal

    async def _check_http(
        self, tenant_id: str, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Refusal | None:
        shown = tenant_id if _well_formed(tenant_id, TENANT_ID_PATTERN) else None
        try:
            presented = proof.presented(headers)
            nonce = proof.nonce_of(headers)
            canonical = proof.canonical_http(
                tenant_id=tenant_id,
                nonce=nonce,
                method=method,
                path=urlsplit(url).path,
                body_digest=proof.body_sha256(body),
                at=presented.at,
                key_id=presented.key_id,
            )
        except ProofError as exc:
            return Refusal(exc.reason, exc.detail, shown)
        except ValueError:
            return Refusal(ProofReason.INVALID, _UNSIGNABLE, shown)
        if shown is None:
            return Refusal(ProofReason.INVALID, "the route does not name a tenant", None)
        return await self._verify(
            tenant_id, presented, canonical, reference=self.clock(), proof_id=nonce
        )

    async def _verify(
        self,
        tenant_id: str,
        presented: proof.Presented,
        canonical: bytes,
        *,
        reference: datetime,
        proof_id: str,
        delivery: str | None = None,
        request_id: str | None = None,
    ) -> Refusal | None:
        ring = await self._ring(tenant_id, presented.key_id)
        try:
            proof.verify(
                ring,
                presented,
                canonical,
                reference_s=reference.timestamp(),
                window_s=self.window_s,
            )
        except ProofError as exc:
            return Refusal(exc.reason, exc.detail, tenant_id, request_id)
        # Only a valid proof is remembered: nobody can burn another tenant's future ids.
        if not await self.seen.claim(
            tenant_id, proof_id, delivery=delivery, ttl_s=self.replay_ttl_s
        ):
            return Refusal(
                ProofReason.REPLAYED,
                "this proven message id (HTTP: nonce) was already accepted within the window",
                tenant_id,
                request_id,
            )
        return None

    async def _ring(self, tenant_id: str, key_id: str | None) -> KeyRing | None:
        if self.keys is None:
            return None  # no key store configured: nothing proves (fail closed)
        return await self.keys.ring(tenant_id, key_id)

    async def prove_copy(
        self,
        body: bytes,
        *,
        message_id: str,
        reply_to: str | None,
        contract_type: str,
        at: datetime | None = None,
    ) -> dict[str, str]:
        """Proof properties for a message the app itself puts on a tenant-facing queue, signed
        with the newest active key of the tenant its body names; {} when off or unnamed."""
        tenant_id, _ = _claims(body)
        if self.mode is ProofMode.OFF or tenant_id is None:
            return {}
        ring = await self._ring(tenant_id, None)
        if ring is None or not ring.active:
            return {}  # nothing to sign with: the copy is refused like any unproven message
        key = ring.signing_key()
        assert key.secret is not None
        seconds = int((at or self.clock()).timestamp())
        canonical = proof.canonical_message(
            tenant_id=tenant_id,
            message_id=message_id,
            reply_to=reply_to,
            contract_type=contract_type,
            body_digest=proof.body_sha256(body),
            at=seconds,
            key_id=key.id,
        )
        return {
            proof.PROOF: proof.sign(key.secret, canonical),
            proof.PROOF_TIME: str(seconds),
            proof.KEY_ID: key.id,
        }

    async def close(self) -> None:
        if self.keys is not None:
            await self.keys.close()
        await self.seen.close()


def _claims(body: bytes) -> tuple[str | None, str | None]:
    """The tenant and request ids a body claims, when it is a JSON object and they are
    well-formed (the same reading as the contracts' `checked_envelope`)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    tenant = document.get("tenant_id")
    request = document.get("request_id")
    return (
        tenant if _well_formed(tenant, TENANT_ID_PATTERN) else None,
        request if _well_formed(request, REQUEST_ID_PATTERN) else None,
    )


def _well_formed(value: object, pattern: str) -> bool:
    return isinstance(value, str) and re.match(pattern, value) is not None


def _log(refusal: Refusal, **fields: Any) -> None:
    extra = without_none(
        event="tenant_proof.refused",
        reason=refusal.reason,
        detail=refusal.detail,
        tenant_id=refusal.tenant_id,
        request_id=refusal.request_id,
        **fields,
    )
    log.warning(key_values(extra), extra=extra)
