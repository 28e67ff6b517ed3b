"""End to end through devhost: one message of each kind of issue 8, each answered or rejected with
its reason, and nothing dead-lettered.

Everything is real (the broker with its 256 KB message limit, Azurite, the Functions host process
running `function_app.py`, the model simulator), and one more model endpoint: the simulator only
answers well-formed completions, 429s with both `retry-after-ms` and `retry-after`, and 5xx, so the
answers it cannot give (null usage counts, a 300 KB answer, a 429 whose only hint is
`x-ms-retry-after-ms`, a content-filter 400) come from `FieldModel`, a small Azure OpenAI endpoint
in this process that the registry names for four deployments, each dedicated to one tenant:

1. unencodable text, tailwind: `"Hello \\ud83d world"` -> rejected `invalid_request`, naming
   `messages[0].content`;
2. null answer fields, field-null-usage: usage with `completion_tokens: null` -> a result with
   usage 9/0/9 and one usage line;
3. a reply over the queue limit, field-huge: a 300 KB answer -> a compact result reply,
   `truncated`, with `result_blob`; the model is not called again;
4. tuned, not tuned yet, northwind -> a result from a pooled deployment (simulator);
5. an AMQP value body, tailwind: the request as an AMQP map -> a result; values that are no JSON
   request (binary that is not UTF-8; a list nested 63 deep, the deepest the SDK's decoder takes)
   -> `invalid_json` records under `rejected/_unknown/`, not dead letters;
6. `x-ms-retry-after-ms` only, field-retry-hint: a 429 asking for 3 s, then a 200 -> a result,
   the retry having waited for the hint;
7. a content filter, field-content-filter: a 400 with code `content_filter` -> a `filtered`
   result naming the category (violence), never the prompt, never retried.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.amqp import AmqpAnnotatedMessage
from azure.servicebus.exceptions import ServiceBusError
from azure.storage.blob.aio import BlobServiceClient

from devhost.stack import REGISTRY, SERVICEBUS_CONFIG, LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_message
from shared.storage import names

pytestmark = pytest.mark.slow

POOLED = {"gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b", "phi-4-pool"}
NULL_USAGE, HUGE, RETRY_HINT, CONTENT_FILTER = (
    "field-null-usage",
    "field-huge",
    "field-retry-hint",
    "field-content-filter",
)
HUGE_ANSWER_CHARS = 300_000  # its inference.result reply is over the broker's 256 KB
RETRY_HINT_MS = 3000
SECRET = "my card number is 4111 1111 1111 1111"
"""In the prompts of the requests a model refuses: never in a rejection."""


# ---- the model endpoint for answers the simulator cannot give ---------------------------------


def _completion(content: str, usage: dict[str, Any] | None, model: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-field",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


@dataclass
class FieldModel:
    """An Azure OpenAI chat-completions endpoint whose answer depends on the deployment called;
    records the monotonic time of each call per deployment."""

    calls: dict[str, list[float]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, deployment: str) -> tuple[int, dict[str, str], bytes]:
        times = self.calls.setdefault(deployment, [])
        times.append(time.monotonic())
        if deployment == NULL_USAGE:
            usage = {"prompt_tokens": 9, "completion_tokens": None, "total_tokens": 9}
            return 200, {}, json.dumps(_completion("The Business plan.", usage, None)).encode()
        if deployment == HUGE:
            usage = {"prompt_tokens": 9, "completion_tokens": 75_000, "total_tokens": 75_009}
            text = "word " * (HUGE_ANSWER_CHARS // 5)
            return 200, {}, json.dumps(_completion(text, usage, "gpt-4o")).encode()
        if deployment == RETRY_HINT and len(times) == 1:
            throttled = {"error": {"code": "429", "message": "Rate limit is exceeded."}}
            headers = {"x-ms-retry-after-ms": str(RETRY_HINT_MS)}  # and no other hint
            return 429, headers, json.dumps(throttled).encode()
        if deployment == CONTENT_FILTER:
            error: dict[str, Any] = {
                "error": {
                    "message": "The response was filtered due to the prompt triggering Azure "
                    "OpenAI's content management policy.",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {"violence": {"filtered": True}},
                    },
                }
            }
            return 400, {}, json.dumps(error).encode()
        usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        return 200, {}, json.dumps(_completion("Done.", usage, "gpt-4o")).encode()

    @contextmanager
    def serving(self) -> Iterator[FieldModel]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                # /openai/deployments/<deployment>/chat/completions
                parts = self.path.split("?")[0].strip("/").split("/")
                deployment = parts[2] if len(parts) > 2 else ""
                status, headers, body = model.answer(deployment)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def field_registry(path: Path) -> Path:
    """devhost's registry, plus northwind (tuned, not tuned yet) and one tenant per field
    deployment, each dedicated to its tenant so no other tenant is routed there."""
    doc = json.loads(REGISTRY.read_text())
    doc["tenants"].append(
        {"id": "northwind", "mode": "tuned", "reply_queues": ["inference-results"]}
    )
    for name in (NULL_USAGE, HUGE, RETRY_HINT, CONTENT_FILTER):
        doc["deployments"].append(
            {
                "name": name,
                "kind": "azure_openai",
                "mode": "dedicated",
                "owner_tenant": name,
                "endpoint": "${FIELD_MODEL_ENDPOINT}",
                "capacity": {"tokens_per_minute": 1_000_000, "requests_per_minute": 600},
            }
        )
        doc["tenants"].append(
            {
                "id": name,
                "mode": "dedicated",
                "deployments": [name],
                "reply_queues": ["inference-results"],
            }
        )
    path.write_text(json.dumps(doc))
    return path


# ---- the messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    kind: str
    tenant: str
    request_id: str
    reply_to: str


def _request(tenant: str, request_id: str, content: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [{"role": "user", "content": content}],
        "parameters": {"max_tokens": 64},
    }


def _message(sent: Sent, body: bytes, signers: Signers) -> ServiceBusMessage:
    return ServiceBusMessage(
        body,
        message_id=f"m-{sent.request_id}",
        reply_to=sent.reply_to,
        content_type=None,
        application_properties=_proof(sent, body, signers),  # type: ignore[arg-type]
    )


def _proof(sent: Sent, body: bytes, signers: Signers) -> dict[str, str]:
    """The tenant proof of `body` as the host hands it over (for an AMQP value: its JSON)."""
    return signers(sent.tenant).message_properties(
        body, message_id=f"m-{sent.request_id}", reply_to=sent.reply_to
    )


NESTED_DEPTH = 63
"""azure-servicebus's AMQP decoder refuses 64 levels or more (`_pyamqp/_decode.py`,
`_MAX_NESTING_DEPTH`, as .NET's), so a deeper value never reaches the host at all."""


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Observed:
    replies: dict[str, list[dict[str, Any]]]
    subjects: dict[str, list[str]]
    junk_records: dict[str, Any]
    """The rejection record of each AMQP value that is no JSON request, by label (None: none)."""
    results: dict[str, dict[str, Any]]
    usage_lines: dict[str, list[dict[str, Any]]]
    dead_letters: int


