"""The blob store port: the few operations the handlers need, and its azure-storage-blob adapter.

`AzureBlobStore` uses `azure.storage.blob.aio`; `MemoryBlobStore` keeps blobs in a dict with the
same semantics (conditional create, ETag-conditional put, append blobs with a block limit, listing
by prefix) for unit tests.

Optimistic concurrency: `read` returns the blob's ETag; `put(..., if_match=etag)` writes only if
the blob is still that version and raises `ConditionFailed` otherwise, so a read-modify-write by
two instances never loses an update (the loser reads again and retries).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobType, ContentSettings
from azure.storage.blob.aio import BlobClient, BlobServiceClient

JSON_CONTENT: str = "application/json"
JSON_LINES_CONTENT: str = "application/x-ndjson"

# An append blob takes at most 50,000 blocks (appends); the service answers this code after that.
_BLOCK_COUNT_EXCEEDS_LIMIT = "BlockCountExceedsLimit"
_RANGE_NOT_SATISFIABLE = 416


def _error_code(exc: HttpResponseError) -> str | None:
    """The storage error code (`BlobNotFound`, ...) azure-storage-blob puts on its errors."""
    code = getattr(exc, "error_code", None)
    return str(code) if code is not None else None


class AppendLimitReached(Exception):
    """The append blob is full (50,000 appends); the caller writes to the next one."""


class ConditionFailed(Exception):
    """A conditional write lost: the blob changed (or appeared) since the ETag was read."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None


class BlobStore(Protocol):
    async def read(self, container: str, name: str) -> StoredBlob | None:
        """The blob and its metadata, or None if there is no such blob."""
        ...

    async def read_from(self, container: str, name: str, offset: int) -> bytes | None:
        """The blob's bytes from `offset` on (b"" at or past its end), or None if there is no
        such blob: a reader that remembers how far it got downloads only what is new."""
        ...

    async def create(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        content_type: str = JSON_CONTENT,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """Write only if the blob does not exist (If-None-Match: *); False if it already did."""
        ...

    async def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        content_type: str = JSON_CONTENT,
        if_match: str | None = None,
    ) -> str | None:
        """Write, replacing any blob of that name; returns the new ETag. With `if_match`, only
        if the blob is still that version (ConditionFailed otherwise, or if it is gone)."""
        ...

    async def append(self, container: str, name: str, data: bytes) -> int:
        """Append to an append blob, creating it when missing; AppendLimitReached when full.
        Returns the blob's committed block count after this append (one block per call)."""
        ...

    async def list_names(self, container: str, prefix: str) -> list[str]:
        """The names of the blobs under `prefix`, in name order ([] for a missing container)."""
        ...

    async def set_metadata(self, container: str, name: str, metadata: Mapping[str, str]) -> None:
        """Replace the metadata of an existing blob."""
        ...

    async def close(self) -> None: ...


class AzureBlobStore:
    """The port over `azure.storage.blob.aio.BlobServiceClient` (one client, reused)."""

    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service

    @classmethod
    def from_connection_string(cls, connection_string: str) -> AzureBlobStore:
        return cls(BlobServiceClient.from_connection_string(connection_string))

    @classmethod
    def from_account_url(cls, url: str, credential: AsyncTokenCredential) -> AzureBlobStore:
        return cls(BlobServiceClient(url, credential=credential))

    async def read(self, container: str, name: str) -> StoredBlob | None:
        blob = self._service.get_blob_client(container, name)
        try:
            downloader = await blob.download_blob()
            data = await downloader.readall()
        except ResourceNotFoundError:
            return None
        properties = downloader.properties
        return StoredBlob(data=data, metadata=dict(properties.metadata or {}), etag=properties.etag)

    async def read_from(self, container: str, name: str, offset: int) -> bytes | None:
        blob = self._service.get_blob_client(container, name)
        try:
            downloader = await blob.download_blob(offset=offset)
            return bytes(await downloader.readall())
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code == _RANGE_NOT_SATISFIABLE:  # the offset is the blob's end
                return b""
            raise

    async def create(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        content_type: str = JSON_CONTENT,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        blob = self._service.get_blob_client(container, name)
        try:
            await blob.upload_blob(
                data,
                overwrite=False,
                match_condition=MatchConditions.IfMissing,
                content_settings=ContentSettings(content_type=content_type),
                metadata=dict(metadata or {}),
            )
        except ResourceExistsError:
            return False
        return True

    async def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        content_type: str = JSON_CONTENT,
        if_match: str | None = None,
    ) -> str | None:
        blob = self._service.get_blob_client(container, name)
        settings = ContentSettings(content_type=content_type)
        try:
            if if_match is None:
                written = await blob.upload_blob(data, overwrite=True, content_settings=settings)
            else:
                written = await blob.upload_blob(
                    data,
                    overwrite=True,
                    content_settings=settings,
                    etag=if_match,
                    match_condition=MatchConditions.IfNotModified,
                )
        except ResourceModifiedError as exc:
            raise ConditionFailed(f"{container}/{name}") from exc
        except ResourceNotFoundError as exc:
            if if_match is None:
                raise
            raise ConditionFailed(f"{container}/{name}") from exc
        etag = written.get("etag")
        return str(etag) if etag is not None else None

    async def list_names(self, container: str, prefix: str) -> list[str]:
        client = self._service.get_container_client(container)
        try:
            return sorted([name async for name in client.list_blob_names(name_starts_with=prefix)])
        except ResourceNotFoundError:
            return []

    async def append(self, container: str, name: str, data: bytes) -> int:
        blob = self._service.get_blob_client(container, name)
        try:
            return await self._append_block(blob, data)
        except ResourceNotFoundError as exc:
            if _error_code(exc) != "BlobNotFound":
                raise  # e.g. ContainerNotFound: a deployment problem, not ours to paper over
        with suppress(ResourceExistsError):  # another instance created it first
            await blob.create_append_blob(
                match_condition=MatchConditions.IfMissing,
                content_settings=ContentSettings(content_type=JSON_LINES_CONTENT),
            )
        return await self._append_block(blob, data)

    @staticmethod
    async def _append_block(blob: BlobClient, data: bytes) -> int:
        try:
            appended = await blob.append_block(data, length=len(data))
        except HttpResponseError as exc:
            if _error_code(exc) == _BLOCK_COUNT_EXCEEDS_LIMIT:
                raise AppendLimitReached(blob.blob_name) from exc
            raise
        count = appended.get("blob_committed_block_count")
        return int(count) if isinstance(count, (int, str)) else 0

    async def set_metadata(self, container: str, name: str, metadata: Mapping[str, str]) -> None:
        blob = self._service.get_blob_client(container, name)
        await blob.set_blob_metadata(dict(metadata))

    async def close(self) -> None:
        await self._service.close()


