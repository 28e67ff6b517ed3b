"""Attack tests: ids are no side door into another tenant's data.

Tenant B (contoso) has an answered request, feedback on it, a batch and a refused training
upload. Tenant A (tailwind) and a stranger then try: to read B's result by its request id, to
reuse B's request id with another body, to reuse an id of their own with another body, and to
inject `../`, `%2e%2e`, separators, and Unicode look-alikes into every id a sender chooses
(request_id, tenant_id, message_id, batch and training upload names, job keys, the tenant and
batch in the progress route, the tenant in the feedback route). Each attempt fails with a reason
or stays inside the attacker's own prefix, and B's blobs are the same, byte for byte, afterwards.
`shared.security.paths` is attacked directly too: every trick is refused with its rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared.batch.handlers import batch_progress_response
from shared.batch.intake import Upload
from shared.contracts import RejectionReason
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.rejections import rejection_blob_name
from shared.inference.results import RequestIdReused, ResultStore, request_digest
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.security.paths import (
    ID_PATTERN,
    UnsafeId,
    check_id,
    check_tenant_id,
    id_problem,
    safe_or_hashed,
    tenant_path,
)
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import RecordingReplySender, ScriptedModel, memory_runtime
from tests.security.registries import devhost_registry
from tests.unit.batch.helpers import RecordingRowSender, as_inbound

B = "contoso"
A = "tailwind"
B_REQUEST = "r-b1"
TRICKS = {
    "../": "path_separator",
    "..": "dot_segment",
    ".hidden": "dot_segment",
    "../../contoso/r-b1": "path_separator",
    "..\\contoso": "path_separator",
    "a/b": "path_separator",
    "%2e%2e": "percent_encoding",
    "%2e%2e%2fcontoso": "percent_encoding",
    "%252e%252e": "percent_encoding",
    "\uff0e\uff0e\uff0fcontoso": "unicode_lookalike",  # fullwidth ../
    "\uff43\uff4f\uff4e\uff54\uff4f\uff53\uff4f": "unicode_lookalike",  # fullwidth contoso
    "r\u2010b1": "non_ascii",  # a hyphen look-alike NFKC keeps
    "c\u043entoso": "non_ascii",  # a Cyrillic o
    "r-b1\u200b": "control_character",  # zero-width space
    "\u202er-b1": "control_character",  # right-to-left override
    "\ufeffr-b1": "control_character",  # byte order mark
    "r-b1\n": "control_character",
    "r-b1\x00": "control_character",
    "\ud800": "lone_surrogate",
    "": "empty",
    "x" * 256: "too_long",
    "r b1": "not_allowed_character",
}


# ---- shared.security.paths, attacked directly -------------------------------------------------


@pytest.mark.parametrize(("value", "problem"), TRICKS.items(), ids=[ascii(t) for t in TRICKS])
def test_every_trick_is_refused_with_its_rule(value: str, problem: str) -> None:
    assert id_problem(value, ID_PATTERN) == problem
    with pytest.raises(UnsafeId) as refused:
        tenant_path(A, value, suffix=".json")
    assert refused.value.problem == problem
    assert value not in str(refused.value) or not value  # the value is never repeated


@pytest.mark.parametrize("tenant", ["Contoso", "CONTOSO", "contoso ", "_unknown2", *TRICKS])
def test_no_look_alike_names_a_tenant(tenant: str) -> None:
    with pytest.raises(UnsafeId):
        check_tenant_id(tenant)


def test_safe_ids_pass_unchanged_and_unsafe_ones_are_hashed_never_rewritten() -> None:
    assert tenant_path(B, "2025-01-02", B_REQUEST, suffix=".json") == "contoso/2025-01-02/r-b1.json"
    assert check_id("b0123456789abcdef01234567:3") == "b0123456789abcdef01234567:3"
    hashed = {safe_or_hashed(t) for t in TRICKS}
    assert len(hashed) == len(TRICKS)  # no two tricks share a name
    assert all(h.startswith("sha256-") and id_problem(h) is None for h in hashed)
    # NFKC would fold the fullwidth id onto the real one: refusing is what keeps them apart.
    assert safe_or_hashed("\uff52-\uff42\uff11") != safe_or_hashed("r-b1") == "r-b1"


# ---- through the handlers: B's data, byte for byte ----------------------------------------------


def request(tenant: str, request_id: str, text: str = "hello", **more: Any) -> bytes:
    body = {
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [{"role": "user", "content": text}],
        **more,
    }
    return json.dumps(body).encode()


def message(body: bytes, message_id: str, **fields: Any) -> InboundMessage:
    return InboundMessage(body=body, message_id=message_id, delivery_count=1, **fields)


class World:
    def __init__(self) -> None:
        self.store = MemoryBlobStore()
        self.replies = RecordingReplySender()
        self.model = ScriptedModel()
        self.sender = RecordingRowSender()
        self.rt: Runtime = memory_runtime(
            devhost_registry(), model=self.model, replies=self.replies, store=self.store
        )
        self.rt.row_sender = self.sender
        self.rt.drift_check_every = 10**9

    def of(self, tenant: str) -> dict[tuple[str, str], bytes]:
        """Every blob of a tenant (`<tenant>/...` in any container), with its bytes."""
        return {k: bytes(v) for k, v in self.store.blobs.items() if k[1].startswith(f"{tenant}/")}

    def rejection(self, owner: str | None, message_id: str, kind: str = "") -> dict[str, Any]:
        name = rejection_blob_name(owner, message_id, kind)
        data: dict[str, Any] = json.loads(self.store.text(names.REJECTED_CONTAINER, name))
        return data


@pytest.fixture
async def world() -> World:
    """B's data: an answered request, feedback on it, a batch, a refused training upload."""
    w = World()
    outcome = await handle_inference_request(
        message(request(B, B_REQUEST, "B's question"), "mb-1", reply_to="inference-results"),
        w.rt,
    )
    assert outcome is Outcome.COMPLETED
    feedback = {"tenant_id": B, "request_id": B_REQUEST, "rating": "up"}
    await w.rt.feedback.handle_message(message(json.dumps(feedback).encode(), "fb-b1"))
    row = json.dumps({"messages": [{"role": "user", "content": "B's row"}]}).encode()
    await w.store.put(names.UPLOADS_CONTAINER, f"{B}/batch/nightly.jsonl", row + b"\n")
    progress = await w.rt.batches.take(Upload(f"{B}/batch/nightly.jsonl"))
    assert progress is not None
    w.b_batch = progress.batch_id  # type: ignore[attr-defined]
    for sent in w.sender.rows:
        await handle_inference_request(as_inbound(sent), w.rt)
    await w.store.put(names.UPLOADS_CONTAINER, f"{B}/training/t.jsonl", row + b"\n")
    await w.rt.training_uploads.take(f"{B}/training/t.jsonl")
    assert len(w.of(B)) >= 6
    return w


