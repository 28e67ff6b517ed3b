"""Properties of the inference handler over every shape of request and of model answer (issue 8).

The handler runs over in-memory storage and replies, with the real `ModelClients`: the openai and
azure-ai-inference SDKs parse the answers, which are canned only at their HTTP transports. Each
example draws a request body (any Unicode, lone surrogates, empty and huge strings, odd roles,
nested junk, bytes that are not JSON), a registry in which the tenant reaches the openai adapter,
the azure-ai-inference adapter, or both, and the answers of the model's successive calls (200s
with omitted, null or mistyped fields, content as parts, odd finish reasons; 400 with and without
an error code; 408, 429 with every retry hint form, 5xx; 401/403/404 and odd statuses).

The properties:
- no exception escapes but `ModelConfigurationError` (401/403/404 and other statuses that say
  our configuration is wrong: the host abandons the message and waits for someone to fix it);
- the outcome is one of `Outcome`, and leaves what that outcome promises:
  COMPLETED: one result blob, one usage line that agrees with it, a reply under the queue's size
  limit when reply_to is allowed, and a redelivery is a DUPLICATE without a model call;
  REJECTED: one rejection record (and, to an allowed reply_to, a rejection reply) whose detail
  never holds the request's message text; RESCHEDULED: one copy of the request sent to
  `inference-requests` with a scheduled time; FAILED: one `failed` result; none of them a usage
  line unless the model answered.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast

import httpx2
from azure.servicebus.exceptions import MessageSizeExceededError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.contracts import RejectionReason
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_clients import ModelClients
from shared.inference.model_errors import ModelConfigurationError
from shared.inference.replies import Reply
from shared.messages import InboundMessage
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, parse_registry
from tests.fakes import FakeTime, RecordingReplySender, ScriptedModel, memory_runtime
from tests.transport_fakes import AzureTransport

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
CANARY = "Qz-canary-7731"
"""Put into every text content of a request: a rejection's detail must never hold it."""
QUEUE_LIMIT = 256 * 1024
"""Service Bus Standard's message size limit: a larger reply raises MessageSizeExceededError."""
REJECTION_REASONS = {
    value
    for key, value in vars(RejectionReason).items()
    if key.isupper() and isinstance(value, str)
}
REFUSALS = {400, 413, 422}
"""The statuses a model refuses a request with (`model_rejected_request`)."""


def _registries() -> dict[str, Registry]:
    """tailwind over all its deployments (openai first, azure-ai-inference last), over one
    openai deployment, or over one azure-ai-inference deployment."""
    doc = json.loads(DEVHOST_REGISTRY.read_text())
    out = {"full": parse_registry(json.dumps(doc), env=ENV)}
    for label, deployment in (("openai", "gpt-4o-mini-pool-a"), ("inference", "phi-4-pool")):
        pinned = json.loads(json.dumps(doc))
        tailwind = next(t for t in pinned["tenants"] if t["id"] == "tailwind")
        tailwind["deployments"] = [deployment]
        out[label] = parse_registry(json.dumps(pinned), env=ENV)
    return out


REGISTRIES = _registries()
KNOWN_TENANTS = {"tailwind", "contoso", "fabrikam"}


# ---- the model's answers, at the HTTP transport ---------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Script:
    """The answers of successive model calls, over both adapters; the last one repeats."""

    answers: list[Answer]
    served: list[int] = field(default_factory=list)
    """The status of each answer given, in order."""

    @property
    def calls(self) -> int:
        return len(self.served)

    def next(self) -> Answer:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.served.append(answer.status)
        return answer


class ScriptedAzureTransport(AzureTransport):
    def __init__(self, script: Script) -> None:
        super().__init__(200, b"")
        self.script = script

    async def send(self, request: Any, **kwargs: Any) -> Any:
        answer = self.script.next()
        self.status, self.body = answer.status, answer.body
        self.headers = {"content-type": "application/json", **answer.headers}
        return await super().send(request, **kwargs)


