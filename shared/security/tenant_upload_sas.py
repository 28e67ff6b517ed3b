"""Upload grants: `POST /api/tenants/{tenant_id}/upload-sas` gives a proven tenant a SAS URL that
can write one blob under its own `uploads/<tenant>/` prefix, and nothing else.

    request  {"kind": "batch" | "training", "file": "nightly.jsonl"}      (tenant-proven HTTP)
    201      {"url": "https://<account>.blob.core.windows.net/uploads/contoso/batch/nightly.jsonl?<sas>",
              "blob": "uploads/contoso/batch/nightly.jsonl", "permissions": "cw",
              "expires_at": "...", "sas": "user_delegation" | "service"}
    400      {"error": "invalid_upload_request", "detail": ...}   not JSON, an unknown kind, a file
                                                                  name that is not a safe id (`..`,
                                                                  separators, look-alikes) or not
                                                                  `.jsonl`
    404      {"error": "unknown_tenant"}                          the registry does not know it

The tenant comes from the route, which the tenant proof already bound to the caller's key; the
blob name is built by `shared.security.paths.tenant_path` from it, the kind and the checked file
name, so no input can name another tenant's prefix. Permissions: create and write only (no read,
list or delete), for `SAS_LIFETIME` (15 minutes); the upload then fires the batch or training
trigger as any upload does.

Signing:
- Azure (`UserDelegationSigner`): a **user-delegation SAS**, signed with a key the app's managed
  identity gets from Blob Storage (`get_user_delegation_key`, allowed by its Storage Blob Data
  Contributor role; account keys are disabled on the account). The key is cached until 5 minutes
  before it expires (it is valid 1 hour). A SAS is per blob: a directory-scoped SAS needs a
  hierarchical namespace, which the account does not have.
- devhost (`AccountKeySigner`): Azurite is run with its well-known account key over HTTP, and its
  user delegation keys need OAuth over HTTPS; so locally the SAS is a **service SAS** signed with
  that account key: the same permissions, scope and expiry, a different signing key (`"sas":
  "service"` in the answer says which).

Libraries weighed: `azure-storage-blob`'s `generate_blob_sas` (chosen; the SDK the app already
uses) against writing the string-to-sign by hand (its field order changes with the service
version).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol

from azure.core.credentials_async import AsyncTokenCredential
from azure.storage.blob import BlobSasPermissions, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient

import shared.contracts  # noqa: F401 - first: shared.security.paths and shared.contracts import each other
from shared.security.paths import UnsafeId, check_id, tenant_path
from shared.settings import get_settings
from shared.storage import names

if TYPE_CHECKING:  # the runtime imports the security package: only its type here
    from shared.runtime import Runtime

SAS_LIFETIME: Final = timedelta(minutes=15)
KINDS: Final = frozenset({"batch", "training"})
PERMISSIONS: Final = "cw"
_KEY_LIFETIME: Final = timedelta(hours=1)
_KEY_MARGIN: Final = timedelta(minutes=5)
_FILE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,122}\.jsonl$")


class SasSigner(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def account_url(self) -> str: ...

    async def sign(self, container: str, blob: str, *, now: datetime, expires_at: datetime) -> str:
        """The SAS token (query string, no '?') for create+write on that one blob."""
        ...

    async def close(self) -> None: ...


class UserDelegationSigner:
    kind = "user_delegation"

    def __init__(self, account_url: str, credential: AsyncTokenCredential) -> None:
        self.account_url = account_url.rstrip("/")
        self._service = BlobServiceClient(self.account_url, credential)
        self._key: UserDelegationKey | None = None
        self._key_expires: datetime | None = None

    async def sign(self, container: str, blob: str, *, now: datetime, expires_at: datetime) -> str:
        if self._key is None or self._key_expires is None or expires_at > self._key_expires:
            start, until = now - timedelta(minutes=1), now + _KEY_LIFETIME
            self._key = await self._service.get_user_delegation_key(start, until)
            self._key_expires = until - _KEY_MARGIN
        return generate_blob_sas(
            self._service.account_name or "",
            container,
            blob,
            user_delegation_key=self._key,
            permission=BlobSasPermissions(create=True, write=True),
            expiry=expires_at,
            start=now - timedelta(minutes=1),
        )

    async def close(self) -> None:
        await self._service.close()


class AccountKeySigner:
    kind = "service"

    def __init__(self, connection_string: str) -> None:
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        self._account = parts["AccountName"]
        self._key = parts["AccountKey"]
        endpoint = parts.get("BlobEndpoint")
        protocol = parts.get("DefaultEndpointsProtocol", "https")
        self.account_url = (
            endpoint or f"{protocol}://{self._account}.blob.core.windows.net"
        ).rstrip("/")

    async def sign(self, container: str, blob: str, *, now: datetime, expires_at: datetime) -> str:
        return generate_blob_sas(
            self._account,
            container,
            blob,
            account_key=self._key,
            permission=BlobSasPermissions(create=True, write=True),
            expiry=expires_at,
            start=now - timedelta(minutes=1),
        )

    async def close(self) -> None:
        return None


def signer_from_settings(
    connection_string: str | None, blob_uri: str | None, credential: AsyncTokenCredential | None
) -> SasSigner | None:
    """Azure: the identity's user delegation; a connection string with a key: a service SAS."""
    if blob_uri and credential is not None:
        return UserDelegationSigner(blob_uri, credential)
    if connection_string and "AccountKey=" in connection_string:
        return AccountKeySigner(connection_string)
    return None