@pytest.fixture
def untouched(world: World) -> Iterator[World]:
    """Asserts, after the test, that B's blobs are exactly as before it, byte for byte, and that
    nothing was added under B's prefix but B's own rejection records (B's messages `mb-*`)."""
    before = world.of(B)
    yield world
    after = world.of(B)
    assert {k: after.get(k) for k in before} == before
    added = set(after) - set(before)
    assert all(c == names.REJECTED_CONTAINER and n.startswith(f"{B}/mb-") for c, n in added), added


async def test_a_reads_nothing_of_b_by_bs_request_id(untouched: World) -> None:
    w = untouched
    calls = len(w.model.calls)
    outcome = await handle_inference_request(
        message(request(A, B_REQUEST, "A's question"), "ma-1", reply_to="inference-results"),
        w.rt,
    )
    # A's own request under A's prefix, answered by a new model call: never B's answer.
    assert outcome is Outcome.COMPLETED
    assert len(w.model.calls) == calls + 1
    mine = json.loads(w.store.text(names.RESULTS_CONTAINER, f"{A}/{B_REQUEST}.json"))
    assert mine["tenant_id"] == A
    reply = json.loads(w.replies.sent[-1].body)
    assert (reply["tenant_id"], reply["request_id"]) == (A, B_REQUEST)
    # Feedback and batch progress by B's ids answer A as if they did not exist.
    answer = await w.rt.feedback.handle_http(
        A, json.dumps({"tenant_id": A, "request_id": "r-only-b", "rating": 1}).encode()
    )
    assert answer.reason == "unknown_request"
    status, _ = await batch_progress_response(A, w.b_batch, w.rt)  # type: ignore[attr-defined]
    assert status == 404


