"""Training uploads over MemoryBlobStore: rows kept scrubbed, bad rows reported by line, whole-file
refusals, consent, idempotent re-processing (and a try cut short), the fine-tune policy.

The checks are helpers (`pooled_examples`, `assert_scrubbed`, `errors_of`, `finetune_requests`);
the tests at the end ("... can fail") feed each one a state it must refuse: a check that cannot
fail proves nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.batch.files import StoreBatchFiles
from shared.contracts import FINETUNE_REQUEST_TYPE, FinetuneRequest
from shared.contracts.finetune import DatasetRef, FinetuneReason, ModelRef
from shared.feedback.consent import Consent
from shared.feedback.pii import Scrubbed, default_scrubber
from shared.finetune.requests import FinetuneRequests, tuning_record_name
from shared.finetune.training_intake import (
    TrainingUploads,
    UploadRecord,
    record_name,
    rejection_name,
    upload_id_for,
)
from shared.finetune.training_pool import PoolIndex, index_name
from shared.finetune.training_rows import UploadLimits
from shared.finetune.uploads import handle_training_upload
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, parse_registry
from shared.tenancy.registry_source import StaticRegistry
from tests.fakes import RecordingReplySender, memory_runtime
from tests.unit.batch.helpers import Clock
from tests.unit.finetune.conftest import YieldingBlobStore

DEVHOST_REGISTRY = Path(__file__).resolve().parents[3] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
SECRET = "my password is hunter2"
FULL_WIDTH_EMAIL = "".join(chr(ord(c) + 0xFEE0) for c in "jane@example.com")
LIMITS = UploadLimits(
    max_upload_bytes=64 * 1024,
    max_row_bytes=2048,
    max_rows=60,
    max_example_tokens=200,
    scrub_rows=3,
    part_rows=4,
)
TUNABLE = {
    "log_prompts": True,
    "allow_tuning": True,
    "min_training_examples": 20,
    "tuning_cooldown_hours": 24,
}


def registry(**policies: Mapping[str, Any]) -> Registry:
    """The devhost registry (fabrikam: tuned, may tune; contoso: keeps no text; tailwind: pooled,
    shares), with some tenants' policies replaced."""
    document = json.loads(DEVHOST_REGISTRY.read_text())
    for tenant in document["tenants"]:
        if tenant["id"] in policies:
            tenant["policy"] = dict(policies[tenant["id"]])
    return parse_registry(json.dumps(document), env=ENV)


class CountingScrubber:
    """The real scrubber, counting the texts it is given (or passing them through unchanged)."""

    def __init__(self, *, identity: bool = False) -> None:
        self.texts = 0
        self._identity = identity

    def scrub(self, text: str) -> Scrubbed:
        self.texts += 1
        return Scrubbed(text, {}) if self._identity else default_scrubber().scrub(text)


def make_intake(
    store: MemoryBlobStore,
    replies: RecordingReplySender,
    *,
    reg: Registry | None = None,
    clock: Clock | None = None,
    limits: UploadLimits = LIMITS,
    scrubber: CountingScrubber | None = None,
) -> TrainingUploads:
    counting = scrubber or CountingScrubber()
    return TrainingUploads(
        store=store,
        files=StoreBatchFiles(store, chunk_bytes=64),  # lines span chunks
        registry=StaticRegistry(reg or registry(fabrikam=TUNABLE)),
        consent=Consent(lambda: counting),
        sender=replies,
        clock=clock or Clock(),
        limits=limits,
    )


def example(i: int, *, pii: bool = True) -> str:
    user = f"Question {i}: my email is jane.doe{i}@example.com, call +44 20 7946 0958"
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You answer for Fabrikam."},
                {"role": "user", "content": user if pii else f"Question {i}"},
                {"role": "assistant", "content": f"Answer {i}"},
            ]
        }
    )


async def upload(store: MemoryBlobStore, name: str, lines: Sequence[str] | bytes) -> str:
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    await store.put(names.UPLOADS_CONTAINER, name, data, content_type="application/x-ndjson")
    return name


