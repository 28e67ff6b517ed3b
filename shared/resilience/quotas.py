"""Per-tenant quotas that hold across instances, and per-instance bulkheads.

The registry gives each tenant a `Quota(tokens_per_minute, requests_per_minute, max_concurrent)`.

- **Tokens and requests per minute** are counted in a shared store, so that they hold when the app
  scales out: `TenantQuotas.try_acquire(tenant, quota, tokens)` charges one request and `tokens`
  tokens, or refuses without charging and says when the tenant has room again
  (`QuotaDecision.retry_after_s`) and which limit refused. The caller reschedules the request for
  then; nothing here waits.
- **Concurrency** (`max_concurrent`) is capped per host instance: `bulkhead()` gives the tenant's
  `asyncio.Semaphore`, so one tenant cannot hold every worker slot of an instance.

Algorithm: a sliding window counter per tenant and limit: two fixed-minute counters, the previous
one weighted by the part of it still inside the sliding minute (`floor(previous * ttl / 60) +
current`). O(1) memory per limit, one Lua script per charge, atomic per counter on the server.

Libraries weighed:
- `limits` (chosen): maintained, asyncio API (`limits.aio`), Redis storage whose Lua scripts do the
  sliding window counter and the moving window, with a cost per hit. We use its sliding window
  counter: its moving window keeps one list entry per unit of cost, i.e. one per *token* (50,000
  entries a minute for a 50k-TPM tenant).
- `limits`' async Redis clients: `coredis` (its default), `redis` (redis-py) or `valkey`. We use
  redis-py (`implementation="redispy"`, `limits` needs >= 5.2 and its extra caps < 8), because
  the Entra ID credential provider for Azure Managed Redis, `redis-entraid`, is built for it.
- `aiolimiter`: an in-process leaky bucket, nothing shared across instances. redis-py alone: we
  would write and test the Lua scripts that `limits` already ships.
The per-instance fallback is ours (the same arithmetic as `limits`' memory storage), because
`limits.aio.storage.MemoryStorage` reads `time.time()` and runs a background expiry task; with
the injectable clock the unit tests are exact and never sleep.

Charging both limits "atomically enough": both windows are read first and nothing is charged
unless both have room; then the request is charged, then the tokens, each by one atomic script.
When another instance wins the room in between, the losing script refuses and so do we: the
quota is never exceeded. If the token charge loses after the request charge won, that one
request stays charged (a lost race costs the tenant at most one request of its minute).

A request that needs more tokens than the tenant's whole tokens-per-minute quota is charged the
whole quota (`limits` refuses a cost above the limit outright): it is admitted once the tenant's
token window is empty, so it never waits forever, and it spends that tenant's minute.

The store unreachable (connection refused, timeout, failed auth): the quotas degrade to
per-instance in-memory windows, `degraded` is True, one structured WARNING
`quota.store_unavailable` is logged per outage, and the store is tried again `STORE_RETRY_S`
later (one probe; `quota.store_recovered` when it answers). Serving never stops; while degraded, N
instances may together admit up to N times a tenant's quota.

Azure: `REDIS_URL` is `rediss://<host>:10000` (Azure Managed Redis, infra/modules/redis.bicep)
with no user or password in it, which selects Entra ID auth: `redis-entraid`'s
`create_from_default_azure_credential(("https://redis.azure.com/.default",))` gives redis-py a
streaming credential provider. It gets a token with `DefaultAzureCredential` (the app's
user-assigned identity, named by `AZURE_CLIENT_ID`), uses the token's `oid` as the Redis user name,
renews it in the background and re-authenticates open connections. The identity holds the
database's `default` access policy; access keys are disabled. Built and wired here, but only
exercised against Azure in a deployment (the tests check that such a URL gets the provider).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis_entraid.cred_provider import create_from_default_azure_credential

from shared.structured_logging import key_values
from shared.tenancy.registry import Quota

log = logging.getLogger(__name__)

TOKENS_PER_MINUTE: Final = "tokens_per_minute"
BATCH_PREFIX: Final = "batch_"  # the batch-only counters: batch_requests_per_minute, ...
REQUESTS_PER_MINUTE: Final = "requests_per_minute"
WINDOW_S: Final = 60
STORE_RETRY_S: Final = 30.0  # after a failure, serve per instance this long before trying again
STORE_TIMEOUT_S: Final = 0.5  # connect and read timeout of one store call
STORE_DEADLINE_S: Final = 1.0  # all the store calls of one decision
ENTRA_ID_SCOPE: Final = "https://redis.azure.com/.default"
_STEP_S: Final = 0.001  # past the boundary where the floor of the weighted count drops
_MEMORY: Final = frozenset({"", "memory://"})


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    retry_after_s: float  # 0.0 when allowed; else seconds until the tenant has room (> 0)
    limit: str | None  # which limit refused: "tokens_per_minute" / "requests_per_minute"


ALLOWED: Final = QuotaDecision(True, 0.0, None)


@dataclass(frozen=True, slots=True)
class _Window:
    """One limit's sliding window, as `limits` reports it (`get_sliding_window`)."""

    previous: int  # the previous fixed minute's count
    previous_ttl: float  # seconds it still weighs (until the current minute ends)
    current: int  # the current fixed minute's count
    current_ttl: float  # seconds until the current counter expires (its minute plus the next)

    def used(self) -> int:
        return math.floor(self.previous * self.previous_ttl / WINDOW_S) + self.current

    def has_room(self, limit: int, cost: int) -> bool:
        return self.used() + cost <= limit

    def wait_s(self, limit: int, cost: int) -> float:
        """Seconds until `cost` fits, if nothing else is charged meanwhile (cost <= limit)."""
        if self.current + cost <= limit:
            if not self.previous:
                return 0.0
            # The previous minute's weight falls linearly to 0 over previous_ttl.
            room = limit - self.current - cost + 1
            return max(0.0, self.previous_ttl - room * WINDOW_S / self.previous)
        # Only the next minute has room; then this minute's count is the one that decays.
        rollover = max(0.0, self.current_ttl - WINDOW_S) if self.current_ttl else 0.0
        room = limit - cost + 1
        return rollover + max(0.0, WINDOW_S - room * WINDOW_S / self.current)


