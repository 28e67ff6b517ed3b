"""The batch capability as the app uses it: one object, built once by the runtime.

- `take(upload)`: the blob trigger on `uploads/{tenant}/batch/{name}` (intake and fan-out);
- `row_settled(message, outcome)`: the inference handler's hook after each message;
- `progress(tenant_id, batch_id)`: the progress endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from shared.batch.fanout import RowSender
from shared.batch.files import BatchFiles
from shared.batch.gather import Gatherer
from shared.batch.intake import BatchIntake, Upload
from shared.batch.policy import BatchPolicy
from shared.batch.progress import RowTracker
from shared.batch.record import RecordStore
from shared.contracts.batch import BatchProgress
from shared.messages import InboundMessage
from shared.storage.blob_store import BlobStore
from shared.tenancy.registry_source import RegistryProvider


class Batches:
    def __init__(
        self,
        *,
        store: BlobStore,
        files: BatchFiles,
        registry: RegistryProvider,
        sender: RowSender,
        clock: Callable[[], datetime],
        policy: BatchPolicy | None = None,
        default_max_tokens: int = 256,
    ) -> None:
        self.policy = policy or BatchPolicy()
        self.records = RecordStore(store)
        gatherer = Gatherer(store, files, self.records, self.policy, clock)
        self.intake = BatchIntake(
            files=files,
            records=self.records,
            registry=registry,
            sender=sender,
            gatherer=gatherer,
            policy=self.policy,
            clock=clock,
            default_max_tokens=default_max_tokens,
        )
        self.tracker = RowTracker(store, self.records, gatherer, clock)

    async def take(self, upload: Upload) -> BatchProgress | None:
        return await self.intake.take(upload)

    async def row_settled(self, message: InboundMessage, outcome: str) -> None:
        await self.tracker.settled(message, outcome)

    async def progress(self, tenant_id: str, batch_id: str) -> BatchProgress | None:
        return await self.tracker.progress(tenant_id, batch_id)
