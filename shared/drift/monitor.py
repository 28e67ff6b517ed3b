"""The drift monitor: per tenant and model version, feed new ratings to the quality detector,
compare recent prompts with the reference window, report, and act on confirmed drift.

`DriftMonitor.evaluate(tenant_id, model_key, trigger)` runs after every `DRIFT_CHECK_EVERY`-th
first rating of a model version (from feedback intake) and for every stream on the drift timer.
One evaluation:

1. reads the state `drift/<tenant>/state/<model key>.json` (detector state, cursors into the
   rating stream and the inference log, the input-drift windows, recent drift events) and its
   ETag;
2. feeds the ratings after the cursor to `QualityDriftDetector` (each rating once), and adds the
   prompt features after the log cursor to the reference window (the first `INPUT_WINDOW`
   requests served by this model version) or the recent window (the last `INPUT_WINDOW`);
3. writes the state back with If-Match: two instances evaluating the same stream never both
   count a rating or lose one (the loser reads the winner's state and goes on from its cursors);
4. on quality drift, records a drift event whose id derives from the tenant, model version and
   the rating at which it was detected (`pending`), then acts: if the tenant's policy allows
   tuning, its cool-down has passed and there are `min_training_examples` usable examples, it
   builds the training set (`training_set.py`) and sends one `finetune.request` to
   `finetune-jobs` with `message_id = job_key` (Service Bus duplicate detection and the job intake
   drop a repeat), else it records why not. A pending event is retried by later evaluations;
5. writes a report `drift/<tenant>/<timestamp>-<model key>.json` (and on drift a PNG chart).

Input drift alone is reported, not acted on: a shifted prompt mix with steady ratings does not
show the model got worse, and a fine-tune costs GPU hours (docs/drift.md).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts.finetune import FinetuneReason
from shared.drift.input_drift import InputDriftResult, PromptFeatures, input_drift
from shared.drift.quality import QualityDriftDetector, QualityEvidence
from shared.drift.report import Action, DriftReport, render_chart, report_stem
from shared.drift.training_set import Shortfall, TrainingSetBuilder
from shared.feedback.inference_log import InferenceLog
from shared.feedback.store import FeedbackStore
from shared.finetune.requests import FinetuneRequests, finetune_request, training_scope
from shared.inference.replies import ReplySender
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore, ConditionFailed
from shared.storage.json_lines import Cursor
from shared.structured_logging import key_values, without_none
from shared.tenancy.registry import Registry, Tenant
from shared.tenancy.registry_source import RegistryProvider

log = logging.getLogger(__name__)

INPUT_WINDOW = 200
MAX_EVENTS = 20
MAX_STATISTICS = 400
STATISTIC_EVERY = 5
_ATTEMPTS = 8


class LogCursor(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: date
    part: int = 0
    offset: int = 0


class DriftEvent(BaseModel):
    id: str
    detected_at: datetime
    at_rating: int
    summary: str
    report: str | None = None
    action: str = "pending"  # pending | finetune_requested | skipped
    detail: str = ""
    job_key: str | None = None


class DriftState(BaseModel):
    version: int = 1
    tenant_id: str
    model_key: str
    detector: dict[str, Any] | None = None
    ratings_cursor: tuple[int, int] = (0, 0)
    ratings_total: int = 0
    log_cursor: LogCursor | None = None
    reference_features: list[dict[str, Any]] = Field(default_factory=list)
    recent_features: list[dict[str, Any]] = Field(default_factory=list)
    statistics: list[tuple[int, float]] = Field(default_factory=list)
    events: list[DriftEvent] = Field(default_factory=list)
    last_tuning_at: datetime | None = None
    evaluations: int = 0


@dataclass(frozen=True)
class Evaluation:
    state: DriftState
    ratings_read: int
    features_read: int
    evidence: QualityEvidence
    detected: QualityEvidence | None
    input: InputDriftResult | None
    new_event: DriftEvent | None
    chart_statistics: list[tuple[int, float]]  # the statistic up to the detection, for its chart


def state_name(tenant_id: str, key: str) -> str:
    return tenant_path(tenant_id, "state", key, suffix=".json")


def event_id(tenant_id: str, key: str, at_rating: int) -> str:
    digest = hashlib.sha256(f"{tenant_id}\x1f{key}\x1f{at_rating}".encode()).hexdigest()[:20]
    return f"{tenant_id}.dft-{digest}"


class DriftMonitor:
    def __init__(
        self,
        *,
        store: BlobStore,
        registry: RegistryProvider,
        feedback: FeedbackStore,
        inference_log: InferenceLog,
        sender: ReplySender,
        clock: Callable[[], datetime],
        window_days: int = 30,
        container: str = names.DRIFT_CONTAINER,
    ) -> None:
        self._store = store
        self._registry = registry
        self._feedback = feedback
        self._log = inference_log
        self._requests = FinetuneRequests(store, sender, container=container)
        self._clock = clock
        self._window_days = window_days
        self._container = container
        self._training = TrainingSetBuilder(store, feedback, inference_log)

    async def evaluate_all(self, trigger: str = "timer") -> list[DriftReport]:
        """Every rating stream of every registered tenant (the drift timer)."""
        registry = await self._registry.get()
        reports = []
        for tenant in registry.tenants:
            reports += await self.evaluate_tenant(tenant.id, trigger=trigger)
        return reports

    async def evaluate_tenant(self, tenant_id: str, *, trigger: str) -> list[DriftReport]:
        """Every rating stream of one tenant (the timer, or an operator asking now)."""
        reports = []
        for key in await self._feedback.stream_keys(tenant_id):
            report = await self.evaluate(tenant_id, key, trigger=trigger)
            if report is not None:
                reports.append(report)
        return reports

    async def evaluate(
        self, tenant_id: str, key: str, *, trigger: str = "feedback"
    ) -> DriftReport | None:
        """One evaluation (module docstring); None when there was nothing new to look at."""
        registry = await self._registry.get()
        tenant = registry.tenant(tenant_id)
        if tenant is None:
            return None
        started = self._clock()
        stem = report_stem(tenant_id, key, started)
        evaluation = await self._advance(tenant_id, key, f"{self._container}/{stem}.json")
        if evaluation is None:
            return None
        state = evaluation.state
        pending = next((e for e in reversed(state.events) if e.action == "pending"), None)
        action = Action(kind="none", detail="no drift")
        if pending is not None:
            action = await self._act(registry, tenant, key, pending, evaluation)
        elif evaluation.input is not None and evaluation.input.detected:
            action = Action(kind="none", detail="input drift alone is reported, not acted on")
        return await self._report(
            tenant,
            key=key,
            at=started,
            stem=stem,
            evaluation=evaluation,
            pending=pending,
            action=action,
            trigger=trigger,
        )

    async def _advance(self, tenant_id: str, key: str, report: str) -> Evaluation | None:
        for _ in range(_ATTEMPTS):
            blob = await self._store.read(self._container, state_name(tenant_id, key))
            state = _load_state(blob.data if blob else None, tenant_id, key)
            evaluation = await self._step(state, report)
            pending = any(e.action == "pending" for e in state.events)
            if not evaluation.ratings_read and not evaluation.features_read and not pending:
                return None
            data = evaluation.state.model_dump_json().encode("utf-8")
            try:
                if blob is None:
                    if not await self._store.create(
                        self._container, state_name(tenant_id, key), data
                    ):
                        continue
                else:
                    await self._store.put(
                        self._container, state_name(tenant_id, key), data, if_match=blob.etag
                    )
            except ConditionFailed:
                continue
            return evaluation
        raise RuntimeError(f"drift state of {tenant_id}/{key} kept changing while evaluated")

    async def _step(self, state: DriftState, report: str) -> Evaluation:
        ratings, cursor = await self._feedback.ratings(
            state.tenant_id, state.model_key, Cursor(*state.ratings_cursor)
        )
        detector = (
            QualityDriftDetector.from_state(state.detector)
            if state.detector
            else QualityDriftDetector()
        )
        total = state.ratings_total
        statistics = list(state.statistics)
        detected: QualityEvidence | None = None
        detected_at = 0
        chart_statistics: list[tuple[int, float]] = []
        for rating in ratings:
            detector.update(rating.score)
            total += 1
            if statistics and statistics[-1][0] >= detector.n:
                statistics = []  # the detector restarted: its x axis starts again
            if detector.drift_detected and detected is None:
                detected, detected_at = detector.evidence(), total
                statistics.append((detector.n, detected.statistic))
                chart_statistics = list(statistics)
            elif total % STATISTIC_EVERY == 0:
                statistics.append((detector.n, detector.evidence().statistic))
        evidence = detected or detector.evidence()
        features, log_cursor = await self._new_features(state)
        reference = list(state.reference_features)
        recent = list(state.recent_features)
        for item in features:
            if len(reference) < INPUT_WINDOW:
                reference.append(item)
            else:
                recent.append(item)
        recent = recent[-INPUT_WINDOW:]
        input_result = None
        if reference and recent:
            input_result = input_drift(
                [PromptFeatures.from_json(f) for f in reference],
                [PromptFeatures.from_json(f) for f in recent],
                rng=random.Random(f"{state.tenant_id}/{state.model_key}/{total}"),
            )
        events = list(state.events)
        new_event = None
        if detected is not None:
            new_event = DriftEvent(
                id=event_id(state.tenant_id, state.model_key, detected_at),
                detected_at=self._clock(),
                at_rating=detected_at,
                summary=detected.reason,
                report=report,
            )
            events.append(new_event)
        new_state = state.model_copy(
            update={
                "detector": detector.state(),
                "ratings_cursor": (cursor.part, cursor.offset),
                "ratings_total": total,
                "log_cursor": log_cursor,
                "reference_features": reference,
                "recent_features": recent,
                "statistics": statistics[-MAX_STATISTICS:],
                "events": events[-MAX_EVENTS:],
                "evaluations": state.evaluations + 1,
            }
        )
        return Evaluation(
            new_state,
            len(ratings),
            len(features),
            evidence,
            detected,
            input_result,
            new_event,
            chart_statistics,
        )

    async def _new_features(self, state: DriftState) -> tuple[list[dict[str, Any]], LogCursor]:
        """Prompt features of this model version's requests logged after the log cursor."""
        today = self._clock().date()
        start = state.log_cursor or LogCursor(day=today - timedelta(days=self._window_days - 1))
        features: list[dict[str, Any]] = []
        day, cursor = start.day, Cursor(start.part, start.offset)
        last = LogCursor(day=day, part=cursor.part, offset=cursor.offset)
        while day <= today:
            entries, after = await self._log.read_day(state.tenant_id, day, cursor)
            features.extend(e.features for e in entries if e.model_key == state.model_key)
            last = LogCursor(day=day, part=after.part, offset=after.offset)
            day, cursor = day + timedelta(days=1), Cursor()
        if last.day < today:
            last = LogCursor(day=today)
        return features, last

    async def _act(
        self,
        registry: Registry,
        tenant: Tenant,
        key: str,
        event: DriftEvent,
        evaluation: Evaluation,
    ) -> Action:
        now = self._clock()
        policy = tenant.policy
        if not policy.allow_tuning:
            action = Action(kind="skipped", detail="the tenant's policy does not allow tuning")
        elif (until := await self._requests.cool_down_until(tenant, now)) is not None:
            action = Action(kind="skipped", detail=f"in cool-down until {until.isoformat()}")
        else:
            action = await self._request_finetune(registry, tenant, key, event, now)
        if action.kind != "waiting":
            await self._close_event(tenant.id, key, event.id, action)
        return action

    async def _request_finetune(
        self, registry: Registry, tenant: Tenant, key: str, event: DriftEvent, now: datetime
    ) -> Action:
        scope = training_scope(tenant)
        dataset_id = "ds-" + event.id.rsplit("-", 1)[-1]
        built = await self._training.build(
            registry,
            tenant,
            scope,
            dataset_id=dataset_id,
            end=now.date(),
            days=self._window_days,
            min_examples=tenant.policy.min_training_examples,
            drift_report=event.report,
            created_at=now,
        )
        if isinstance(built, Shortfall):
            return Action(kind="waiting", detail=built.detail)
        request = finetune_request(
            registry,
            tenant,
            job_key=event.id,
            serving=key.split("@", 1)[0],
            dataset=built,
            reason=FinetuneReason(kind="quality_drift", report=event.report, summary=event.summary),
            requested_at=now,
        )
        await self._requests.send(request)
        return Action(
            kind="finetune_requested",
            detail=f"{built.examples} examples from {', '.join(built.tenants)}",
            job_key=event.id,
            dataset=built.blob,
        )

    async def _close_event(self, tenant_id: str, key: str, event: str, action: Action) -> None:
        for _ in range(_ATTEMPTS):
            blob = await self._store.read(self._container, state_name(tenant_id, key))
            if blob is None:
                return
            state = _load_state(blob.data, tenant_id, key)
            events = [
                e.model_copy(
                    update={
                        "action": action.kind,
                        "detail": action.detail,
                        "job_key": action.job_key,
                    }
                )
                if e.id == event and e.action == "pending"
                else e
                for e in state.events
            ]
            data = state.model_copy(update={"events": events}).model_dump_json().encode()
            try:
                await self._store.put(
                    self._container, state_name(tenant_id, key), data, if_match=blob.etag
                )
                return
            except ConditionFailed:
                continue

    async def _report(
        self,
        tenant: Tenant,
        *,
        key: str,
        at: datetime,
        stem: str,
        evaluation: Evaluation,
        pending: DriftEvent | None,
        action: Action,
        trigger: str,
    ) -> DriftReport:
        now = at  # the report is named after the same moment
        detected = evaluation.detected
        chart = None
        if detected is not None:
            chart = f"{stem}.png"
            png = render_chart(
                title=f"{tenant.id} / {key}: {detected.reason}"[:300],
                series=detected.series,
                change_point=detected.change_point,
                reference_mean=detected.reference_mean,
                recent_mean=detected.recent_mean,
                statistics=evaluation.chart_statistics,
                threshold=detected.threshold,
            )
            await self._store.put(self._container, chart, png, content_type="image/png")
        input_part = evaluation.input.to_json() if evaluation.input else None
        decision = _decision(evaluation, action)
        report = DriftReport(
            tenant_id=tenant.id,
            model_key=key,
            evaluated_at=now,
            trigger=trigger if trigger in ("feedback", "timer", "operator") else "timer",  # type: ignore[arg-type]
            ratings_read=evaluation.ratings_read,
            ratings_total=evaluation.state.ratings_total,
            quality=evaluation.evidence.to_json(),
            input=input_part,
            drift=detected is not None or bool(evaluation.input and evaluation.input.detected),
            quality_drift=detected is not None,
            input_drift=bool(evaluation.input and evaluation.input.detected),
            drift_event_id=pending.id if pending else None,
            decision=decision,
            action=action,
            blob=f"{self._container}/{stem}.json",
            chart=f"{self._container}/{chart}" if chart else None,
        )
        await self._store.put(
            self._container, f"{stem}.json", report.model_dump_json(indent=2).encode("utf-8")
        )
        extra = without_none(
            event="drift.evaluated",
            tenant_id=tenant.id,
            deployment=key,
            drift=report.drift,
            action=action.kind,
            job_key=action.job_key,
            ratings=report.ratings_total,
            report=f"{self._container}/{stem}.json",
        )
        log.log(logging.WARNING if report.drift else logging.INFO, key_values(extra), extra=extra)
        return report


def _decision(evaluation: Evaluation, action: Action) -> str:
    parts = []
    if evaluation.detected is not None:
        parts.append(f"quality drift: {evaluation.detected.reason}")
    else:
        parts.append(f"no quality drift: {evaluation.evidence.reason}")
    if evaluation.input is not None:
        parts.append(
            ("input drift: " if evaluation.input.detected else "inputs steady: ")
            + evaluation.input.reason
        )
    parts.append(f"action: {action.kind} ({action.detail})")
    return "; ".join(parts)


def _load_state(data: bytes | None, tenant_id: str, key: str) -> DriftState:
    if data is None:
        return DriftState(tenant_id=tenant_id, model_key=key)
    try:
        return DriftState.model_validate_json(data)
    except ValidationError:
        log.error(
            key_values(
                {"event": "drift.state_unreadable", "tenant_id": tenant_id, "deployment": key}
            ),
        )
        return DriftState(tenant_id=tenant_id, model_key=key)
