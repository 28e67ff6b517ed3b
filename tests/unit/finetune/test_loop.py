"""The fine-tuning loop in memory: intake -> admission -> backend -> watcher -> gate -> promotion,
rollback; and each way a request is refused. The backend and the models are fakes here (the
real ones are exercised in tests/integration and tests/e2e)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.contracts import ChatMessage, InferenceParameters
from shared.contracts.finetune import FinetuneRequest
from shared.finetune.backends.port import (
    BackendState,
    BackendStatus,
    ServedModel,
    TrainedModel,
    TrainingSpec,
)
from shared.finetune.gate import EvaluationGate, held_out_examples
from shared.finetune.jobs import JobRecord, JobState
from shared.finetune.launcher import Backend, Backends
from shared.finetune.operator import models_view, rollback_now
from shared.finetune.wiring import NotServed
from shared.inference.model_clients import Completion
from shared.inference.model_errors import ModelRateLimited
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Deployment
from shared.tenancy.registry_source import RegistrySource
from shared.tenancy.routing import Router
from tests.fakes import FakeTime, RecordingReplySender

ROOT = Path(__file__).resolve().parents[3]
ENV = {"AZURE_OPENAI_ENDPOINT": "http://sim", "AZURE_AI_SERVICES_ENDPOINT": "http://sim/models"}
GOOD, POOR = " [sim: good answer]", " [sim: poor answer]"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeTrainer:
    """Scripted job states; every submit is recorded."""

    name: str = "local"
    submitted: list[TrainingSpec] = field(default_factory=list)
    states: dict[str, BackendState] = field(default_factory=dict)
    model: str = "ft-model-2"

    async def submit(self, spec: TrainingSpec) -> str:
        self.submitted.append(spec)
        self.states[spec.job_id] = BackendState.QUEUED
        return f"ext-{spec.job_id}"

    async def status(self, external_id: str) -> BackendStatus:
        return BackendStatus(self.states[external_id.removeprefix("ext-")], "sim")

    async def cancel(self, external_id: str) -> None:
        self.states[external_id.removeprefix("ext-")] = BackendState.CANCELLED

    async def outputs(self, external_id: str) -> TrainedModel:
        return TrainedModel(self.model, {"train_loss": 0.5}, {"dataset_sha256": "x"})

    async def deploy(
        self, model: TrainedModel, *, deployment: str, spec: TrainingSpec
    ) -> ServedModel:
        return ServedModel(
            kind="azure_openai", model=model.model, endpoint="${AZURE_OPENAI_ENDPOINT}"
        )


@dataclass
class Models:
    """Answers by deployment: the candidate's quality is `candidate_good`; the judge reads marks."""

    candidate_good: float = 0.9
    current_good: float = 0.3
    throttled: set[str] = field(default_factory=set)
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    calls: list[str] = field(default_factory=list)

    async def complete(
        self,
        deployment: Deployment,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
        *,
        tenant_id: str,
    ) -> Completion:
        self.calls.append(deployment.name)
        if deployment.name in self.throttled:
            raise ModelRateLimited("busy", deployment=deployment.name, retry_after_s=600.0)
        if deployment.name == "judge":
            text = messages[-1].content
            content = "5" if GOOD.strip() in text else "1"
        else:
            good = self.candidate_good if deployment.model == "ft-model-2" else self.current_good
            content = "answer" + (GOOD if self.rng.random() < good else POOR)
        return Completion(content, "stop", 10, 5, deployment.model)

    async def close(self) -> None:
        return None


@dataclass
class Loop:
    runtime: Runtime
    store: MemoryBlobStore
    trainer: FakeTrainer
    models: Models
    replies: RecordingReplySender
    clock: Clock
    ticks: FakeTime


def _registry_document(**policy: Any) -> bytes:
    document = json.loads((ROOT / "devhost" / "registry.json").read_text())
    for tenant in document["tenants"]:
        if tenant["id"] == "fabrikam":
            tenant["policy"] = {**tenant.get("policy", {}), **policy}
    return json.dumps(document).encode()


