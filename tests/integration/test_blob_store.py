"""AzureBlobStore against Azurite with the real azure-storage-blob SDK."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore, ConditionFailed


@pytest.fixture
async def store(azurite: Azurite) -> AsyncIterator[AzureBlobStore]:
    s = AzureBlobStore.from_connection_string(azurite.connection_string)
    try:
        yield s
    finally:
        await s.close()


def unique(prefix: str = "t") -> str:
    return f"{prefix}/{uuid.uuid4().hex}.json"


async def test_the_app_containers_exist(azurite: Azurite) -> None:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        found = {c.name async for c in service.list_containers()}
    assert set(names.CONTAINERS) <= found


async def test_read_of_a_missing_blob_is_none(store: AzureBlobStore) -> None:
    assert await store.read(names.RESULTS_CONTAINER, unique()) is None


async def test_create_writes_once_with_if_none_match(store: AzureBlobStore) -> None:
    name = unique()
    assert await store.create(names.RESULTS_CONTAINER, name, b"first", metadata={"a": "1"})
    assert not await store.create(names.RESULTS_CONTAINER, name, b"second")
    blob = await store.read(names.RESULTS_CONTAINER, name)
    assert blob is not None
    assert blob.data == b"first"
    assert blob.metadata == {"a": "1"}


async def test_racing_creates_have_exactly_one_winner(store: AzureBlobStore) -> None:
    name = unique()
    outcomes = await asyncio.gather(
        *(store.create(names.RESULTS_CONTAINER, name, str(i).encode()) for i in range(8))
    )
    assert sorted(outcomes) == [False] * 7 + [True]
    blob = await store.read(names.RESULTS_CONTAINER, name)
    assert blob is not None
    assert blob.data == str(outcomes.index(True)).encode()


async def test_put_overwrites(store: AzureBlobStore) -> None:
    name = unique()
    await store.put(names.REJECTED_CONTAINER, name, b"1")
    await store.put(names.REJECTED_CONTAINER, name, b"2")
    blob = await store.read(names.REJECTED_CONTAINER, name)
    assert blob is not None
    assert blob.data == b"2"


async def test_metadata_can_be_set_later(store: AzureBlobStore) -> None:
    name = unique()
    await store.create(names.RESULTS_CONTAINER, name, b"x")
    await store.set_metadata(names.RESULTS_CONTAINER, name, {"reply_sent_at": "now"})
    blob = await store.read(names.RESULTS_CONTAINER, name)
    assert blob is not None
    assert blob.metadata == {"reply_sent_at": "now"}


async def test_appends_create_the_blob_and_keep_every_line(store: AzureBlobStore) -> None:
    name = unique("usage").replace(".json", ".jsonl")
    lines = [f"{i}\n".encode() for i in range(20)]
    # Concurrent first appends race on creating the append blob; none may be lost.
    await asyncio.gather(*(store.append(names.USAGE_CONTAINER, name, line) for line in lines))
    blob = await store.read(names.USAGE_CONTAINER, name)
    assert blob is not None
    assert sorted(blob.data.splitlines(keepends=True)) == sorted(lines)


async def test_appending_to_a_missing_container_is_an_error(store: AzureBlobStore) -> None:
    with pytest.raises(ResourceNotFoundError):
        await store.append(f"missing-{uuid.uuid4().hex[:8]}", "x.jsonl", b"1\n")


async def test_append_returns_the_committed_block_count(store: AzureBlobStore) -> None:
    name = unique("usage").replace(".json", ".jsonl")
    counts = [await store.append(names.USAGE_CONTAINER, name, b"x\n") for _ in range(3)]
    assert counts == [1, 2, 3]


async def test_put_if_match_writes_only_the_version_that_was_read(store: AzureBlobStore) -> None:
    name = unique()
    await store.put(names.REJECTED_CONTAINER, name, b"1")
    first = await store.read(names.REJECTED_CONTAINER, name)
    assert first is not None
    assert first.etag
    etag = await store.put(names.REJECTED_CONTAINER, name, b"2", if_match=first.etag)
    assert etag
    assert etag != first.etag
    # A second writer still holding the first ETag loses instead of overwriting.
    with pytest.raises(ConditionFailed):
        await store.put(names.REJECTED_CONTAINER, name, b"3", if_match=first.etag)
    blob = await store.read(names.REJECTED_CONTAINER, name)
    assert blob is not None
    assert blob.data == b"2"
    assert blob.etag == etag


async def test_put_if_match_on_a_missing_blob_fails(store: AzureBlobStore) -> None:
    with pytest.raises(ConditionFailed):
        await store.put(names.REJECTED_CONTAINER, unique(), b"1", if_match='"0x1"')


async def test_list_names_by_prefix(store: AzureBlobStore) -> None:
    prefix = f"list-{uuid.uuid4().hex[:8]}/"
    for name in ("b.json", "a.json", "sub/c.json"):
        await store.put(names.REJECTED_CONTAINER, prefix + name, b"{}")
    await store.put(names.REJECTED_CONTAINER, f"other-{prefix}x.json", b"{}")
    assert await store.list_names(names.REJECTED_CONTAINER, prefix) == [
        prefix + "a.json",
        prefix + "b.json",
        prefix + "sub/c.json",
    ]
    assert await store.list_names(f"missing-{uuid.uuid4().hex[:8]}", "") == []


async def test_read_from_downloads_only_the_bytes_after_an_offset(store: AzureBlobStore) -> None:
    name = unique("usage").replace(".json", ".jsonl")
    for line in (b"one\n", b"two\n"):
        await store.append(names.USAGE_CONTAINER, name, line)
    assert await store.read_from(names.USAGE_CONTAINER, name, 4) == b"two\n"
    assert await store.read_from(names.USAGE_CONTAINER, name, 8) == b""  # at the end
    assert await store.read_from(names.USAGE_CONTAINER, unique(), 0) is None