async def test_reusing_a_request_id_with_another_body_is_refused_not_answered(
    untouched: World,
) -> None:
    w = untouched
    calls, sent = len(w.model.calls), len(w.replies.sent)
    other = request(B, B_REQUEST, "a different question")
    outcome = await handle_inference_request(
        message(other, "mb-2", reply_to="inference-results"), w.rt
    )
    assert outcome is Outcome.REJECTED
    assert len(w.model.calls) == calls  # nothing reached a model
    record = w.rejection(B, "mb-2")
    assert record["reason"] == RejectionReason.REQUEST_ID_REUSED
    [reply] = w.replies.sent[sent:]
    assert reply.subject == "inference.rejected"  # the first answer is never sent for it
    assert json.loads(reply.body)["reason"] == "request_id_reused"
    # The same body again is an ordinary redelivery, answered from the result.
    again = message(request(B, B_REQUEST, "B's question"), "mb-3")
    assert await handle_inference_request(again, w.rt) is Outcome.DUPLICATE


async def test_a_parameter_or_feature_change_is_another_request_too(untouched: World) -> None:
    w = untouched
    for n, change in enumerate(
        [{"parameters": {"temperature": 2}}, {"feature": "other"}, {"parameters": {"seed": 1}}]
    ):
        body = request(B, B_REQUEST, "B's question", **change)
        outcome = await handle_inference_request(message(body, f"mb-p{n}"), w.rt)
        assert outcome is Outcome.REJECTED
        assert w.rejection(B, f"mb-p{n}")["reason"] == "request_id_reused"


async def test_a_race_lost_to_another_request_is_never_answered_with_its_result(
    untouched: World,
) -> None:
    """Two bodies with one id that both found no result: the second write finds the first's
    result with another digest and raises (the host redelivers; the redelivery is refused)."""
    w = untouched
    results = ResultStore(w.store)
    stored = await results.get(B, B_REQUEST)
    assert stored is not None
    from shared.contracts import InferenceResult, parse_inference_request

    theirs = InferenceResult.model_validate_json(stored.body)
    other = parse_inference_request(request(B, B_REQUEST, "a racing question"))
    with pytest.raises(RequestIdReused):
        await results.save(theirs.model_copy(update={"request_sha256": request_digest(other)}))


@pytest.mark.parametrize("trick", list(TRICKS), ids=[ascii(t) for t in TRICKS])
async def test_tricks_in_the_request_and_tenant_ids_are_refused(
    untouched: World, trick: str
) -> None:
    w = untouched
    calls = len(w.model.calls)
    bodies = [
        request(A, trick),  # A names a request id that would escape its prefix
        request(trick, B_REQUEST),  # a tenant id that would alias B's
    ]
    if trick:  # (an empty trick would leave well-formed ids: A's own, B's own)
        bodies += [request(A, f"{trick}{B_REQUEST}"), request(f"{trick}{B}", B_REQUEST)]
    for n, body in enumerate(bodies):
        outcome = await handle_inference_request(message(body, f"mt-{n}"), w.rt)
        assert outcome is Outcome.REJECTED, body
        filed = [f for f in w.store.names(names.REJECTED_CONTAINER) if f"mt-{n}." in f]
        assert filed in ([f"{A}/mt-{n}.json"], [f"_unknown/mt-{n}.json"]), filed
        record = w.rejection(None if filed[0].startswith("_") else A, f"mt-{n}")
        assert record["reason"] == "invalid_request"
    assert len(w.model.calls) == calls


@pytest.mark.parametrize("trick", list(TRICKS), ids=[ascii(t) for t in TRICKS])
async def test_tricks_in_the_message_id_stay_in_the_senders_prefix(
    untouched: World, trick: str
) -> None:
    w = untouched
    message_id = f"../{B}/{trick}mb-1"
    outcome = await handle_inference_request(message(b"not json", message_id), w.rt)
    assert outcome is Outcome.REJECTED
    [name] = [
        n for n in w.store.names(names.REJECTED_CONTAINER) if n.startswith("_unknown/sha256-")
    ]
    record = json.loads(w.store.text(names.REJECTED_CONTAINER, name))
    assert record["reason"] == "invalid_json"
    # Named by the hash of the id as recorded (a lone surrogate kept as U+FFFD), never by the id.
    assert name == f"_unknown/{safe_or_hashed(record['message_id'])}.json"


