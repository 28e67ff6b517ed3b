"""Building the tenant proof check from the app settings (`Runtime.from_settings` calls these).

    TENANT_PROOF               required (default) | off
    AZURE_KEY_VAULT_ENDPOINT   Azure: the vault of the tenants' key rings, read with the managed
                               identity (`Key Vault Secrets User` on that vault only)
    TENANT_KEYS_FILE           devhost: the local secrets file the stack writes
    TENANT_KEY_CACHE_SECONDS   how long a ring is kept (300)
    REDIS_URL                  the replay memory shared by every instance (else per instance)

`required` with neither key store refuses every message that names a tenant (fail closed) and
logs one ERROR `tenant_proof.no_key_store` at start. Errors: ValueError when a vault is named
but the runtime has no identity to reach it with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from azure.core.credentials_async import AsyncTokenCredential

from shared.batch.fanout import RowSender
from shared.inference.rejections import RejectionLog
from shared.inference.replies import ReplySender
from shared.security.keys import CachedKeys, KeyFile, KeySource, KeyVaultKeys
from shared.security.tenant_check import ProofMode, TenantProofs
from shared.security.tenant_replay import MemorySeenIds, RedisSeenIds, SeenIds
from shared.security.tenant_senders import ProvingReplySender, ProvingRowSender
from shared.settings import Settings
from shared.storage.blob_store import BlobStore
from shared.structured_logging import key_values

log = logging.getLogger(__name__)


def key_source(settings: Settings, credential: AsyncTokenCredential | None) -> KeySource | None:
    if settings.key_vault_endpoint:
        if credential is None:
            raise ValueError("AZURE_KEY_VAULT_ENDPOINT is set, but there is no managed identity")
        return KeyVaultKeys.from_url(settings.key_vault_endpoint, credential)
    if settings.tenant_keys_file:
        return KeyFile(Path(settings.tenant_keys_file))
    return None


def tenant_proofs_from_settings(
    settings: Settings,
    credential: AsyncTokenCredential | None,
    *,
    store: BlobStore,
    clock: Callable[[], datetime],
) -> TenantProofs:
    mode = ProofMode(settings.tenant_proof)
    if mode is ProofMode.OFF:
        return TenantProofs(ProofMode.OFF, clock=clock)
    source = key_source(settings, credential)
    if source is None:
        extra = {"event": "tenant_proof.no_key_store", "detail": "every message is refused"}
        log.error(key_values(extra), extra=extra)
    seen: SeenIds = RedisSeenIds(settings.redis_url) if settings.redis_url else MemorySeenIds()
    return TenantProofs(
        mode,
        keys=CachedKeys(source, ttl_s=settings.tenant_key_cache_seconds) if source else None,
        seen=seen,
        rejections=RejectionLog(store),
        clock=clock,
    )


def proving_senders(
    proofs: TenantProofs, replies: ReplySender, rows: RowSender | None
) -> tuple[ReplySender, RowSender | None]:
    """The app's outgoing ports, proving its own copies onto inference-requests when required."""
    if proofs.mode is ProofMode.OFF:
        return replies, rows
    return (
        ProvingReplySender(replies, proofs),
        ProvingRowSender(rows, proofs) if rows is not None else None,
    )