def openai_transport(script: Script) -> Callable[[httpx2.Request], httpx2.Response]:
    def respond(_: httpx2.Request) -> httpx2.Response:
        answer = script.next()
        headers = {"content-type": "application/json", **answer.headers}
        return httpx2.Response(answer.status, content=answer.body, headers=headers)

    return respond


class QueueLimitedReplies(RecordingReplySender):
    """Records replies; refuses one larger than the queue takes, as Service Bus does."""

    async def send(self, reply: Reply) -> None:
        if len(reply.body) > QUEUE_LIMIT:
            raise MessageSizeExceededError(message=f"{len(reply.body)} bytes")
        await super().send(reply)


# ---- strategies ----------------------------------------------------------------------------

UNICODE = st.characters(codec="utf-8")  # any character but a lone surrogate
ANY_CHAR = st.one_of(UNICODE, st.characters(categories=["Cs"]))
VALID_TEXT = st.text(UNICODE, max_size=24)  # what AMQP can carry
TEXT = st.one_of(VALID_TEXT, st.text(ANY_CHAR, max_size=24))  # half hold lone surrogates
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
BIG_TEXT = st.sampled_from([70_000, 300_000]).map(lambda n: "\u00e9" * n)  # an answer's
BIG_REQUEST_TEXT = st.just("a" * 80_000)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JUNK = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def with_canary(parts: tuple[str, str]) -> str:
    return parts[0] + CANARY + parts[1]


BROKEN = st.sampled_from([False, False, False, False, True])
"""Whether a field of a request gets an odd value (one time in five)."""


