"""Tenant proof: an HMAC-SHA256, with a key only the tenant (and this app) holds, over what a
message or an HTTP request says and when it was made.

A message's `tenant_id` is a claim; this module decides whether the sender holds a key of that
tenant. What a proof covers, one field a line (`canonical_message` / `canonical_http`):

    tenant-proof-v1              tenant-proof-v1
    sb                           http
    <tenant id>                  <tenant id (the route's)>
    <message id>                 <nonce: x-tenant-proof-nonce>
    <reply_to, or empty>         <METHOD>
    <contract type>              <path, no query: /api/tenants/contoso/feedback>
    <sha256 of the body, hex>    <sha256 of the body, hex>
    <time: Unix seconds>         <time: Unix seconds>
    <key id>                     <key id>

joined with "\\n" (no trailing newline), UTF-8; the HMAC key is the key's secret text as UTF-8.
The proof travels as application properties (Service Bus) or headers (HTTP), never in the body:

    x-tenant-proof        64 lower-case hex digits: HMAC-SHA256(secret, canonical)
    x-tenant-proof-time   the time inside it, Unix seconds (decimal)
    x-tenant-key-id       which of the tenant's keys signed
    x-tenant-proof-nonce  HTTP only: a fresh value per request (a UUID), 1-128 safe characters

No field may hold a line break, so no two different messages have the same canonical text; a
field that does is refused (`tenant_proof_invalid`).

The format (`canonical_message`, `canonical_http`) lives in `shared/security/sign.py`, the
standard-library-only file a tenant app copies, so sender and verifier share one definition.

`verify` is the pure check (no I/O, no replay memory): given the tenant's key ring and the
reference time, it returns the key id that signed or raises `ProofError(reason, detail)` with
one of `ProofReason`'s reasons. The detail names what was wrong, never the secret nor the
signature. Comparison is `hmac.compare_digest` (constant time).

The window: a proof's time must be within `WINDOW_S` (300 s) of the reference time, either way:
for a Service Bus message the time the broker enqueued it (set by Service Bus, not by the sender;
for a scheduled message, the time it was activated), so a request that waits in a backlog is not
refused for waiting; for HTTP, the app's clock. Replays inside the window are caught by
`tenant_replay` (a proven message id, or HTTP nonce, is accepted once).

Libraries weighed:
- PyJWT with Entra ID tokens (the issue's other option): the tenant app's identity gets a token,
  the app validates issuer, audience and signature against Entra's rotating keys and maps the
  app/object id to one tenant. Chosen against: a token proves *who* sent, not *what*: it is a
  bearer credential that a holder can attach to any body, queue or reply_to within its hour of
  life (binding it to a message would still need a signature over the message), it needs an
  Entra app registration per tenant app (tenants off Azure cannot get one), and locally it needs
  a token issuer stood up beside the broker. An HMAC binds tenant, message id, reply_to, contract,
  body and time in one 64-digit property, with Python's standard library on both sides.
- `cryptography`'s HMAC: the same primitive; the standard library's `hmac` is enough and is what
  a tenant app in any language has an equivalent of.
- Azure Service Bus SAS per tenant (a send-only key per tenant on the namespace): Bicep sets
  `disableLocalAuth: true` (identities only), and SAS proves the right to send, not the tenant
  in the body.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shared.security.keys import KeyRing, KeyState
from shared.security.sign import (
    KEY_ID,
    NONCE,
    PROOF,
    PROOF_TIME,
    VERSION,
    body_sha256,
    canonical_http,
    canonical_message,
    hmac_hex,
)

__all__ = [
    "KEY_ID",
    "NONCE",
    "PROOF",
    "PROOF_TIME",
    "VERSION",
    "body_sha256",
    "canonical_http",
    "canonical_message",
]

WINDOW_S: Final = 300
"""A proof's time may be this many seconds before or after its reference time."""
PROPERTIES: Final = (PROOF, PROOF_TIME, KEY_ID)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ProofReason:
    """The `reason` of a rejection record (or a 401 answer) for a message without a valid proof."""

    MISSING: Final = "tenant_proof_missing"
    """No `x-tenant-proof` (or its time or key id) on a message that names a tenant."""
    INVALID: Final = "tenant_proof_invalid"
    """The signature does not match (another key, another tenant, a changed body or property),
    the key id is not one of the tenant's, or a field is malformed."""
    EXPIRED: Final = "tenant_proof_expired"
    """The proof's time is more than WINDOW_S from the enqueue time (HTTP: the app's clock)."""
    REPLAYED: Final = "tenant_proof_replayed"
    """A valid proof whose message id (HTTP: nonce) was already accepted within the window."""
    KEY_RETIRED: Final = "tenant_key_retired"
    """Signed with a key the tenant has rotated out."""


