"""Attacks on the tenant claim, through the real handlers over the in-memory ports.

tailwind (A, pooled) holds send rights on the shared queues and its own key; it tries to act as
contoso (B, dedicated) or fabrikam (tuned). Each attempt must be refused with its reason, reach
no model, send no reply, and leave B's blobs byte for byte as they were. B's own proven traffic
keeps working throughout.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

import function_app
from shared.contracts import FEEDBACK_TYPE
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_errors import ModelRateLimited
from shared.messages import InboundMessage
from shared.resilience.quotas import TenantQuotas
from shared.runtime import set_runtime
from shared.security.proof import KEY_ID, PROOF, PROOF_TIME, ProofReason
from shared.storage import names
from shared.tenancy.registry import parse_registry
from shared.tenancy.registry_source import StaticRegistry
from tests.security.tenant_proof_kit import (
    ENV,
    NOW,
    ROOT,
    Proven,
    blobs_of,
    proven_runtime,
    rejections_of,
    request_body,
    signed,
    signer,
)

B_QUEUE = "replies-contoso"


async def b_answered(p: Proven, request_id: str = "b-1") -> None:
    """contoso's own proven request, answered: B has data to protect."""
    b = signer(p.keys, "contoso")
    message = signed(b, request_body("contoso", request_id), message_id=f"m-{request_id}")
    assert await handle_inference_request(message, p.runtime) is Outcome.COMPLETED


def only_rejection(p: Proven) -> dict[str, Any]:
    [(name, record)] = rejections_of(p.store).items()
    assert name.startswith("_unknown/"), name  # never under the claimed tenant's prefix
    return record


@pytest.fixture
def p() -> Proven:
    return proven_runtime()


# --- A acts as B on inference-requests ------------------------------------------------------


@pytest.mark.parametrize(
    ("victim", "deployment", "how"),
    [
        ("contoso", "contoso-gpt-4o", "no proof"),
        ("contoso", "contoso-gpt-4o", "A's own key"),
        ("fabrikam", "fabrikam-ft-v1", "no proof"),
        ("fabrikam", "fabrikam-ft-v1", "A's own key"),
    ],
)
async def test_a_claiming_b_reaches_no_dedicated_or_tuned_deployment(
    p: Proven, victim: str, deployment: str, how: str
) -> None:
    await b_answered(p)
    before = {t: blobs_of(p.store, t) for t in ("contoso", "fabrikam")}
    calls = len(p.model.calls)
    a = signer(p.keys, "tailwind") if how == "A's own key" else None
    spoof = signed(
        a, request_body(victim, "x-1"), message_id="spoof-1", reply_to=f"replies-{victim}"
    )

    assert await handle_inference_request(spoof, p.runtime) is Outcome.REJECTED

    record = only_rejection(p)
    expected = ProofReason.MISSING if a is None else ProofReason.INVALID
    assert (record["reason"], record["tenant_id"], record["request_id"]) == (
        expected,
        victim,
        "x-1",
    )
    assert len(p.model.calls) == calls  # no deployment reached, least of all B's
    assert deployment not in {c.deployment for c in p.model.calls[calls:]}
    assert {t: blobs_of(p.store, t) for t in ("contoso", "fabrikam")} == before
    assert [r for r in p.replies.sent if r.queue == f"replies-{victim}"] == [
        r for r in p.replies.sent if r.correlation_id == "b-1"
    ]  # B's own answer only: nothing answered on B's queue for the spoof


