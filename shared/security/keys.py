"""Per-tenant proof keys: the key ring of each tenant, where it is kept, and how it is cached.

A tenant's key ring (the same JSON in both stores):

    {"tenant_id": "contoso",
     "keys": [{"id": "k20250102-a1b2c3", "secret": "<43 url-safe characters>",
               "state": "active", "created_at": "2025-01-02T03:04:05+00:00"},
              {"id": "k20240901-0f0e0d", "secret": null, "state": "retired",
               "created_at": "...", "retired_at": "..."}]}

Lifecycle (`docs/security.md`): onboarding makes one active key (`KeyRing.new`); a rollover adds
a second (`rotated`: at most TWO active, so the app that still signs with the old one keeps
working while the new one is rolled out); once the tenant's app signs with the new key the old
one is retired (`retired`: its secret is erased and its id kept, so a message signed with it is
refused as `tenant_key_retired`, not as a forgery). A secret is 32 random bytes
(`secrets.token_urlsafe(32)`); the HMAC key is the secret's text as UTF-8.

Stores (`KeySource` to read, `KeyStore` to also write):
- `KeyVaultKeys`: Azure Key Vault, one secret per tenant named `tenant-key-<tenant id>` holding
  the ring (content type application/json; each change is a new version, so the history stays
  in the vault). Read with the app's managed identity (`Key Vault Secrets User` on the vault
  only); written by the operator (`python -m shared.admin tenants add / keys rotate / retire`).
- `KeyFile`: devhost's local secrets file `{"version": 1, "tenants": {<id>: <ring>}}`, mode
  0600, written atomically (a temporary file, then `os.replace`) under an `fcntl` lock so the
  stack and an admin command never lose each other's change; re-read when its mtime changes.
- `CachedKeys`: the app's reader over either: a ring is kept `ttl_s` (300 s: one Key Vault read
  per tenant and instance per 5 minutes, well under its 4,000-reads-per-10-s limit); a key id
  the cached ring does not know, or a tenant with no ring, is read again at once (at most every
  `miss_refresh_s`, 5 s), so a new key works within seconds; a retired key stops working within
  `ttl_s`.

Errors: `KeyRingError` (a change the lifecycle forbids: a third active key, retiring the last
active one, a malformed ring). A store that cannot be reached raises its own error (azure-core's
`HttpResponseError` / `ServiceRequestError`, `OSError`): the caller treats it as transient.

Libraries weighed: `azure-keyvault-secrets` (chosen; the SDK the issue names, async, with
azure-identity's managed identity); Key Vault *keys* (`azure-keyvault-keys`, HMAC keys need
Managed HSM; a sign call per message would also put the vault on the hot path); the Functions
Key Vault references (`@Microsoft.KeyVault(...)` app settings) resolve at start only and need
one setting per tenant, so a new tenant would need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.secrets.aio import SecretClient

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock; each write is still atomic
    fcntl = None  # type: ignore[assignment]

MAX_ACTIVE: Final = 2
KEEP_RETIRED: Final = 8
"""Retired key ids kept per ring (to name the reason); older ones are dropped."""
SECRET_PREFIX: Final = "tenant-key-"
KEY_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}$"


class KeyRingError(ValueError):
    """A key ring change the lifecycle forbids, or a ring that cannot be read."""


class KeyState(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class TenantKey:
    id: str
    secret: str | None
    """None once retired: the secret is erased, the id kept."""
    state: KeyState
    created_at: datetime
    retired_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "secret": self.secret,
            "state": self.state.value,
            "created_at": self.created_at.isoformat(),
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> TenantKey:
        try:
            key = cls(
                id=str(data["id"]),
                secret=data.get("secret"),
                state=KeyState(data["state"]),
                created_at=datetime.fromisoformat(data["created_at"]),
                retired_at=(
                    datetime.fromisoformat(data["retired_at"]) if data.get("retired_at") else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyRingError(f"a key entry is malformed ({type(exc).__name__})") from None
        if not re.match(KEY_ID_PATTERN, key.id):
            raise KeyRingError("a key id is malformed")
        if key.state is KeyState.ACTIVE and not isinstance(key.secret, str):
            raise KeyRingError(f"active key {key.id!r} has no secret")
        return key


def new_key(now: datetime) -> TenantKey:
    return TenantKey(
        id=f"k{now:%Y%m%d}-{secrets.token_hex(3)}",
        secret=secrets.token_urlsafe(32),
        state=KeyState.ACTIVE,
        created_at=now,
    )


@dataclass(frozen=True, slots=True)
class KeyRing:
    tenant_id: str
    keys: tuple[TenantKey, ...] = ()

    @classmethod
    def new(cls, tenant_id: str, now: datetime | None = None) -> KeyRing:
        return cls(tenant_id, (new_key(now or datetime.now(UTC)),))

    def find(self, key_id: str) -> TenantKey | None:
        return next((k for k in self.keys if k.id == key_id), None)

    @property
    def active(self) -> tuple[TenantKey, ...]:
        return tuple(k for k in self.keys if k.state is KeyState.ACTIVE)

    def signing_key(self) -> TenantKey:
        """The newest active key: what a sender should sign with."""
        active = self.active
        if not active:
            raise KeyRingError(f"tenant {self.tenant_id!r} has no active key")
        return max(active, key=lambda k: k.created_at)

    def rotated(self, now: datetime | None = None) -> tuple[KeyRing, TenantKey]:
        """A second active key for a rollover; KeyRingError if two are active already."""
        if len(self.active) >= MAX_ACTIVE:
            raise KeyRingError(
                f"tenant {self.tenant_id!r} already has {MAX_ACTIVE} active keys: retire the "
                "older one (once its app signs with the newer) before adding another"
            )
        key = new_key(now or datetime.now(UTC))
        return replace(self, keys=(*self.keys, key)), key

    def retired(self, key_id: str, now: datetime | None = None) -> KeyRing:
        """`key_id` rotated out (its secret erased); KeyRingError for an unknown key or the
        tenant's last active key."""
        key = self.find(key_id)
        if key is None:
            raise KeyRingError(f"tenant {self.tenant_id!r} has no key {key_id!r}")
        if key.state is KeyState.RETIRED:
            return self
        if len(self.active) <= 1:
            raise KeyRingError(
                f"{key_id!r} is tenant {self.tenant_id!r}'s only active key: rotate first"
            )
        gone = replace(
            key, secret=None, state=KeyState.RETIRED, retired_at=now or datetime.now(UTC)
        )
        keys = [gone if k.id == key_id else k for k in self.keys]
        retired = [k for k in keys if k.state is KeyState.RETIRED]
        dropped = {k.id for k in retired[:-KEEP_RETIRED]} if len(retired) > KEEP_RETIRED else set()
        return replace(self, keys=tuple(k for k in keys if k.id not in dropped))

    def to_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, data: Any) -> KeyRing:
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyRingError("a key ring is an object with a list of keys")
        ring = cls(
            str(data.get("tenant_id", "")), tuple(TenantKey.from_json(k) for k in data["keys"])
        )
        if len(ring.active) > MAX_ACTIVE:
            raise KeyRingError(f"tenant {ring.tenant_id!r} has more than {MAX_ACTIVE} active keys")
        return ring


