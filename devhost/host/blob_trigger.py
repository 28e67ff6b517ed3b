"""Blob triggers: poll the container, invoke once per new blob version, remember it durably.

The path is `<container>/<pattern>`, the pattern a blob name with `{placeholders}` (`{name}`,
`{tenant}/batch/{name}`); the literal text before the first placeholder is the listing prefix.

As the real host does with blob receipts, each processed (blob, ETag) is recorded in the storage
account itself, so a restarted host does not run it again:

    azure-webjobs-hosts/blobreceipts/<host id>/<function>/<container>/<blob name>
        metadata: etag, status (completed | failed | poison), attempts

A failing blob is retried at the next polls, up to `extensions.queues.maxDequeueCount` tries (5),
then recorded as poison: the receipt says so, an error is logged, and a record in the real host's
poison-queue message shape is written to `webjobs-blobtrigger-poison/<function>/<container>/
<blob name>.json`. A new ETag (the blob was overwritten) is a new version and runs again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.storage.blob import BlobProperties, ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from devhost.host.discovery import FunctionSpec
from devhost.host.invocation import Invoker, Outcome
from devhost.host.options import BlobOptions
from shared.structured_logging import key_values, without_none

log = logging.getLogger("devhost.host")

HOSTS_CONTAINER = "azure-webjobs-hosts"
POISON_CONTAINER = "webjobs-blobtrigger-poison"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")


class BlobPathError(ValueError):
    pass


@dataclass(frozen=True)
class BlobPath:
    """A trigger path: `container/pattern`, e.g. `uploads/{tenant}/batch/{name}`."""

    container: str
    pattern: str
    prefix: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, path: str) -> BlobPath:
        container, _, pattern = path.strip("/").partition("/")
        if not container or not pattern:
            raise BlobPathError(f"blob path {path!r} must be '<container>/<pattern>'")
        if _PLACEHOLDER.search(container):
            raise BlobPathError(f"blob path {path!r}: the container cannot be a placeholder")
        first = _PLACEHOLDER.search(pattern)
        prefix = pattern[: first.start()] if first else pattern
        parts: list[str] = []
        last = 0
        matches = list(_PLACEHOLDER.finditer(pattern))
        for i, match in enumerate(matches):
            parts.append(re.escape(pattern[last : match.start()]))
            greedy = i == len(matches) - 1
            parts.append(f"(?P<{match.group(1).replace('-', '_')}>.+{'' if greedy else '?'})")
            last = match.end()
        parts.append(re.escape(pattern[last:]))
        return cls(container, pattern, prefix, re.compile("^" + "".join(parts) + "$"))

    def match(self, blob_name: str) -> dict[str, str] | None:
        found = self.regex.match(blob_name)
        return None if found is None else found.groupdict()


@dataclass
class Receipt:
    etag: str
    status: str  # completed | failed | poison
    attempts: int


class BlobTriggerListener:
    def __init__(
        self,
        spec: FunctionSpec,
        path: BlobPath,
        service: BlobServiceClient,
        options: BlobOptions,
        invoker: Invoker,
        *,
        host_id: str,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.path = path
        self._service = service
        self._options = options
        self._invoker = invoker
        self._host_id = host_id
        self._poll_interval_s = poll_interval_s
        self._receipts: dict[str, Receipt] | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._missing_container_logged = False

    def describe(self) -> str:
        # Event Grid-sourced triggers (Flex Consumption) are polled here too: Azurite emits no
        # Event Grid events, and the function gets the same InputStream either way.
        source = " (Event Grid source, polled)" if self.event_grid else ""
        return f"{self.spec.name}: blobs {self.path.container}/{self.path.pattern}{source}"

    @property
    def event_grid(self) -> bool:
        return str(self.spec.prop("source") or "").lower() == "eventgrid"

    @property
    def receipt_prefix(self) -> str:
        return f"blobreceipts/{self._host_id}/{self.spec.name}/{self.path.container}/"

    async def start(self) -> None:
        try:
            # Bounded: storage that is not up yet must not hold the host's start for the SDK's
            # whole retry budget; the poll loop keeps trying.
            await asyncio.wait_for(self._load_receipts(), 10)
        except Exception as exc:
            self._event(logging.WARNING, "blob.receipts_unavailable", error_type=type(exc).__name__)
        self._loop_task = asyncio.create_task(self._run(), name=f"blob:{self.spec.name}")

    async def stop(self, grace_s: float) -> None:
        self._stopping.set()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), 10)
            except TimeoutError:
                self._loop_task.cancel()
                await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = set(self._in_flight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:  # no receipt is written: the blob runs again after a restart
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)

    async def _run(self) -> None:
        backoff = self._poll_interval_s
        while not self._stopping.is_set():
            try:
                if self._receipts is None:
                    await self._load_receipts()
                await self._poll()
                backoff = self._poll_interval_s
            except Exception as exc:  # storage down or flaky: log, back off, retry
                self._event(
                    logging.WARNING,
                    "blob.poll_failed",
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                    retry_in_s=backoff,
                )
                backoff = min(backoff * 2, 30.0)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)

    async def _load_receipts(self) -> None:
        hosts = self._service.get_container_client(HOSTS_CONTAINER)
        with suppress(ResourceExistsError):
            await hosts.create_container()
        receipts: dict[str, Receipt] = {}
        async for item in hosts.list_blobs(
            name_starts_with=self.receipt_prefix, include=["metadata"]
        ):
            meta = item.metadata or {}
            name = item.name[len(self.receipt_prefix) :]
            receipts[name] = Receipt(
                etag=meta.get("etag", ""),
                status=meta.get("status", "completed"),
                attempts=int(meta.get("attempts", "0") or 0),
            )
        self._receipts = receipts

    async def _poll(self) -> None:
        assert self._receipts is not None
        container = self._service.get_container_client(self.path.container)
        try:
            async for item in container.list_blobs(name_starts_with=self.path.prefix or None):
                if self._stopping.is_set():
                    return
                if len(self._in_flight) >= self._options.max_degree_of_parallelism:
                    return  # the rest at the next poll
                self._consider(item)
        except ResourceNotFoundError:
            if not self._missing_container_logged:
                self._event(logging.WARNING, "blob.container_missing")
                self._missing_container_logged = True
            return
        self._missing_container_logged = False

    def _consider(self, item: BlobProperties) -> None:
        assert self._receipts is not None
        name = str(item.name)
        if name in self._in_flight or self.path.match(name) is None:
            return
        etag = _etag(item.etag)
        receipt = self._receipts.get(name)
        if receipt is not None and receipt.etag == etag and receipt.status != "failed":
            return  # completed or poison: this version is done
        attempts = receipt.attempts if receipt is not None and receipt.etag == etag else 0
        task = asyncio.create_task(self._process(name, etag, attempts))
        self._in_flight[name] = task
        task.add_done_callback(functools.partial(self._done, name))

    def _done(self, name: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(name, None)

    async def _process(self, name: str, listed_etag: str, attempts: int) -> None:
        try:
            await self._process_once(name, listed_etag, attempts)
        except Exception as exc:  # storage trouble around the invocation: retried next poll
            self._event(
                logging.WARNING,
                "blob.process_failed",
                blob=f"{self.path.container}/{name}",
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )

    async def _process_once(self, name: str, listed_etag: str, attempts: int) -> None:
        blob = self._service.get_blob_client(self.path.container, name)
        try:
            downloader = await blob.download_blob()
            data = await downloader.readall()
        except ResourceNotFoundError:
            return  # deleted since the listing
        props = downloader.properties
        etag = _etag(props.etag) or listed_etag
        argument = InputStream(
            data=data,
            name=f"{self.path.container}/{name}",
            length=len(data),
            uri=blob.url,
            blob_properties=_properties(props),
            metadata=dict(props.metadata or {}),
        )
        fields = {"blob": f"{self.path.container}/{name}", "etag": etag, "attempt": attempts + 1}
        invocation = await self._invoker.invoke(self.spec, argument, fields)
        if invocation.outcome is Outcome.CANCELLED:
            return
        if invocation.succeeded:
            await self._write_receipt(name, Receipt(etag, "completed", attempts + 1))
            return
        tried = attempts + 1
        if tried < self._options.max_dequeue_count:
            await self._write_receipt(name, Receipt(etag, "failed", tried))
            return
        await self._poison(name, etag, tried, invocation.error)

    async def _poison(self, name: str, etag: str, tried: int, error: BaseException | None) -> None:
        record = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.spec.name}",
            "BlobType": "BlockBlob",
            "ContainerName": self.path.container,
            "BlobName": name,
            "ETag": etag,
            "attempts": tried,
            "error_type": type(error).__name__ if error is not None else None,
            "poisoned_at": datetime.now(UTC).isoformat(),
        }
        poison = self._service.get_container_client(POISON_CONTAINER)
        with suppress(ResourceExistsError):
            await poison.create_container()
        record_name = f"{self.spec.name}/{self.path.container}/{name}.json"
        await poison.upload_blob(
            record_name,
            json.dumps(record).encode("utf-8"),
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
        )
        await self._write_receipt(name, Receipt(etag, "poison", tried))
        self._event(
            logging.ERROR,
            "blob.poisoned",
            blob=f"{self.path.container}/{name}",
            etag=etag,
            attempts=tried,
            poison_record=f"{POISON_CONTAINER}/{record_name}",
        )

    async def _write_receipt(self, name: str, receipt: Receipt) -> None:
        assert self._receipts is not None
        self._receipts[name] = receipt
        try:
            await self._service.get_blob_client(
                HOSTS_CONTAINER, self.receipt_prefix + name
            ).upload_blob(
                b"",
                overwrite=True,
                metadata={
                    "etag": receipt.etag,
                    "status": receipt.status,
                    "attempts": str(receipt.attempts),
                },
            )
        except AzureError as exc:  # remembered in memory; a restart may run it once more
            self._event(
                logging.WARNING,
                "blob.receipt_failed",
                blob=f"{self.path.container}/{name}",
                error_type=type(exc).__name__,
            )

    def _event(self, level: int, event: str, **fields: Any) -> None:
        extra = without_none(
            event=event, function=self.spec.name, container=self.path.container, **fields
        )
        log.log(level, key_values(extra), extra=extra)


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _properties(props: BlobProperties) -> dict[str, Any]:
    settings = props.content_settings
    return without_none(
        ContentType=settings.content_type if settings else None,
        ContentEncoding=settings.content_encoding if settings else None,
        ETag=_etag(props.etag),
        LastModified=props.last_modified.isoformat() if props.last_modified else None,
        Length=props.size,
        BlobType=str(props.blob_type) if props.blob_type else None,
    )
