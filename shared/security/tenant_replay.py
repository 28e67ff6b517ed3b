"""Replay memory for tenant proofs: each proven message id (HTTP: nonce) is accepted once per
tenant, across every instance of the app.

    await seen.claim("contoso", "m-1", delivery="2025-01-02T03:04:05.120000+00:00", ttl_s=660)
        -> True   first sighting, remembered for ttl_s
        -> True   the same broker delivery again (a redelivery after an abandon or a crash)
        -> False  another message with that id: a replay

`delivery` tells a redelivery from a replay: for Service Bus it is the time the broker enqueued
the message (set by Service Bus, which a sender cannot choose, and the same on every delivery of
that message); a resend of the same bytes is a new message with a new enqueue time. None (HTTP):
any second sighting is a replay. Ids are remembered `ttl_s`: twice the proof window plus a
margin, so a copy enqueued anywhere inside the window around the proof's time is still caught.

Stores:
- `RedisSeenIds`: the Redis the quotas use (`REDIS_URL`: devhost's Redis, Azure Managed Redis
  with Entra ID auth): one `SET key value NX EX ttl` per claim, then one `GET` only when the key
  exists. Keys `tenant-proof:seen:<tenant>:<sha256 of the id, 32 hex>`: a sender-chosen id never
  becomes a Redis key as is.
- `MemorySeenIds`: per process (tests; an app without REDIS_URL), expiring with an injectable
  clock.
When Redis cannot be reached, `RedisSeenIds` answers from its own `MemorySeenIds` (one WARNING
`tenant_proof.replay_store_unavailable` per outage, tried again 30 s later), as the quotas do:
serving does not stop, and a replay could then pass only on another instance; the queues'
duplicate detection (PT10M, by message id, `infra/modules/servicebus.bicep`) still drops a resend
of a message id within ten minutes, which covers the whole window.

Libraries weighed: redis-py's asyncio client (already the quotas' client, with redis-entraid for
Entra ID); `limits` (the quotas' library) counts, it does not remember ids; a blob per id in
Storage (If-None-Match) would cost a write per message and leave the cleaning to a lifecycle rule.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.resilience.quotas import connection_options
from shared.structured_logging import key_values

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "tenant-proof:seen:"
STORE_RETRY_S: Final = 30.0


class SeenIds(Protocol):
    async def claim(
        self, tenant_id: str, proof_id: str, *, delivery: str | None, ttl_s: int
    ) -> bool:
        """True: first sighting (now remembered) or the same delivery again; False: a replay."""
        ...

    async def close(self) -> None: ...


def seen_key(tenant_id: str, proof_id: str) -> str:
    digest = hashlib.sha256(proof_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{KEY_PREFIX}{tenant_id}:{digest}"


class MemorySeenIds:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, str]] = {}

    async def claim(
        self, tenant_id: str, proof_id: str, *, delivery: str | None, ttl_s: int
    ) -> bool:
        now = self._clock()
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
        key = seen_key(tenant_id, proof_id)
        held = self._seen.get(key)
        if held is not None and held[0] > now:
            return delivery is not None and held[1] == delivery
        self._seen[key] = (now + ttl_s, delivery or "")
        return True

    async def close(self) -> None:
        return None


class RedisSeenIds:
    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis: Redis = Redis.from_url(url.removeprefix("async+"), **connection_options(url))
        self._fallback = MemorySeenIds(clock)
        self._clock = clock
        self._down_until: float | None = None

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    async def claim(
        self, tenant_id: str, proof_id: str, *, delivery: str | None, ttl_s: int
    ) -> bool:
        if self._down_until is not None and self._clock() < self._down_until:
            return await self._fallback.claim(tenant_id, proof_id, delivery=delivery, ttl_s=ttl_s)
        key = seen_key(tenant_id, proof_id)
        try:
            if await self._redis.set(key, delivery or "", nx=True, ex=ttl_s):
                held = None
            else:
                held = await self._redis.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
            if self._down_until is None:
                extra = {
                    "event": "tenant_proof.replay_store_unavailable",
                    "error": type(exc).__name__,
                }
                log.warning(key_values(extra), extra=extra)
            self._down_until = self._clock() + STORE_RETRY_S
            return await self._fallback.claim(tenant_id, proof_id, delivery=delivery, ttl_s=ttl_s)
        if self._down_until is not None:
            self._down_until = None
            extra = {"event": "tenant_proof.replay_store_recovered"}
            log.info(key_values(extra), extra=extra)
        if held is None:
            return True
        text = held.decode("utf-8", "replace") if isinstance(held, bytes) else str(held)
        return delivery is not None and text == delivery

    async def close(self) -> None:
        await self._redis.aclose()