async def make_loop(max_running: int = 1, candidate_good: float = 0.9, **policy: Any) -> Loop:
    store = MemoryBlobStore()
    await store.put(names.CONFIG_CONTAINER, "registry.json", _registry_document(**policy))
    trainer = FakeTrainer()
    models = Models(candidate_good=candidate_good)
    replies = RecordingReplySender()
    clock = Clock()
    ticks = FakeTime()
    runtime = Runtime(
        store=store,
        registry=RegistrySource("blob://config/registry.json", store, refresh_seconds=0, env=ENV),
        models=models,
        replies=replies,
        router=Router(random.Random(1)),
        clock=clock,
        monotonic=ticks.monotonic,
        sleep=ticks.sleep,
        rng=random.Random(1),
        registry_reference="blob://config/registry.json",
        finetune_backends=Backends({"local": Backend("local", trainer, trainer)}, "local"),
        finetune_max_running=max_running,
        judge_deployment="judge",
    )
    runtime.registry_store._env = ENV  # the endpoints resolvable, as os.environ has them in a host
    return Loop(runtime, store, trainer, models, replies, clock, ticks)


def example(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"#billing Why was I charged twice? ({i})"},
            {"role": "assistant", "content": f"We refunded the second charge ({i})."},
        ]
    }


async def put_dataset(
    store: MemoryBlobStore, tenant: str = "fabrikam", n: int = 60, name: str = "ds-1"
) -> tuple[str, str]:
    data = "".join(json.dumps(example(i)) + "\n" for i in range(n)).encode()
    sha = hashlib.sha256(data).hexdigest()
    await store.put(names.TRAINING_CONTAINER, f"{tenant}/{name}.jsonl", data)
    manifest = {"sha256": sha, "examples": n, "tenants": [tenant]}
    await store.put(
        names.TRAINING_CONTAINER, f"{tenant}/{name}.manifest.json", json.dumps(manifest).encode()
    )
    return f"training/{tenant}/{name}.jsonl", sha


def request(
    dataset: str, sha: str, *, tenant: str = "fabrikam", key: str = "fabrikam.dft-1", **over: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "finetune.request",
        "version": 1,
        "job_key": key,
        "tenant_id": tenant,
        "scope": "tenant",
        "base": {"deployment": "gpt-4o-mini-pool-a", "model": "gpt-4o-mini"},
        "current": {"deployment": "fabrikam-ft-v1", "model_version": "ft-1"},
        "dataset": {
            "blob": dataset,
            "manifest": dataset.replace(".jsonl", ".manifest.json"),
            "sha256": sha,
            "examples": 60,
        },
        "reason": {"kind": "quality_drift", "summary": "quality fell"},
        "tenants_in_dataset": [tenant],
        "requested_at": "2026-11-30T09:00:00Z",
    }
    return body | over


def message(body: dict[str, Any] | bytes, message_id: str = "m-1") -> InboundMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundMessage(body=raw, message_id=message_id, delivery_count=1)


async def run_to_promotion(loop: Loop) -> JobRecord:
    dataset, sha = await put_dataset(loop.store)
    job = await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha)))
    assert isinstance(job, JobRecord)
    assert job.state is JobState.SUBMITTED
    loop.trainer.states[job.job_id] = BackendState.RUNNING
    loop.clock.now += timedelta(minutes=30)
    await loop.runtime.job_watcher.tick()
    loop.trainer.states[job.job_id] = BackendState.SUCCEEDED
    loop.clock.now += timedelta(minutes=15)
    await loop.runtime.job_watcher.tick()
    return await loop.runtime.jobs.get("fabrikam", job.job_id)


async def test_a_better_candidate_is_trained_evaluated_promoted_and_rolled_back() -> None:
    loop = await make_loop()
    job = await run_to_promotion(loop)
    assert [h.state for h in job.history] == [
        JobState.QUEUED,
        JobState.SUBMITTED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
        JobState.EVALUATED,
        JobState.PROMOTED,
    ]
    assert job.gpu_minutes == 45
    assert job.evaluation is not None
    assert job.evaluation["decision"] == "promote"
    assert job.evaluation["scorer"] == "judge:judge"
    assert job.evaluation["lower"] > 0.05
    assert job.train_examples + job.heldout_examples == 60
    spec = loop.trainer.submitted[0]
    assert spec.tags["tenant_id"] == "fabrikam"
    assert spec.base_model == "gpt-4o-mini-2024-07-18"
    registry = await loop.runtime.registry.get()
    fabrikam = registry.tenant("fabrikam")
    assert fabrikam is not None
    assert fabrikam.tuned_deployment == "fabrikam-ft-v2"
    assert registry.deployment_by_name["fabrikam-ft-v2"].model_version == "ft-2"
    assert registry.deployment_by_name["fabrikam-ft-v2"].owner_tenant == "fabrikam"
    # the candidate never reaches another tenant
    tailwind = registry.tenant("tailwind")
    assert tailwind is not None
    assert "fabrikam-ft-v2" not in {d.name for d in registry.allowed_for(tailwind)}
    status, body = await rollback_now(
        loop.runtime, "fabrikam", json.dumps({"by": "ops", "why": "complaints"}).encode()
    )
    assert status == 200, body
    registry = await loop.runtime.registry.get()
    assert registry.tenant("fabrikam").tuned_deployment == "fabrikam-ft-v1"  # type: ignore[union-attr]
    assert "fabrikam-ft-v2" in registry.deployment_by_name  # every version is kept
    status, body = await models_view(loop.runtime, "fabrikam")
    view = json.loads(body)
    assert [e["action"] for e in view["timeline"]] == ["registered", "promoted", "rolled_back"]
    assert view["timeline"][-1]["by"] == "ops"
    assert view["jobs"][0]["state"] == "rolled_back"
    assert view["serving"] == "fabrikam-ft-v1"
    status, _ = await rollback_now(
        loop.runtime, "fabrikam", json.dumps({"by": "ops", "why": "again"}).encode()
    )
    assert status == 409


