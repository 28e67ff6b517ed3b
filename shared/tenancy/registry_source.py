"""Where the handlers get the registry: read from a file or blob, kept for a while, then re-read.

A document that fails to load after one loaded fine keeps the last good registry in use (logged),
so a bad edit to the registry blob does not stop inference; the first load has no such fallback
and raises, which makes the handler abandon the message for a later try.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from shared.storage.blob_store import BlobStore
from shared.tenancy.registry import (
    Registry,
    RegistryError,
    blob_location,
    parse_registry,
    read_registry_file,
)

log = logging.getLogger(__name__)


class RegistryProvider(Protocol):
    async def get(self) -> Registry: ...


class StaticRegistry:
    """A registry that never changes (tests, tools)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def get(self) -> Registry:
        return self.registry


class RegistrySource:
    """Loads `TENANT_REGISTRY` (a path, or blob://<container>/<name>) and refreshes it."""

    def __init__(
        self,
        reference: str,
        store: BlobStore | None,
        *,
        refresh_seconds: float = 60.0,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reference = reference
        self._location = blob_location(reference)
        if self._location is not None and store is None:
            raise RegistryError(f"{reference!r} is a blob, but there is no blob store")
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._env = env
        self._clock = clock
        self._registry: Registry | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Registry:
        if self._registry is not None and not self._stale():
            return self._registry
        async with self._lock:
            if self._registry is not None and not self._stale():
                return self._registry
            try:
                self._registry = await self._load()
            except RegistryError as exc:
                if self._registry is None:
                    raise
                log.warning(
                    "registry reload failed; the last good registry stays in use",
                    extra={"event": "registry.reload_failed", "problem": str(exc)},
                )
            self._loaded_at = self._clock()
            return self._registry

    def _stale(self) -> bool:
        return self._clock() - self._loaded_at >= self._refresh_seconds

    async def _load(self) -> Registry:
        if self._location is None:
            return await asyncio.to_thread(read_registry_file, self._reference, self._env)
        container, name = self._location
        assert self._store is not None
        blob = await self._store.read(container, name)
        if blob is None:
            raise RegistryError(f"{self._reference}: no such blob")
        return parse_registry(blob.data, source=self._reference, env=self._env)
