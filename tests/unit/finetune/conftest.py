"""Helpers for the fine-tuning tests."""

from __future__ import annotations

import asyncio

from shared.storage.blob_store import MemoryBlobStore, StoredBlob


class YieldingBlobStore(MemoryBlobStore):
    """A memory store that lets other coroutines run between a read and the caller's next step,
    as a network round trip does, so read-modify-write races really happen in tests."""

    async def read(self, container: str, name: str) -> StoredBlob | None:
        blob = await super().read(container, name)
        await asyncio.sleep(0)
        return blob
