"""Changing the registry document safely: read with its ETag, change, write only if unchanged.

Writers (tenant onboarding, fine-tuning's candidate registration, promotion and rollback) go
through `RegistryStore.update`, which

1. reads the document as it is stored (`${ENV}` references kept, not expanded) and its ETag,
2. applies the caller's change to a copy,
3. checks the result with `parse_registry` (the same checks a reader makes: references, isolation),
4. writes it only if the stored document still has the ETag read in step 1; if another writer got
   there first, it starts again from step 1 (up to `attempts` times, then `RegistryConflict`).

A change that makes the document invalid raises `RegistryError` and writes nothing. Readers
(`registry_source.RegistrySource`) see the old document or the new one, never a mix: a blob is
replaced in one Put Blob; a file is written to a temporary file beside it and renamed over it
(`os.replace`, atomic on POSIX and Windows).

File documents (`devhost`, tools) use a content digest as their ETag and an advisory lock
(`fcntl.flock` on `<file>.lock`) around compare-and-write, so two processes on one machine do not
interleave; blob documents use the blob's ETag with If-Match (If-None-Match for a first write).
Written documents are JSON (a YAML source is rewritten as JSON; comments are not kept).

Libraries weighed: `filelock` would give the same advisory lock portably; one `fcntl` call on the
POSIX systems this runs on (devhost and tools; in Azure the document is a blob) did not justify a
dependency. Azure App Configuration offers ETag-guarded key-values, but the registry is one
document read whole, and a blob keeps it in the account the app already uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.storage.blob_store import BlobStore, ConditionFailed
from shared.tenancy.registry import (
    Registry,
    RegistryError,
    blob_location,
    load_document,
    parse_registry,
)

try:  # POSIX only; on Windows file writers rely on the digest compare alone.
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms this runs on
    fcntl = None  # type: ignore[assignment]

Document = dict[str, Any]
Change = Callable[[Document], Document | None]
"""Takes a copy of the stored document; returns the new one, or changes it and returns None."""


class RegistryConflict(Exception):
    """Other writers changed the document on every attempt; nothing was written."""


@dataclass(frozen=True)
class StoredRegistry:
    """The document as stored (`${ENV}` unexpanded), its ETag (None: not written yet), and the
    registry it parses to."""

    document: Document
    etag: str | None
    registry: Registry


def _digest(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest() + '"'


def _dump(document: Document) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class RegistryStore:
    """The registry document at `reference` (a path, or blob://<container>/<name>), for writers."""

    def __init__(
        self,
        reference: str,
        store: BlobStore | None = None,
        *,
        env: Mapping[str, str] | None = None,
        attempts: int = 8,
    ) -> None:
        self.reference = reference
        self._location = blob_location(reference)
        if self._location is not None and store is None:
            raise RegistryError(f"{reference!r} is a blob, but there is no blob store")
        self._store = store
        self._env = env
        self._attempts = attempts

    async def read(self) -> StoredRegistry:
        """The stored document, its ETag and its registry. RegistryError if missing or invalid."""
        data, etag = await self._read_raw()
        if data is None:
            raise RegistryError(f"{self.reference}: no registry document")
        document = load_document(data, source=self.reference)
        registry = parse_registry(data, source=self.reference, env=self._env)
        return StoredRegistry(document, etag, registry)

    async def update(self, change: Change) -> StoredRegistry:
        """Apply `change` and write the result if nobody wrote in between (else re-read and
        re-apply). Returns what was written. Raises RegistryError (the change is invalid; the
        message lists every problem), RegistryConflict (lost `attempts` races)."""
        for _ in range(self._attempts):
            data, etag = await self._read_raw()
            if data is None:
                raise RegistryError(f"{self.reference}: no registry document")
            before = load_document(data, source=self.reference)
            after = copy.deepcopy(before)
            returned = change(after)
            document = after if returned is None else returned
            payload = _dump(document)
            registry = parse_registry(payload, source=self.reference, env=self._env)
            try:
                new_etag = await self._write(payload, etag)
            except ConditionFailed:
                continue
            return StoredRegistry(document, new_etag, registry)
        raise RegistryConflict(
            f"{self.reference}: changed by other writers on each of {self._attempts} attempts"
        )

    async def create(self, document: Document) -> bool:
        """Write a first document if there is none (checked first); False if one exists."""
        payload = _dump(document)
        parse_registry(payload, source=self.reference, env=self._env)
        try:
            await self._write(payload, None)
        except ConditionFailed:
            return False
        return True

    async def _read_raw(self) -> tuple[bytes | None, str | None]:
        if self._location is not None:
            assert self._store is not None
            blob = await self._store.read(*self._location)
            return (None, None) if blob is None else (blob.data, blob.etag)
        return await asyncio.to_thread(self._read_file)

    def _read_file(self) -> tuple[bytes | None, str | None]:
        try:
            data = Path(self.reference).read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise RegistryError(f"{self.reference}: cannot be read ({exc.strerror})") from None
        return data, _digest(data)

    async def _write(self, payload: bytes, etag: str | None) -> str | None:
        """Write if the stored version still has `etag` (None: only if there is none)."""
        if self._location is None:
            return await asyncio.to_thread(self._write_file, payload, etag)
        assert self._store is not None
        container, name = self._location
        if etag is None:
            if not await self._store.create(container, name, payload):
                raise ConditionFailed(f"{self.reference} appeared meanwhile")
            blob = await self._store.read(container, name)
            return None if blob is None else blob.etag
        return await self._store.put(container, name, payload, if_match=etag)

    def _write_file(self, payload: bytes, etag: str | None) -> str:
        path = Path(self.reference)
        with _file_lock(path):
            _, current_etag = self._read_file()
            if current_etag != etag:
                raise ConditionFailed(f"{path} changed meanwhile")
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        return _digest(payload)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