async def upload_id(store: MemoryBlobStore, name: str) -> str:
    blob = await store.read(names.UPLOADS_CONTAINER, name)
    assert blob is not None
    assert blob.etag is not None
    return upload_id_for(name.split("/", 1)[0], name, blob.etag)


# --- the checks -----------------------------------------------------------------------------


def pooled_examples(store: MemoryBlobStore, tenant: str) -> list[dict[str, Any]]:
    """Every example in the tenant's pool, by the index: an upload listed twice, or a part
    written twice, shows up as repeated examples."""
    index = PoolIndex.model_validate_json(store.text(names.TRAINING_CONTAINER, index_name(tenant)))
    ids = [e.upload_id for e in index.entries]
    assert len(ids) == len(set(ids)), "an upload is pooled twice"
    examples = []
    for entry in index.entries:
        prefix = f"{tenant}/pool/{entry.upload_id}/"
        parts = [n for n in store.names(names.TRAINING_CONTAINER) if n.startswith(prefix)]
        assert len(parts) == entry.parts
        for part in sorted(parts):
            text = store.text(names.TRAINING_CONTAINER, part)
            examples += [json.loads(line) for line in text.splitlines()]
        assert sum(1 for _ in examples) >= entry.examples
    assert len(examples) == sum(e.examples for e in index.entries)
    return examples


def assert_scrubbed(examples: Sequence[Mapping[str, Any]]) -> None:
    """No email, phone or invisible character survived; the placeholders are there instead."""
    for ex in examples:
        for message in ex["messages"]:
            content = message["content"]
            assert "@example.com" not in content
            assert "7946" not in content
            assert "\u200b" not in content
            assert "\uff20" not in content  # a full-width @
    user_turns = [m["content"] for ex in examples for m in ex["messages"] if m["role"] == "user"]
    assert any("<EMAIL>" in text for text in user_turns)


def errors_of(store: MemoryBlobStore, name: str) -> list[dict[str, Any]]:
    text = store.text(names.REJECTED_CONTAINER, name)
    errors = [json.loads(line) for line in text.splitlines()]
    for error in errors:
        assert error["type"] == "training.error"
        assert SECRET not in json.dumps(error)
        assert "hunter2" not in error["detail"]
    return errors


def finetune_requests(replies: RecordingReplySender) -> list[FinetuneRequest]:
    found = []
    for reply in replies.sent:
        assert reply.queue == names.FINETUNE_JOBS
        request = FinetuneRequest.model_validate_json(reply.body)
        assert reply.message_id == request.job_key == reply.correlation_id
        assert reply.subject == FINETUNE_REQUEST_TYPE
        found.append(request)
    return found


# --- good rows ------------------------------------------------------------------------------


async def test_good_rows_are_pooled_scrubbed_and_normalised() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    fullwidth = json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"write to {FULL_WIDTH_EMAIL}"},
                {"role": "assistant", "content": "Do\u200bne"},
            ]
        }
    )
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(1), fullwidth, example(2)])
    record = await make_intake(store, replies, reg=registry()).take(name)

    assert record is not None
    assert record.state == "pooled"
    assert (record.rows, record.kept, record.invalid) == (3, 3, 0)
    assert record.pii_removed["email"] == 3
    assert record.pii_removed["phone"] == 2
    examples = pooled_examples(store, "fabrikam")
    assert len(examples) == 3
    assert_scrubbed(examples)
    assert examples[1]["messages"][1]["content"] == "Done"  # invisible character removed
    assert examples[0]["messages"][0] == {"role": "system", "content": "You answer for Fabrikam."}
    assert errors_of(store, rejection_name("fabrikam", name, record.upload_id)) == []
    stored = await store.read(names.TRAINING_CONTAINER, record_name("fabrikam", record.upload_id))
    assert stored is not None
    assert UploadRecord.model_validate_json(stored.data).state == "pooled"


async def test_parts_hold_part_rows_in_file_order() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    name = await upload(store, "fabrikam/training/ten.jsonl", [example(i) for i in range(10)])
    record = await make_intake(store, replies, reg=registry()).take(name)
    assert record is not None
    assert record.parts == 3  # 4 + 4 + 2
    answers = [ex["messages"][-1]["content"] for ex in pooled_examples(store, "fabrikam")]
    assert answers == [f"Answer {i}" for i in range(10)]