class KeySource(Protocol):
    async def ring(self, tenant_id: str) -> KeyRing | None: ...

    async def close(self) -> None: ...


class KeyStore(KeySource, Protocol):
    async def put(self, ring: KeyRing) -> None: ...


def secret_name(tenant_id: str) -> str:
    """The Key Vault secret of a tenant's ring (tenant ids are `[a-z0-9-]`, which Key Vault
    secret names allow)."""
    return f"{SECRET_PREFIX}{tenant_id}"


class KeyVaultKeys:
    """Rings in Azure Key Vault, through `azure.keyvault.secrets.aio.SecretClient`."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    @classmethod
    def from_url(cls, vault_url: str, credential: AsyncTokenCredential) -> KeyVaultKeys:
        return cls(SecretClient(vault_url, credential))

    async def ring(self, tenant_id: str) -> KeyRing | None:
        try:
            secret = await self._client.get_secret(secret_name(tenant_id))
        except ResourceNotFoundError:
            return None
        if secret.value is None:
            return None
        return _ring_of(tenant_id, secret.value)

    async def put(self, ring: KeyRing) -> None:
        await self._client.set_secret(
            secret_name(ring.tenant_id),
            json.dumps(ring.to_json()),
            content_type="application/json",
            tags={"tenant": ring.tenant_id, "purpose": "tenant-proof"},
        )

    async def close(self) -> None:
        await self._client.close()


@dataclass
class KeyFile:
    """Rings in a local JSON file (devhost): `{"version": 1, "tenants": {id: ring}}`."""

    path: Path
    _loaded: tuple[float, dict[str, Any]] | None = field(default=None, init=False)

    def read_all(self) -> dict[str, KeyRing]:
        return {t: _ring_of(t, json.dumps(r)) for t, r in self._document().items()}

    def ring_now(self, tenant_id: str) -> KeyRing | None:
        data = self._document().get(tenant_id)
        return _ring_of(tenant_id, json.dumps(data)) if data is not None else None

    async def ring(self, tenant_id: str) -> KeyRing | None:
        return self.ring_now(tenant_id)

    async def put(self, ring: KeyRing) -> None:
        await asyncio.to_thread(self.put_now, ring)

    def put_now(self, ring: KeyRing) -> None:
        self.update(lambda rings: {**rings, ring.tenant_id: ring})

    def update(self, change: Callable[[dict[str, KeyRing]], dict[str, KeyRing]]) -> None:
        """Read, change and write the whole file under its lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            self._loaded = None
            rings = change(self.read_all() if self.path.exists() else {})
            document = {"version": 1, "tenants": {t: r.to_json() for t, r in rings.items()}}
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(document, out, indent=2)
                os.chmod(temp, 0o600)
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            self._loaded = None

    async def close(self) -> None:
        return None

    def _document(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._loaded is None or self._loaded[0] != mtime:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            tenants = data.get("tenants") if isinstance(data, dict) else None
            if not isinstance(tenants, dict):
                raise KeyRingError(f"{self.path}: expected {{'version': 1, 'tenants': {{...}}}}")
            self._loaded = (mtime, tenants)
        return self._loaded[1]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ring_of(tenant_id: str, text: str) -> KeyRing:
    try:
        data = json.loads(text)
    except ValueError:
        raise KeyRingError(f"tenant {tenant_id!r}'s key ring is not JSON") from None
    ring = KeyRing.from_json(data)
    if ring.tenant_id != tenant_id:
        raise KeyRingError(f"the key ring stored for {tenant_id!r} names another tenant")
    return ring


class CachedKeys:
    """A KeySource that keeps each ring `ttl_s` and re-reads at once on a miss (a tenant or a
    key id it does not know), at most every `miss_refresh_s` per tenant."""

    def __init__(
        self,
        source: KeySource,
        *,
        ttl_s: float = 300.0,
        miss_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._ttl_s = ttl_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._rings: dict[str, tuple[float, KeyRing | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def ring(self, tenant_id: str, key_id: str | None = None) -> KeyRing | None:
        now = self._clock()
        cached = self._rings.get(tenant_id)
        if cached is not None:
            read_at, ring = cached
            known = ring is not None and (key_id is None or ring.find(key_id) is not None)
            if now - read_at < (self._ttl_s if known else self._miss_refresh_s):
                return ring
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            cached = self._rings.get(tenant_id)
            if cached is not None and cached[0] > now:  # another task read it meanwhile
                return cached[1]
            ring = await self.source.ring(tenant_id)
            self._rings[tenant_id] = (self._clock(), ring)
            return ring

    async def close(self) -> None:
        await self.source.close()
