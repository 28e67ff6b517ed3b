"""The one gate for text kept for analysis or training: consent first, then PII removal.

Every writer that keeps tenant text beyond the answer the tenant asked for (the inference log,
stored feedback corrections, training sets) takes it from `Consent.keep`, never from the request:

- the tenant's policy (`DataPolicy.log_prompts`, in the registry) says whether any text may be
  kept; without it the writer gets `None` and a `withheld` reason, and keeps only text-free
  data (ratings, lengths, language, the tenant's feature label);
- with it, the text is normalised (NFKC, invisible and control characters removed: `normalised`)
  and scrubbed of personal data (`shared.feedback.pii`) before it is returned,
  so what is written never held an email, phone, card, IBAN, IP address, national id or a name
  the scrubber found.

`training_tenants` is the rule for who may be in a training set: for a tenant's own model only
that tenant (and only if its text may be kept); for a model other tenants use, only tenants whose
policy has `share_for_training`. tests/unit/feedback/test_consent_rule.py checks both rules over
everything written in a run, not per call site.

The result the tenant asked for (`results/`) is the tenant's own deliverable, not kept for
analysis; its retention is the lifecycle rule in infra (`resultRetentionDays`).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

from shared.feedback.pii import Scrubbed, default_scrubber
from shared.tenancy.registry import DataPolicy, Registry, Tenant

NOT_CONSENTED = "tenant policy: log_prompts is false"

TrainingScope = Literal["tenant", "shared"]


class Scrubber(Protocol):
    """What `shared.feedback.pii.PiiScrubber` offers (tests may pass a simpler one)."""

    def scrub(self, text: str) -> Scrubbed: ...


@dataclass(frozen=True, slots=True)
class KeptText:
    """Text as it may be kept: `text` scrubbed, or None with `withheld` saying why."""

    text: str | None
    withheld: str | None = None
    pii_removed: Mapping[str, int] = field(default_factory=dict)


def _default_scrubber() -> Scrubber:
    return default_scrubber()  # built (slowly, once) on first use, not at import


class Consent:
    def __init__(self, scrubber: Callable[[], Scrubber] = _default_scrubber) -> None:
        self._make_scrubber = scrubber

    @cached_property
    def scrubber(self) -> Scrubber:
        return self._make_scrubber()

    def keep_now(self, policy: DataPolicy, texts: Sequence[str]) -> list[KeptText]:
        """Each text as it may be kept (CPU-bound; `keep` runs it off the event loop)."""
        if not policy.log_prompts:
            return [KeptText(None, NOT_CONSENTED) for _ in texts]
        kept = []
        for text in texts:
            scrubbed = self.scrubber.scrub(normalised(text))
            found = {str(kind): count for kind, count in scrubbed.found.items() if count}
            kept.append(KeptText(scrubbed.text, None, found))
        return kept

    async def keep(self, policy: DataPolicy, texts: Sequence[str]) -> list[KeptText]:
        if not policy.log_prompts:
            return self.keep_now(policy, texts)
        return await asyncio.to_thread(self.keep_now, policy, texts)


# Invisible characters that split or disguise what a scrubber looks for, and that a training set
# should not carry: zero-width and joiner characters, bidirectional controls, the BOM, and the C0/C1
# controls other than tab and line breaks.
_INVISIBLE = re.compile(
    "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
)


def normalised(text: str) -> str:
    """Text as it is kept: Unicode NFKC (a full-width email or card number becomes the plain
    one it is, so the scrubber sees it) without invisible and control characters."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def training_tenants(
    registry: Registry, tenant: Tenant, scope: TrainingScope
) -> tuple[Tenant, ...]:
    """Whose data may train a model for `tenant`: for `tenant` scope only the tenant itself; for
    `shared` scope (a model other tenants use) every tenant whose policy shares for training.
    A tenant whose text may not be kept has no text to train on and is never included."""
    if scope == "tenant":
        return (tenant,) if tenant.policy.log_prompts else ()
    return tuple(
        t for t in registry.tenants if t.policy.share_for_training and t.policy.log_prompts
    )


def pii_total(kept: Sequence[KeptText]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for item in kept:
        for kind, count in item.pii_removed.items():
            totals[kind] = totals.get(kind, 0) + count
    return totals
