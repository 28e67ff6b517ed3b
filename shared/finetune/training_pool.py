"""A tenant's training pool: the scrubbed examples of its uploads, and training sets built from it.

In the `training` container:

    <tenant>/pool/<upload_id>/<part:05d>.jsonl  kept examples of one upload, in file order, one
                                                chat example per line (written once)
    <tenant>/pool/index.json                    `PoolIndex`: the pooled uploads in the order they
                                                were added; the fine-tune requests made from them
    <tenant>/<dataset_id>.jsonl                 a training set and its manifest, in the format
    <tenant>/<dataset_id>.manifest.json         and layout of `shared.drift.training_set`

The index is read-modify-written under its ETag (`JsonDocuments.update`): two instances adding
uploads or claiming a request never lose each other's change, and only one of two racing
claims wins. "New examples" are those of the uploads after `requested_through` (the uploads the
last request from the pool covered).

A training set is streamed (`BatchFiles.write`, staged blocks, one part in memory at a time): the
newest pooled uploads that fit in `max_bytes`, in the order they were added, per source tenant.
It is written once: a manifest already there is the set (a retried request reuses it).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.batch.files import BatchFiles
from shared.drift.training_set import TrainingSet
from shared.feedback.consent import TrainingScope
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore, ConditionFailed

MAX_WRITE_TRIES = 50
M = TypeVar("M", bound=BaseModel)


class JsonDocuments(Generic[M]):
    """JSON documents of one model type in one container, changed by read-modify-write under
    their ETag (create If-None-Match when absent), retried when another writer came first."""

    def __init__(
        self,
        store: BlobStore,
        container: str,
        model: type[M],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._container = container
        self._model = model
        self._rng = rng or random.Random()

    async def get(self, name: str) -> M | None:
        blob = await self._store.read(self._container, name)
        return None if blob is None else self._model.model_validate_json(blob.data)

    async def update(self, name: str, change: Callable[[M | None], M | None]) -> M | None:
        """Apply `change` to the stored document (None: there is none) and store its result;
        `change` returns None to leave it as it is. Returns the document as stored now."""
        for attempt in range(MAX_WRITE_TRIES):
            blob = await self._store.read(self._container, name)
            current = None if blob is None else self._model.model_validate_json(blob.data)
            changed = change(current)
            if changed is None:
                return current
            data = changed.model_dump_json().encode("utf-8")
            if blob is None:
                if await self._store.create(self._container, name, data):
                    return changed
            else:
                try:
                    await self._store.put(self._container, name, data, if_match=blob.etag)
                except ConditionFailed:
                    pass
                else:
                    return changed
            await self._pause(attempt)
        raise RuntimeError(f"{self._container}/{name}: {MAX_WRITE_TRIES} conflicting writes")

    async def _pause(self, attempt: int) -> None:
        """A random wait before the next try, growing with `attempt` up to 200 ms."""
        ceiling = min(0.2, (attempt + 1) / 200)
        await asyncio.sleep(self._rng.random() * ceiling)


class PoolEntry(BaseModel):
    """One pooled upload: its examples are `parts` blobs under `pool/<upload_id>/`."""

    model_config = ConfigDict(frozen=True)

    upload_id: str
    source: str
    examples: int = Field(ge=1)
    bytes: int = Field(ge=0)
    parts: int = Field(ge=1)
    added_at: datetime


class PoolRequest(BaseModel):
    """A fine-tune request made from the pool: claimed (`pending`), then sent (`last_request`)."""

    model_config = ConfigDict(frozen=True)

    job_key: str
    dataset_id: str
    through: int = Field(ge=0, description="the entries it covers: entries[:through]")
    examples: int
    claimed_at: datetime


class PoolIndex(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["training.pool"] = "training.pool"
    version: Literal[1] = 1
    tenant_id: str
    entries: list[PoolEntry] = Field(default_factory=list)
    requested_through: int = 0
    pending: PoolRequest | None = None
    last_request: PoolRequest | None = None

    def new_examples(self) -> int:
        """Examples added since the last request made from the pool."""
        return sum(e.examples for e in self.entries[self.requested_through :])

    def has(self, upload_id: str) -> bool:
        return any(e.upload_id == upload_id for e in self.entries)


class TrainingManifest(BaseModel):
    """`<dataset_id>.manifest.json`: the keys `shared.drift.training_set` writes (counts, sha256
    of the JSONL, the tenants whose examples it holds, the window of their dates), and `uploads`:
    the pooled uploads (`<tenant>/<upload_id>`) it was built from."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["training.manifest"] = "training.manifest"
    version: Literal[1] = 1
    dataset_id: str
    tenant_id: str
    scope: TrainingScope
    format: Literal["chat-jsonl"] = "chat-jsonl"
    blob: str = Field(description="`training/<tenant>/<dataset_id>.jsonl`")
    examples: int = Field(ge=0)
    sha256: str
    tenants: list[str]
    window: dict[str, str] = Field(description="{from, to}: ISO dates of the examples")
    drift_report: str | None = None
    uploads: list[str] = Field(default_factory=list)
    created_at: datetime

    def training_set(self, manifest: str) -> TrainingSet:
        return TrainingSet(
            dataset_id=self.dataset_id,
            blob=self.blob,
            manifest=manifest,
            sha256=self.sha256,
            examples=self.examples,
            tenants=tuple(self.tenants),
        )