async def _blob_json(blobs: BlobServiceClient, container: str, name: str) -> Any:
    client = blobs.get_blob_client(container, name)
    if not await client.exists():
        return None
    return json.loads(await (await client.download_blob()).readall())


async def _usage_lines(blobs: BlobServiceClient, tenant: str) -> list[dict[str, Any]]:
    container = blobs.get_container_client(names.USAGE_CONTAINER)
    lines: list[dict[str, Any]] = []
    async for blob in container.list_blobs(name_starts_with=f"{tenant}/"):
        text = (await (await container.download_blob(blob.name)).readall()).decode()
        lines += [json.loads(line) for line in text.splitlines() if line]
    return lines


async def _scenario(settings: dict[str, str], sent: list[Sent]) -> Observed:
    by_kind = {s.kind: s for s in sent}
    junk_ids = {label: f"junk-{label}-{uuid.uuid4()}" for label in ("binary", "nested")}
    signers = Signers(Path(settings["TENANT_KEYS_FILE"]))
    async with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as bus:
        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            s = by_kind["unencodable"]
            # The bytes a sender's ASCII JSON writer gives for a truncated emoji.
            body = json.dumps(_request(s.tenant, s.request_id, "Hello \ud83d world")).encode()
            await sender.send_messages(_message(s, body, signers))
            for kind, content in (
                ("null_usage", "Which plan has priority support?"),
                ("huge", "Write the whole handbook."),
                ("tuned_not_yet", "Draft a reply to the customer."),
                ("retry_hint", "How do I rotate a key?"),
                ("content_filter", SECRET),
            ):
                s = by_kind[kind]
                body = json.dumps(_request(s.tenant, s.request_id, content)).encode()
                await sender.send_messages(_message(s, body, signers))
            s = by_kind["amqp_value"]
            value = _request(s.tenant, s.request_id, "Which plan is cheapest?")
            await sender.send_messages(
                AmqpAnnotatedMessage(
                    value_body=value,
                    properties={"message_id": f"m-{s.request_id}", "reply_to": s.reply_to},
                    application_properties=_proof(s, json.dumps(value).encode(), signers),  # type: ignore[arg-type]
                )
            )
            for label, value in (
                ("binary", b"\xff\xfe not UTF-8"),
                ("nested", _nested(NESTED_DEPTH)),
            ):
                await sender.send_messages(
                    AmqpAnnotatedMessage(
                        value_body=value, properties={"message_id": junk_ids[label]}
                    )
                )

        replies: dict[str, list[dict[str, Any]]] = {s.request_id: [] for s in sent}
        subjects: dict[str, list[str]] = {s.request_id: [] for s in sent}
        deadline = time.monotonic() + 45
        queues = sorted({s.reply_to for s in sent})
        receivers = [bus.get_queue_receiver(q) for q in queues]
        for receiver in receivers:
            await receiver.__aenter__()
        try:
            while time.monotonic() < deadline and not all(replies.values()):
                for receiver in receivers:
                    for msg in await receiver.receive_messages(
                        max_message_count=20, max_wait_time=1
                    ):
                        rid = str(msg.correlation_id)
                        if rid in replies:
                            replies[rid].append(json.loads(b"".join(msg.body)))
                            subjects[rid].append(str(msg.subject))
                        await receiver.complete_message(msg)
            for receiver in receivers:  # a second reply to one request would show up now
                for msg in await receiver.receive_messages(max_message_count=20, max_wait_time=2):
                    rid = str(msg.correlation_id)
                    if rid in replies:
                        replies[rid].append(json.loads(b"".join(msg.body)))
                        subjects[rid].append(str(msg.subject))
                    await receiver.complete_message(msg)
        finally:
            for receiver in receivers:
                await receiver.__aexit__(None, None, None)

        async with BlobServiceClient.from_connection_string(settings["AzureWebJobsStorage"]) as b:
            junk: dict[str, Any] = {}
            for label, message_id in junk_ids.items():
                name = f"{names.UNKNOWN_TENANT_PREFIX}/{message_id}.json"
                junk[label] = await _blob_json(b, names.REJECTED_CONTAINER, name)
                while junk[label] is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    junk[label] = await _blob_json(b, names.REJECTED_CONTAINER, name)
            results = {}
            for s in sent:
                doc = await _blob_json(
                    b, names.RESULTS_CONTAINER, f"{s.tenant}/{s.request_id}.json"
                )
                if doc is not None:
                    results[s.kind] = doc
            usage = {s.kind: await _usage_lines(b, s.tenant) for s in sent}

        async with bus.get_queue_receiver(
            names.INFERENCE_REQUESTS, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            dead = len(await dlq.peek_messages(max_message_count=100))
    return Observed(replies, subjects, junk, results, usage, dead)


def test_every_field_input_gets_its_answer_or_its_reason_and_nothing_is_dead_lettered(
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    sent = [
        Sent("unencodable", "tailwind", f"unencodable-{run}", "replies-tailwind"),
        Sent("null_usage", NULL_USAGE, f"null-usage-{run}", "inference-results"),
        Sent("huge", HUGE, f"huge-{run}", "inference-results"),
        Sent("tuned_not_yet", "northwind", f"tuned-{run}", "inference-results"),
        Sent("amqp_value", "tailwind", f"amqp-value-{run}", "replies-tailwind"),
        Sent("retry_hint", RETRY_HINT, f"retry-hint-{run}", "inference-results"),
        Sent("content_filter", CONTENT_FILTER, f"content-filter-{run}", "inference-results"),
    ]
    with FieldModel().serving() as model:
        options = StackOptions(
            data_dir=tmp_path,
            registry=field_registry(tmp_path / "registry.json"),
            extra_settings={"FIELD_MODEL_ENDPOINT": model.url},
        )
        with LocalStack(options) as stack:
            out = asyncio.run(_scenario(stack.app_settings(), sent))
    by_kind = {s.kind: s for s in sent}

    def only_reply(kind: str, subject: str) -> dict[str, Any]:
        rid = by_kind[kind].request_id
        assert out.subjects[rid] == [subject], f"{kind}: {out.subjects[rid]} {out.replies[rid]}"
        reply = out.replies[rid][0]
        assert reply["tenant_id"] == by_kind[kind].tenant
        return reply

    # 1: text no client can encode: rejected, naming the field, never repeating the text.
    rejected = only_reply("unencodable", "inference.rejected")
    assert rejected["reason"] == "invalid_request"
    assert "messages[0].content" in rejected["detail"]
    assert "Hello" not in rejected["detail"]

    # 2: null usage counts: a result, metered once with the null read as 0.
    result = only_reply("null_usage", "inference.result")
    assert (result["status"], result["model"]) == ("succeeded", None)
    assert result["message"]["content"] == "The Business plan."
    assert result["usage"] == {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}
    [line] = out.usage_lines["null_usage"]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (9, 0)
    assert len(model.calls[NULL_USAGE]) == 1

    # 3: a reply over the queue's limit: a compact reply pointing at the whole result.
    compact = only_reply("huge", "inference.result")
    huge = by_kind["huge"]
    assert compact["truncated"] is True
    assert compact["message"] is None
    assert compact["result_blob"] == f"results/{HUGE}/{huge.request_id}.json"
    assert len(out.results["huge"]["message"]["content"]) >= HUGE_ANSWER_CHARS - 5
    assert len(model.calls[HUGE]) == 1, "the model was called again for a reply that never fit"

    # 4: a tuned tenant not tuned yet: served by a pooled deployment.
    result = only_reply("tuned_not_yet", "inference.result")
    assert result["status"] == "succeeded"
    assert result["deployment"] in POOLED

    # 5: an AMQP value body is answered; a value that is no JSON object is rejected, not dead.
    result = only_reply("amqp_value", "inference.result")
    assert result["status"] == "succeeded"
    for label, record in out.junk_records.items():
        assert record is not None, f"no rejection record for the AMQP value ({label})"
        assert (record["reason"], record["tenant_id"]) == ("invalid_json", None), record

    # 6: a 429 whose only hint is x-ms-retry-after-ms: the retry waited for it, then succeeded.
    result = only_reply("retry_hint", "inference.result")
    assert result["status"] == "succeeded"
    first, second, *more = model.calls[RETRY_HINT]
    assert not more
    assert second - first >= RETRY_HINT_MS / 1000 * 0.9, f"retried after {second - first:.2f}s"

    # 7: a content-filter 400: a filtered result with the category, never the prompt.
    filtered = only_reply("content_filter", "inference.result")
    assert filtered["status"] == "filtered"
    assert filtered["message"] is None
    assert filtered["content_filter"]["stage"] == "prompt"
    assert [c["category"] for c in filtered["content_filter"]["categories"]] == ["violence"]
    assert SECRET not in json.dumps(filtered)
    assert len(model.calls[CONTENT_FILTER]) == 1, "a refused request was retried"

    assert out.dead_letters == 0


# ---- an AMQP value the SDK sends but cannot receive ----------------------------------------


def short_lock_config(path: Path) -> Path:
    """The system's queues with a 5 s lock, so a message held by a stuck link returns soon."""
    config = json.loads(SERVICEBUS_CONFIG.read_text())
    for queue in config["UserConfig"]["Namespaces"][0]["Queues"]:
        queue["Properties"]["LockDuration"] = "PT5S"
    path.write_text(json.dumps(config))
    return path


async def _around_a_deep_value(
    connection: str, run: str, signers: Signers
) -> tuple[set[str], str | None]:
    """Send a request, an AMQP value nested 64 deep, another request; the ids answered within
    30 s, and the error the deep value's send raised (None: the broker took it)."""
    ids = [f"before-{run}", f"after-{run}"]
    refused = None
    async with ServiceBusClient.from_connection_string(connection) as bus:
        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            body = json.dumps(_request("tailwind", ids[0], "Which plan is cheapest?")).encode()
            await sender.send_messages(
                proven_message(
                    signers("tailwind"), body, message_id=f"m-{ids[0]}", reply_to="replies-tailwind"
                )
            )
            try:
                await sender.send_messages(
                    AmqpAnnotatedMessage(
                        value_body=_nested(NESTED_DEPTH + 1),
                        properties={"message_id": f"junk-deep-{run}"},
                    )
                )
            except ServiceBusError as exc:  # refusing it at the door is a right value too
                refused = type(exc).__name__
            body = json.dumps(_request("tailwind", ids[1], "Which plan is cheapest?")).encode()
            await sender.send_messages(
                proven_message(
                    signers("tailwind"), body, message_id=f"m-{ids[1]}", reply_to="replies-tailwind"
                )
            )
        answered: set[str] = set()
        deadline = time.monotonic() + 30
        async with bus.get_queue_receiver("replies-tailwind") as receiver:
            while time.monotonic() < deadline and len(answered) < len(ids):
                for msg in await receiver.receive_messages(max_message_count=10, max_wait_time=1):
                    if str(msg.correlation_id) in ids:
                        answered.add(str(msg.correlation_id))
                    await receiver.complete_message(msg)
    return answered, refused


def test_an_amqp_value_too_deep_for_the_sdk_to_receive_does_not_stall_the_queue(
    tmp_path: Path,
) -> None:
    """Issue 8, item 5's kind: every AMQP body the SDK can send. azure-servicebus sends a list
    nested 64 deep, but its decoder refuses to receive one (`AMQP value nesting exceeds maximum
    depth of 64`), so the host's receiver can take neither it nor the messages around it. Right
    value: the requests sent before and after it are answered (the deep one ends as a dead
    letter or a rejection, or is refused when sent), the queue does not stop."""
    run = uuid.uuid4().hex[:8]
    options = StackOptions(
        data_dir=tmp_path, servicebus_config=short_lock_config(tmp_path / "sb.json")
    )
    with LocalStack(options) as stack:
        answered, refused = asyncio.run(
            _around_a_deep_value(
                stack.app_settings()["ServiceBusConnection"], run, Signers(stack.keys_file)
            )
        )
    assert answered == {f"before-{run}", f"after-{run}"}, (
        f"answered {sorted(answered)} of before/after within 30 s (deep value refused at send: "
        f"{refused})"
    )
