"""Feedback intake: one `feedback` v1, from the `feedback` queue or the HTTP endpoint.

`FeedbackIntake.accept` is the shared core; `handle_feedback_message` (Service Bus) and
`handle_feedback_http` (`POST /api/tenants/{tenant_id}/feedback`) wrap it.

Checks, in order: (Service Bus) the tenant proof (`shared.security.tenant_check`: refused ones are
recorded under `rejected/_unknown/feedback/`; HTTP: function_app.py checks the route's proof
first), the contract (`shared.contracts.feedback`), the tenant is registered, (HTTP)
the tenant in the path is the one in the body, the tenant has an answer for that request id (its
own `results/<tenant>/<request_id>.json`: a request of another tenant is as unknown as one never
sent, so no tenant learns about another's ids), and the answer succeeded. Then the correction is
kept only as `shared.feedback.consent` allows (scrubbed), the record is stored (first: `recorded`;
later: `revised`, last one wins), and a first rating is appended to its model version's rating
stream; about one first rating in `DRIFT_CHECK_EVERY` (picked by a hash of its request id, the
same on every instance) runs a drift evaluation at once, which reads every rating not yet read.

Outcomes: Service Bus completes the message in every case; a rejection is recorded in
`rejected/<tenant or _unknown>/feedback/<message_id>.json` with the reason (never the text).
HTTP answers 201 recorded / 200 revised / 400 invalid or tenant mismatch / 404 unknown tenant or
request / 409 request not answered, with `{"status" | "reason", "detail", ...}` as JSON.
Storage errors propagate (the message is redelivered; HTTP answers 500).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from shared.contracts import (
    FEEDBACK_TYPE,
    ContractError,
    Feedback,
    FeedbackReason,
    FeedbackRecord,
    InferenceResult,
    RejectionRecord,
    parse_feedback,
)
from shared.feedback.consent import Consent
from shared.feedback.inference_log import model_key
from shared.feedback.store import FeedbackStore, Rating
from shared.inference.rejections import RejectionLog
from shared.inference.results import ResultStore
from shared.messages import InboundMessage
from shared.security.tenant_check import TenantProofs
from shared.storage.blob_store import ConditionFailed
from shared.structured_logging import key_values, without_none
from shared.tenancy.registry import Registry
from shared.tenancy.registry_source import RegistryProvider

log = logging.getLogger(__name__)

FEEDBACK_REJECTED_TYPE: Final = "feedback.rejected"
_HTTP_STATUS = {
    FeedbackReason.INVALID_JSON: 400,
    FeedbackReason.INVALID_FEEDBACK: 400,
    FeedbackReason.UNSUPPORTED_TYPE: 400,
    FeedbackReason.UNSUPPORTED_VERSION: 400,
    FeedbackReason.TENANT_MISMATCH: 400,
    FeedbackReason.UNKNOWN_TENANT: 404,
    FeedbackReason.UNKNOWN_REQUEST: 404,
    FeedbackReason.REQUEST_NOT_ANSWERED: 409,
}


class FeedbackOutcome(StrEnum):
    RECORDED = "recorded"
    REVISED = "revised"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class FeedbackAnswer:
    outcome: FeedbackOutcome
    tenant_id: str | None = None
    request_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    revision: int | None = None
    drift_checked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        if self.outcome is FeedbackOutcome.RECORDED:
            return 201
        if self.outcome is FeedbackOutcome.REVISED:
            return 200
        return _HTTP_STATUS.get(self.reason or "", 400)

    def body(self) -> dict[str, Any]:
        return without_none(
            status=self.outcome.value,
            reason=self.reason,
            detail=self.detail,
            tenant_id=self.tenant_id,
            request_id=self.request_id,
            revision=self.revision,
        )


class _Rejected(Exception):
    def __init__(
        self, reason: str, detail: str, *, tenant_id: str | None, request_id: str | None
    ) -> None:
        super().__init__(detail)
        self.answer = FeedbackAnswer(
            FeedbackOutcome.REJECTED,
            tenant_id=tenant_id,
            request_id=request_id,
            reason=reason,
            detail=detail,
        )


DriftCheck = Callable[[str, str], Awaitable[object]]


class FeedbackIntake:
    def __init__(
        self,
        *,
        registry: RegistryProvider,
        results: ResultStore,
        feedback: FeedbackStore,
        consent: Consent,
        rejections: RejectionLog,
        clock: Callable[[], Any],
        drift_check: DriftCheck | None = None,
        check_every: int = 50,
        proofs: TenantProofs | None = None,
    ) -> None:
        self._registry = registry
        self._results = results
        self._feedback = feedback
        self._consent = consent
        self._rejections = rejections
        self._clock = clock
        self._drift_check = drift_check
        self._check_every = check_every
        self._proofs = proofs

    async def handle_message(self, message: InboundMessage) -> FeedbackAnswer:
        """Service Bus: accept or record the rejection; raises only for a retryable failure."""
        if self._proofs and (refused := await self._proofs.refused(message, FEEDBACK_TYPE)):
            return FeedbackAnswer(FeedbackOutcome.REJECTED, reason=refused.reason)  # recorded
        registry = await self._registry.get()
        try:
            feedback = parse_feedback(message.body, message.application_properties)
            answer = await self._accept(registry, feedback)
        except ContractError as exc:
            answer = _Rejected(
                exc.reason, exc.detail, tenant_id=exc.tenant_id, request_id=exc.request_id
            ).answer
        except _Rejected as rejection:
            answer = rejection.answer
        if answer.outcome is FeedbackOutcome.REJECTED:
            await self._record_rejection(registry, message, answer)
        self._log(answer, message_id=message.message_id, via="servicebus")
        return answer

    async def handle_http(self, tenant_in_path: str, body: bytes) -> FeedbackAnswer:
        """HTTP: the answer whose `http_status` and `body()` the endpoint returns."""
        registry = await self._registry.get()
        try:
            feedback = parse_feedback(body)
            if feedback.tenant_id != tenant_in_path:
                raise _Rejected(
                    FeedbackReason.TENANT_MISMATCH,
                    "the tenant_id in the body is not the tenant in the path",
                    tenant_id=None,
                    request_id=feedback.request_id,
                )
            answer = await self._accept(registry, feedback)
        except ContractError as exc:
            answer = _Rejected(exc.reason, exc.detail, tenant_id=None, request_id=None).answer
        except _Rejected as rejection:
            answer = rejection.answer
        self._log(answer, via="http")
        return answer

    async def _accept(self, registry: Registry, feedback: Feedback) -> FeedbackAnswer:
        ids: dict[str, Any] = {"tenant_id": feedback.tenant_id, "request_id": feedback.request_id}
        tenant = registry.tenant(feedback.tenant_id)
        if tenant is None:
            raise _Rejected(
                FeedbackReason.UNKNOWN_TENANT,
                f"tenant {feedback.tenant_id!r} is not registered",
                tenant_id=None,
                request_id=feedback.request_id,
            )
        stored = await self._results.get(tenant.id, feedback.request_id)
        if stored is None:
            raise _Rejected(
                FeedbackReason.UNKNOWN_REQUEST,
                "the tenant has no answer with this request_id",
                **ids,
            )
        result = InferenceResult.model_validate_json(stored.body)
        if result.status != "succeeded" or result.deployment is None:
            raise _Rejected(
                FeedbackReason.REQUEST_NOT_ANSWERED,
                "the request failed, so there is no answer to rate",
                **ids,
            )
        kept = (
            (await self._consent.keep(tenant.policy, [feedback.correction]))[0]
            if feedback.correction is not None
            else None
        )
        # Labels are text too: kept only with consent, and only those the scrubber leaves as
        # they are (a label that holds a card number or an email is not a label).
        scrubbed_labels = await self._consent.keep(tenant.policy, list(feedback.labels))
        labels = tuple(
            label
            for k, label in zip(scrubbed_labels, feedback.labels, strict=True)
            if k.text == label
        )
        now = self._clock()
        record = FeedbackRecord(
            tenant_id=tenant.id,
            request_id=feedback.request_id,
            rating=feedback.rating,
            score=feedback.score,
            correction=kept.text if kept else None,
            correction_withheld=kept.withheld if kept else None,
            pii_removed=dict(kept.pii_removed) if kept else {},
            labels=labels,
            deployment=result.deployment,
            model=result.model,
            model_version=result.model_version,
            answered_at=result.completed_at,
            received_at=now,
            revision=1,
        )
        revision = await self._store(record)
        if revision > 1:
            return FeedbackAnswer(FeedbackOutcome.REVISED, revision=revision, **ids)
        key = model_key(result.deployment, result.model_version)
        await self._feedback.append_rating(
            tenant.id, key, Rating(feedback.request_id, feedback.score, now)
        )
        checked = False
        if self._drift_check is not None and sampled(feedback.request_id, self._check_every):
            await self._drift_check(tenant.id, key)
            checked = True
        return FeedbackAnswer(FeedbackOutcome.RECORDED, revision=1, drift_checked=checked, **ids)

    async def _store(self, record: FeedbackRecord) -> int:
        """Store as the first record, or as the next revision; returns the revision."""
        for _ in range(8):
            if await self._feedback.create(record):
                return 1
            existing = await self._feedback.get(
                record.tenant_id, record.answered_at.date(), record.request_id
            )
            if existing is None:
                continue
            revised = record.model_copy(update={"revision": existing.record.revision + 1})
            try:
                await self._feedback.replace(revised, existing.etag)
            except ConditionFailed:
                continue
            return revised.revision
        raise RuntimeError(f"feedback on {record.request_id} kept changing while being stored")

    async def _record_rejection(
        self, registry: Registry, message: InboundMessage, answer: FeedbackAnswer
    ) -> None:
        known = registry.tenant(answer.tenant_id) if answer.tenant_id else None
        await self._rejections.write(
            RejectionRecord(
                type=FEEDBACK_REJECTED_TYPE,
                reason=answer.reason or "",
                detail=answer.detail or "",
                tenant_id=known.id if known else None,
                request_id=answer.request_id,
                message_id=message.message_id,
                delivery_count=message.delivery_count,
                rejected_at=self._clock(),
            ),
            known_tenant_id=known.id if known else None,
            kind="feedback",
        )

    @staticmethod
    def _log(answer: FeedbackAnswer, **fields: Any) -> None:
        level = logging.WARNING if answer.outcome is FeedbackOutcome.REJECTED else logging.INFO
        extra = without_none(
            event=f"feedback.{answer.outcome.value}",
            tenant_id=answer.tenant_id,
            request_id=answer.request_id,
            reason=answer.reason,
            revision=answer.revision,
            drift_checked=answer.drift_checked or None,
            **fields,
        )
        log.log(level, key_values(extra), extra=extra)


def sampled(request_id: str, every: int) -> bool:
    """True for about one request id in `every`, the same answer on every instance (a hash, not
    a shared counter: Azurite's committed-block count is unreliable under concurrent appends)."""
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % every == 0


def http_body(answer: FeedbackAnswer) -> bytes:
    return json.dumps(answer.body()).encode("utf-8")
