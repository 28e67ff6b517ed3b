"""Fuzzing `inference.request`: the contract and the handler, over in-memory ports.

Any body (random bytes, any JSON, a valid request with fields of the wrong type, huge, deeply
nested, odd Unicode and lone surrogates in escapes), any application properties, any message id
and reply_to: the handler never raises (with healthy ports nothing needs a redelivery), the
message ends in exactly one result or one rejection record (or a scheduled copy), every blob it
wrote is named from safe ids inside a known tenant's prefix or `_unknown/`, no rejection detail
repeats the request's text, and a good request sent afterwards is answered.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from shared.contracts import RejectionRecord
from shared.inference.handler import Outcome, handle_inference_request
from shared.messages import InboundMessage
from shared.security.paths import id_problem
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, read_registry_file
from tests.fakes import RecordingReplySender, memory_runtime
from tests.security.fuzz_kit import (
    CANARY,
    MESSAGE_IDS,
    ODD_TEXT,
    PROPERTIES,
    bodies,
    encode,
    fuzz_settings,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AZURE_OPENAI_ENDPOINT": "https://a.example", "AZURE_AI_SERVICES_ENDPOINT": "https://b"}
REGISTRY: Registry = read_registry_file(ROOT / "devhost" / "registry.json", env=ENV)
KNOWN = {t.id for t in REGISTRY.tenants}
VALID: dict[str, Any] = {
    "tenant_id": "tailwind",
    "request_id": "r-fuzz",
    "messages": [{"role": "user", "content": f"hello {CANARY}"}],
    "parameters": {"max_tokens": 20},
    "feature": "faq",
}
REPLY_TO = st.one_of(
    st.none(), st.sampled_from(["inference-results", "replies-tailwind", "inference-requests"])
) | ODD_TEXT.map(str)
ENDED = {Outcome.COMPLETED, Outcome.FILTERED, Outcome.FAILED}


# Where the system writes per tenant (not `config`, the operator's; nor `uploads`, the tenants').
TENANT_CONTAINERS = set(names.CONTAINERS) - {names.CONFIG_CONTAINER, names.UPLOADS_CONTAINER}


def assert_safe_names(store: MemoryBlobStore) -> None:
    """Every blob the system wrote is `<known tenant or _unknown>/<safe segment>/...`."""
    for container, name in store.blobs:
        if container not in TENANT_CONTAINERS or ("/" not in name and name.startswith("_")):
            continue  # the operator's and tenants' own containers; fleet records (`_fleet.json`)
        owner, *segments = name.split("/")
        assert owner in KNOWN | {names.UNKNOWN_TENANT_PREFIX}, (container, name)
        for segment in segments:
            assert id_problem(segment) is None, (container, name)


async def deliver(
    body: bytes, props: dict[str, Any], message_id: str, reply_to: str | None
) -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = memory_runtime(REGISTRY, store=store, replies=replies)
    message = InboundMessage(
        body=body,
        message_id=message_id,
        reply_to=reply_to,
        application_properties=props,
        delivery_count=1,
        enqueued_time=datetime(2025, 1, 2, 3, 4, 4, tzinfo=UTC),
    )
    outcome = await handle_inference_request(message, rt)
    event(f"outcome: {outcome}")

    results = store.names(names.RESULTS_CONTAINER)
    rejected = store.names(names.REJECTED_CONTAINER)
    if outcome in ENDED:
        assert (len(results), rejected) == (1, []), outcome
    elif outcome is Outcome.REJECTED:
        assert (results, len(rejected)) == ([], 1)
        record = RejectionRecord.model_validate_json(
            store.text(names.REJECTED_CONTAINER, rejected[0])
        )
        assert CANARY not in record.detail
        event(f"rejected: {record.reason}")
    elif outcome is Outcome.RESCHEDULED:
        assert (results, rejected) == ([], [])
        assert replies.sent[-1].queue == names.INFERENCE_REQUESTS
    else:
        raise AssertionError(f"a first delivery ended {outcome}")
    assert_safe_names(store)

    # The handler keeps serving: a good request after this one is answered.
    good = InboundMessage(
        body=encode({**VALID, "request_id": "r-after"}), message_id="m-after", delivery_count=1
    )
    assert await handle_inference_request(good, rt) is Outcome.COMPLETED
    assert json.loads(store.text(names.RESULTS_CONTAINER, "tailwind/r-after.json"))["status"] == (
        "succeeded"
    )
    await rt.close()


@fuzz_settings(150)
@given(body=bodies(VALID, "messages"), props=PROPERTIES, message_id=MESSAGE_IDS, reply_to=REPLY_TO)
def test_any_inference_message_ends_in_a_result_or_a_rejection(
    body: bytes, props: dict[str, Any], message_id: str, reply_to: str | None
) -> None:
    asyncio.run(deliver(body, props, message_id, reply_to))