async def test_a_candidate_that_is_not_better_is_rejected_and_never_served() -> None:
    loop = await make_loop(candidate_good=0.3)
    job = await run_to_promotion(loop)
    assert job.state is JobState.REJECTED
    assert job.evaluation is not None
    assert job.evaluation["decision"] == "reject"
    assert "does not exceed the margin" in job.history[-1].reason
    registry = await loop.runtime.registry.get()
    assert registry.tenant("fabrikam").tuned_deployment == "fabrikam-ft-v1"  # type: ignore[union-attr]


async def test_a_repeated_request_is_one_job_and_one_submit() -> None:
    loop = await make_loop()
    dataset, sha = await put_dataset(loop.store)
    for n in range(3):
        await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha), f"m-{n}"))
    assert len(loop.trainer.submitted) == 1
    assert len(await loop.runtime.jobs.list("fabrikam")) == 1


async def test_no_free_slot_reschedules_the_message_and_the_watcher_starts_it_later() -> None:
    loop = await make_loop(max_running=1)
    dataset, sha = await put_dataset(loop.store)
    first = await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha)))
    second_body = request(dataset, sha, key="fabrikam.dft-2")
    second = await loop.runtime.finetune_intake.handle_message(message(second_body, "m-2"))
    assert isinstance(first, JobRecord)
    assert isinstance(second, JobRecord)
    assert second.state is JobState.QUEUED
    assert second.admission_waits == 1
    (copy,) = loop.replies.sent
    assert copy.queue == names.FINETUNE_JOBS
    assert copy.message_id == f"{second.job_id}.wait-1"
    assert copy.scheduled_enqueue_time_utc is not None
    assert copy.scheduled_enqueue_time_utc >= loop.clock.now + timedelta(seconds=30)
    loop.trainer.states[first.job_id] = BackendState.FAILED
    await loop.runtime.job_watcher.tick()
    assert (await loop.runtime.jobs.get("fabrikam", first.job_id)).state is JobState.FAILED
    started = await loop.runtime.jobs.get("fabrikam", second.job_id)
    assert started.state is JobState.SUBMITTED
    assert started.history[-1].by == "watcher"


async def test_over_the_gpu_budget_the_job_is_rejected_with_the_numbers() -> None:
    loop = await make_loop(gpu_minutes_per_month=30)
    job = await run_to_promotion(loop)  # 45 GPU-minutes booked
    assert job.state is JobState.PROMOTED
    dataset, sha = await put_dataset(loop.store, name="ds-2")
    again = await loop.runtime.finetune_intake.handle_message(
        message(request(dataset, sha, key="fabrikam.dft-9"), "m-9")
    )
    assert isinstance(again, JobRecord)
    assert again.state is JobState.REJECTED
    assert "45.0 of 30.0 GPU-minutes" in again.history[-1].reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant_id": "nobody", "tenants_in_dataset": ["nobody"]}, "unknown_tenant"),
        ({"tenant_id": "contoso", "tenants_in_dataset": ["contoso"]}, "tuning_not_allowed"),
        ({"tenants_in_dataset": ["fabrikam", "tailwind"]}, "consent_scope"),
        ({"scope": "shared", "tenants_in_dataset": ["fabrikam", "contoso"]}, "consent_scope"),
        ({"base": {"deployment": "contoso-gpt-4o"}}, "unknown_base"),
        ({"base": {"deployment": "gpt-4o-mini-pool-b"}}, "base_not_tunable"),
        ({"sha256": "0" * 64}, "dataset_checksum_mismatch"),
        ({"job_key": "../../etc"}, "invalid_request"),
        ({"job_key": "tailwind.dft-1"}, "job_key_not_tenants"),
    ],
)
async def test_each_bad_request_is_rejected_with_its_reason(
    change: dict[str, Any], reason: str
) -> None:
    loop = await make_loop()
    dataset, sha = await put_dataset(loop.store)
    body = request(dataset, sha)
    if "sha256" in change:
        body["dataset"] = {**body["dataset"], "sha256": change.pop("sha256")}
    outcome = await loop.runtime.finetune_intake.handle_message(message(body | change))
    assert not isinstance(outcome, JobRecord)
    assert outcome.reason == reason
    assert outcome.type == "finetune.rejected"
    assert not loop.trainer.submitted
    kept = loop.store.names(names.REJECTED_CONTAINER)
    assert len(kept) == 1
    assert "/finetune/" in kept[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "invalid_json"),
        (b"[]", "invalid_json"),
        (b'{"type": "x"}', "unsupported_type"),
    ],
)
async def test_undecodable_requests_are_rejected(body: bytes, reason: str) -> None:
    loop = await make_loop()
    outcome = await loop.runtime.finetune_intake.handle_message(message(body))
    assert not isinstance(outcome, JobRecord)
    assert outcome.reason == reason
    assert outcome.tenant_id is None


