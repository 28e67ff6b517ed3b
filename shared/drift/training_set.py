"""Training sets from feedback: chat JSONL as Azure OpenAI fine-tuning takes it, with a manifest.

`training/<tenant>/<dataset_id>.jsonl`, one example per line:

    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}

(the chat format of Azure OpenAI fine-tuning: https://learn.microsoft.com/azure/ai-services/
openai/how-to/fine-tuning, "Prepare your training and validation data"). An example is a logged
prompt with, as the assistant turn, the user's correction when there is one, else the answer as
it was when it was rated positively (score >= 0.75: thumbs up, 4 or 5); negatively rated answers
without a correction teach nothing and are left out. Text comes only from the inference log and
feedback records, which `shared.feedback.consent` already scrubbed and withheld as each tenant's
policy says, and only from the tenants `consent.training_tenants` allows for the scope.

`training/<tenant>/<dataset_id>.manifest.json` says what is in it: counts, sha256 of the JSONL,
the source window, the tenants it came from, the drift report that asked for it. Both are written
once (If-None-Match), so a repeated build for the same drift event keeps the first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from shared.contracts import FeedbackRecord
from shared.feedback.consent import TrainingScope, training_tenants
from shared.feedback.inference_log import InferenceLog, InferenceLogEntry
from shared.feedback.store import FeedbackStore
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import JSON_LINES_CONTENT, BlobStore
from shared.tenancy.registry import Registry, Tenant

POSITIVE_SCORE = 0.75


@dataclass(frozen=True, slots=True)
class TrainingSet:
    dataset_id: str
    blob: str  # container-relative name
    manifest: str
    sha256: str
    examples: int
    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Shortfall:
    examples: int
    needed: int
    tenants: tuple[str, ...]

    @property
    def detail(self) -> str:
        if not self.tenants:
            return "no tenant's data may be used for this training set (consent)"
        return f"only {self.examples} usable examples; the tenant's policy needs {self.needed}"


def window_days(end: date, days: int) -> list[date]:
    return [end - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def example_of(record: FeedbackRecord, entry: InferenceLogEntry) -> dict[str, Any] | None:
    """One chat example, or None when this feedback teaches nothing or its text is withheld."""
    if entry.prompt is None or entry.tenant_id != record.tenant_id:
        return None
    if record.correction is not None:
        target = record.correction
    elif record.score >= POSITIVE_SCORE and entry.answer is not None:
        target = entry.answer
    else:
        return None
    messages = [{"role": m.role, "content": m.content} for m in entry.prompt]
    return {"messages": [*messages, {"role": "assistant", "content": target}]}


class TrainingSetBuilder:
    def __init__(
        self,
        store: BlobStore,
        feedback: FeedbackStore,
        log: InferenceLog,
        container: str = names.TRAINING_CONTAINER,
    ) -> None:
        self._store = store
        self._feedback = feedback
        self._log = log
        self._container = container

    async def examples(
        self, registry: Registry, tenant: Tenant, scope: TrainingScope, days: list[date]
    ) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
        """The examples, in a stable order, and the tenants they came from."""
        sources = training_tenants(registry, tenant, scope)
        found: list[tuple[str, datetime, str, dict[str, Any]]] = []
        for source in sources:
            records = await self._feedback.days(source.id, days)
            entries = await self._log.by_request(source.id, days) if records else {}
            for record in records:
                entry = entries.get(record.request_id)
                example = example_of(record, entry) if entry else None
                if example is not None:
                    found.append((source.id, record.answered_at, record.request_id, example))
        found.sort(key=lambda item: (item[0], item[1], item[2]))
        return [item[3] for item in found], tuple(s.id for s in sources)

    async def build(
        self,
        registry: Registry,
        tenant: Tenant,
        scope: TrainingScope,
        *,
        dataset_id: str,
        end: date,
        days: int,
        min_examples: int,
        drift_report: str | None,
        created_at: datetime,
    ) -> TrainingSet | Shortfall:
        window = window_days(end, days)
        examples, tenants = await self.examples(registry, tenant, scope, window)
        used = tuple(sorted(set(tenants)))
        if len(examples) < min_examples or not used:
            return Shortfall(len(examples), min_examples, used)
        data = b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in examples)
        blob = tenant_path(tenant.id, dataset_id, suffix=".jsonl")
        manifest_name = tenant_path(tenant.id, dataset_id, suffix=".manifest.json")
        if not await self._store.create(
            self._container, blob, data, content_type=JSON_LINES_CONTENT
        ):
            existing = await self._store.read(self._container, blob)
            data = existing.data if existing is not None else data
        digest = hashlib.sha256(data).hexdigest()
        count = data.count(b"\n")
        manifest = {
            "type": "training.manifest",
            "version": 1,
            "dataset_id": dataset_id,
            "tenant_id": tenant.id,
            "scope": scope,
            "format": "chat-jsonl",
            "blob": f"{self._container}/{blob}",
            "examples": count,
            "sha256": digest,
            "tenants": list(used),
            "window": {"from": window[0].isoformat(), "to": window[-1].isoformat()},
            "drift_report": drift_report,
            "created_at": created_at.isoformat(),
        }
        await self._store.create(
            self._container, manifest_name, json.dumps(manifest, indent=2).encode("utf-8")
        )
        return TrainingSet(
            dataset_id=dataset_id,
            blob=f"{self._container}/{blob}",
            manifest=f"{self._container}/{manifest_name}",
            sha256=digest,
            examples=count,
            tenants=used,
        )