async def test_a_cannot_spend_bs_quota() -> None:
    document = json.loads((ROOT / "devhost" / "registry.json").read_text())
    for tenant in document["tenants"]:
        if tenant["id"] == "contoso":
            tenant["quota"] = {"requests_per_minute": 1}
    p = proven_runtime()
    p.runtime.registry = StaticRegistry(parse_registry(json.dumps(document), env=ENV))
    p.runtime.quotas = TenantQuotas(None, clock=lambda: 1000.0)
    a = signer(p.keys, "tailwind")
    for i in range(5):
        spoof = signed(a, request_body("contoso", f"x-{i}"), message_id=f"spoof-{i}")
        assert await handle_inference_request(spoof, p.runtime) is Outcome.REJECTED
    # B's one request of the minute is still there for B ...
    await b_answered(p, "b-1")
    # ... and it was the only one: the quota is real, the spoofs were never charged.
    b = signer(p.keys, "contoso")
    second = signed(b, request_body("contoso", "b-2"), message_id="m-b-2")
    assert await handle_inference_request(second, p.runtime) is Outcome.RESCHEDULED


async def test_a_cannot_have_an_answer_sent_to_bs_reply_queue(p: Proven) -> None:
    a = signer(p.keys, "tailwind")
    # A signs honestly as itself, but names B's reply queue: the proof holds, the registry says no.
    mine = signed(a, request_body("tailwind", "a-1"), message_id="a-1", reply_to=B_QUEUE)
    assert await handle_inference_request(mine, p.runtime) is Outcome.REJECTED
    # A claims B to get past that: the proof does not hold.
    spoof = signed(a, request_body("contoso", "a-2"), message_id="a-2", reply_to=B_QUEUE)
    assert await handle_inference_request(spoof, p.runtime) is Outcome.REJECTED
    assert [r.queue for r in p.replies.sent] == []
    reasons = {r["request_id"]: r["reason"] for r in rejections_of(p.store).values()}
    assert reasons == {"a-1": "reply_to_not_allowed", "a-2": ProofReason.INVALID}
    assert p.model.calls == []


async def test_a_spoofed_batch_row_does_not_count_in_bs_batch(p: Proven) -> None:
    batch_id = "b" + "0" * 24
    record = b'{"a batch record of contoso": true}'
    await p.store.put(names.BATCHES_CONTAINER, f"contoso/{batch_id}.json", record)
    before = blobs_of(p.store, "contoso")
    row = request_body("contoso", f"{batch_id}-1")
    spoof = signed(
        signer(p.keys, "tailwind"),
        row,
        message_id=f"{batch_id}-1",
        properties={"batch_id": batch_id, "batch_line": 1},
    )
    assert await handle_inference_request(spoof, p.runtime) is Outcome.REJECTED
    assert blobs_of(p.store, "contoso") == before


# --- feedback on B's requests ----------------------------------------------------------------


def feedback(tenant: str, request_id: str, rating: str = "down") -> bytes:
    return json.dumps({"tenant_id": tenant, "request_id": request_id, "rating": rating}).encode()


async def test_a_cannot_send_feedback_on_bs_requests_over_service_bus(p: Proven) -> None:
    await b_answered(p)
    before = blobs_of(p.store, "contoso")
    a = signer(p.keys, "tailwind")
    for by, message_id in ((None, "f-1"), (a, "f-2")):
        message = signed(
            by, feedback("contoso", "b-1"), message_id=message_id, contract_type=FEEDBACK_TYPE
        )
        answer = await p.runtime.feedback.handle_message(message)
        assert answer.outcome.value == "rejected"
    assert blobs_of(p.store, "contoso") == before
    records = rejections_of(p.store)
    assert {n: r["reason"] for n, r in records.items()} == {
        "_unknown/feedback/f-1.json": ProofReason.MISSING,
        "_unknown/feedback/f-2.json": ProofReason.INVALID,
    }
    assert {r["type"] for r in records.values()} == {"feedback.rejected"}
    # B's own feedback is taken.
    b = signer(p.keys, "contoso")
    mine = signed(b, feedback("contoso", "b-1"), message_id="f-3", contract_type=FEEDBACK_TYPE)
    assert (await p.runtime.feedback.handle_message(mine)).outcome.value == "recorded"