async def test_a_dataset_too_small_or_malformed_is_rejected() -> None:
    loop = await make_loop()
    dataset, sha = await put_dataset(loop.store, n=12)
    outcome = await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha)))
    assert not isinstance(outcome, JobRecord)
    assert outcome.reason == "dataset_too_small"
    bad = b'{"messages": [{"role": "user", "content": "hi"}]}\n' * 20
    await loop.store.put(names.TRAINING_CONTAINER, "fabrikam/ds-3.jsonl", bad)
    digest = hashlib.sha256(bad).hexdigest()
    await loop.store.put(
        names.TRAINING_CONTAINER,
        "fabrikam/ds-3.manifest.json",
        json.dumps({"sha256": digest, "tenants": ["fabrikam"]}).encode(),
    )
    outcome = await loop.runtime.finetune_intake.handle_message(
        message(request("training/fabrikam/ds-3.jsonl", digest, key="fabrikam.dft-3"), "m-3")
    )
    assert not isinstance(outcome, JobRecord)
    assert outcome.reason == "dataset_invalid"
    assert "line 1" in outcome.detail


def test_request_contract_round_trips() -> None:
    body = request("training/fabrikam/ds-1.jsonl", "a" * 64)
    assert FinetuneRequest.model_validate(body).tenant_id == "fabrikam"


async def test_a_model_that_cannot_be_served_fails_the_job_and_frees_the_slot() -> None:
    loop = await make_loop()
    loop.runtime.finetune_backends = Backends(
        {"local": Backend("local", loop.trainer, NotServed("azure_ml"))}, "local"
    )
    dataset, sha = await put_dataset(loop.store)
    job = await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha)))
    assert isinstance(job, JobRecord)
    loop.trainer.states[job.job_id] = BackendState.SUCCEEDED
    await loop.runtime.job_watcher.tick()
    failed = await loop.runtime.jobs.get("fabrikam", job.job_id)
    assert failed.state is JobState.FAILED
    assert "managed online endpoint" in failed.history[-1].reason
    fleet = await loop.runtime.admission.state()
    assert fleet.running == []
    assert fleet.evaluating == []
    registry = await loop.runtime.registry.get()
    assert registry.tenant("fabrikam").tuned_deployment == "fabrikam-ft-v1"  # type: ignore[union-attr]


async def test_a_busy_current_model_defers_the_gate_instead_of_rejecting() -> None:
    """The current model throttled past the client's patience (as on a bad day, its breaker open):
    the gate decides nothing, the job waits in `succeeded`, and is promoted once it can be scored;
    without the deferral it would be rejected for lack of scores (the check can fail)."""
    loop = await make_loop()
    loop.models.throttled = {"fabrikam-ft-v1"}
    dataset, sha = await put_dataset(loop.store)
    job = await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha)))
    assert isinstance(job, JobRecord)
    loop.trainer.states[job.job_id] = BackendState.SUCCEEDED
    await loop.runtime.job_watcher.tick()
    waiting = await loop.runtime.jobs.get("fabrikam", job.job_id)
    assert waiting.state is JobState.SUCCEEDED
    assert [e.job_id for e in (await loop.runtime.admission.state()).evaluating] == [job.job_id]
    loop.models.throttled = set()
    loop.clock.now += timedelta(minutes=15)
    loop.ticks.now += 900  # the breaker's open period is over
    await loop.runtime.job_watcher.tick()
    done = await loop.runtime.jobs.get("fabrikam", job.job_id)
    assert done.state is JobState.PROMOTED
    assert (await loop.runtime.admission.state()).evaluating == []