@dataclass(frozen=True, slots=True)
class _Charge:
    limit_name: str
    limit: int
    cost: int
    room: int = 0
    """The most this charge may fill the window to (the limit, or a share of it); 0: limit."""

    @property
    def ceiling(self) -> int:
        return self.room or self.limit


class _Counters(Protocol):
    async def window(self, key: str, limit: int) -> _Window: ...
    async def acquire(self, key: str, limit: int, cost: int) -> bool: ...


class _LocalCounters:
    """Per-instance windows on the injected clock: fixed minutes aligned to the epoch, as in
    `limits`' memory storage. No awaits inside, so each call is atomic on the event loop."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[str, dict[int, int]] = {}

    def _read(self, key: str) -> tuple[_Window, dict[int, int], int]:
        now = self._clock()
        index = int(now // WINDOW_S)
        counts = self._counts.setdefault(key, {})
        for old in [i for i in counts if i < index - 1]:
            del counts[old]
        left = WINDOW_S - now % WINDOW_S
        previous, current = counts.get(index - 1, 0), counts.get(index, 0)
        window = _Window(previous, left if previous else 0.0, current, left + WINDOW_S)
        return window, counts, index

    async def window(self, key: str, limit: int) -> _Window:
        return self._read(key)[0]

    async def acquire(self, key: str, limit: int, cost: int) -> bool:
        window, counts, index = self._read(key)
        if not window.has_room(limit, cost):
            return False
        counts[index] = counts.get(index, 0) + cost
        return True


class _SharedCounters:
    """`limits`' sliding window counter over Redis (redis-py asyncio client)."""

    def __init__(self, url: str, key_prefix: str) -> None:
        uri = url if url.startswith("async+") else f"async+{url}"
        self.storage = RedisStorage(
            uri,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=key_prefix,
            **connection_options(url),
        )
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        base = self.storage.base_exceptions
        self.errors: tuple[type[BaseException], ...] = (
            StorageError,
            RedisError,
            OSError,
            TimeoutError,
            *(base if isinstance(base, tuple) else (base,)),
        )

    async def window(self, key: str, limit: int) -> _Window:
        item = RateLimitItemPerMinute(limit)
        window = await self.storage.get_sliding_window(item.key_for(key), item.get_expiry())
        return _Window(*window)

    async def acquire(self, key: str, limit: int, cost: int) -> bool:
        return await self._limiter.hit(RateLimitItemPerMinute(limit), key, cost=cost)

    async def close(self) -> None:
        client = getattr(self.storage.bridge, "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()


def connection_options(url: str) -> dict[str, Any]:
    """redis-py options: short timeouts, one quick reconnect, and Entra ID for a `rediss://` URL
    that carries no credentials (Azure Managed Redis)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": STORE_TIMEOUT_S,
        "socket_timeout": STORE_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
    }
    parts = urlsplit(url.removeprefix("async+"))
    if parts.scheme == "rediss" and not (parts.username or parts.password):
        options["credential_provider"] = entra_id_credential_provider()
    return options


def entra_id_credential_provider() -> Any:
    """redis-entraid's provider: DefaultAzureCredential tokens for Azure Managed Redis, renewed
    in the background. Building it fetches no token; the first connection does."""
    return create_from_default_azure_credential((ENTRA_ID_SCOPE,))


def _store_name(url: str) -> str:
    """scheme://host:port, never a password."""
    parts = urlsplit(url.removeprefix("async+"))
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


async def _decide(counters: _Counters, tenant_id: str, charges: list[_Charge]) -> QuotaDecision:
    keys = [f"tenant/{tenant_id}/{charge.limit_name}" for charge in charges]
    windows = await asyncio.gather(
        *(counters.window(key, charge.limit) for key, charge in zip(keys, charges, strict=True))
    )
    short = [
        (window.wait_s(charge.ceiling, charge.cost), charge.limit_name)
        for window, charge in zip(windows, charges, strict=True)
        if not window.has_room(charge.ceiling, charge.cost)
    ]
    if short:
        wait, limit_name = max(short)
        return QuotaDecision(False, wait + _STEP_S, limit_name)
    for key, charge in zip(keys, charges, strict=True):
        if not await counters.acquire(key, charge.limit, charge.cost):
            # Another instance took the room since the read: refuse, as the store did.
            window = await counters.window(key, charge.limit)
            wait = window.wait_s(charge.limit, charge.cost)
            return QuotaDecision(False, wait + _STEP_S, charge.limit_name)
    return ALLOWED


class TenantQuotas:
    """Per-tenant token and request quotas over a shared store, and per-instance bulkheads.

    `storage_url`: `redis://` / `rediss://` (the app setting `REDIS_URL`), or None / "memory://"
    for per-instance limits. One object per process; `close()` it on the way out.
    """

    def __init__(
        self,
        storage_url: str | None,
        *,
        key_prefix: str = "quota",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._local = _LocalCounters(clock)
        url = (storage_url or "").strip()
        self._shared = None if url in _MEMORY else _SharedCounters(url, key_prefix)
        self._store = "" if self._shared is None else _store_name(url)
        self._retry_store_at: float | None = None  # set while degraded
        self._bulkheads: dict[str, tuple[int, asyncio.Semaphore]] = {}

    @property
    def degraded(self) -> bool:
        """True while the shared store is unreachable and limits are per instance."""
        return self._retry_store_at is not None

    async def try_acquire(
        self, tenant_id: str, quota: Quota, tokens: int, *, share: float = 1.0
    ) -> QuotaDecision:
        """Charge one request and `tokens` tokens, or refuse without charging. `share` < 1 (a
        batch row): refuse unless the charge fits that part of each limit, so the rest stays
        free for the tenant's interactive requests (the counters are the same ones)."""
        charges = _charges(quota, tokens, share)
        if not charges:
            return ALLOWED
        shared = self._shared
        if shared is not None and self._store_turn():
            try:
                async with asyncio.timeout(STORE_DEADLINE_S):
                    decision = await _decide(shared, tenant_id, charges)
            except shared.errors as exc:
                self._store_failed(exc)
            else:
                if self._retry_store_at is not None:
                    self._store_recovered()
                return decision
        return await _decide(self._local, tenant_id, charges)

    def bulkhead(self, tenant_id: str, quota: Quota) -> asyncio.Semaphore | None:
        """The tenant's concurrency cap on this instance; None when it has none. A changed cap
        gets a new semaphore (calls holding the old one finish on it)."""
        cap = quota.max_concurrent
        if cap is None:
            self._bulkheads.pop(tenant_id, None)
            return None
        held = self._bulkheads.get(tenant_id)
        if held is None or held[0] != cap:
            held = (cap, asyncio.Semaphore(cap))
            self._bulkheads[tenant_id] = held
        return held[1]

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()

    def _store_turn(self) -> bool:
        """Use the store unless degraded; when degraded, one caller probes it each STORE_RETRY_S."""
        if self._retry_store_at is None:
            return True
        now = self._clock()
        if now < self._retry_store_at:
            return False
        self._retry_store_at = now + STORE_RETRY_S
        return True

    def _store_failed(self, exc: BaseException) -> None:
        first = self._retry_store_at is None
        self._retry_store_at = self._clock() + STORE_RETRY_S
        if first:
            cause = getattr(exc, "storage_error", None) or exc
            extra = {
                "event": "quota.store_unavailable",
                "store": self._store,
                "error_type": type(cause).__name__,
                "fallback": "per_instance",
                "retry_in_s": STORE_RETRY_S,
            }
            log.warning(key_values(extra), extra=extra)

    def _store_recovered(self) -> None:
        self._retry_store_at = None
        extra = {"event": "quota.store_recovered", "store": self._store}
        log.info(key_values(extra), extra=extra)


def _charges(quota: Quota, tokens: int, share: float = 1.0) -> list[_Charge]:
    """The tenant's charges; for a batch row (`share` < 1) each limit is also charged to a
    batch-only counter whose limit is the share (atomic in the store, so instances racing cannot
    together pass it), and checked against the share on the tenant's own counter (so interactive
    use leaves the batch less)."""
    charges = []
    if quota.requests_per_minute is not None:
        limit = quota.requests_per_minute
        charges += _with_share(_Charge(REQUESTS_PER_MINUTE, limit, 1), share)
    if quota.tokens_per_minute is not None and tokens > 0:
        # More than the whole quota is charged as the whole quota: it fits an empty window.
        limit = quota.tokens_per_minute
        charges += _with_share(_Charge(TOKENS_PER_MINUTE, limit, min(tokens, limit)), share)
    return charges


def _with_share(charge: _Charge, share: float) -> list[_Charge]:
    ceiling = _share_of(charge.limit, share, charge.cost)
    if not ceiling:
        return [charge]
    batch = _Charge(BATCH_PREFIX + charge.limit_name, ceiling, charge.cost)
    return [batch, dataclasses.replace(charge, room=ceiling)]


def _share_of(limit: int, share: float, cost: int) -> int:
    """The ceiling for a charge that may use `share` of `limit` (at least its own cost, so a
    row always fits an empty window); 0 (the limit itself) for a whole share."""
    if share >= 1.0:
        return 0
    return min(limit, max(cost, math.floor(limit * max(share, 0.0))))
