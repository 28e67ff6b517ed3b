"""devhost's tenant proof keys: the local secrets file the stack writes, and signing with it.

At start the stack makes `<data dir>/tenant-keys.json` (`shared.security.keys.KeyFile`, mode
0600) with one active key for each tenant of the registry it seeds, keeping the rings already
there (`--keep-data`, tenants added by `python -m shared.admin tenants add`). The app reads it
through `TENANT_KEYS_FILE`, which is also in the env file `dev.py up` writes, so a tenant app,
the demo, the tests and the bench drivers sign with the same keys:

    signers = Signers(Path(settings["TENANT_KEYS_FILE"]))
    message = proven_message(signers("contoso"), body, message_id=rid, reply_to="replies-contoso")
    headers = proven_headers(signers("contoso"), "GET", f"{api}/tenants/contoso/models")

In Azure the same rings live in Key Vault and each tenant app gets its own key once (printed by
`shared.admin tenants add`); nobody but the app and the operator reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from azure.servicebus import ServiceBusMessage

from shared.security.keys import KeyFile, KeyRing
from shared.security.sign import INFERENCE_REQUEST, TenantSigner
from shared.tenancy.registry import load_document

KEYS_FILE_NAME: Final = "tenant-keys.json"


def ensure_tenant_keys(path: Path, registry: Path) -> Path:
    """A ring for each tenant of `registry` that has none in `path` yet; returns `path`."""
    document = load_document(registry.read_text(encoding="utf-8"), source=str(registry))
    tenants = [str(t["id"]) for t in document.get("tenants", []) if isinstance(t, dict)]

    def add_missing(rings: dict[str, KeyRing]) -> dict[str, KeyRing]:
        return {**{t: KeyRing.new(t) for t in tenants if t not in rings}, **rings}

    KeyFile(path).update(add_missing)
    return path


@dataclass
class Signers:
    """Each tenant's signer, from the keys file (read when asked: a rotation shows at once)."""

    path: Path

    def __call__(self, tenant_id: str) -> TenantSigner:
        ring = KeyFile(self.path).ring_now(tenant_id)
        if ring is None:
            raise KeyError(f"{self.path} holds no key for tenant {tenant_id!r}")
        key = ring.signing_key()
        assert key.secret is not None
        return TenantSigner(tenant_id, key.id, key.secret)


def proven_message(
    signer: TenantSigner,
    body: bytes | str,
    *,
    message_id: str,
    reply_to: str | None = None,
    contract_type: str = INFERENCE_REQUEST,
    **fields: object,
) -> ServiceBusMessage:
    """A ServiceBusMessage carrying the tenant proof of exactly these bytes, id and reply_to."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    properties = signer.message_properties(
        data, message_id=message_id, reply_to=reply_to, contract_type=contract_type
    )
    return ServiceBusMessage(
        data,
        message_id=message_id,
        reply_to=reply_to,
        application_properties=properties,  # type: ignore[arg-type]
        content_type=str(fields.pop("content_type", "application/json")),
        **fields,  # type: ignore[arg-type]
    )


def proven_headers(
    signer: TenantSigner, method: str, url: str, body: bytes = b""
) -> dict[str, str]:
    """The proof headers of an HTTP request to `url` (its path is what is signed)."""
    return signer.http_headers(method, urlsplit(url).path, body)
