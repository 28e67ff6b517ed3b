"""Job records: the state machine's table, idempotent creation, ETag-guarded transitions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from shared.finetune.jobs import (
    ALLOWED,
    InvalidTransition,
    JobNotFound,
    JobRecord,
    JobState,
    JobStore,
    job_id_for,
)
from shared.storage.blob_store import MemoryBlobStore
from tests.unit.finetune.conftest import YieldingBlobStore

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def record(job_key: str = "fabrikam.dft-1") -> JobRecord:
    return JobRecord(
        job_id=job_id_for("fabrikam", job_key),
        job_key=job_key,
        tenant_id="fabrikam",
        scope="tenant",
        request={},
        train_blob="training/fabrikam/ds-1.train.jsonl",
        heldout_blob="training/fabrikam/ds-1.heldout.jsonl",
        train_examples=90,
        heldout_examples=10,
    )


def test_job_ids_are_stable_and_safe() -> None:
    assert job_id_for("fabrikam", "fabrikam.dft-1") == job_id_for("fabrikam", "fabrikam.dft-1")
    assert job_id_for("fabrikam", "fabrikam.dft-1") != job_id_for("fabrikam", "fabrikam.dft-2")
    # one key, two tenants: two jobs (a runner keyed by job id never mixes them up)
    assert job_id_for("fabrikam", "k") != job_id_for("northwind", "k")
    assert job_id_for("fabrikam", "../../x").startswith("ftj-")
    assert "/" not in job_id_for("fabrikam", "../../x")


def test_terminal_states_lead_nowhere_and_every_state_is_in_the_table() -> None:
    assert set(ALLOWED) == set(JobState)
    for state in (JobState.FAILED, JobState.CANCELLED, JobState.REJECTED, JobState.ROLLED_BACK):
        assert ALLOWED[state] == frozenset()
    # promotion only after an evaluation: a model nobody scored is never served
    assert JobState.PROMOTED not in ALLOWED[JobState.SUCCEEDED]


async def test_create_is_idempotent_by_job_key() -> None:
    jobs = JobStore(MemoryBlobStore())
    first, made = await jobs.create(record())
    again, made_again = await jobs.create(record())
    assert made
    assert not made_again
    assert again.job_id == first.job_id


async def test_transitions_follow_the_table_and_keep_history() -> None:
    jobs = JobStore(MemoryBlobStore())
    job, _ = await jobs.create(record())
    await jobs.transition("fabrikam", job.job_id, JobState.SUBMITTED, at=NOW, reason="slot", by="t")
    with pytest.raises(InvalidTransition, match="submitted may not become promoted"):
        await jobs.transition("fabrikam", job.job_id, JobState.PROMOTED, at=NOW, reason="x", by="t")
    same = await jobs.transition(
        "fabrikam", job.job_id, JobState.SUBMITTED, at=NOW, reason="again", by="t"
    )
    assert [h.state for h in same.history] == [JobState.SUBMITTED]
    with pytest.raises(JobNotFound):
        await jobs.get("fabrikam", "ftj-none")


async def test_racing_updates_are_all_kept() -> None:
    jobs = JobStore(YieldingBlobStore())
    job, _ = await jobs.create(record())

    def bump(key: str) -> object:
        def apply(r: JobRecord) -> None:
            r.metrics[key] = 1.0

        return apply

    await asyncio.gather(
        *(jobs.amend("fabrikam", job.job_id, bump(f"m{i}")) for i in range(8))  # type: ignore[arg-type]
    )
    stored = await jobs.get("fabrikam", job.job_id)
    assert set(stored.metrics) == {f"m{i}" for i in range(8)}
