"""Operator side of the tenant keys: the first key at onboarding, a rollover, a retirement.

    store = admin_key_store(keys_file=..., vault_endpoint=..., credential=...)
    key, created = await first_key(store, "northwind")     tenants add: a ring with one key
    key = await rotate(store, "northwind")                 tenants rotate-key: a second key
    ring = await retire(store, "northwind", "k2025...")     tenants retire-key: the old one out
    lines = handover("northwind", key, where)              what the operator hands the app

Where: devhost's local secrets file (`TENANT_KEYS_FILE` of the env file `dev.py up` writes), or
Key Vault (`AZURE_KEY_VAULT_ENDPOINT`, written as the operator with DefaultAzureCredential, who
needs `Key Vault Secrets Officer` on the vault; the app only reads, with `Key Vault Secrets
User`). A new secret is shown once, when it is made; running `tenants add` again keeps the
existing ring and shows no secret. Errors: `KeyRingError` for a lifecycle rule (a third active
key, retiring the last one, an unknown key id); the store's own errors otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from azure.core.credentials_async import AsyncTokenCredential

from shared.security.keys import (
    KeyFile,
    KeyRing,
    KeyRingError,
    KeyStore,
    KeyVaultKeys,
    TenantKey,
    secret_name,
)


def admin_key_store(
    *,
    keys_file: str | None,
    vault_endpoint: str | None,
    credential: AsyncTokenCredential | None,
) -> KeyStore | None:
    if vault_endpoint and credential is not None:
        return KeyVaultKeys.from_url(vault_endpoint, credential)
    if keys_file:
        return KeyFile(Path(keys_file))
    return None


def where(store: KeyStore, tenant_id: str) -> str:
    if isinstance(store, KeyFile):
        return f"the local secrets file {store.path}"
    return f"Key Vault secret {secret_name(tenant_id)}"


async def first_key(store: KeyStore, tenant_id: str) -> tuple[TenantKey, bool]:
    """The tenant's signing key; made (and stored) only if it has no ring yet."""
    ring = await store.ring(tenant_id)
    if ring is not None and ring.active:
        return ring.signing_key(), False
    ring = KeyRing.new(tenant_id, datetime.now(UTC))
    await store.put(ring)
    return ring.signing_key(), True


async def rotate(store: KeyStore, tenant_id: str) -> TenantKey:
    ring = await store.ring(tenant_id)
    if ring is None:
        raise KeyRingError(f"tenant {tenant_id!r} has no keys: `tenants add` makes the first")
    rotated, key = ring.rotated(datetime.now(UTC))
    await store.put(rotated)
    return key


async def retire(store: KeyStore, tenant_id: str, key_id: str) -> KeyRing:
    ring = await store.ring(tenant_id)
    if ring is None:
        raise KeyRingError(f"tenant {tenant_id!r} has no keys")
    retired = ring.retired(key_id, datetime.now(UTC))
    await store.put(retired)
    return retired


def handover(tenant_id: str, key: TenantKey, stored_in: str, *, shown: bool) -> list[str]:
    """What the operator reads: how the tenant's app gets its key (the secret only when new)."""
    lines = [f"tenant proof key: {key.id} in {stored_in}"]
    if shown and key.secret is not None:
        lines += [
            "  give the tenant's app these two values once, over a channel you trust; it signs",
            "  every message with them (examples/tenant_app.py, docs/security.md):",
            f"  TENANT_KEY_ID={key.id}",
            f"  TENANT_KEY={key.secret}",
        ]
    else:
        lines.append(
            "  (exists: its secret is not shown again; `tenants rotate-key` makes a new one)"
        )
    return lines