async def test_the_handler_goes_through_the_runtime() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    runtime = memory_runtime(registry(), store=store, replies=replies)
    name = await upload(store, "fabrikam/training/via-handler.jsonl", [example(1)])
    await handle_training_upload(f"{names.UPLOADS_CONTAINER}/{name}", runtime)
    assert len(pooled_examples(store, "fabrikam")) == 1
    assert runtime.training_uploads is runtime.training_uploads  # built once


# --- bad rows -------------------------------------------------------------------------------


async def test_bad_rows_are_reported_by_line_and_reason_never_by_text() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()

    def chat(*turns: tuple[str, str], **more: Any) -> str:
        return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns], **more})

    lines = [
        example(1),  # 1 good
        "not json " + SECRET,  # 2
        chat(("user", SECRET)),  # 3 one turn
        chat(("system", SECRET), ("assistant", "a")),  # 4 no user turn
        chat(("user", SECRET), ("assistant", "a"), ("user", "b")),  # 5 ends with user
        chat(("user", SECRET), ("robot", "a")),  # 6 unknown role
        chat(("user", SECRET), ("assistant", "a"), tools=[]),  # 7 another key
        chat(("user", SECRET), ("assistant", " \u200b ")),  # 8 empty once normalised
        "",  # 9 blank: no row
        chat(("user", "x" * 1500), ("assistant", "a")),  # 10 over 200 tokens
        chat(("user", "y" * 3000), ("assistant", "a")),  # 11 over 2048 bytes
        json.dumps([SECRET]),  # 12 not an object
        '{"messages": [{"role": "user", "content": "\\ud83d"}, '
        '{"role": "assistant", "content": "a"}]}',  # 13 lone surrogate
        example(2),  # 14 good
    ]
    name = await upload(store, "fabrikam/training/mixed.jsonl", lines)
    record = await make_intake(store, replies, reg=registry()).take(name)

    assert record is not None
    assert (record.rows, record.kept, record.invalid) == (13, 2, 11)
    errors = errors_of(store, rejection_name("fabrikam", name, record.upload_id))
    assert [(e["line"], e["reason"]) for e in errors] == [
        (2, "invalid_json"),
        (3, "invalid_example"),
        (4, "invalid_example"),
        (5, "invalid_example"),
        (6, "invalid_example"),
        (7, "invalid_example"),
        (8, "invalid_example"),
        (10, "example_too_long"),
        (11, "row_too_large"),
        (12, "invalid_json"),
        (13, "invalid_example"),
    ]
    details = {e["line"]: e["detail"] for e in errors}
    assert "messages" in details[3]
    assert "role 'user'" in details[4]
    assert "messages[2].role" in details[5]
    assert "messages[1].role" in details[6]
    assert "tools" in details[7]
    assert "messages[1].content" in details[8]
    assert "65536" not in details[10]
    assert "200" in details[10]
    assert "2048" in details[11]
    assert "surrogate" in details[13]
    assert [ex["messages"][-1]["content"] for ex in pooled_examples(store, "fabrikam")] == [
        "Answer 1",
        "Answer 2",
    ]


# --- whole-file refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("fabrikam/training/faq.csv", b'{"a": 1}\n', "bad_path"),
        ("fabrikam/training/deep/faq.jsonl", b'{"a": 1}\n', "bad_path"),
        ("fabrikam/training/empty.jsonl", b"", "empty_file"),
        ("fabrikam/training/blank.jsonl", b"\n \n\r\n", "empty_file"),
        ("fabrikam/training/big.jsonl", b"x" * (64 * 1024 + 1), "file_too_large"),
        ("fabrikam/training/utf16.jsonl", example(1).encode("utf-16"), "not_utf8"),
        ("fabrikam/training/latin1.jsonl", (example(1) + "\nné\n").encode("latin-1"), "not_utf8"),
        ("fabrikam/training/many.jsonl", ("\n".join([example(1)] * 61)).encode(), "too_many_rows"),
    ],
)
async def test_a_whole_file_problem_is_one_record_and_nothing_is_kept(
    name: str, data: bytes, reason: str
) -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    scrubber = CountingScrubber()
    await upload(store, name, data)
    record = await make_intake(store, replies, reg=registry(), scrubber=scrubber).take(name)

    assert record is not None
    assert record.state == "rejected"
    assert record.rejection is not None
    assert record.rejection.reason == reason
    [error] = errors_of(store, rejection_name("fabrikam", name, record.upload_id))
    assert (error["line"], error["reason"]) == (None, reason)
    assert scrubber.texts == 0
    assert [n for n in store.names(names.TRAINING_CONTAINER) if "/pool/" in n] == []
    assert replies.sent == []