def either(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, so that many requests reach the model; else an odd one."""
    return BROKEN.flatmap(lambda broken: odd if broken else valid)


REQUEST_CONTENT = either(
    st.one_of(
        st.tuples(VALID_TEXT, VALID_TEXT).map(with_canary),
        st.tuples(BIG_REQUEST_TEXT, st.just("")).map(with_canary),
        st.just(CANARY),
    ),
    st.one_of(st.tuples(TEXT, TEXT).map(with_canary), JUNK),  # surrogates, or not text
)
ROLE = either(
    st.sampled_from(["user", "system", "assistant"]),
    st.one_of(st.sampled_from(["tool", "developer", "function", "USER", "", " user"]), TEXT, JUNK),
)
REQUEST_MESSAGE = either(
    st.fixed_dictionaries({"role": ROLE, "content": REQUEST_CONTENT}),
    st.one_of(
        st.fixed_dictionaries(
            {"role": ROLE, "content": REQUEST_CONTENT},
            optional={"name": TEXT, "tool_calls": JUNK},
        ),
        st.fixed_dictionaries({}, optional={"role": ROLE, "content": REQUEST_CONTENT}),
        JUNK,
    ),
)
PARAMETERS = either(
    st.fixed_dictionaries(
        {},
        optional={
            "max_tokens": st.integers(1, 128_000),
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0, 1),
            "stop": st.lists(VALID_TEXT, min_size=1, max_size=4),
            "seed": st.integers(),
        },
    ),
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "max_tokens": st.one_of(st.integers(-5, 200_000), JUNK),
                "temperature": st.one_of(st.floats(), JUNK),
                "top_p": st.floats(),
                "presence_penalty": st.floats(-3, 3),
                "stop": st.one_of(st.lists(TEXT, max_size=5), JUNK),
                "seed": st.one_of(st.integers(), JUNK),
            },
        ),
        st.dictionaries(TEXT, JUNK, max_size=3),
        JUNK,
    ),
)
TENANT_ID = either(
    st.sampled_from(["tailwind", "contoso", "fabrikam"]),
    st.one_of(
        st.sampled_from(["northwind", "Tailwind", "", "../tailwind", "tailwind\ud800"]),
        TEXT,
        JUNK,
    ),
)
REQUEST_ID = either(
    st.sampled_from(["req-1", "r:2.x_y", "A" * 128]),
    st.one_of(st.sampled_from(["", "../../x", "-leading", "A" * 129, "req\udc00"]), TEXT, JUNK),
)
DOCUMENT = either(
    st.fixed_dictionaries(
        {
            "tenant_id": TENANT_ID,
            "request_id": REQUEST_ID,
            "messages": either(st.lists(REQUEST_MESSAGE, min_size=1, max_size=3), JUNK),
        },
        optional={
            "parameters": PARAMETERS,
            "feature": either(st.sampled_from(["faq", "faq.v2"]), TEXT),
            "type": either(st.just("inference.request"), TEXT),
            "version": either(st.just(1), JUNK),
        },
    ),
    st.fixed_dictionaries(  # required fields missing, fields nobody knows
        {},
        optional={
            "tenant_id": TENANT_ID,
            "request_id": REQUEST_ID,
            "messages": st.lists(REQUEST_MESSAGE, max_size=2),
            "extra": JUNK,
            "Messages": JUNK,
        },
    ),
)


@st.composite
def json_bytes(draw: st.DrawFn, document: st.SearchStrategy[Any]) -> bytes:
    value = draw(document)
    style = draw(st.sampled_from(["ascii", "utf-8", "surrogatepass"]))
    if style == "ascii":  # a lone surrogate travels as its \\u escape: valid JSON
        return json.dumps(value).encode()
    text = json.dumps(value, ensure_ascii=False)
    if style == "utf-8":
        return text.encode("utf-8", "replace")
    return text.encode("utf-8", "surrogatepass")  # bytes that are not UTF-8


REQUEST_BODY = either(
    json_bytes(DOCUMENT),
    st.one_of(
        json_bytes(JUNK),
        st.binary(max_size=64),
        st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),  # nested beyond any parser
    ),
)

COUNT = st.one_of(st.none(), st.integers(-5, 10**6), st.floats(), st.booleans(), HEADER_TEXT, JUNK)
ANSWER_CONTENT = st.one_of(
    st.none(),
    TEXT,
    BIG_TEXT,
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(TEXT, st.none())}),
            JUNK,
        ),
        max_size=3,
    ),
    JUNK,
)
ANSWER_MESSAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": ANSWER_CONTENT},
        optional={"refusal": st.one_of(st.none(), TEXT), "tool_calls": JUNK},
    ),
    st.fixed_dictionaries({}, optional={"role": JUNK, "content": ANSWER_CONTENT}),
    JUNK,
)
FINISH_REASON = st.one_of(
    st.none(),
    st.sampled_from(["stop", "length", "content_filter", "tool_calls", "function_call"]),
    TEXT,
    JUNK,
)
CHOICE = st.one_of(
    st.fixed_dictionaries(
        {"index": st.just(0), "message": ANSWER_MESSAGE, "finish_reason": FINISH_REASON}
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "index": JUNK,
            "message": ANSWER_MESSAGE,
            "finish_reason": FINISH_REASON,
            "content_filter_results": JUNK,
        },
    ),
    st.none(),
    JUNK,
)
USAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"prompt_tokens": COUNT, "completion_tokens": COUNT, "total_tokens": COUNT}
    ),
    st.fixed_dictionaries(
        {},
        optional={"prompt_tokens": COUNT, "completion_tokens": COUNT, "total_tokens": COUNT},
    ),
    JUNK,
)
COMPLETION = st.fixed_dictionaries(
    {"choices": st.one_of(st.lists(CHOICE, min_size=1, max_size=2), st.just([]), JUNK)},
    optional={
        "id": JUNK,
        "object": st.one_of(st.just("chat.completion"), JUNK),
        "created": JUNK,
        "model": st.one_of(st.none(), TEXT, JUNK),
        "usage": USAGE,
        "system_fingerprint": JUNK,
    },
)
GOOD_COMPLETION = st.builds(
    lambda content, usage: {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": usage,
    },
    st.one_of(TEXT, BIG_TEXT),
    USAGE,
)

NUMBER_TEXT = st.one_of(
    st.integers(-5, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "5000", "1e400", "inf", "nan", "-1", " 7 ", "1_000"]),
)
HTTP_DATE = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda when: format_datetime(when, usegmt=True))
RETRY_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "retry-after-ms",
            "x-ms-retry-after-ms",
            "retry-after",
            "Retry-After",
            "X-MS-RETRY-AFTER-MS",
        ]
    ),
    st.one_of(NUMBER_TEXT, HTTP_DATE, HEADER_TEXT),
    max_size=3,
)
ERROR_CODE = st.one_of(
    st.sampled_from(
        ["content_filter", "context_length_exceeded", "BadRequest", "invalid_request_error", "429"]
    ),
    HEADER_TEXT,
    JUNK,
)
ERROR_DOCUMENT = st.one_of(
    st.builds(lambda code: {"error": {"code": code, "message": "refused"}}, ERROR_CODE),
    st.builds(
        lambda code: {"error": {"code": "BadRequest", "innererror": {"code": code}}}, ERROR_CODE
    ),
    st.builds(lambda code: {"code": code, "message": "refused"}, ERROR_CODE),
    JUNK,
)
OK_HEADERS: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "content-type": st.sampled_from(["text/html", "text/plain", "application/json"]),
            "x-ratelimit-remaining-tokens": NUMBER_TEXT,
            "x-ratelimit-remaining-requests": NUMBER_TEXT,
        },
    ),
)
ANSWER = st.one_of(
    st.builds(Answer, st.just(200), json_bytes(COMPLETION), OK_HEADERS),
    st.builds(Answer, st.just(200), json_bytes(GOOD_COMPLETION), OK_HEADERS),
    st.builds(Answer, st.just(200), st.one_of(st.just(b""), st.binary(max_size=32)), OK_HEADERS),
    st.builds(
        Answer,
        st.sampled_from([400, 413, 422]),
        st.one_of(json_bytes(ERROR_DOCUMENT), st.just(b""), st.binary(max_size=16)),
    ),
    st.builds(
        Answer,
        st.sampled_from([408, 409, 429, 429, 500, 502, 503, 504]),
        st.one_of(json_bytes(ERROR_DOCUMENT), st.just(b"")),
        RETRY_HEADERS,
    ),
    st.builds(
        Answer,
        st.sampled_from([204, 302, 401, 403, 404, 418]),
        st.one_of(json_bytes(ERROR_DOCUMENT), st.just(b"")),
    ),
)
PROPERTY_VALUE = st.one_of(
    VALID_TEXT,
    st.integers(-5, 10**20),
    st.binary(max_size=8),
    st.sampled_from(["0001-01-01T00:00:00+00:00", "2025-01-02T03:00:00+00:00", "1"]),
)
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.just("inference.request"), st.just(b"inference.request"), VALID_TEXT),
        "version": st.one_of(st.just(1), st.just("1"), PROPERTY_VALUE),
        "reschedule_attempt": PROPERTY_VALUE,
        "first_enqueued_at": PROPERTY_VALUE,
        "model_attempts": PROPERTY_VALUE,
        "x": PROPERTY_VALUE,
    },
)


@dataclass(frozen=True)
class Delivery:
    body: bytes
    message_id: str
    reply_to: str | None
    properties: dict[str, Any]
    enqueued_time: datetime | None

    def message(self) -> InboundMessage:
        return InboundMessage(
            body=self.body,
            message_id=self.message_id,
            reply_to=self.reply_to,
            application_properties=self.properties,
            delivery_count=1,
            enqueued_time=self.enqueued_time,
        )


DELIVERY = st.builds(
    Delivery,
    body=REQUEST_BODY.filter(lambda body: len(body) <= QUEUE_LIMIT),  # what the queue took
    message_id=st.one_of(st.just("m-1"), st.text(UNICODE, min_size=1, max_size=200)),
    reply_to=st.sampled_from(
        [None, "inference-results", "replies-tailwind", "replies-contoso", "someone-elses"]
    ),
    properties=st.one_of(st.just({}), PROPERTIES),
    enqueued_time=st.one_of(
        st.none(),
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2025, 1, 2), timezones=st.just(UTC)
        ),
    ),
)


def valid_delivery(tenant: str) -> st.SearchStrategy[Delivery]:
    body = json.dumps(
        {
            "tenant_id": tenant,
            "request_id": "req-1",
            "messages": [{"role": "user", "content": f"Which plan? {CANARY}"}],
            "parameters": {"max_tokens": 50},
        }
    ).encode()
    return st.builds(
        Delivery,
        body=st.just(body),
        message_id=st.just("m-1"),
        reply_to=st.just("inference-results"),
        properties=st.just({}),
        enqueued_time=st.none(),
    )


# ---- the run and its checks --------------------------------------------------------------------


@dataclass
class Run:
    store: MemoryBlobStore
    replies: QueueLimitedReplies
    script: Script
    outcome: Outcome | None = None
    error: BaseException | None = None
    redelivered: Outcome | None = None
    calls_before_redelivery: int = 0

    def blobs(self, container: str) -> dict[str, dict[str, Any]]:
        return {n: json.loads(self.store.text(container, n)) for n in self.store.names(container)}

    def usage_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for name in self.store.names(names.USAGE_CONTAINER):
            text = self.store.text(names.USAGE_CONTAINER, name)
            # "\n" only: a JSON line may hold U+0085 or U+2028, which str.splitlines splits on.
            lines += [json.loads(line) for line in text.split("\n") if line]
        return lines


async def deliver(registry: Registry, delivery: Delivery, answers: list[Answer]) -> Run:
    script = Script(answers)
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(openai_transport(script)))
    models = ModelClients(
        api_key="k", openai_http_client=http, azure_transport=ScriptedAzureTransport(script)
    )
    run = Run(store=MemoryBlobStore(), replies=QueueLimitedReplies(), script=script)
    runtime = memory_runtime(
        registry,
        model=cast(ScriptedModel, models),  # the real adapters, faked at their transports
        replies=run.replies,
        store=run.store,
        fake_time=FakeTime(),
    )
    try:
        run.outcome = await handle_inference_request(delivery.message(), runtime)
        if run.outcome in (Outcome.COMPLETED, Outcome.FILTERED):
            run.calls_before_redelivery = script.calls
            run.redelivered = await handle_inference_request(delivery.message(), runtime)
    except ModelConfigurationError as exc:
        run.error = exc
    finally:
        await models.close()
        await http.aclose()
    return run


def check(run: Run, delivery: Delivery) -> None:
    results = run.blobs(names.RESULTS_CONTAINER)
    rejected = run.blobs(names.REJECTED_CONTAINER)
    usage = run.usage_lines()
    served = run.script.served
    event(f"outcome: {run.outcome or type(run.error).__name__}")

    if run.error is not None:  # a configuration error: nothing is stored, the host abandons
        assert served, "a configuration error without a model call"
        assert served[-1] not in {200, 204, 408, 409, 429, 500, 502, 503, 504} | REFUSALS, served
        assert (results, rejected, usage) == ({}, {}, [])
        return

    assert isinstance(run.outcome, Outcome)
    if run.outcome in (Outcome.COMPLETED, Outcome.FILTERED):  # FILTERED: a content filter's
        [result] = results.values()
        [line] = usage
        assert rejected == {}
        if run.outcome is Outcome.FILTERED:  # a result without the text, metered as filtered
            assert result["status"] == "filtered"
            assert result["message"] is None
            assert line["content_filter"] == result["content_filter"]["stage"]
        else:
            assert result["status"] == "succeeded"
            assert isinstance(result["message"]["content"], str)
        assert result["usage"] == {
            "prompt_tokens": line["prompt_tokens"],
            "completion_tokens": line["completion_tokens"],
            "total_tokens": line["total_tokens"],
        }
        assert line["total_tokens"] == line["prompt_tokens"] + line["completion_tokens"] >= 0
        assert (line["request_id"], line["deployment"]) == (
            result["request_id"],
            result["deployment"],
        )
        if delivery.reply_to is None:
            assert run.replies.sent == []
        else:  # the whole result, or (over the queue's limit) a reply pointing to it
            [reply] = run.replies.sent
            [name] = results
            whole = len(run.store.text(names.RESULTS_CONTAINER, name).encode())
            assert (reply.queue, reply.subject) == (delivery.reply_to, "inference.result")
            assert len(reply.body) <= QUEUE_LIMIT
            answered = json.loads(reply.body)
            assert answered["request_id"] == result["request_id"]
            assert answered["truncated"] is (whole > QUEUE_LIMIT)
            if answered["truncated"]:
                assert answered["message"] is None
                assert answered["result_blob"] == f"results/{name}"
        # A redelivery is answered from the result: no second call, no second usage line.
        assert run.redelivered is Outcome.DUPLICATE
        assert run.script.calls == run.calls_before_redelivery
        assert len(run.usage_lines()) == 1
    elif run.outcome is Outcome.REJECTED:
        [(name, record)] = rejected.items()
        assert (results, usage) == ({}, [])
        assert record["reason"] in REJECTION_REASONS
        event(f"rejected: {record['reason']}")
        assert CANARY not in record["detail"], record["detail"]
        known = record["tenant_id"] in KNOWN_TENANTS  # filed under a tenant the registry knows
        assert name.startswith(f"{record['tenant_id']}/" if known else "_unknown/"), name
        if record["reason"] == RejectionReason.MODEL_REJECTED_REQUEST:
            assert served[-1] in REFUSALS, served
        for reply in run.replies.sent:
            assert reply.subject == "inference.rejected"
            assert reply.queue == delivery.reply_to
            assert CANARY.encode() not in reply.body
    elif run.outcome is Outcome.RESCHEDULED:
        assert (results, rejected, usage) == ({}, {}, [])
        [copy] = run.replies.sent
        assert copy.queue == names.INFERENCE_REQUESTS
        assert copy.body == delivery.body
        assert copy.scheduled_enqueue_time_utc is not None
        assert copy.reply_to == delivery.reply_to
    elif run.outcome is Outcome.FAILED:
        [result] = results.values()
        assert (rejected, usage) == ({}, [])
        assert result["status"] == "failed"
        assert result["failure"]["reason"]
    else:
        raise AssertionError(f"a first delivery cannot be {run.outcome}")


PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    derandomize=bool(os.environ.get("CI")),  # repeatable in CI, exploring locally
)


@PROPERTY_SETTINGS
@given(
    delivery=DELIVERY,
    registry=st.sampled_from(sorted(REGISTRIES)),
    answers=st.lists(ANSWER, min_size=1, max_size=4),
)
def test_any_request_over_any_answers_ends_in_an_outcome_or_a_configuration_error(
    delivery: Delivery, registry: str, answers: list[Answer]
) -> None:
    run = asyncio.run(deliver(REGISTRIES[registry], delivery, answers))
    check(run, delivery)


@PROPERTY_SETTINGS
@given(
    data=st.data(),
    registry=st.sampled_from(sorted(REGISTRIES)),
    answers=st.lists(ANSWER, min_size=1, max_size=4),
)
def test_a_valid_request_over_any_answers_ends_in_an_outcome_or_a_configuration_error(
    data: st.DataObject, registry: str, answers: list[Answer]
) -> None:
    tenant = data.draw(st.sampled_from(["tailwind", "contoso", "fabrikam"]))
    delivery = data.draw(valid_delivery(tenant))
    run = asyncio.run(deliver(REGISTRIES[registry], delivery, answers))
    check(run, delivery)