def http(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, **route: str
) -> func.HttpRequest:
    return func.HttpRequest(
        method, f"http://127.0.0.1:7071{path}", headers=headers or {}, body=body, route_params=route
    )


ROUTES = [
    ("feedback_http", "POST", "/api/tenants/contoso/feedback", {}),
    (
        "batch_progress",
        "GET",
        "/api/tenants/contoso/batches/b" + "0" * 24,
        {"batch_id": "b" + "0" * 24},
    ),
    ("models_http", "GET", "/api/tenants/contoso/models", {}),
    ("models_rollback_http", "POST", "/api/tenants/contoso/models/rollback", {}),
    ("drift_evaluate_http", "POST", "/api/tenants/contoso/drift", {}),
    ("upload_sas_http", "POST", "/api/tenants/contoso/upload-sas", {}),
]


@pytest.mark.parametrize("case", ROUTES, ids=[r[0] for r in ROUTES])
@pytest.mark.parametrize("how", ["no proof", "A's own key", "A's key, A's path"])
async def test_every_tenant_route_refuses_a_request_that_does_not_prove_the_routes_tenant(
    p: Proven, case: tuple[str, str, str, dict[str, str]], how: str
) -> None:
    function, method, path, route = case
    await b_answered(p)
    before = blobs_of(p.store, "contoso")
    body = feedback("contoso", "b-1") if method == "POST" else b""
    a = signer(p.keys, "tailwind")
    headers: dict[str, str] = {}
    if how == "A's own key":
        headers = a.http_headers(method, path, body, at=int(NOW.timestamp()))
    elif how == "A's key, A's path":  # signed for A's route, sent to B's
        headers = a.http_headers(
            method, path.replace("contoso", "tailwind"), body, at=int(NOW.timestamp())
        )
    previous = set_runtime(p.runtime)
    try:
        response = (
            await getattr(function_app, function)
            .build()
            .get_user_function()(http(method, path, body, headers, tenant_id="contoso", **route))
        )
    finally:
        set_runtime(previous)
    assert response.status_code == 401
    answer = json.loads(response.get_body())
    assert answer["error"] == (ProofReason.MISSING if how == "no proof" else ProofReason.INVALID)
    assert blobs_of(p.store, "contoso") == before


async def test_b_proven_over_http_is_served(p: Proven) -> None:
    await b_answered(p)
    b = signer(p.keys, "contoso")
    body = feedback("contoso", "b-1", "up")
    path = "/api/tenants/contoso/feedback"
    headers = b.http_headers("POST", path, body, at=int(NOW.timestamp()))
    previous = set_runtime(p.runtime)
    try:
        response = await function_app.feedback_http.build().get_user_function()(
            http("POST", path, body, headers, tenant_id="contoso")
        )
        assert response.status_code == 201
        # The same request again (a replay of the nonce) is refused, not taken as a revision.
        again = await function_app.feedback_http.build().get_user_function()(
            http("POST", path, body, headers, tenant_id="contoso")
        )
    finally:
        set_runtime(previous)
    assert again.status_code == 401
    assert json.loads(again.get_body())["error"] == ProofReason.REPLAYED


async def test_a_proven_as_itself_cannot_rate_bs_answer_over_http(p: Proven) -> None:
    await b_answered(p)
    before = blobs_of(p.store, "contoso")
    a = signer(p.keys, "tailwind")
    path = "/api/tenants/tailwind/feedback"
    body = feedback("contoso", "b-1")
    headers = a.http_headers("POST", path, body, at=int(NOW.timestamp()))
    previous = set_runtime(p.runtime)
    try:
        response = await function_app.feedback_http.build().get_user_function()(
            http("POST", path, body, headers, tenant_id="tailwind")
        )
    finally:
        set_runtime(previous)
    assert (response.status_code, json.loads(response.get_body())["reason"]) == (
        400,
        "tenant_mismatch",
    )
    assert blobs_of(p.store, "contoso") == before