async def test_not_utf8_names_the_line() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    name = await upload(
        store, "fabrikam/training/l1.jsonl", f"{example(1)}\nn\xe9\n".encode("latin-1")
    )
    record = await make_intake(store, replies, reg=registry()).take(name)
    assert record is not None
    assert record.rejection is not None
    assert record.rejection.detail.startswith("line 2 is not UTF-8")


async def test_an_unknown_tenant_is_filed_under_unknown() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    name = await upload(store, "nobody/training/faq.jsonl", [example(1)])
    record = await make_intake(store, replies).take(name)
    assert record is not None
    assert record.tenant_id == names.UNKNOWN_TENANT_PREFIX
    uid = await upload_id(store, name)
    [error] = errors_of(store, rejection_name(names.UNKNOWN_TENANT_PREFIX, name, uid))
    assert error["reason"] == "unknown_tenant"
    assert store.names(names.TRAINING_CONTAINER) == []


async def test_a_path_without_a_well_formed_tenant_or_a_gone_blob_files_nothing() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    intake = make_intake(store, replies)
    assert await intake.take("gone/training/x.jsonl") is None
    name = await upload(store, "Not_A_Tenant/training/x.jsonl", [example(1)])
    assert await intake.take(name) is None
    assert store.names(names.REJECTED_CONTAINER) == []


# --- consent --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "policies", "why"),
    [
        ("contoso", {}, "log_prompts is false"),  # dedicated; keeps no text
        ("fabrikam", {"fabrikam": {"allow_tuning": True}}, "log_prompts is false"),
        ("tailwind", {"tailwind": {"log_prompts": True}}, "share_for_training is false"),
    ],
)
async def test_a_tenant_whose_text_may_not_train_is_refused_before_any_text_is_read(
    tenant: str, policies: dict[str, Mapping[str, Any]], why: str
) -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    scrubber = CountingScrubber()
    name = await upload(store, f"{tenant}/training/faq.jsonl", [example(1)])
    intake = make_intake(store, replies, reg=registry(**policies), scrubber=scrubber)
    record = await intake.take(name)

    assert record is not None
    assert record.rejection is not None
    assert record.rejection.reason == "no_consent"
    assert why in record.rejection.detail
    assert scrubber.texts == 0
    assert [n for n in store.names(names.TRAINING_CONTAINER) if "/pool/" in n] == []


async def test_a_pooled_tenant_that_shares_is_pooled_but_not_tuned() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    name = await upload(store, "tailwind/training/faq.jsonl", [example(i) for i in range(25)])
    record = await make_intake(store, replies, reg=registry()).take(name)
    assert record is not None
    assert record.kept == 25
    assert record.tuning is not None
    assert (record.tuning.kind, "allow_tuning" in record.tuning.detail) == ("skipped", True)
    assert replies.sent == []


# --- idempotency ----------------------------------------------------------------------------


async def test_processing_the_same_upload_again_pools_nothing_twice() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    scrubber = CountingScrubber()
    intake = make_intake(store, replies, reg=registry(), scrubber=scrubber)
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(i) for i in range(6)])
    first = await intake.take(name)
    texts = scrubber.texts
    again = await intake.take(name)
    await handle_training_upload(name, memory_runtime(registry(), store=store, replies=replies))

    assert first is not None
    assert again is not None
    assert (again.upload_id, again.kept) == (first.upload_id, 6)
    assert scrubber.texts == texts  # not even read again
    assert len(pooled_examples(store, "fabrikam")) == 6


