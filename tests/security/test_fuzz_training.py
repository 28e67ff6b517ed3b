"""Fuzzing training uploads (`uploads/<tenant>/training/<name>.jsonl`): rows and names.

Any rows around a valid chat example (wrong types, roles, huge, nested, odd Unicode, lone
surrogates escaped, binary): the upload is pooled with each bad row reported by its line, or
refused whole with a reason, never a crash; every row is counted once (kept or invalid). Any
upload name: a record (possibly refused, under `_unknown/` for an unknown tenant) or ignored,
and nothing is written outside a known prefix. A good upload afterwards is pooled.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from shared.contracts.inference import unencodable_position
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import RecordingReplySender
from tests.security.fuzz_kit import ODD_TEXT, bodies, encode, fuzz_settings
from tests.security.test_fuzz_inference import assert_safe_names
from tests.unit.finetune.test_training_uploads import make_intake, upload

EXAMPLE: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You answer for Fabrikam."},
        {"role": "user", "content": "Why was I charged twice?"},
        {"role": "assistant", "content": "We refunded the second charge."},
    ]
}
LINES = st.lists(bodies(EXAMPLE, "messages").map(lambda b: b.replace(b"\n", b" ")), max_size=5)


async def pooled(lines: list[bytes]) -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    intake = make_intake(store, replies)
    name = await upload(store, "fabrikam/training/fuzz.jsonl", b"\n".join(lines) + b"\n")
    record = await intake.take(name)
    assert record is not None
    event(f"upload: {record.state} {record.rejection.reason if record.rejection else ''}")
    assert record.state in ("pooled", "rejected")
    if record.state == "pooled":
        assert record.kept + record.invalid == record.rows
    assert_safe_names(store)
    good = await upload(store, "fabrikam/training/good.jsonl", [json.dumps(EXAMPLE)] * 3)
    after = await intake.take(good)
    assert after is not None
    assert (after.state, after.kept) == ("pooled", 3)


@fuzz_settings(40)
@given(lines=LINES)
def test_any_training_rows_are_pooled_or_reported(lines: list[bytes]) -> None:
    asyncio.run(pooled(lines))


NAMES = st.one_of(
    st.builds(lambda t, f: f"{t}/training/{f}.jsonl", ODD_TEXT, ODD_TEXT),
    st.builds(lambda f: f"fabrikam/training/{f}.jsonl", ODD_TEXT),
    st.builds(lambda t: f"{t}/training/x.jsonl", ODD_TEXT),
    ODD_TEXT,
)


async def named(name: str) -> None:
    if unencodable_position(name) is not None:
        return  # not a name a blob can have: no trigger fires for it
    store, replies = MemoryBlobStore(), RecordingReplySender()
    intake = make_intake(store, replies)
    await store.put(names.UPLOADS_CONTAINER, name, encode(EXAMPLE) + b"\n")
    record = await intake.take(name)
    event("ignored" if record is None else f"{record.state} {record.tenant_id}")
    if record is not None and record.tenant_id != "fabrikam":
        assert record.state == "rejected"
    assert_safe_names(store)


@fuzz_settings(60)
@given(name=NAMES)
def test_any_training_upload_name_is_a_record_or_ignored(name: str) -> None:
    asyncio.run(named(name))
