"""A removed tenant's data stays; adding its id again must not take that data over unknowingly."""

from __future__ import annotations

from shared.admin.tenants import leftover_data
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore


async def test_leftover_data_names_each_container_that_holds_the_id() -> None:
    store = MemoryBlobStore()
    assert await leftover_data(store, "northwind") == []
    await store.put(names.JOBS_CONTAINER, "northwind/ftj-1.json", b"{}")
    await store.put(names.TRAINING_CONTAINER, "northwind/pool/index.json", b"{}")
    await store.put(names.TRAINING_CONTAINER, "northwindx/pool/index.json", b"{}")
    await store.put(names.CONFIG_CONTAINER, "northwind/x.json", b"{}")  # not tenant data
    assert await leftover_data(store, "northwind") == [
        names.TRAINING_CONTAINER,
        names.JOBS_CONTAINER,
    ]