async def test_a_gate_that_never_gets_answers_rejects_after_its_patience() -> None:
    loop = await make_loop()
    loop.models.throttled = {"fabrikam-ft-v1"}
    dataset, sha = await put_dataset(loop.store)
    job = await loop.runtime.finetune_intake.handle_message(message(request(dataset, sha)))
    assert isinstance(job, JobRecord)
    loop.trainer.states[job.job_id] = BackendState.SUCCEEDED
    await loop.runtime.job_watcher.tick()
    loop.clock.now += timedelta(hours=3)
    await loop.runtime.job_watcher.tick()
    done = await loop.runtime.jobs.get("fabrikam", job.job_id)
    assert done.state is JobState.REJECTED
    assert "could not be answered yet" in done.history[-1].reason


async def test_repeated_examples_count_once_and_never_cross_the_split() -> None:
    """A file whose lines repeat (one upload pooled under several names) must not leak held-out
    prompts into training, nor pass for a large dataset (the check fails on a line-hash split)."""
    loop = await make_loop()
    rows = [example(i % 20) for i in range(60)]  # 20 distinct examples, each 3 times
    rows += [  # a prompt asked twice with two answers: both on one side
        {"messages": [example(0)["messages"][0], {"role": "assistant", "content": "other"}]}
    ]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    digest = hashlib.sha256(data).hexdigest()
    await loop.store.put(names.TRAINING_CONTAINER, "fabrikam/ds-dup.jsonl", data)
    manifest = {"sha256": digest, "tenants": ["fabrikam"]}
    await loop.store.put(
        names.TRAINING_CONTAINER, "fabrikam/ds-dup.manifest.json", json.dumps(manifest).encode()
    )
    body = request("training/fabrikam/ds-dup.jsonl", digest, key="fabrikam.dft-dup")
    job = await loop.runtime.finetune_intake.handle_message(message(body))
    assert isinstance(job, JobRecord)
    assert job.train_examples + job.heldout_examples == 21
    train = loop.store.text(names.TRAINING_CONTAINER, "fabrikam/ds-dup.train.jsonl")
    held = loop.store.text(names.TRAINING_CONTAINER, "fabrikam/ds-dup.heldout.jsonl")

    def prompts(text: str) -> set[str]:
        return {json.dumps(json.loads(x)["messages"][:-1]) for x in text.splitlines()}

    assert prompts(train).isdisjoint(prompts(held))
    assert len(held.splitlines()) == len(set(held.splitlines()))
    few = "".join(json.dumps(example(i % 5)) + "\n" for i in range(40)).encode()
    few_digest = hashlib.sha256(few).hexdigest()
    await loop.store.put(names.TRAINING_CONTAINER, "fabrikam/ds-few.jsonl", few)
    await loop.store.put(
        names.TRAINING_CONTAINER,
        "fabrikam/ds-few.manifest.json",
        json.dumps({"sha256": few_digest, "tenants": ["fabrikam"]}).encode(),
    )
    refused = await loop.runtime.finetune_intake.handle_message(
        message(
            request("training/fabrikam/ds-few.jsonl", few_digest, key="fabrikam.dft-few"), "m-f"
        )
    )
    assert not isinstance(refused, JobRecord)
    assert refused.reason == "dataset_too_small"
    assert "5 distinct examples" in refused.detail


async def test_the_gate_goes_on_from_the_pairs_already_scored() -> None:
    """Scores kept from an earlier try are not asked for again (the gate then fits in a tenant's
    quota over several ticks instead of starting over each time and never finishing)."""
    loop = await make_loop()
    registry = await loop.runtime.registry.get()
    tenant = registry.tenant("fabrikam")
    assert tenant is not None
    examples = held_out_examples([example(i) for i in range(10)])
    gate = EvaluationGate(loop.runtime.resilient, judge="judge")
    partial: dict[int, list[float | None]] = {i: [1.0, 0.0] for i in range(9)}
    result = await gate.evaluate(
        registry,
        tenant,
        candidate="fabrikam-ft-v1",
        current="gpt-4o-mini-pool-a",
        examples=examples,
        partial=partial,
    )
    assert result["examples"] == 10
    assert len(loop.models.calls) == 4  # only example 9: two answers, two judgements