def part_name(tenant_id: str, upload_id: str, part: int) -> str:
    return tenant_path(tenant_id, "pool", upload_id, f"{part:05d}", suffix=".jsonl")


def index_name(tenant_id: str) -> str:
    return tenant_path(tenant_id, "pool", "index", suffix=".json")


class TrainingPool:
    def __init__(
        self,
        store: BlobStore,
        files: BatchFiles,
        *,
        container: str = names.TRAINING_CONTAINER,
    ) -> None:
        self._store = store
        self._files = files
        self._container = container
        self.indexes = JsonDocuments(store, container, PoolIndex)

    async def write_part(self, tenant_id: str, upload_id: str, part: int, data: bytes) -> None:
        """Store one part once: a part already there (an earlier try) is left as it is."""
        await self._store.create(
            self._container,
            part_name(tenant_id, upload_id, part),
            data,
            content_type="application/x-ndjson",
        )

    async def add(self, tenant_id: str, entry: PoolEntry) -> PoolIndex:
        """Add a pooled upload to the index, once (an upload already listed is left)."""

        def with_entry(current: PoolIndex | None) -> PoolIndex | None:
            index = current or PoolIndex(tenant_id=tenant_id)
            if index.has(entry.upload_id):
                return None if current is not None else index
            return index.model_copy(update={"entries": [*index.entries, entry]})

        stored = await self.indexes.update(index_name(tenant_id), with_entry)
        assert stored is not None  # `add` never leaves a missing index missing
        return stored

    async def index(self, tenant_id: str) -> PoolIndex:
        return await self.indexes.get(index_name(tenant_id)) or PoolIndex(tenant_id=tenant_id)

    async def build(
        self,
        tenant_id: str,
        sources: Sequence[str],
        *,
        dataset_id: str,
        scope: TrainingScope,
        max_bytes: int,
        created_at: datetime,
    ) -> TrainingSet | None:
        """The training set `dataset_id` for `tenant_id` from the pools of `sources` (the tenants
        the consent rule allows), or None when they hold no example. Raises what the store does."""
        manifest_name = tenant_path(tenant_id, dataset_id, suffix=".manifest.json")
        existing = await self._store.read(self._container, manifest_name)
        if existing is not None:
            manifest = TrainingManifest.model_validate_json(existing.data)
            return manifest.training_set(f"{self._container}/{manifest_name}")
        chosen = await self._choose(sources, max_bytes)
        if not chosen:
            return None
        blob = tenant_path(tenant_id, dataset_id, suffix=".jsonl")
        stream = _Stream(self._store, self._container, chosen)
        await self._files.write(self._container, blob, stream.parts())
        added = sorted(entry.added_at for _, entry in chosen)
        manifest = TrainingManifest(
            dataset_id=dataset_id,
            tenant_id=tenant_id,
            scope=scope,
            blob=f"{self._container}/{blob}",
            examples=stream.examples,
            sha256=stream.sha256.hexdigest(),
            tenants=sorted({source for source, _ in chosen}),
            window={"from": added[0].date().isoformat(), "to": added[-1].date().isoformat()},
            uploads=[f"{source}/{entry.upload_id}" for source, entry in chosen],
            created_at=created_at,
        )
        await self._store.create(
            self._container, manifest_name, manifest.model_dump_json(indent=2).encode("utf-8")
        )
        stored = await self._store.read(self._container, manifest_name)  # the first one written
        if stored is not None:
            manifest = TrainingManifest.model_validate_json(stored.data)
        return manifest.training_set(f"{self._container}/{manifest_name}")

    async def _choose(self, sources: Sequence[str], max_bytes: int) -> list[tuple[str, PoolEntry]]:
        """The newest entries of every source that fit in `max_bytes`, in (source, added) order."""
        every: list[tuple[str, int, PoolEntry]] = []
        for source in sources:
            index = await self.index(source)
            every += [(source, position, entry) for position, entry in enumerate(index.entries)]
        every.sort(key=lambda item: item[2].added_at, reverse=True)
        chosen: list[tuple[str, int, PoolEntry]] = []
        total = 0
        for item in every:
            if total + item[2].bytes > max_bytes:
                break
            chosen.append(item)
            total += item[2].bytes
        chosen.sort(key=lambda item: (item[0], item[1]))
        return [(source, entry) for source, _, entry in chosen]


class _Stream:
    """The chosen pool parts, read one at a time, hashed and counted as they are written."""

    def __init__(
        self, store: BlobStore, container: str, chosen: Sequence[tuple[str, PoolEntry]]
    ) -> None:
        self._store = store
        self._container = container
        self._chosen = chosen
        self.sha256 = hashlib.sha256()
        self.examples = 0

    async def parts(self) -> AsyncIterator[bytes]:
        for source, entry in self._chosen:
            for part in range(entry.parts):
                name = part_name(source, entry.upload_id, part)
                blob = await self._store.read(self._container, name)
                if blob is None:
                    raise RuntimeError(f"pool part {self._container}/{name} is missing")
                self.sha256.update(blob.data)
                self.examples += blob.data.count(b"\n")
                yield blob.data