# --- B's own proofs, misused ------------------------------------------------------------------


async def test_a_replay_of_bs_proven_message_is_refused(p: Proven) -> None:
    b = signer(p.keys, "contoso")
    original = signed(b, request_body("contoso", "b-1"), message_id="m-1", reply_to=B_QUEUE)
    assert await handle_inference_request(original, p.runtime) is Outcome.COMPLETED
    # The broker delivering that same message again (a crash, an abandon) is no replay.
    redelivered = signed(
        b, request_body("contoso", "b-1"), message_id="m-1", reply_to=B_QUEUE, delivery_count=2
    )
    assert await handle_inference_request(redelivered, p.runtime) is Outcome.DUPLICATE
    before, sent, calls = blobs_of(p.store, "contoso"), len(p.replies.sent), len(p.model.calls)

    # The captured bytes and properties, enqueued again: within the window, then after it.
    replayed = InboundMessage(
        body=original.body,
        message_id=original.message_id,
        reply_to=original.reply_to,
        application_properties=original.application_properties,
        delivery_count=1,
        enqueued_time=NOW + timedelta(seconds=60),
    )
    late = InboundMessage(
        body=original.body,
        message_id=original.message_id,
        reply_to=original.reply_to,
        application_properties=original.application_properties,
        delivery_count=1,
        enqueued_time=NOW + timedelta(minutes=10),
    )
    assert await handle_inference_request(replayed, p.runtime) is Outcome.REJECTED
    assert only_rejection(p)["reason"] == ProofReason.REPLAYED
    assert await handle_inference_request(late, p.runtime) is Outcome.REJECTED
    assert only_rejection(p)["reason"] == ProofReason.EXPIRED  # the same id: the record rewritten
    assert blobs_of(p.store, "contoso") == before
    assert (len(p.replies.sent), len(p.model.calls)) == (sent, calls)


