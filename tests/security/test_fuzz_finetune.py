"""Fuzzing `finetune.request` v1 on `finetune-jobs`: the intake over the in-memory fine-tuning loop.

Any body around a valid request (job keys with path tricks, datasets pointing at another
tenant's blobs or out of the container, wrong types, huge, nested, odd Unicode), any properties
and message id: the intake returns a job record or a `finetune.rejected` record, never raises,
and writes only blobs named from safe ids in a known prefix; a valid request afterwards is
submitted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from shared.contracts import RejectionRecord
from shared.finetune.jobs import JobRecord
from shared.messages import InboundMessage
from shared.storage import names
from tests.security.fuzz_kit import MESSAGE_IDS, PROPERTIES, TRICKS, bodies, encode, fuzz_settings
from tests.security.test_fuzz_inference import assert_safe_names
from tests.unit.finetune.test_loop import example, make_loop, put_dataset, request

DATASET = "training/fabrikam/ds-1.jsonl"
SHA = hashlib.sha256("".join(json.dumps(example(i)) + "\n" for i in range(60)).encode()).hexdigest()
VALID = request(DATASET, SHA)
ATTACKS = st.sampled_from(
    [{"job_key": trick} for trick in TRICKS]
    + [
        {"dataset": {**VALID["dataset"], "blob": "training/contoso/ds-1.jsonl"}},
        {"dataset": {**VALID["dataset"], "blob": "training/fabrikam/../contoso/ds-1.jsonl"}},
        {"dataset": {**VALID["dataset"], "blob": "training/fabrikam/%2e%2e/contoso/x.jsonl"}},
        {"dataset": {**VALID["dataset"], "manifest": "results/contoso/r-1.json"}},
        {"tenant_id": "contoso", "tenants_in_dataset": ["contoso"]},
        {"tenants_in_dataset": ["fabrikam", "contoso"]},
    ]
).map(lambda change: encode({**VALID, **change}))


async def intake(body: bytes, props: dict[str, Any], message_id: str) -> None:
    loop = await make_loop()
    dataset, sha = await put_dataset(loop.store)
    assert (dataset, sha) == (DATASET, SHA)
    message = InboundMessage(
        body=body, message_id=message_id, application_properties=props, delivery_count=1
    )
    outcome = await loop.runtime.finetune_intake.handle_message(message)
    if isinstance(outcome, RejectionRecord):
        event(f"rejected: {outcome.reason}")
        [name] = loop.store.names(names.REJECTED_CONTAINER)
        assert name.split("/")[1] == "finetune"
    else:
        assert isinstance(outcome, JobRecord)
        event(f"job: {outcome.state}")
    assert_safe_names(loop.store)
    good = InboundMessage(
        body=encode(request(dataset, sha, key="fabrikam.dft-good")), message_id="m-good"
    )
    assert isinstance(await loop.runtime.finetune_intake.handle_message(good), JobRecord)
    await loop.runtime.close()


@fuzz_settings(80)
@given(body=st.one_of(bodies(VALID), ATTACKS), props=PROPERTIES, message_id=MESSAGE_IDS)
def test_any_finetune_request_is_a_job_or_a_rejection(
    body: bytes, props: dict[str, Any], message_id: str
) -> None:
    asyncio.run(intake(body, props, message_id))