class MemoryBlobStore:
    """The port in memory, for tests: same conditional and append semantics, no I/O."""

    def __init__(self, *, append_block_limit: int = 50_000) -> None:
        self.blobs: dict[tuple[str, str], bytearray] = {}
        self.metadata: dict[tuple[str, str], dict[str, str]] = {}
        self.types: dict[tuple[str, str], BlobType] = {}
        self.blocks: dict[tuple[str, str], int] = {}
        self.etags: dict[tuple[str, str], str] = {}
        self._versions = 0
        self._append_block_limit = append_block_limit

    def _touch(self, key: tuple[str, str]) -> str:
        self._versions += 1
        self.etags[key] = f'"0x{self._versions:x}"'
        return self.etags[key]

    def text(self, container: str, name: str) -> str:
        return self.blobs[(container, name)].decode("utf-8")

    def names(self, container: str) -> list[str]:
        return sorted(n for (c, n) in self.blobs if c == container)

    async def read(self, container: str, name: str) -> StoredBlob | None:
        key = (container, name)
        if key not in self.blobs:
            return None
        return StoredBlob(
            bytes(self.blobs[key]), dict(self.metadata.get(key, {})), self.etags.get(key)
        )

    async def read_from(self, container: str, name: str, offset: int) -> bytes | None:
        data = self.blobs.get((container, name))
        return None if data is None else bytes(data[offset:])

    async def create(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        content_type: str = JSON_CONTENT,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        key = (container, name)
        if key in self.blobs:
            return False
        self.blobs[key] = bytearray(data)
        self.metadata[key] = dict(metadata or {})
        self.types[key] = BlobType.BLOCKBLOB
        self._touch(key)
        return True

    async def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        content_type: str = JSON_CONTENT,
        if_match: str | None = None,
    ) -> str | None:
        key = (container, name)
        if if_match is not None and self.etags.get(key) != if_match:
            raise ConditionFailed(f"{container}/{name}")
        self.blobs[key] = bytearray(data)
        self.metadata[key] = {}
        self.types[key] = BlobType.BLOCKBLOB
        return self._touch(key)

    async def list_names(self, container: str, prefix: str) -> list[str]:
        return sorted(n for (c, n) in self.blobs if c == container and n.startswith(prefix))

    async def append(self, container: str, name: str, data: bytes) -> int:
        key = (container, name)
        if key not in self.blobs:
            self.blobs[key] = bytearray()
            self.types[key] = BlobType.APPENDBLOB
            self.blocks[key] = 0
        if self.types[key] is not BlobType.APPENDBLOB:
            raise ValueError(f"{container}/{name} is not an append blob")
        if self.blocks[key] >= self._append_block_limit:
            raise AppendLimitReached(name)
        self.blobs[key] += data
        self.blocks[key] += 1
        self._touch(key)
        return self.blocks[key]

    async def set_metadata(self, container: str, name: str, metadata: Mapping[str, str]) -> None:
        key = (container, name)
        if key not in self.blobs:
            raise KeyError(f"{container}/{name}")
        self.metadata[key] = dict(metadata)
        self._touch(key)

    async def close(self) -> None:
        return None
