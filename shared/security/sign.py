"""Proving the tenant from a tenant app: copy this file (standard library only) into the app.

    signer = TenantSigner("contoso", key_id="k20250102-a1b2c3", secret=os.environ["TENANT_KEY"])

    body = json.dumps(request).encode()
    ServiceBusMessage(body, message_id=request_id, reply_to="replies-contoso",
                      application_properties=signer.message_properties(
                          body, message_id=request_id, reply_to="replies-contoso"))

    body = json.dumps(feedback).encode()
    headers = signer.http_headers("POST", "/api/tenants/contoso/feedback", body)
    requests.post(f"{host}/api/tenants/contoso/feedback", data=body,
                  headers={**headers, "x-functions-key": FUNCTION_KEY})

What is signed (HMAC-SHA256 with the key's secret text as UTF-8 as the key, 64 hex digits), one
field a line, joined with "\\n", no trailing newline:

    Service Bus                      HTTP
    tenant-proof-v1                  tenant-proof-v1
    sb                               http
    <tenant id>                      <tenant id>
    <message id>                     <nonce: x-tenant-proof-nonce>
    <reply_to, or empty>             <METHOD, upper case>
    <contract type>                  <path without the query: /api/tenants/contoso/feedback>
    <sha256 hex of the body bytes>   <sha256 hex of the body bytes (empty body: of b"")>
    <Unix seconds>                   <Unix seconds>
    <key id>                         <key id>

Contract types: `inference.request` (queue inference-requests), `feedback` (queue feedback).
Sign the exact bytes you send, with the message id and reply_to you set; the app refuses a
message whose proof is older or newer than 5 minutes (from the time Service Bus enqueued it), a
message id it has already accepted, and a key the tenant has retired. The server side of the
same format is `shared/security/proof.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Final

VERSION: Final = "tenant-proof-v1"
PROOF: Final = "x-tenant-proof"
PROOF_TIME: Final = "x-tenant-proof-time"
KEY_ID: Final = "x-tenant-key-id"
NONCE: Final = "x-tenant-proof-nonce"
INFERENCE_REQUEST: Final = "inference.request"
FEEDBACK: Final = "feedback"


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_message(
    *,
    tenant_id: str,
    message_id: str,
    reply_to: str | None,
    contract_type: str,
    body_digest: str,
    at: int,
    key_id: str,
) -> bytes:
    """The text a Service Bus message's proof signs. ValueError: a field holds a line break."""
    return _canonical(
        "sb", tenant_id, message_id, reply_to or "", contract_type, body_digest, str(at), key_id
    )


def canonical_http(
    *,
    tenant_id: str,
    nonce: str,
    method: str,
    path: str,
    body_digest: str,
    at: int,
    key_id: str,
) -> bytes:
    """The text an HTTP request's proof signs. ValueError: a field holds a line break."""
    return _canonical("http", tenant_id, nonce, method.upper(), path, body_digest, str(at), key_id)


def hmac_hex(secret: str, canonical: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), canonical, hashlib.sha256).hexdigest()


def _canonical(*fields: str) -> bytes:
    for value in fields:
        if "\n" in value or "\r" in value:
            raise ValueError("a field of a tenant proof may not hold a line break")
    return "\n".join((VERSION, *fields)).encode("utf-8")


@dataclass(frozen=True)
class TenantSigner:
    """One tenant's key: what its app signs with."""

    tenant_id: str
    key_id: str
    secret: str

    def message_properties(
        self,
        body: bytes,
        *,
        message_id: str,
        reply_to: str | None = None,
        contract_type: str = INFERENCE_REQUEST,
        at: int | None = None,
    ) -> dict[str, str]:
        """The application properties that prove a Service Bus message."""
        seconds = int(time.time()) if at is None else at
        canonical = canonical_message(
            tenant_id=self.tenant_id,
            message_id=message_id,
            reply_to=reply_to,
            contract_type=contract_type,
            body_digest=body_sha256(body),
            at=seconds,
            key_id=self.key_id,
        )
        return {
            PROOF: hmac_hex(self.secret, canonical),
            PROOF_TIME: str(seconds),
            KEY_ID: self.key_id,
        }

    def http_headers(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        nonce: str | None = None,
        at: int | None = None,
    ) -> dict[str, str]:
        """The headers that prove an HTTP request to `path` (no query string, no host)."""
        seconds = int(time.time()) if at is None else at
        nonce = nonce or uuid.uuid4().hex
        canonical = canonical_http(
            tenant_id=self.tenant_id,
            nonce=nonce,
            method=method,
            path=path,
            body_digest=body_sha256(body),
            at=seconds,
            key_id=self.key_id,
        )
        return {
            PROOF: hmac_hex(self.secret, canonical),
            PROOF_TIME: str(seconds),
            KEY_ID: self.key_id,
            NONCE: nonce,
        }
