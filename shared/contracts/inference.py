"""The message contracts tenants rely on: `inference.request` v1 in, `inference.result` v1 out.

docs/contracts.md is the prose version of this module; keep the two in step. Validation errors are
turned into one readable line per problem (`messages[0].role: Input should be ...`) that names the
field and never repeats the submitted value (it may be personal data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REQUEST_TYPE: Final = "inference.request"
RESULT_TYPE: Final = "inference.result"
REJECTED_TYPE: Final = "inference.rejected"
CONTRACT_VERSION: Final = 1

# Ids end up in blob names (`results/<tenant_id>/<request_id>.json`), so they are kept to
# characters that cannot escape their tenant's prefix.
TENANT_ID_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
LABEL_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class RejectionReason:
    """Why a message was completed without a result (the `reason` of a rejection record)."""

    INVALID_JSON: Final = "invalid_json"
    INVALID_REQUEST: Final = "invalid_request"
    UNSUPPORTED_TYPE: Final = "unsupported_type"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    UNKNOWN_TENANT: Final = "unknown_tenant"
    NO_USABLE_DEPLOYMENT: Final = "no_usable_deployment"
    REPLY_TO_NOT_ALLOWED: Final = "reply_to_not_allowed"
    MODEL_REJECTED_REQUEST: Final = "model_rejected_request"


class ContractError(Exception):
    """A message that breaks the contract: it is rejected (recorded, completed), never retried."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        tenant_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # The ids the body claims, when they are well-formed: the handler files the rejection
        # under the tenant only if the registry knows it, and correlates the reply by request id.
        self.tenant_id = tenant_id
        self.request_id = request_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class InferenceParameters(_Strict):
    max_tokens: int | None = Field(default=None, ge=1, le=128_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: list[str] | None = Field(default=None, min_length=1, max_length=4)
    seed: int | None = None

    def given(self) -> dict[str, Any]:
        """The parameters the tenant set, and only those (the model's defaults apply otherwise)."""
        return self.model_dump(exclude_none=True)


class InferenceRequest(_Strict):
    """`inference.request` v1: the JSON body a tenant app puts on the `inference-requests` queue."""

    type: Literal["inference.request"] = REQUEST_TYPE
    version: Literal[1] = CONTRACT_VERSION
    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    parameters: InferenceParameters = Field(default_factory=InferenceParameters)
    feature: str | None = Field(default=None, pattern=LABEL_PATTERN)


class TokenUsage(_Strict):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class InferenceResult(_Strict):
    """`inference.result` v1: written to `results/<tenant_id>/<request_id>.json` and sent to
    `reply_to` (correlation id = request id)."""

    type: Literal["inference.result"] = RESULT_TYPE
    version: Literal[1] = CONTRACT_VERSION
    tenant_id: str
    request_id: str
    status: Literal["succeeded"] = "succeeded"
    deployment: str
    model: str | None
    message: ChatMessage
    finish_reason: str | None
    usage: TokenUsage
    latency_ms: int
    completed_at: datetime
    feature: str | None = None


class RejectionRecord(_Strict):
    """`inference.rejected` v1: written to `rejected/<tenant or _unknown>/<message_id>.json` and,
    for a known tenant with an allowed `reply_to`, sent there too."""

    type: Literal["inference.rejected"] = REJECTED_TYPE
    version: Literal[1] = CONTRACT_VERSION
    reason: str
    detail: str
    tenant_id: str | None
    request_id: str | None
    message_id: str
    delivery_count: int | None
    rejected_at: datetime


class UsageRecord(_Strict):
    """One line of `usage/<tenant_id>/<yyyy-mm-dd>.jsonl`: one model call."""

    tenant_id: str
    request_id: str
    deployment: str
    kind: str
    model: str | None
    feature: str | None
    calls: int = 1
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: int
    at: datetime


def format_validation_error(error: ValidationError) -> str:
    """One `field: problem` per error, joined by `; `; the submitted values are never repeated."""
    return "; ".join(
        f"{error_location(item['loc'])}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )


def error_location(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a path a reader knows: `messages[0].role`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "body"


def parse_inference_request(
    body: bytes, application_properties: Mapping[str, object] | None = None
) -> InferenceRequest:
    """Decode and validate a request body; raises ContractError with a readable detail.

    `type` and `version` may be given in the body or as application properties of the same
    names; when both are given they must agree. When neither is, v1 is assumed.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"the body is not valid UTF-8 JSON ({type(exc).__name__} at position "
        detail += f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))})"
        raise ContractError(RejectionReason.INVALID_JSON, detail) from None
    if not isinstance(document, dict):
        raise ContractError(
            RejectionReason.INVALID_JSON,
            f"the body must be a JSON object, not {type(document).__name__}",
        )
    ids = {
        "tenant_id": _well_formed(document.get("tenant_id"), TENANT_ID_PATTERN),
        "request_id": _well_formed(document.get("request_id"), REQUEST_ID_PATTERN),
    }
    props = application_properties or {}
    for name, expected, reason in (
        ("type", REQUEST_TYPE, RejectionReason.UNSUPPORTED_TYPE),
        ("version", CONTRACT_VERSION, RejectionReason.UNSUPPORTED_VERSION),
    ):
        problem = _header_problem(document, props, name, expected)
        if problem:
            raise ContractError(reason, problem, **ids)
    document = {**document, "type": REQUEST_TYPE, "version": CONTRACT_VERSION}
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise ContractError(
            RejectionReason.INVALID_REQUEST, format_validation_error(exc), **ids
        ) from None


def _well_formed(value: object, pattern: str) -> str | None:
    return value if isinstance(value, str) and re.match(pattern, value) else None


def _header_problem(
    document: Mapping[str, object], props: Mapping[str, object], name: str, expected: str | int
) -> str | None:
    for source, value in (("body", document.get(name)), ("application property", props.get(name))):
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if text != str(expected):
            return f"{name} in the {source} is {text[:40]!r}; this endpoint takes {expected!r}"
    return None