async def test_the_same_name_uploaded_again_is_a_new_upload() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    intake = make_intake(store, replies, reg=registry())
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(1)])
    first = await intake.take(name)
    await upload(store, name, [example(2)])
    second = await intake.take(name)
    assert first is not None
    assert second is not None
    assert first.upload_id != second.upload_id
    assert len(pooled_examples(store, "fabrikam")) == 2


class FailingOnce(MemoryBlobStore):
    """Fails the first write of a pool part named `fail_at` (a try cut short there)."""

    def __init__(self, fail_at: str) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.failed = False

    async def create(self, container: str, name: str, data: bytes, **kw: Any) -> bool:
        if name.endswith(self.fail_at) and not self.failed:
            self.failed = True
            raise ConnectionError("storage went away")
        return await super().create(container, name, data, **kw)


async def test_a_try_cut_short_resumes_after_its_last_part() -> None:
    store, replies = FailingOnce("/00002.jsonl"), RecordingReplySender()
    scrubber = CountingScrubber()
    intake = make_intake(store, replies, reg=registry(), scrubber=scrubber)
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(i) for i in range(10)])
    with pytest.raises(ConnectionError):
        await intake.take(name)
    uid = await upload_id(store, name)
    half = UploadRecord.model_validate_json(
        store.text(names.TRAINING_CONTAINER, record_name("fabrikam", uid))
    )
    assert (half.state, half.parts, half.through_line, half.kept) == ("pooling", 2, 8, 8)
    texts = scrubber.texts

    record = await intake.take(name)
    assert record is not None
    assert (record.state, record.kept, record.parts) == ("pooled", 10, 3)
    assert scrubber.texts - texts == 2 * 3  # only rows 9 and 10 (3 turns each) again
    answers = [ex["messages"][-1]["content"] for ex in pooled_examples(store, "fabrikam")]
    assert answers == [f"Answer {i}" for i in range(10)]


# --- the fine-tune policy -------------------------------------------------------------------


async def test_enough_new_examples_send_one_request_with_a_drift_style_training_set() -> None:
    store, replies, clock = MemoryBlobStore(), RecordingReplySender(), Clock()
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(i) for i in range(22)])
    record = await make_intake(store, replies, clock=clock).take(name)

    assert record is not None
    assert record.tuning is not None
    assert record.tuning.kind == "finetune_requested"
    [request] = finetune_requests(replies)
    assert request.tenant_id == "fabrikam"
    assert request.scope == "tenant"
    assert request.reason.kind == "training_upload"
    assert request.reason.report == f"training/{record_name('fabrikam', record.upload_id)}"
    assert request.job_key == record.tuning.job_key
    assert request.job_key.startswith("fabrikam.tup-")
    assert request.current.deployment == "fabrikam-ft-v1"
    assert request.base.deployment == "gpt-4o-mini-pool-a"
    assert request.tenants_in_dataset == ("fabrikam",)
    assert request.requested_at == clock.now
    assert replies.sent[0].application_properties == {
        "tenant_id": "fabrikam",
        "type": FINETUNE_REQUEST_TYPE,
    }
    # the set: JSONL of the pooled examples + manifest, as shared.drift.training_set writes them
    container, blob = request.dataset.blob.split("/", 1)
    assert container == names.TRAINING_CONTAINER
    assert blob == f"fabrikam/{request.dataset.blob.rsplit('/', 1)[-1]}"
    data = (await store.read(container, blob)).data  # type: ignore[union-attr]
    assert [json.loads(line) for line in data.splitlines()] == pooled_examples(store, "fabrikam")
    manifest = json.loads(store.text(*request.dataset.manifest.split("/", 1)))
    assert {
        "type",
        "version",
        "dataset_id",
        "tenant_id",
        "scope",
        "format",
        "blob",
        "examples",
        "sha256",
        "tenants",
        "window",
        "drift_report",
        "created_at",
    } <= set(manifest)
    assert (manifest["examples"], manifest["tenants"]) == (22, ["fabrikam"])
    assert manifest["sha256"] == request.dataset.sha256 == hashlib.sha256(data).hexdigest()
    assert request.dataset.examples == 22
    assert request.dataset.manifest == f"training/fabrikam/{manifest['dataset_id']}.manifest.json"
    # the cool-down record, shared with drift
    tuning = store.text(names.DRIFT_CONTAINER, tuning_record_name("fabrikam"))
    assert FinetuneRequest.model_validate_json(tuning).job_key == request.job_key