@pytest.mark.parametrize("trick", list(TRICKS), ids=[ascii(t) for t in TRICKS])
async def test_tricks_in_upload_names_never_reach_bs_prefix(untouched: World, trick: str) -> None:
    w = untouched
    row = json.dumps({"messages": [{"role": "user", "content": "A's row"}]}).encode() + b"\n"
    for kind in ("batch", "training"):
        for name in (
            f"{A}/{kind}/{trick}.jsonl",
            f"{A}/{kind}/../../{B}/{kind}/{trick}x.jsonl",
            f"{trick}/{kind}/x.jsonl",
            f"{trick}{B}/{kind}/x.jsonl",
        ):
            if "\ud800" in name or name.startswith(f"{B}/"):
                continue  # no blob has such a name; B's own prefix (SAS-scoped: the other half)
            await w.store.put(names.UPLOADS_CONTAINER, name, row)
            if kind == "batch":
                result: Any = await w.rt.batches.take(Upload(name))
            else:
                result = await w.rt.training_uploads.take(name)
            assert result is None or result.tenant_id in (A, names.UNKNOWN_TENANT_PREFIX)


@pytest.mark.parametrize("trick", list(TRICKS), ids=[ascii(t) for t in TRICKS])
async def test_tricks_in_the_routes_find_nothing(untouched: World, trick: str) -> None:
    w = untouched
    b_batch = w.b_batch  # type: ignore[attr-defined]
    routes = [(trick, b_batch)]
    if trick:  # (an empty trick would be B asking for its own batch)
        routes += [(f"{trick}{B}", b_batch), (B, f"{b_batch}{trick}")]
    for tenant, batch in routes:
        status, _ = await batch_progress_response(tenant, batch, w.rt)
        assert status == 404
    feedback = {"tenant_id": B, "request_id": B_REQUEST, "rating": "down"}
    answer = await w.rt.feedback.handle_http(trick, json.dumps(feedback).encode())
    assert answer.outcome.value == "rejected"


def finetune_body(job_key: str, blob: str, manifest: str) -> bytes:
    """fabrikam (which may tune) asks for a job; the dataset names are what is attacked."""
    body = {
        "type": "finetune.request",
        "version": 1,
        "job_key": job_key,
        "tenant_id": "fabrikam",
        "scope": "tenant",
        "base": {"deployment": "gpt-4o-mini-pool-a", "model": "gpt-4o-mini"},
        "current": {"deployment": "fabrikam-ft-v1", "model_version": "ft-1"},
        "dataset": {"blob": blob, "manifest": manifest, "sha256": "0" * 64, "examples": 60},
        "reason": {"kind": "quality_drift", "summary": "x"},
        "tenants_in_dataset": ["fabrikam"],
        "requested_at": "2026-11-30T09:00:00Z",
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize("trick", list(TRICKS), ids=[ascii(t) for t in TRICKS])
async def test_tricks_in_job_keys_and_dataset_names_are_refused(
    untouched: World, trick: str
) -> None:
    w = untouched
    own = "training/fabrikam/ds-1.jsonl"
    cases = {
        # the job key: its pattern
        finetune_body(f"{trick}{B}.dft-1", own, own): "invalid_request",
        # the dataset: B's blobs through dot segments, encodings and look-alikes
        finetune_body("fabrikam.dft-2", f"training/fabrikam/../{B}/{trick}ds.jsonl", own): (
            "dataset_path_unsafe"
        ),
        finetune_body("fabrikam.dft-3", f"training/fabrikam/{trick}/../../{B}/ds.jsonl", own): (
            "dataset_path_unsafe"
        ),
        finetune_body("fabrikam.dft-4", f"training/{B}/ds-1.jsonl", own): "dataset_outside_tenant",
    }
    for n, (body, reason) in enumerate(cases.items()):
        outcome = await w.rt.finetune_intake.handle_message(message(body, f"mj-{n}"))
        got = getattr(outcome, "reason", None)
        if trick == "" and n == 0:
            continue  # a well-formed key: refused later, for its missing dataset
        # (text no blob name can hold, a lone surrogate, is refused by the contract first)
        assert got in (reason, "invalid_request" if n else reason), (n, outcome)
        if trick == "":
            assert got == reason  # the plain `../` attack reaches the path check itself