ALL_REASONS: Final = frozenset(
    {
        ProofReason.MISSING,
        ProofReason.INVALID,
        ProofReason.EXPIRED,
        ProofReason.REPLAYED,
        ProofReason.KEY_RETIRED,
    }
)


class ProofError(Exception):
    """A proof that does not hold: `reason` (a ProofReason) and `detail` (safe to log and store:
    never the secret, never the signature)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Presented:
    """What a message or request carries: the signature, its time and key id (as sent)."""

    signature: str
    at: int
    key_id: str


def sign(secret: str, canonical: bytes) -> str:
    return hmac_hex(secret, canonical)


def presented(values: Mapping[str, object]) -> Presented:
    """The proof fields of application properties or headers (names compared in lower case);
    ProofError MISSING when one is absent, INVALID when one is malformed."""
    lowered = {str(k).lower(): v for k, v in values.items()}
    raw = {name: _text(lowered.get(name)) for name in PROPERTIES}
    absent = [name for name, value in raw.items() if value is None]
    if absent:
        raise ProofError(ProofReason.MISSING, f"no {', '.join(absent)}")
    signature, at, key_id = raw[PROOF], raw[PROOF_TIME], raw[KEY_ID]
    assert signature is not None
    assert at is not None
    assert key_id is not None
    if not _HEX64.fullmatch(signature):
        raise ProofError(ProofReason.INVALID, f"{PROOF} is not 64 lower-case hex digits")
    if not _TIME.fullmatch(at):
        raise ProofError(ProofReason.INVALID, f"{PROOF_TIME} is not Unix seconds")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", key_id):
        raise ProofError(ProofReason.INVALID, f"{KEY_ID} is not a key id")
    return Presented(signature, int(at), key_id)


def nonce_of(headers: Mapping[str, object]) -> str:
    lowered = {str(k).lower(): v for k, v in headers.items()}
    nonce = _text(lowered.get(NONCE))
    if nonce is None:
        raise ProofError(ProofReason.MISSING, f"no {NONCE}")
    if not _NONCE.fullmatch(nonce):
        raise ProofError(ProofReason.INVALID, f"{NONCE} is not 1-128 letters, digits or ._:-")
    return nonce


def verify(
    ring: KeyRing | None,
    proof: Presented,
    canonical: bytes,
    *,
    reference_s: float,
    window_s: float = WINDOW_S,
) -> str:
    """The key id that signed `canonical`, or ProofError. Order: time, key, signature (a
    retired key is named as such only when the time is right, so an old captured message reads
    as expired, whatever key it used)."""
    skew = proof.at - reference_s
    if abs(skew) > window_s:
        direction = "before" if skew < 0 else "after"
        raise ProofError(
            ProofReason.EXPIRED,
            f"the proof's time is {abs(skew):.0f} s {direction} its reference time "
            f"(at most {window_s:g} s either way)",
        )
    key = ring.find(proof.key_id) if ring is not None else None
    if key is None:
        raise ProofError(ProofReason.INVALID, f"key id {proof.key_id!r} is not one of the tenant's")
    if key.state is KeyState.RETIRED or key.secret is None:
        raise ProofError(
            ProofReason.KEY_RETIRED, f"key {proof.key_id!r} was rotated out; sign with a newer key"
        )
    if not hmac.compare_digest(sign(key.secret, canonical), proof.signature):
        raise ProofError(
            ProofReason.INVALID,
            "the signature does not match the message (tenant, id, reply_to, type, body, time)",
        )
    return key.id


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
