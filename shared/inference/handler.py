"""Handles one `inference.request` message, from the queue to a result, usage line and reply.

The outcome decides what the host does with the message:
- returns COMPLETED / FILTERED / DUPLICATE / REJECTED / RESCHEDULED / FAILED: the host completes
  it. FILTERED: a content filter refused the prompt or withheld the answer; a `filtered` result
  (stage, categories; no text) is stored and sent, and metered (`shared.inference.content_filter`).
  REJECTED: a rejection is recorded in `rejected/` first (a tenant proof that does not hold:
  `shared.security.tenant_check`, filed under `_unknown` and answered to nobody; invalid JSON, a
  broken contract, an unknown tenant, no usable deployment, a reply_to the tenant may not use,
  a request the model refuses as invalid, with the service's error code). RESCHEDULED: no
  deployment (or the tenant's quota) has room now; a copy is scheduled on the queue for when one
  has (`shared.resilience.reschedule`). FAILED: the tenant's deadline passed while rescheduling; a
  `failed` result with the reason is stored and sent.
- raises only for what a later delivery can fix: a configuration error (401/403/404), storage or
  the registry unavailable, a reply or reschedule send that failed transiently. The host abandons
  the message and Service Bus redelivers it (and dead-letters it after MaxDeliveryCount).

Idempotent by request id: a result already in `results/` is never recomputed; only its reply is
sent again if it was not sent before. A request id whose result answers a different request (its
`request_sha256` differs) is rejected `request_id_reused`, never answered with that result; one
that loses a race to a different request raises `RequestIdReused` (redelivered, then rejected).
Steps, in order: model call (through the resilient client:
retries, breakers, failover, quotas), usage line (so every real call is metered, even one whose
result write fails), inference log line (within the tenant's consent, scrubbed:
`shared.feedback.inference_log`), result (If-None-Match), reply. A reply the queue can never take
(larger than its message size limit) is replaced by a compact one that points to the result blob;
a reply queue that does not exist is logged and marked, never retried forever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from enum import StrEnum
from typing import Any

from azure.servicebus.exceptions import MessageSizeExceededError, MessagingEntityNotFoundError

from shared import contracts
from shared.contracts import (
    ContractError,
    Failure,
    FailureReason,
    InferenceRequest,
    InferenceResult,
    RejectionReason,
    RejectionRecord,
    TokenUsage,
    UsageRecord,
)
from shared.inference import content_filter
from shared.inference.model_errors import ModelConfigurationError, ModelRequestRejected
from shared.inference.replies import Reply
from shared.inference.results import StoredResult, request_digest, result_blob_name
from shared.messages import InboundMessage
from shared.resilience.client import ResilientCompletion, TryLater
from shared.resilience.priority import queued_seconds, traffic_priority
from shared.resilience.reschedule import History, Plan, history_of, plan
from shared.runtime import Runtime, get_runtime
from shared.storage import names
from shared.structured_logging import key_values, without_none
from shared.tenancy.registry import Registry, Tenant
from shared.tenancy.routing import IsolationViolation, RoutingError

log = logging.getLogger(__name__)

REPLY_UNDELIVERABLE = "reply_undeliverable"


class Outcome(StrEnum):
    COMPLETED = "completed"
    FILTERED = "filtered"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    RESCHEDULED = "rescheduled"
    FAILED = "failed"


async def handle_inference_request(
    message: InboundMessage, runtime: Runtime | None = None
) -> Outcome:
    """The entry point function_app.py awaits. Returns normally unless the message should be
    redelivered."""
    return await InferenceHandler(runtime if runtime is not None else get_runtime()).handle(message)


class _Rejected(Exception):
    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        tenant: Tenant | None,
        tenant_id: str | None,
        request_id: str | None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.tenant = tenant
        self.tenant_id = tenant_id
        self.request_id = request_id
        self.error_code = error_code


class InferenceHandler:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def handle(self, message: InboundMessage) -> Outcome:
        if await self._rt.tenant_proofs.refused(message, contracts.REQUEST_TYPE):
            return Outcome.REJECTED  # recorded under _unknown: no model, reply nor batch count
        try:
            outcome = await self._handle(message)
        except _Rejected as rejection:
            await self._reject(message, rejection)
            outcome = Outcome.REJECTED
        # A batch row that ended (result, failure, rejection) counts in its batch; else a no-op.
        await self._rt.batches.row_settled(message, outcome.value)
        return outcome

    async def _handle(self, message: InboundMessage) -> Outcome:
        registry = await self._rt.registry.get()
        request, tenant = self._admit(message, registry)
        fields: dict[str, Any] = {"tenant_id": tenant.id, "request_id": request.request_id}

        existing = await self._rt.results.get(tenant.id, request.request_id)
        if existing is not None and not existing.same_request(request_digest(request)):
            raise _Rejected(
                RejectionReason.REQUEST_ID_REUSED,
                "the tenant already has a result for this request_id, for a different request "
                "(messages, parameters or feature differ); send a new request_id",
                tenant=tenant,
                tenant_id=tenant.id,
                request_id=request.request_id,
            )
        if existing is not None:
            replied = await self._reply_if_due(message, request, existing)
            self._log(logging.INFO, "inference.duplicate", message, replied=replied, **fields)
            return Outcome.DUPLICATE

        history = history_of(
            message.application_properties, message.enqueued_time, self._rt.clock()
        )
        started = time.perf_counter()
        try:
            served = await self._call(message, registry, tenant, request)
        except TryLater as later:
            return await self._reschedule(message, request, history, later, fields)
        latency_ms = round((time.perf_counter() - started) * 1000)
        fields["deployment"] = served.deployment.name
        stored = await self._store(request, tenant, served, latency_ms)
        replied = await self._reply_if_due(message, request, stored)
        filtered = served.completion.content_filter
        if filtered is not None:
            fields.update(content_filter.log_fields(filtered))
        self._log(
            logging.INFO if filtered is None else logging.WARNING,
            "inference.completed" if filtered is None else "inference.filtered",
            message,
            latency_ms=latency_ms,
            prompt_tokens=served.completion.prompt_tokens,
            completion_tokens=served.completion.completion_tokens,
            attempts=served.attempts,
            retries=served.attempts - 1,
            failovers=served.failovers,
            throttled=served.throttled,
            reschedules=history.reschedules,
            replied=replied,
            **fields,
        )
        return Outcome.COMPLETED if filtered is None else Outcome.FILTERED

    async def _store(
        self,
        request: InferenceRequest,
        tenant: Tenant,
        served: ResilientCompletion,
        latency_ms: int,
    ) -> StoredResult:
        """The usage line, then the result (the one stored first, if another instance won); a
        filtered completion is metered (`content_filter` on the usage line) but never logged for
        training, and its result is `filtered`, without the text."""
        completion, deployment = served.completion, served.deployment
        filtered = completion.content_filter
        now = self._rt.clock()
        tokens = TokenUsage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
        )
        await self._rt.usage.record(
            UsageRecord(
                tenant_id=tenant.id,
                request_id=request.request_id,
                deployment=deployment.name,
                kind=deployment.kind.value,
                model=completion.model,
                feature=request.feature,
                prompt_tokens=tokens.prompt_tokens,
                completion_tokens=tokens.completion_tokens,
                total_tokens=tokens.total_tokens,
                latency_ms=latency_ms,
                at=now,
                content_filter=content_filter.usage_stage(filtered),
            )
        )
        if filtered is None:
            await self._rt.inference_log.record(
                tenant,
                request_id=request.request_id,
                messages=request.messages,
                feature=request.feature,
                deployment=deployment,
                model=completion.model,
                answer=completion.content,
                at=now,
            )
        return await self._rt.results.save(
            InferenceResult(
                tenant_id=tenant.id,
                request_id=request.request_id,
                status="succeeded" if filtered is None else "filtered",
                deployment=deployment.name,
                model=completion.model,
                model_version=deployment.model_version,
                message=None
                if filtered is not None
                else contracts.ChatMessage(role="assistant", content=completion.content),
                finish_reason=completion.finish_reason,
                usage=tokens,
                latency_ms=latency_ms,
                completed_at=now,
                feature=request.feature,
                content_filter=filtered,
                request_sha256=request_digest(request),
            )
        )

    async def _call(
        self,
        message: InboundMessage,
        registry: Registry,
        tenant: Tenant,
        request: InferenceRequest,
    ) -> ResilientCompletion:
        """The completion through the resilient client; a request that no deployment may serve
        or that the model refuses is rejected; TryLater and configuration errors propagate."""
        try:
            return await self._rt.resilient.complete_for(
                registry,
                tenant,
                request.messages,
                request.parameters,
                priority=traffic_priority(message.application_properties),
                queued_s=queued_seconds(message.enqueued_time, self._rt.clock()),
            )
        except RoutingError as exc:
            raise _Rejected(
                exc.reason,
                exc.detail,
                tenant=tenant,
                tenant_id=tenant.id,
                request_id=request.request_id,
            ) from None
        except IsolationViolation:
            self._log(
                logging.ERROR,
                "inference.isolation_violation",
                message,
                tenant_id=tenant.id,
                request_id=request.request_id,
            )
            raise
        except ModelConfigurationError as exc:
            self._log(
                logging.ERROR,
                "inference.model_failed",
                message,
                tenant_id=tenant.id,
                request_id=request.request_id,
                deployment=exc.deployment,
                error_type=type(exc).__name__,
                status_code=exc.status_code,
            )
            raise
        except ModelRequestRejected as exc:
            code = exc.error_code
            raise _Rejected(
                RejectionReason.MODEL_REJECTED_REQUEST,
                f"deployment {exc.deployment!r} refused the request (HTTP {exc.status_code}"
                + (f", {code})" if code else ")"),
                tenant=tenant,
                tenant_id=tenant.id,
                request_id=request.request_id,
                error_code=code,
            ) from None

    async def _reschedule(
        self,
        message: InboundMessage,
        request: InferenceRequest,
        history: History,
        later: TryLater,
        fields: dict[str, Any],
    ) -> Outcome:
        now = self._rt.clock()
        step = plan(
            tenant_id=request.tenant_id,
            request_id=request.request_id,
            properties=message.application_properties,
            history=history,
            attempts_now=later.attempts,
            delay_s=later.retry_after_s,
            reason=later.reason,
            now=now,
            policy=self._rt.reschedule_policy,
            rng=self._rt.rng,
        )
        if step.give_up:
            return await self._fail(message, request, history, later, fields)
        try:
            await self._send_copy(message, request, step)
        except MessageSizeExceededError:
            return await self._fail(message, request, history, later, fields, oversize=True)
        self._log(
            logging.INFO,
            "inference.rescheduled",
            message,
            reason=later.reason,
            retry_after_s=round(later.retry_after_s, 3),
            scheduled_for=step.at.isoformat(),
            reschedules=history.reschedules + 1,
            attempts=later.attempts,
            throttled=later.throttled,
            **fields,
        )
        return Outcome.RESCHEDULED

    async def _send_copy(
        self, message: InboundMessage, request: InferenceRequest, step: Plan
    ) -> None:
        await self._rt.replies.send(
            Reply(
                queue=names.INFERENCE_REQUESTS,
                body=message.body,
                correlation_id=message.correlation_id or request.request_id,
                message_id=step.message_id,
                reply_to=message.reply_to,
                reply_to_session_id=message.reply_to_session_id,
                subject=contracts.REQUEST_TYPE,
                application_properties=step.properties,
                scheduled_enqueue_time_utc=step.at,
            )
        )

    async def _fail(
        self,
        message: InboundMessage,
        request: InferenceRequest,
        history: History,
        later: TryLater,
        fields: dict[str, Any],
        *,
        oversize: bool = False,
    ) -> Outcome:
        now = self._rt.clock()
        policy = self._rt.reschedule_policy
        attempts = history.model_attempts + later.attempts
        if oversize:
            reason = FailureReason.CANNOT_RESCHEDULE
            detail = f"had to wait ({later.reason}), but its copy exceeds the queue's message size"
        elif history.reschedules + 1 > policy.max_reschedules:
            reason = FailureReason.ATTEMPTS_EXHAUSTED
            detail = f"not served after {history.reschedules} reschedules ({later.reason})"
        else:
            reason = FailureReason.DEADLINE_EXCEEDED
            detail = (
                f"cannot be served within {policy.deadline_s:g}s of its first enqueue: the "
                f"earliest room ({later.reason}) is later than that"
            )
        stored = await self._rt.results.save(
            InferenceResult(
                tenant_id=request.tenant_id,
                request_id=request.request_id,
                status="failed",
                deployment=None,
                model=None,
                message=None,
                finish_reason=None,
                usage=TokenUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
                latency_ms=round((now - history.first_enqueued_at).total_seconds() * 1000),
                completed_at=now,
                feature=request.feature,
                failure=Failure(
                    reason=reason,
                    detail=detail,
                    attempts=attempts,
                    reschedules=history.reschedules,
                    first_enqueued_at=history.first_enqueued_at,
                ),
                request_sha256=request_digest(request),
            )
        )
        replied = await self._reply_if_due(message, request, stored)
        self._log(
            logging.WARNING,
            "inference.failed",
            message,
            reason=reason,
            detail=detail,
            attempts=attempts,
            reschedules=history.reschedules,
            replied=replied,
            **fields,
        )
        return Outcome.FAILED

    def _admit(
        self, message: InboundMessage, registry: Registry
    ) -> tuple[InferenceRequest, Tenant]:
        """The request and its tenant, or _Rejected: the checks that need no I/O."""
        try:
            request = contracts.parse_inference_request(
                message.body, message.application_properties
            )
        except ContractError as exc:
            tenant = registry.tenant(exc.tenant_id) if exc.tenant_id else None
            raise _Rejected(
                exc.reason,
                exc.detail,
                tenant=tenant,
                tenant_id=tenant.id if tenant else None,
                request_id=exc.request_id,
            ) from None
        tenant = registry.tenant(request.tenant_id)
        if tenant is None:
            raise _Rejected(
                RejectionReason.UNKNOWN_TENANT,
                f"tenant {request.tenant_id!r} is not registered",
                tenant=None,
                tenant_id=request.tenant_id,
                request_id=request.request_id,
            )
        if message.reply_to is not None and message.reply_to not in tenant.reply_queues:
            raise _Rejected(
                RejectionReason.REPLY_TO_NOT_ALLOWED,
                # never the name itself: it is sender text (tests/security/test_log_hygiene.py)
                "reply_to is not one of the tenant's reply queues",
                tenant=tenant,
                tenant_id=tenant.id,
                request_id=request.request_id,
            )
        return request, tenant

    async def _reply_if_due(
        self, message: InboundMessage, request: InferenceRequest, stored: StoredResult
    ) -> bool:
        """Send the stored result to reply_to unless it was sent (or found undeliverable)."""
        if message.reply_to is None or stored.reply_sent:
            return False
        reply = Reply(
            queue=message.reply_to,
            body=stored.body,
            correlation_id=request.request_id,
            message_id=request.request_id,
            session_id=message.reply_to_session_id,
            subject=contracts.RESULT_TYPE,
            application_properties=_reply_properties(
                contracts.RESULT_TYPE, request.tenant_id, request.request_id
            ),
        )
        try:
            await self._rt.replies.send(reply)
        except MessageSizeExceededError:
            # Permanent: the same bytes never fit. Send the result without its message, pointing
            # to the blob that holds all of it.
            await self._rt.replies.send(_compact(reply, stored.body))
            self._log(
                logging.WARNING,
                "inference.reply_truncated",
                message,
                tenant_id=request.tenant_id,
                request_id=request.request_id,
                size=len(stored.body),
            )
        except MessagingEntityNotFoundError:
            # Permanent until an operator creates the queue: keep the result, say so, move on.
            await self._rt.results.mark_reply_sent(
                request.tenant_id, request.request_id, self._rt.clock(), note=REPLY_UNDELIVERABLE
            )
            self._log(
                logging.ERROR,
                "inference.reply_undeliverable",
                message,
                tenant_id=request.tenant_id,
                request_id=request.request_id,
                reason="reply queue not found",
                queue=message.reply_to[:64],
            )
            return False
        await self._rt.results.mark_reply_sent(
            request.tenant_id, request.request_id, self._rt.clock()
        )
        return True

    async def _reject(self, message: InboundMessage, rejection: _Rejected) -> None:
        tenant = rejection.tenant
        record = RejectionRecord(
            reason=rejection.reason,
            detail=rejection.detail,
            error_code=rejection.error_code,
            tenant_id=rejection.tenant_id,
            request_id=rejection.request_id,
            message_id=message.message_id,
            delivery_count=message.delivery_count,
            rejected_at=self._rt.clock(),
        )
        blob = await self._rt.rejections.write(
            record, known_tenant_id=tenant.id if tenant else None
        )
        replied = False
        # A rejection is answered only to a registered tenant, on a queue it may use (never to a
        # reply_to that was itself the reason for the rejection).
        if tenant is not None and message.reply_to in tenant.reply_queues:
            body = record.model_dump_json().encode("utf-8")
            digest = hashlib.sha256(record.message_id.encode("utf-8")).hexdigest()[:40]
            try:
                await self._rt.replies.send(
                    Reply(
                        queue=message.reply_to,
                        body=body,
                        correlation_id=rejection.request_id or record.message_id,
                        message_id=f"rejected-{digest}",
                        session_id=message.reply_to_session_id,
                        subject=contracts.REJECTED_TYPE,
                        application_properties=_reply_properties(
                            contracts.REJECTED_TYPE, tenant.id, rejection.request_id
                        ),
                    )
                )
                replied = True
            except MessagingEntityNotFoundError:
                replied = False  # the record is kept; the log line below says it was not sent
        self._log(
            logging.WARNING,
            "inference.rejected",
            message,
            tenant_id=rejection.tenant_id,
            request_id=rejection.request_id,
            reason=rejection.reason,
            error_code=rejection.error_code,
            detail=rejection.detail,
            rejection_blob=blob,
            replied=replied,
        )

    def _log(self, level: int, event: str, message: InboundMessage, **fields: Any) -> None:
        queued_ms = None
        if message.enqueued_time is not None:
            queued_ms = round((self._rt.clock() - message.enqueued_time).total_seconds() * 1000)
        extra = without_none(
            event=event,
            message_id=message.message_id,
            delivery_count=message.delivery_count,
            queued_ms=queued_ms,
            **fields,
        )
        log.log(level, key_values(extra), extra=extra)


def _compact(reply: Reply, body: bytes) -> Reply:
    """The reply without the answer's text: `truncated`, and where the whole result is."""
    result = InferenceResult.model_validate_json(body)
    small = result.model_copy(
        update={
            "message": None,
            "truncated": True,
            "result_blob": f"{names.RESULTS_CONTAINER}/"
            + result_blob_name(result.tenant_id, result.request_id),
        }
    )
    return dataclasses.replace(reply, body=small.model_dump_json().encode("utf-8"))


def _reply_properties(kind: str, tenant_id: str, request_id: str | None) -> dict[str, str | int]:
    props: dict[str, str | int] = {
        "type": kind,
        "version": contracts.CONTRACT_VERSION,
        "tenant_id": tenant_id,
    }
    if request_id is not None:
        props["request_id"] = request_id
    return props