async def test_examples_add_up_across_uploads_until_the_policy_minimum() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    intake = make_intake(store, replies)
    first = await intake.take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(12)])
    )
    assert first is not None
    assert first.tuning is not None
    assert first.tuning.kind == "waiting"
    assert "12 new examples" in first.tuning.detail
    assert "needs 20" in first.tuning.detail
    assert replies.sent == []
    second = await intake.take(
        await upload(store, "fabrikam/training/b.jsonl", [example(i) for i in range(12, 20)])
    )
    assert second is not None
    assert second.tuning is not None
    assert second.tuning.kind == "finetune_requested"
    [request] = finetune_requests(replies)
    assert request.dataset.examples == 20


async def test_a_policy_minimum_below_azures_is_raised_to_it() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    reg = registry(fabrikam={**TUNABLE, "min_training_examples": 1})
    record = await make_intake(store, replies, reg=reg).take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(14)])
    )
    assert record is not None
    assert record.tuning is not None
    assert record.tuning.kind == "waiting"
    assert "needs 15" in record.tuning.detail


async def test_no_request_without_allow_tuning() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    reg = registry(fabrikam={**TUNABLE, "allow_tuning": False})
    record = await make_intake(store, replies, reg=reg).take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(25)])
    )
    assert record is not None
    assert record.kept == 25
    assert record.tuning is not None
    assert record.tuning.kind == "skipped"
    assert replies.sent == []


async def test_the_cool_down_holds_requests_back_and_only_new_examples_count_after_it() -> None:
    store, replies, clock = MemoryBlobStore(), RecordingReplySender(), Clock()
    intake = make_intake(store, replies, clock=clock)
    await intake.take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(20)])
    )
    assert len(finetune_requests(replies)) == 1

    clock.advance(3600)
    held = await intake.take(
        await upload(store, "fabrikam/training/b.jsonl", [example(i) for i in range(20, 45)])
    )
    assert held is not None
    assert held.tuning is not None
    assert held.tuning.kind == "skipped"
    assert "cool-down until 2025-01-03T03:04:05" in held.tuning.detail
    assert len(replies.sent) == 1

    clock.advance(24 * 3600)
    later = await intake.take(
        await upload(store, "fabrikam/training/c.jsonl", [example(i) for i in range(45, 46)])
    )
    assert later is not None
    assert later.tuning is not None
    assert later.tuning.kind == "finetune_requested"
    first, second = finetune_requests(replies)
    assert first.job_key != second.job_key
    assert "26 examples uploaded since the last request" in second.reason.summary
    assert second.dataset.examples == 46  # the set is the whole pool


async def test_a_request_from_drift_starts_the_same_cool_down() -> None:
    store, replies, clock = MemoryBlobStore(), RecordingReplySender(), Clock()
    drift = FinetuneRequest(
        job_key="fabrikam.dft-0123456789abcdef0123",
        tenant_id="fabrikam",
        scope="tenant",
        base=ModelRef(deployment="gpt-4o-mini-pool-a"),
        current=ModelRef(deployment="fabrikam-ft-v1"),
        dataset=DatasetRef(
            blob="training/fabrikam/ds-1.jsonl",
            manifest="training/fabrikam/ds-1.manifest.json",
            sha256="0" * 64,
            examples=30,
        ),
        reason=FinetuneReason(kind="quality_drift", summary="quality fell"),
        tenants_in_dataset=("fabrikam",),
        requested_at=clock.now - timedelta(hours=2),
    )
    await FinetuneRequests(store, RecordingReplySender()).send(drift)
    record = await make_intake(store, replies, clock=clock).take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(25)])
    )
    assert record is not None
    assert record.tuning is not None
    assert record.tuning.kind == "skipped"
    assert "cool-down" in record.tuning.detail
    assert replies.sent == []


