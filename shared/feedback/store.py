"""Stored feedback, and the per-model-version stream of scores that drift detection reads.

- `feedback/<tenant>/<yyyy-mm-dd of the answer>/<request_id>.json`: the latest `FeedbackRecord`
  for a request (last one wins), written with ETag concurrency.
- `feedback/<tenant>/_stream/<model key>.jsonl` (parts as in `shared.storage.json_lines`): one
  line `{"r": request_id, "s": score, "at": ...}` per request's FIRST rating, in arrival order.
  The drift monitor reads it from a cursor, so each rating reaches a detector once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

from pydantic import ValidationError

from shared.contracts import FeedbackRecord
from shared.security.paths import tenant_path, tenant_prefix
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.storage.json_lines import Appended, Cursor, JsonLinesLog

STREAM = "_stream"


@dataclass(frozen=True, slots=True)
class StoredFeedback:
    record: FeedbackRecord
    etag: str | None


@dataclass(frozen=True, slots=True)
class Rating:
    request_id: str
    score: float
    at: datetime


def record_name(tenant_id: str, day: date, request_id: str) -> str:
    return tenant_path(tenant_id, day.isoformat(), request_id, suffix=".json")


def stream_base(tenant_id: str, key: str) -> str:
    return tenant_path(tenant_id, STREAM, key)


class FeedbackStore:
    def __init__(self, store: BlobStore, container: str = names.FEEDBACK_CONTAINER) -> None:
        self._store = store
        self._container = container
        self._stream = JsonLinesLog(store, container)

    async def get(self, tenant_id: str, day: date, request_id: str) -> StoredFeedback | None:
        blob = await self._store.read(self._container, record_name(tenant_id, day, request_id))
        if blob is None:
            return None
        return StoredFeedback(FeedbackRecord.model_validate_json(blob.data), blob.etag)

    async def create(self, record: FeedbackRecord) -> bool:
        """The first record of a request; False if one appeared meanwhile."""
        name = record_name(record.tenant_id, record.answered_at.date(), record.request_id)
        return await self._store.create(
            self._container, name, record.model_dump_json().encode("utf-8")
        )

    async def replace(self, record: FeedbackRecord, etag: str | None) -> None:
        """A revision; ConditionFailed if another revision landed since `etag` was read."""
        name = record_name(record.tenant_id, record.answered_at.date(), record.request_id)
        await self._store.put(
            self._container, name, record.model_dump_json().encode("utf-8"), if_match=etag
        )

    async def days(self, tenant_id: str, days: list[date]) -> list[FeedbackRecord]:
        """Every stored record of the answers of those days."""
        records = []
        for day in days:
            prefix = tenant_prefix(tenant_id, day.isoformat())
            for name in await self._store.list_names(self._container, prefix):
                blob = await self._store.read(self._container, name)
                if blob is None:
                    continue
                try:
                    records.append(FeedbackRecord.model_validate_json(blob.data))
                except ValidationError:
                    continue
        return records

    async def append_rating(self, tenant_id: str, key: str, rating: Rating) -> Appended:
        line = json.dumps(
            {"r": rating.request_id, "s": rating.score, "at": rating.at.isoformat()}
        ).encode("utf-8")
        return await self._stream.append(stream_base(tenant_id, key), line)

    async def ratings(self, tenant_id: str, key: str, since: Cursor) -> tuple[list[Rating], Cursor]:
        lines, cursor = await self._stream.read(stream_base(tenant_id, key), since)
        ratings = []
        for line in lines:
            try:
                item = json.loads(line)
                ratings.append(
                    Rating(str(item["r"]), float(item["s"]), datetime.fromisoformat(item["at"]))
                )
            except (ValueError, KeyError, TypeError):
                continue
        return ratings, cursor

    async def stream_keys(self, tenant_id: str) -> list[str]:
        """The model keys that have a rating stream for this tenant."""
        prefix = tenant_prefix(tenant_id, STREAM)
        keys = set()
        for name in await self._store.list_names(self._container, prefix):
            stem = name[len(prefix) :].removesuffix(".jsonl")
            keys.add(stem.split(".")[0])  # model keys have no dots; `.N` is a part number
        return sorted(keys)
