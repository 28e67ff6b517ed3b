"""Handles one `inference.request` message, from the queue to a result, usage line and reply.

The outcome decides what the host does with the message:
- returns COMPLETED / DUPLICATE / REJECTED: the host completes it (a rejection is recorded in
  `rejected/` first: invalid JSON, a broken contract, an unknown tenant, no usable deployment,
  a reply_to the tenant may not use, a request the model refuses as invalid);
- raises (a transient model failure, storage or registry unavailable, a configuration error):
  the host abandons it and it is redelivered, up to the queue's max delivery count, after which
  Service Bus dead-letters it.

Idempotent by request id: a result already in `results/` is never recomputed; only its reply is
sent again if it was not sent before. Steps, in order: model call, usage line (so every real call
is metered, even one whose result write fails), result (If-None-Match), reply.
"""

from __future__ import annotations

import hashlib
import logging
import time
from enum import StrEnum
from typing import Any

from shared import contracts
from shared.contracts import (
    ContractError,
    InferenceRequest,
    InferenceResult,
    RejectionReason,
    RejectionRecord,
    TokenUsage,
    UsageRecord,
)
from shared.inference.model_clients import Completion
from shared.inference.model_errors import ModelCallError, ModelRequestRejected, is_transient
from shared.inference.replies import Reply
from shared.inference.results import StoredResult
from shared.messages import InboundMessage
from shared.runtime import Runtime, get_runtime
from shared.structured_logging import key_values, without_none
from shared.tenancy.registry import Deployment, Registry, Tenant
from shared.tenancy.routing import IsolationViolation, RoutingError

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    COMPLETED = "completed"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


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
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.tenant = tenant
        self.tenant_id = tenant_id
        self.request_id = request_id


class InferenceHandler:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def handle(self, message: InboundMessage) -> Outcome:
        try:
            return await self._handle(message)
        except _Rejected as rejection:
            await self._reject(message, rejection)
            return Outcome.REJECTED

    async def _handle(self, message: InboundMessage) -> Outcome:
        registry = await self._rt.registry.get()
        request, tenant = self._admit(message, registry)
        fields: dict[str, Any] = {"tenant_id": tenant.id, "request_id": request.request_id}

        existing = await self._rt.results.get(tenant.id, request.request_id)
        if existing is not None:
            replied = await self._reply_if_due(message, request, existing)
            self._log(logging.INFO, "inference.duplicate", message, replied=replied, **fields)
            return Outcome.DUPLICATE

        candidates = self._route(message, registry, tenant, request)
        # The resilience layer fails over along `candidates`; without it, the primary serves.
        primary = candidates[0]
        fields["deployment"] = primary.name
        completion, latency_ms = await self._call(message, primary, tenant, request, fields)
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
                deployment=primary.name,
                kind=primary.kind.value,
                model=completion.model,
                feature=request.feature,
                prompt_tokens=tokens.prompt_tokens,
                completion_tokens=tokens.completion_tokens,
                total_tokens=tokens.total_tokens,
                latency_ms=latency_ms,
                at=now,
            )
        )
        stored = await self._rt.results.save(
            InferenceResult(
                tenant_id=tenant.id,
                request_id=request.request_id,
                deployment=primary.name,
                model=completion.model,
                message=contracts.ChatMessage(role="assistant", content=completion.content),
                finish_reason=completion.finish_reason,
                usage=tokens,
                latency_ms=latency_ms,
                completed_at=now,
                feature=request.feature,
            )
        )
        replied = await self._reply_if_due(message, request, stored)
        self._log(
            logging.INFO,
            "inference.completed",
            message,
            latency_ms=latency_ms,
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            fallbacks=len(candidates) - 1,
            replied=replied,
            **fields,
        )
        return Outcome.COMPLETED

    def _route(
        self, message: InboundMessage, registry: Registry, tenant: Tenant, request: InferenceRequest
    ) -> list[Deployment]:
        try:
            return self._rt.router.candidates(registry, tenant)
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

    async def _call(
        self,
        message: InboundMessage,
        deployment: Deployment,
        tenant: Tenant,
        request: InferenceRequest,
        fields: dict[str, Any],
    ) -> tuple[Completion, int]:
        """The completion and its latency in ms; a request the model refuses is rejected, any
        other failure is logged and raised."""
        started = time.perf_counter()
        try:
            completion = await self._rt.models.complete(
                deployment, request.messages, request.parameters, tenant_id=tenant.id
            )
        except ModelRequestRejected as exc:
            raise _Rejected(
                RejectionReason.MODEL_REJECTED_REQUEST,
                f"deployment {deployment.name!r} refused the request (HTTP {exc.status_code})",
                tenant=tenant,
                tenant_id=tenant.id,
                request_id=request.request_id,
            ) from None
        except ModelCallError as exc:
            self._log(
                logging.WARNING,
                "inference.model_failed",
                message,
                transient=is_transient(exc),
                error_type=type(exc).__name__,
                status_code=exc.status_code,
                retry_after_s=exc.retry_after_s,
                **fields,
            )
            raise
        return completion, round((time.perf_counter() - started) * 1000)

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
                f"reply_to {message.reply_to[:64]!r} is not one of the tenant's reply queues",
                tenant=tenant,
                tenant_id=tenant.id,
                request_id=request.request_id,
            )
        return request, tenant

    async def _reply_if_due(
        self, message: InboundMessage, request: InferenceRequest, stored: StoredResult
    ) -> bool:
        if message.reply_to is None or stored.reply_sent:
            return False
        await self._rt.replies.send(
            Reply(
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
        )
        await self._rt.results.mark_reply_sent(
            request.tenant_id, request.request_id, self._rt.clock()
        )
        return True

    async def _reject(self, message: InboundMessage, rejection: _Rejected) -> None:
        tenant = rejection.tenant
        record = RejectionRecord(
            reason=rejection.reason,
            detail=rejection.detail,
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
            digest = hashlib.sha256(message.message_id.encode("utf-8")).hexdigest()[:40]
            await self._rt.replies.send(
                Reply(
                    queue=message.reply_to,
                    body=body,
                    correlation_id=rejection.request_id or message.message_id,
                    message_id=f"rejected-{digest}",
                    session_id=message.reply_to_session_id,
                    subject=contracts.REJECTED_TYPE,
                    application_properties=_reply_properties(
                        contracts.REJECTED_TYPE, tenant.id, rejection.request_id
                    ),
                )
            )
            replied = True
        self._log(
            logging.WARNING,
            "inference.rejected",
            message,
            tenant_id=rejection.tenant_id,
            request_id=rejection.request_id,
            reason=rejection.reason,
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


def _reply_properties(kind: str, tenant_id: str, request_id: str | None) -> dict[str, str | int]:
    props: dict[str, str | int] = {
        "type": kind,
        "version": contracts.CONTRACT_VERSION,
        "tenant_id": tenant_id,
    }
    if request_id is not None:
        props["request_id"] = request_id
    return props
