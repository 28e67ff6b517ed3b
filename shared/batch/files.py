"""Large files of a batch, streamed: the upload read in chunks, the output files written in blocks.

The blob store port (`shared.storage.blob_store`) moves whole blobs, which is right for records and
results but not for a 100,000-row upload. This port reads a blob in chunks, pinned to one version
(If-Match its ETag), and writes a file from an iterable of parts as staged blocks committed once at
the end (Put Block / Put Block List): readers see the whole file or none of it, a retried writer
re-stages the same block ids and commits the same list, and memory holds one block at a time.

`AzureBatchFiles` uses `azure.storage.blob.aio`; `StoreBatchFiles` goes through any `BlobStore`
(whole blobs in memory), for unit tests over `MemoryBlobStore`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from shared.storage.blob_store import JSON_LINES_CONTENT, AzureBlobStore, BlobStore

CHUNK_BYTES = 256 * 1024  # one download request / one staged block


class UploadChanged(Exception):
    """The upload was replaced or deleted while it was being read (its ETag moved on)."""


@dataclass(frozen=True, slots=True)
class BlobStat:
    size: int
    etag: str


class BatchFiles(Protocol):
    async def stat(self, container: str, name: str) -> BlobStat | None:
        """Size and ETag, or None when there is no such blob."""
        ...

    def chunks(self, container: str, name: str, etag: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks, of the version `etag`; UploadChanged if it moved on."""
        ...

    async def write(
        self,
        container: str,
        name: str,
        parts: AsyncIterable[bytes],
        *,
        content_type: str = JSON_LINES_CONTENT,
    ) -> int:
        """Write (replace) the blob from `parts`; returns its size."""
        ...


class AzureBatchFiles:
    def __init__(self, service: BlobServiceClient, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._service = service
        self._chunk_bytes = chunk_bytes

    async def stat(self, container: str, name: str) -> BlobStat | None:
        blob = self._service.get_blob_client(container, name)
        try:
            props = await blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobStat(size=int(props.size), etag=str(props.etag))

    async def chunks(self, container: str, name: str, etag: str) -> AsyncIterator[bytes]:
        blob = self._service.get_blob_client(container, name)
        offset = 0
        while True:
            try:
                downloader = await blob.download_blob(
                    offset=offset,
                    length=self._chunk_bytes,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
                data = await downloader.readall()
            except ResourceModifiedError as exc:
                raise UploadChanged(f"{container}/{name}") from exc
            except ResourceNotFoundError as exc:
                raise UploadChanged(f"{container}/{name}") from exc
            except Exception as exc:
                # The service answers 416 for an offset at the end of the blob.
                if getattr(exc, "status_code", None) == 416:
                    return
                raise
            if data:
                yield data
            offset += len(data)
            if len(data) < self._chunk_bytes:
                return

    async def write(
        self,
        container: str,
        name: str,
        parts: AsyncIterable[bytes],
        *,
        content_type: str = JSON_LINES_CONTENT,
    ) -> int:
        blob = self._service.get_blob_client(container, name)
        blocks: list[BlobBlock] = []
        size = 0
        async for block in _blocks(parts, self._chunk_bytes):
            block_id = base64.b64encode(f"{len(blocks):08d}".encode()).decode()
            await blob.stage_block(block_id, block, length=len(block))
            blocks.append(BlobBlock(block_id=block_id))
            size += len(block)
        await blob.commit_block_list(
            blocks, content_settings=ContentSettings(content_type=content_type)
        )
        return size


class StoreBatchFiles:
    """Through the whole-blob port: the same contract, without bounded memory (unit tests)."""

    def __init__(self, store: BlobStore, *, chunk_bytes: int = 64 * 1024) -> None:
        self._store = store
        self._chunk_bytes = chunk_bytes

    async def stat(self, container: str, name: str) -> BlobStat | None:
        blob = await self._store.read(container, name)
        if blob is None:
            return None
        return BlobStat(size=len(blob.data), etag=blob.etag or "")

    async def chunks(self, container: str, name: str, etag: str) -> AsyncIterator[bytes]:
        blob = await self._store.read(container, name)
        if blob is None or (blob.etag or "") != etag:
            raise UploadChanged(f"{container}/{name}")
        for start in range(0, len(blob.data), self._chunk_bytes):
            yield blob.data[start : start + self._chunk_bytes]

    async def write(
        self,
        container: str,
        name: str,
        parts: AsyncIterable[bytes],
        *,
        content_type: str = JSON_LINES_CONTENT,
    ) -> int:
        data = b"".join([part async for part in parts])
        await self._store.put(container, name, data, content_type=content_type)
        return len(data)


def files_for(store: BlobStore) -> BatchFiles:
    """The streaming adapter over the same account as `store` when it is Azure storage."""
    if isinstance(store, AzureBlobStore):
        service: BlobServiceClient = store._service
        return AzureBatchFiles(service)
    return StoreBatchFiles(store)


async def _blocks(parts: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """`parts` regrouped into blocks of about `size` bytes (a part is never split)."""
    pending: list[bytes] = []
    held = 0
    async for part in parts:
        pending.append(part)
        held += len(part)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)
