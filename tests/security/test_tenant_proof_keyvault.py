"""The Key Vault key store through the real `azure-keyvault-secrets` client, faked at the HTTP
transport: a vault that answers the first request with its 401 challenge, then the secrets API
(`GET/PUT /secrets/{name}?api-version=...`), as Key Vault does."""

from __future__ import annotations

import json
import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
from azure.core.utils import case_insensitive_dict
from azure.keyvault.secrets.aio import SecretClient

from shared.security.keys import CachedKeys, KeyRing, KeyVaultKeys, secret_name
from shared.security.sign import TenantSigner
from shared.security.tenant_check import ProofMode, TenantProofs
from tests.security.tenant_proof_kit import NOW, request_body, signed

VAULT = "https://kv-tenants.vault.azure.net"
TENANT = "00000000-0000-0000-0000-000000000001"
CHALLENGE = (
    f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
    'resource="https://vault.azure.net"'
)


class _Closable:
    async def close(self) -> None:
        return None


class FakeVault(AsyncHttpTransport):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self.secrets: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, bool]] = []

    async def send(self, request: Any, **kwargs: Any) -> AsyncHttpResponseImpl:
        authorized = "Authorization" in request.headers
        path = request.url.split("?")[0].removeprefix(VAULT)
        self.requests.append((request.method, path, authorized))
        if not authorized:
            return _response(request, 401, {}, {"WWW-Authenticate": CHALLENGE})
        name = path.removeprefix("/secrets/").split("/")[0]
        if request.method == "PUT":
            sent = json.loads(request.content)
            version = f"v{len(self.secrets.get(name, [])) + 1}"
            bundle = {
                "value": sent["value"],
                "contentType": sent.get("contentType"),
                "tags": sent.get("tags"),
                "id": f"{VAULT}/secrets/{name}/{version}",
                "attributes": {"enabled": True, "created": 1, "updated": 1},
            }
            self.secrets.setdefault(name, []).append(bundle)
            return _response(request, 200, bundle)
        versions = self.secrets.get(name)
        if not versions:
            error = {"error": {"code": "SecretNotFound", "message": f"{name} not found"}}
            return _response(request, 404, error)
        return _response(request, 200, versions[-1])

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeVault:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def _response(
    request: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> AsyncHttpResponseImpl:
    all_headers = case_insensitive_dict({"content-type": "application/json", **(headers or {})})
    response = AsyncHttpResponseImpl(
        request=request,
        internal_response=_Closable(),
        status_code=status,
        reason="fake",
        content_type="application/json",
        headers=all_headers,
        stream_download_generator=None,
    )
    response._content = json.dumps(body).encode()
    response._is_stream_consumed = True
    return response


class AppIdentity:
    """The managed identity, as far as the client sees it: a token for the vault's scope."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes += scopes
        return AccessToken("token-of-the-app", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


async def test_rings_round_trip_through_the_vault_client() -> None:
    vault, identity = FakeVault(), AppIdentity()
    store = KeyVaultKeys(SecretClient(VAULT, identity, transport=vault))  # type: ignore[arg-type]
    try:
        assert await store.ring("contoso") is None  # SecretNotFound: no ring
        ring = KeyRing.new("contoso", NOW)
        await store.put(ring)
        assert await store.ring("contoso") == ring
        rotated, _ = ring.rotated(NOW)
        await store.put(rotated)
        assert await store.ring("contoso") == rotated
    finally:
        await store.close()
    [stored_first, _] = vault.secrets[secret_name("contoso")]  # one version per change
    assert stored_first["contentType"] == "application/json"
    assert stored_first["tags"] == {"tenant": "contoso", "purpose": "tenant-proof"}
    assert identity.scopes == ["https://vault.azure.net/.default"]
    assert vault.requests[0] == ("GET", "/secrets/tenant-key-contoso/", False)  # the challenge


async def test_a_message_is_proven_against_the_vaults_ring() -> None:
    vault = FakeVault()
    store = KeyVaultKeys(SecretClient(VAULT, AppIdentity(), transport=vault))  # type: ignore[arg-type]
    ring = KeyRing.new("contoso", NOW)
    await store.put(ring)
    proofs = TenantProofs(ProofMode.REQUIRED, keys=CachedKeys(store), clock=lambda: NOW)
    key = ring.signing_key()
    by = TenantSigner("contoso", key.id, key.secret or "")
    try:
        message = signed(by, request_body("contoso", "r-1"), message_id="m-1")
        assert await proofs.check_message(message, "inference.request") is None
        gets = sum(1 for method, _, authorized in vault.requests if method == "GET" and authorized)
        again = signed(by, request_body("contoso", "r-2"), message_id="m-2")
        assert await proofs.check_message(again, "inference.request") is None
        assert sum(1 for m, _, a in vault.requests if m == "GET" and a) == gets  # cached
    finally:
        await proofs.close()
