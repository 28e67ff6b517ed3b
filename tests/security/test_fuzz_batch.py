"""Fuzzing batch uploads: any rows in `uploads/<tenant>/batch/<name>.jsonl`, and any upload name.

Rows: any line bytes (the inference request's fuzz bodies, lone surrogates escaped, binary,
huge, nested) are fanned out or refused at intake, every sent row is answered by the handler,
and every non-blank line ends in exactly one of the results file and the errors file (the batch
completes). Names: any blob name in the uploads container (path tricks in the tenant and file
parts) is taken as a batch, refused with a reason, or ignored (no tenant to file it under), and
nothing is written outside a known prefix or `_unknown/`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from shared.batch.gather import errors_file_name, results_file_name
from shared.batch.intake import Upload
from shared.contracts.inference import unencodable_position
from shared.inference.handler import Outcome, handle_inference_request
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import memory_runtime
from tests.security.fuzz_kit import ODD_TEXT, bodies, encode, fuzz_settings
from tests.security.test_fuzz_inference import assert_safe_names
from tests.unit.batch.helpers import RecordingRowSender, as_inbound, jsonl, unlimited_registry

ROW: dict[str, Any] = {"messages": [{"role": "user", "content": "hello"}]}
LINES = st.lists(bodies(ROW, "messages").map(lambda b: b.replace(b"\n", b" ")), max_size=5)


async def batch(lines: list[bytes]) -> None:
    store, sender = MemoryBlobStore(), RecordingRowSender()
    rt = memory_runtime(unlimited_registry(), store=store)
    rt.row_sender = sender
    name = "tailwind/batch/fuzz.jsonl"
    await store.put(names.UPLOADS_CONTAINER, name, b"\n".join([*lines, encode(ROW)]) + b"\n")
    progress = await rt.batches.take(Upload(name))
    assert progress is not None
    for row in sender.rows:
        outcome = await handle_inference_request(as_inbound(row), rt)
        assert outcome in (Outcome.COMPLETED, Outcome.REJECTED), outcome
    final = await rt.batches.progress("tailwind", progress.batch_id)
    assert final is not None
    event(f"batch: {final.state}, invalid {final.counts.invalid}")
    assert final.state == "completed"
    answered = jsonl(store, names.RESULTS_CONTAINER, results_file_name("tailwind", final.batch_id))
    refused = jsonl(store, names.RESULTS_CONTAINER, errors_file_name("tailwind", final.batch_id))
    assert len(answered) + len(refused) == final.counts.rows
    numbers = [r["line"] for r in answered + refused]  # file lines; blank ones are skipped
    assert len(set(numbers)) == len(numbers)
    assert max(numbers) == len(lines) + 1
    assert answered[-1]["status"] == "succeeded"  # the good last row: the batch kept serving
    assert_safe_names(store)


@fuzz_settings(60)
@given(lines=LINES)
def test_any_batch_rows_each_end_in_a_result_or_an_error(lines: list[bytes]) -> None:
    asyncio.run(batch(lines))


NAMES = st.one_of(
    st.builds(lambda t, f: f"{t}/batch/{f}.jsonl", ODD_TEXT, ODD_TEXT),
    st.builds(lambda f: f"tailwind/batch/{f}.jsonl", ODD_TEXT),
    st.builds(lambda t: f"{t}/batch/x.jsonl", ODD_TEXT),
    ODD_TEXT,
)


async def named(name: str) -> None:
    store, sender = MemoryBlobStore(), RecordingRowSender()
    rt = memory_runtime(unlimited_registry(), store=store)
    rt.row_sender = sender
    if unencodable_position(name) is not None:
        return  # not a name a blob can have (a lone surrogate): no trigger fires for it
    await store.put(names.UPLOADS_CONTAINER, name, encode(ROW) + b"\n")
    progress = await rt.batches.take(Upload(name))
    event("ignored" if progress is None else f"{progress.state} {progress.tenant_id}")
    if progress is not None and progress.tenant_id != "tailwind":
        assert progress.state == "rejected"
        assert sender.rows == []
    assert_safe_names(store)


@fuzz_settings(80)
@given(name=NAMES)
def test_any_upload_name_is_a_batch_a_refusal_or_ignored(name: str) -> None:
    asyncio.run(named(name))