async def test_a_rotated_out_key_is_refused_and_both_keys_work_during_the_rollover(
    p: Proven,
) -> None:
    old = signer(p.keys, "contoso")
    rotated, new_key = p.keys.rings["contoso"].rotated(NOW)
    p.keys.rings["contoso"] = rotated
    new = signer(p.keys, "contoso", new_key.id)
    assert new.key_id != old.key_id
    # During the rollover, both are valid.
    for i, by in enumerate((old, new)):
        message = signed(by, request_body("contoso", f"b-{i}"), message_id=f"m-{i}")
        assert await handle_inference_request(message, p.runtime) is Outcome.COMPLETED
    # The old one retired: its messages are refused, the new one's served.
    p.keys.rings["contoso"] = rotated.retired(old.key_id, NOW)
    before = blobs_of(p.store, "contoso")
    stale = signed(old, request_body("contoso", "b-9"), message_id="m-9")
    assert await handle_inference_request(stale, p.runtime) is Outcome.REJECTED
    assert only_rejection(p)["reason"] == ProofReason.KEY_RETIRED
    assert blobs_of(p.store, "contoso") == before
    fresh = signed(new, request_body("contoso", "b-10"), message_id="m-10")
    assert await handle_inference_request(fresh, p.runtime) is Outcome.COMPLETED


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", ProofReason.INVALID),
        ("tenant in the body", ProofReason.INVALID),
        ("message id", ProofReason.INVALID),
        ("reply_to", ProofReason.INVALID),
        ("contract type", ProofReason.INVALID),
        ("time 10 min ahead", ProofReason.EXPIRED),
        ("time 10 min behind", ProofReason.EXPIRED),
        ("proof removed", ProofReason.MISSING),
        ("unknown key id", ProofReason.INVALID),
    ],
)
async def test_a_tampered_proof_of_b_is_refused_with_its_reason(
    p: Proven, tamper: str, reason: str
) -> None:
    await b_answered(p)
    before, calls = blobs_of(p.store, "contoso"), len(p.model.calls)
    b = signer(p.keys, "contoso")
    body = request_body("contoso", "b-2")
    kwargs: dict[str, Any] = {"message_id": "m-2", "reply_to": B_QUEUE}
    if tamper == "body":
        kwargs["signed_body"] = request_body("contoso", "b-2", text="something else")
    elif tamper == "tenant in the body":
        body = request_body("fabrikam", "b-2")
        kwargs["signed_body"] = request_body("contoso", "b-2")
    elif tamper == "message id":
        kwargs["signed_message_id"] = "m-other"
    elif tamper == "contract type":
        kwargs["contract_type"] = FEEDBACK_TYPE
    elif tamper == "time 10 min ahead":
        kwargs["at"] = NOW + timedelta(minutes=10)
    elif tamper == "time 10 min behind":
        kwargs["at"] = NOW - timedelta(minutes=10)
    message = signed(b, body, **kwargs)
    props = dict(message.application_properties)
    if tamper == "reply_to":
        message = InboundMessage(
            body=message.body,
            message_id=message.message_id,
            reply_to="inference-results",  # also one of B's queues: still not what B signed
            application_properties=props,
            delivery_count=1,
            enqueued_time=NOW,
        )
    elif tamper in {"proof removed", "unknown key id"}:
        if tamper == "proof removed":
            del props[PROOF]
        else:
            props[KEY_ID] = "k-made-up"
        message = InboundMessage(
            body=message.body,
            message_id=message.message_id,
            reply_to=message.reply_to,
            application_properties=props,
            delivery_count=1,
            enqueued_time=NOW,
        )
    assert await handle_inference_request(message, p.runtime) is Outcome.REJECTED
    record = only_rejection(p)
    assert record["reason"] == reason
    assert blobs_of(p.store, "fabrikam") == {}
    assert blobs_of(p.store, "contoso") == before
    assert len(p.model.calls) == calls
    # The record never holds the secret nor the signature.
    text = json.dumps(record)
    assert b.secret not in text
    assert props.get(PROOF, "-" * 64) not in text


async def test_within_the_window_is_served(p: Proven) -> None:
    b = signer(p.keys, "contoso")
    for i, skew in enumerate((-299, 299)):
        message = signed(
            b,
            request_body("contoso", f"b-{i}"),
            message_id=f"m-{i}",
            at=NOW + timedelta(seconds=skew),
        )
        assert await handle_inference_request(message, p.runtime) is Outcome.COMPLETED


# --- the app's own copies are proven by the app ------------------------------------------------


async def test_a_rescheduled_copy_is_re_proven_and_served_when_it_returns(p: Proven) -> None:
    p.model.failures.append(
        ModelRateLimited("429", deployment="d", status_code=429, retry_after_s=30.0)
    )
    b = signer(p.keys, "contoso")
    first = signed(b, request_body("contoso", "b-1"), message_id="m-1", reply_to=B_QUEUE)
    assert await handle_inference_request(first, p.runtime) is Outcome.RESCHEDULED
    [copy] = p.replies.sent
    assert copy.queue == names.INFERENCE_REQUESTS
    assert copy.scheduled_enqueue_time_utc is not None
    props = copy.application_properties
    assert props[PROOF] != first.application_properties[PROOF]  # a proof of the copy, not B's
    assert int(props[PROOF_TIME]) == int(copy.scheduled_enqueue_time_utc.timestamp())
    returned = InboundMessage(
        body=copy.body,
        message_id=copy.message_id,
        reply_to=copy.reply_to,
        application_properties=props,
        delivery_count=1,
        enqueued_time=copy.scheduled_enqueue_time_utc,
    )
    p.runtime.monotonic.__self__.now += 60  # type: ignore[attr-defined]  # the breaker's wait
    assert await handle_inference_request(returned, p.runtime) is Outcome.COMPLETED