async def test_racing_uploads_send_one_request() -> None:
    store, replies = YieldingBlobStore(), RecordingReplySender()
    intake = make_intake(store, replies)
    a = await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(20)])
    b = await upload(store, "fabrikam/training/b.jsonl", [example(i) for i in range(20, 40)])
    records = await asyncio.gather(intake.take(a), intake.take(b))
    assert len({r.job_key for r in finetune_requests(replies)}) == 1
    kinds = sorted(r.tuning.kind for r in records if r is not None and r.tuning is not None)
    assert kinds[0] == "finetune_requested"
    assert kinds[1] in ("finetune_requested", "skipped", "waiting")  # cool-down, or nothing new
    assert len(pooled_examples(store, "fabrikam")) == 40


async def test_racing_decisions_claim_one_request() -> None:
    """Two instances deciding at once on the same pool: one claim wins (If-Match on the index);
    the other finds the claim and completes the same request (same job key: Service Bus drops
    the repeat by message id)."""
    store, replies = YieldingBlobStore(), RecordingReplySender()
    quiet = registry(fabrikam={**TUNABLE, "allow_tuning": False})
    name = await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(20)])
    record = await make_intake(store, replies, reg=quiet).take(name)
    assert record is not None
    assert replies.sent == []
    reg = registry(fabrikam=TUNABLE)
    tenant = reg.tenant("fabrikam")
    assert tenant is not None
    first, second = make_intake(store, replies, reg=reg), make_intake(store, replies, reg=reg)
    actions = await asyncio.gather(
        first.consider(reg, tenant, record), second.consider(reg, tenant, record)
    )
    kinds = sorted(a.kind for a in actions)  # the later one found the claim, or its close
    assert kinds in (
        ["finetune_requested", "finetune_requested"],
        ["finetune_requested", "waiting"],
    )
    assert len({r.job_key for r in finetune_requests(replies)}) == 1
    index = PoolIndex.model_validate_json(store.text("training", index_name("fabrikam")))
    assert (index.pending, index.requested_through) == (None, 1)
    assert index.last_request is not None
    assert index.last_request.job_key == finetune_requests(replies)[0].job_key


async def test_a_request_whose_send_failed_is_sent_by_the_next_try_with_the_same_key() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender(failures=[ConnectionError("bus")])
    intake = make_intake(store, replies)
    name = await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(20)])
    with pytest.raises(ConnectionError):
        await intake.take(name)
    index = PoolIndex.model_validate_json(store.text("training", index_name("fabrikam")))
    assert index.pending is not None
    record = await intake.take(name)
    [request] = finetune_requests(replies)
    assert request.job_key == index.pending.job_key
    assert record is not None
    assert record.tuning is not None
    assert record.tuning.job_key == request.job_key
    after = PoolIndex.model_validate_json(store.text("training", index_name("fabrikam")))
    assert (after.pending, after.requested_through) == (None, 1)
    await intake.take(name)
    assert len(replies.sent) == 1  # a third try finds nothing to do