@dataclass(frozen=True, slots=True)
class UploadGrant:
    url: str
    blob: str
    expires_at: datetime
    sas: str

    def body(self) -> bytes:
        return json.dumps(
            {
                "url": self.url,
                "blob": self.blob,
                "permissions": PERMISSIONS,
                "expires_at": self.expires_at.isoformat(),
                "sas": self.sas,
            }
        ).encode("utf-8")


class InvalidUploadRequest(ValueError):
    pass


def upload_blob_name(tenant_id: str, body: bytes) -> str:
    """`<tenant>/<kind>/<file>` in the uploads container; InvalidUploadRequest otherwise."""
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise InvalidUploadRequest("the body is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidUploadRequest("the body must be a JSON object")
    kind, file = document.get("kind"), document.get("file")
    if kind not in KINDS:
        raise InvalidUploadRequest(f"kind must be one of {sorted(KINDS)}")
    if not isinstance(file, str) or not _FILE.match(file):
        raise InvalidUploadRequest("file must be a name ending in .jsonl (letters, digits, ._-)")
    try:
        check_id(file, "file")
        return tenant_path(tenant_id, str(kind), file)
    except UnsafeId as exc:
        raise InvalidUploadRequest(str(exc)) from None


async def grant_upload(
    signer: SasSigner, tenant_id: str, body: bytes, *, now: datetime | None = None
) -> UploadGrant:
    moment = now or datetime.now(UTC)
    name = upload_blob_name(tenant_id, body)
    expires_at = moment + SAS_LIFETIME
    token = await signer.sign(names.UPLOADS_CONTAINER, name, now=moment, expires_at=expires_at)
    url = f"{signer.account_url}/{names.UPLOADS_CONTAINER}/{name}?{token}"
    return UploadGrant(url, f"{names.UPLOADS_CONTAINER}/{name}", expires_at, signer.kind)


_SIGNERS: dict[int, SasSigner | None] = {}


def runtime_signer(runtime: Runtime) -> SasSigner | None:
    """The process's signer, built once per runtime from the app settings and its identity."""
    key = id(runtime)
    if key not in _SIGNERS:
        settings = get_settings()
        _SIGNERS[key] = signer_from_settings(
            settings.storage_connection_string, settings.storage_blob_uri, runtime.credential
        )
    return _SIGNERS[key]


async def upload_sas_response(
    runtime: Runtime, tenant_id: str, body: bytes, *, signer: SasSigner | None = None
) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for a proven `POST /api/tenants/{tenant_id}/upload-sas`."""
    registry = await runtime.registry.get()
    if registry.tenant(tenant_id) is None:
        return 404, json.dumps({"error": "unknown_tenant"}).encode("utf-8")
    chosen = signer or runtime_signer(runtime)
    if chosen is None:
        detail = "this app has no storage identity or account key to sign an upload SAS with"
        return 503, json.dumps({"error": "unavailable", "detail": detail}).encode("utf-8")
    try:
        grant = await grant_upload(chosen, tenant_id, body, now=runtime.clock())
    except InvalidUploadRequest as exc:
        answer = {"error": "invalid_upload_request", "detail": str(exc)}
        return 400, json.dumps(answer).encode("utf-8")
    return 201, grant.body()
