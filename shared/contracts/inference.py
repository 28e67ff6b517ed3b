"""The message contracts tenants rely on: `inference.request` v1 in, `inference.result` v1 out.

docs/contracts.md is the prose version of this module; keep the two in step. Validation errors are
turned into one readable line per problem (`messages[0].role: Input should be ...`) that names the
field and never repeats the submitted value (it may be personal data).

Text must be Unicode that UTF-8 can encode. JSON allows `\\ud83d` (half of a surrogate pair) and
`json.loads` turns it into a lone surrogate that no SDK, HTTP client or blob name can encode
("surrogates not allowed"; e.g. Aider-AI/aider#3693). Such a request can never succeed anywhere, so
every string of the body, keys included, is checked before anything else reads it and the request
is rejected `invalid_request`, naming the field, not the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

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
    REQUEST_EXCEEDS_QUOTA: Final = "request_exceeds_quota"
    """One request needs more tokens (prompt estimate + max_tokens) than the tenant's whole
    tokens-per-minute quota: it could never be admitted, so it is refused at once."""
    REQUEST_ID_REUSED: Final = "request_id_reused"
    """The tenant already has a result for this request_id, for a different request (messages,
    parameters or feature differ): an idempotency key never answers another request."""


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


def unencodable_position(text: str) -> int | None:
    """The index of the first character UTF-8 cannot encode (a surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _encodable(text: str) -> str:
    position = unencodable_position(text)
    if position is not None:
        raise ValueError(_surrogate_problem(position))
    return text


def _surrogate_problem(position: int) -> str:
    return (
        f"contains a lone UTF-16 surrogate (U+D800-U+DFFF) at character {position}, "
        "which is not Unicode text and cannot be encoded as UTF-8"
    )


# Text that reaches an SDK or a blob: a model built in code (not parsed) is held to it too.
Text = Annotated[str, AfterValidator(_encodable)]


def _surrogates_replaced(text: str) -> str:
    return text if unencodable_position(text) is None else _SURROGATES.sub("\ufffd", text)


_SURROGATES: Final = re.compile("[\ud800-\udfff]")
# Text a record repeats from the broker (a message id): kept, each lone surrogate as U+FFFD, so
# the record can always be written (found by tests/security/test_fuzz_inference.py).
EchoedText = Annotated[str, AfterValidator(_surrogates_replaced)]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Text


class InferenceParameters(_Strict):
    max_tokens: int | None = Field(default=None, ge=1, le=128_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: list[Text] | None = Field(default=None, min_length=1, max_length=4)
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


class FailureReason:
    """Why a request that was admitted ended without an answer (`failure.reason`)."""

    DEADLINE_EXCEEDED: Final = "deadline_exceeded"
    ATTEMPTS_EXHAUSTED: Final = "attempts_exhausted"
    CANNOT_RESCHEDULE: Final = "cannot_reschedule"
    """The request had to wait, but its copy is too large for the queue (near the size limit)."""


class Failure(_Strict):
    """What a `failed` result says: why, after how many attempts, since when (never the prompt)."""

    reason: str
    detail: str
    attempts: int = Field(ge=0, description="model calls made, over every delivery")
    reschedules: int = Field(ge=0, description="times the request was put back on the queue")
    first_enqueued_at: datetime | None = None


FilterStage = Literal["prompt", "completion"]


class FilterCategory(_Strict):
    """One category a content filter flagged: `hate`, `sexual`, `violence`, `self_harm` (with a
    `severity`: `safe`, `low`, `medium`, `high`), `jailbreak`, `indirect_attack`,
    `protected_material_text`, `protected_material_code`, `profanity` (with `detected`), or
    `custom_blocklists`. `filtered`: this category is why the content was withheld."""

    category: str = Field(max_length=64)
    filtered: bool
    severity: str | None = Field(default=None, max_length=16)
    detected: bool | None = None


class ContentFilter(_Strict):
    """Why a `filtered` result has no answer: which `stage` was filtered (`prompt`: the request
    was refused before any answer, Azure OpenAI's HTTP 400 `content_filter` or a Content Safety
    pre-check; `completion`: the answer was withheld, `finish_reason: content_filter` or a
    post-check), by whom (`source`: `azure_openai` for the deployment's own filter, also on AI
    Services; `content_safety` for the optional Azure AI Content Safety check), and the flagged
    categories. Never the text that was filtered."""

    stage: FilterStage
    source: Literal["azure_openai", "content_safety"] = "azure_openai"
    categories: tuple[FilterCategory, ...] = ()

    @property
    def filtered_categories(self) -> tuple[str, ...]:
        return tuple(c.category for c in self.categories if c.filtered)


class InferenceResult(_Strict):
    """`inference.result` v1: written to `results/<tenant_id>/<request_id>.json` and sent to
    `reply_to` (correlation id = request id).

    `status` is `succeeded` (then `deployment`, `message`, `usage` are set), `failed` (the
    models could not serve it before the tenant's deadline; `failure` says why) or `filtered` (a
    content filter refused the prompt or withheld the answer: no `message`, `finish_reason`
    `content_filter`, `content_filter` says which stage and categories; never retried, never
    sent to another deployment). A reply too large for the queue carries `truncated: true`, no
    `message`, and `result_blob`, where the whole result is kept."""

    type: Literal["inference.result"] = RESULT_TYPE
    version: Literal[1] = CONTRACT_VERSION
    tenant_id: str
    request_id: str
    status: Literal["succeeded", "failed", "filtered"] = "succeeded"
    deployment: str | None
    model: str | None
    model_version: str | None = None
    message: ChatMessage | None
    finish_reason: str | None
    usage: TokenUsage
    latency_ms: int
    completed_at: datetime
    feature: str | None = None
    failure: Failure | None = None
    truncated: bool = False
    result_blob: str | None = None
    content_filter: ContentFilter | None = None
    request_sha256: str | None = Field(
        default=None,
        description="sha256 of the canonical request this result answers (messages, parameters, "
        "feature; shared.inference.results.request_digest): a repeat of the request_id is "
        "answered from this result only if its digest is the same",
    )


class RejectionRecord(_Strict):
    """`inference.rejected` v1: written to `rejected/<tenant or _unknown>/<message_id>.json` and,
    for a known tenant with an allowed `reply_to`, sent there too."""

    type: Literal[
        "inference.rejected", "feedback.rejected", "finetune.rejected", "training.rejected"
    ] = REJECTED_TYPE
    version: Literal[1] = CONTRACT_VERSION
    reason: str
    detail: str
    tenant_id: str | None
    request_id: str | None
    message_id: EchoedText
    delivery_count: int | None
    rejected_at: datetime
    error_code: str | None = Field(
        default=None,
        description="model_rejected_request: the service's error code (e.g. content_filter, "
        "context_length_exceeded), never its message or the prompt",
    )


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
    content_filter: FilterStage | None = Field(
        default=None,
        description="the call ended in a filtered result: `prompt` or `completion` (counted "
        "per tenant: shared.inference.content_filter)",
    )


def format_validation_error(error: ValidationError) -> str:
    """One `field: problem` per error, joined by `; `; the submitted values are never repeated."""
    return "; ".join(
        f"{error_location(_named_safely(item['loc'], item['type']))}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )


def _named_safely(loc: tuple[int | str, ...], kind: str) -> tuple[int | str, ...]:
    """An unknown field is named only if its name reads as a field name (it was sent, so it may
    be anything: text, an email): `messages[0].<unknown field>` otherwise."""
    if kind != "extra_forbidden" or not loc:
        return loc
    key = loc[-1]
    if isinstance(key, str) and not _SAFE_TOKEN.fullmatch(key):
        return (*loc[:-1], "<unknown field>")
    return loc


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
    document = decode_object(body)
    ids = checked_envelope(
        document,
        application_properties,
        contract_type=REQUEST_TYPE,
        version=CONTRACT_VERSION,
        invalid_reason=RejectionReason.INVALID_REQUEST,
    )
    document = {**document, "type": REQUEST_TYPE, "version": CONTRACT_VERSION}
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise ContractError(
            RejectionReason.INVALID_REQUEST, format_validation_error(exc), **ids
        ) from None


def decode_object(data: bytes, *, what: str = "body") -> dict[str, Any]:
    """`data` as a JSON object; ContractError `invalid_json` (naming `what`: body, row) if it is
    not UTF-8 JSON, nested too deeply to read, or not an object. Every contract starts here."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"the {what} is not valid UTF-8 JSON ({type(exc).__name__} at position "
        detail += f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))})"
        raise ContractError(RejectionReason.INVALID_JSON, detail) from None
    except RecursionError:  # json.loads recurses once per nesting level
        raise ContractError(
            RejectionReason.INVALID_JSON, f"the {what} is nested too deeply to be read"
        ) from None
    if not isinstance(document, dict):
        raise ContractError(
            RejectionReason.INVALID_JSON,
            f"the {what} must be a JSON object, not {type(document).__name__}",
        )
    return document


def checked_envelope(
    document: Mapping[str, Any],
    application_properties: Mapping[str, object] | None,
    *,
    contract_type: str,
    version: int,
    invalid_reason: str,
) -> dict[str, str | None]:
    """The ids a decoded body claims (when well-formed), after the checks every contract shares:
    all its text encodable (`invalid_reason` otherwise), and `type` / `version` in the body or
    the application properties, if given, the contract's (`unsupported_type` / `_version`)."""
    ids = {
        "tenant_id": _well_formed(document.get("tenant_id"), TENANT_ID_PATTERN),
        "request_id": _well_formed(document.get("request_id"), REQUEST_ID_PATTERN),
    }
    problems = unencodable_text(document)
    if problems:
        raise ContractError(invalid_reason, "; ".join(problems), **ids)
    props = application_properties or {}
    for name, expected, reason in (
        ("type", contract_type, RejectionReason.UNSUPPORTED_TYPE),
        ("version", version, RejectionReason.UNSUPPORTED_VERSION),
    ):
        problem = _header_problem(document, props, name, expected)
        if problem:
            raise ContractError(reason, problem, **ids)
    return ids


def unencodable_text(document: object, *, limit: int = 8) -> list[str]:
    """`path: problem` for each string (value or key) of a decoded JSON document that UTF-8
    cannot encode, in document order, at most `limit` (then a count of the rest).

    Paths read as in validation errors (`messages[0].content`, `parameters.stop[1]`); a bad key
    is reported at its object (`parameters: a field name ...`), as the key itself is not text a
    reader could be shown. Never repeats the text.
    """
    problems: list[str] = []
    stack: list[tuple[str, object]] = [("", document)]
    while stack:
        path, value = stack.pop()
        children: list[tuple[str, object]] = []
        if isinstance(value, str):
            position = unencodable_position(value)
            if position is not None:
                problems.append(f"{path or 'body'}: {_surrogate_problem(position)}")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = str(key)
                if unencodable_position(name) is not None:
                    problems.append(
                        f"{path or 'body'}: a field name contains a lone UTF-16 surrogate "
                        "and cannot be encoded as UTF-8"
                    )
                    continue
                # A key is named only if it reads as a field name: a sender's key may be any
                # text (an email), never repeated (found by tests/security/test_fuzz_batch.py).
                shown = name if _SAFE_TOKEN.fullmatch(name) else "<unknown field>"
                children.append((f"{path}.{shown}" if path else shown, item))
        elif isinstance(value, list):
            children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
        stack.extend(reversed(children))
    if len(problems) > limit:
        problems = [*problems[:limit], f"and {len(problems) - limit} more such fields"]
    return problems


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
            # Named back only when it reads as a contract name, never as free text.
            shown = repr(text) if _SAFE_TOKEN.fullmatch(text) else "another value"
            return f"{name} in the {source} is {shown}; this endpoint takes {expected!r}"
    return None


# What a detail may repeat of what was sent: a short token such as a field or contract name.
_SAFE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}|[0-9]{1,9}")