async def test_nothing_sent_is_stored_unscrubbed_and_a_shared_set_holds_only_sharers() -> None:
    """The consent rule over everything written (as tests/unit/feedback/test_consent_rule.py
    does for the inference log): every blob outside `uploads/` is searched."""
    personal = {
        "email": "ann.oakley@example.org",
        "phone": "+44 20 7946 0958",
        "card": "4111 1111 1111 1111",
        "iban": "DE89 3704 0044 0532 0130 00",
    }
    store, replies = MemoryBlobStore(), RecordingReplySender()
    sharing = {"log_prompts": True, "share_for_training": True, "allow_tuning": True}
    reg = registry(
        tailwind={**sharing, "min_training_examples": 1},
        fabrikam={**TUNABLE, "min_training_examples": 1},
        contoso={**sharing, "log_prompts": False},
    )
    intake = make_intake(store, replies, reg=reg)

    def row(tenant: str, i: int) -> str:
        text = f"{tenant} secret {i}: " + ", ".join(personal.values())
        turns = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
        return json.dumps({"messages": turns})

    for tenant in ("tailwind", "fabrikam", "contoso"):
        bad = json.dumps({"messages": [{"role": "user", "content": row(tenant, 99)}]})
        await intake.take(
            await upload(
                store, f"{tenant}/training/a.jsonl", [row(tenant, i) for i in range(15)] + [bad]
            )
        )

    stored = [
        (container, name, bytes(data).decode("utf-8"))
        for (container, name), data in store.blobs.items()
        if container != names.UPLOADS_CONTAINER
    ]
    for container, name, text in stored:
        for kind, value in personal.items():
            assert value not in text, f"{kind} in {container}/{name}"
        assert "contoso secret" not in text, f"contoso's text in {container}/{name}"
    requests = {r.tenant_id: r for r in finetune_requests(replies)}
    assert set(requests) == {"tailwind", "fabrikam"}
    assert (requests["tailwind"].scope, requests["tailwind"].tenants_in_dataset) == (
        "shared",
        ("tailwind",),
    )
    assert (requests["fabrikam"].scope, requests["fabrikam"].tenants_in_dataset) == (
        "tenant",
        ("fabrikam",),
    )
    shared_set = store.text(*requests["tailwind"].dataset.blob.split("/", 1))
    assert "tailwind secret" in shared_set
    assert "fabrikam secret" not in shared_set


# --- each check can fail --------------------------------------------------------------------


async def test_the_scrub_check_fails_when_text_is_not_scrubbed() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    scrubber = CountingScrubber(identity=True)
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(1)])
    await make_intake(store, replies, reg=registry(), scrubber=scrubber).take(name)
    with pytest.raises(AssertionError):
        assert_scrubbed(pooled_examples(store, "fabrikam"))


async def test_the_pool_check_fails_when_an_upload_is_pooled_twice() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    name = await upload(store, "fabrikam/training/faq.jsonl", [example(1)])
    await make_intake(store, replies, reg=registry()).take(name)
    index = PoolIndex.model_validate_json(store.text("training", index_name("fabrikam")))
    twice = index.model_copy(update={"entries": [*index.entries, index.entries[0]]})
    await store.put("training", index_name("fabrikam"), twice.model_dump_json().encode())
    with pytest.raises(AssertionError, match="pooled twice"):
        pooled_examples(store, "fabrikam")


async def test_the_error_check_fails_when_text_is_echoed() -> None:
    store = MemoryBlobStore()
    line = json.dumps({"type": "training.error", "line": 2, "reason": "x", "detail": SECRET})
    await store.put(names.REJECTED_CONTAINER, "t/training/x.jsonl", line.encode() + b"\n")
    with pytest.raises(AssertionError):
        errors_of(store, "t/training/x.jsonl")


async def test_the_request_check_fails_on_a_message_id_that_is_not_the_job_key() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    await make_intake(store, replies).take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(20)])
    )
    replies.sent[0] = dataclasses.replace(replies.sent[0], message_id="another-id")
    with pytest.raises(AssertionError):
        finetune_requests(replies)


async def test_the_cool_down_check_fails_without_the_cool_down() -> None:
    """With no cool-down in the policy, the upload that the cool-down test holds back is sent:
    that test's `skipped` is the cool-down's doing, not something else's."""
    store, replies, clock = MemoryBlobStore(), RecordingReplySender(), Clock()
    reg = registry(fabrikam={**TUNABLE, "tuning_cooldown_hours": 0})
    intake = make_intake(store, replies, reg=reg, clock=clock)
    await intake.take(
        await upload(store, "fabrikam/training/a.jsonl", [example(i) for i in range(20)])
    )
    clock.advance(3600)
    held = await intake.take(
        await upload(store, "fabrikam/training/b.jsonl", [example(i) for i in range(20, 45)])
    )
    assert held is not None
    assert held.tuning is not None
    assert held.tuning.kind == "finetune_requested"
    assert len(finetune_requests(replies)) == 2
