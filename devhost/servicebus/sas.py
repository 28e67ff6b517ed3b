"""Checks Shared Access Signature tokens the way Service Bus does for a CBS `put-token`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, quote_plus

_PREFIX = "SharedAccessSignature "


class TokenRejected(Exception):
    """Why a token was refused; the text goes back to the client as the status description."""


@dataclass(frozen=True)
class SasPolicy:
    key_name: str
    key: str

    def verify(self, token: str, now: float | None = None) -> str:
        """Return the token's resource URI if it is signed with this policy and not expired."""
        if not token.startswith(_PREFIX):
            raise TokenRejected("InvalidSignature: not a SharedAccessSignature token")
        fields = {k: v[0] for k, v in parse_qs(token[len(_PREFIX) :]).items() if v}
        missing = {"sr", "sig", "se"} - fields.keys()
        if missing:
            raise TokenRejected(f"InvalidSignature: token lacks {sorted(missing)}")
        if fields.get("skn", "") != self.key_name:
            raise TokenRejected(f"Unauthorized: unknown key name {fields.get('skn')!r}")
        try:
            expiry = int(fields["se"])
        except ValueError as exc:
            raise TokenRejected("InvalidSignature: se is not an integer") from exc
        to_sign = f"{quote_plus(fields['sr'])}\n{expiry}".encode()
        expected = base64.b64encode(
            hmac.new(self.key.encode(), to_sign, hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(expected, fields["sig"]):
            raise TokenRejected("InvalidSignature: the token signature does not match the key")
        if expiry <= (time.time() if now is None else now):
            raise TokenRejected("ExpiredToken: the token has expired")
        return fields["sr"]
