"""The inference log: per request, what was asked and answered, by which model version.

One JSON line per answered request in `inference-log/<tenant>/<yyyy-mm-dd>.jsonl` (parts as in
`shared.storage.json_lines`), joined to feedback by `request_id`. Text goes through
`Consent.keep` first: with the tenant's consent the prompt's messages and the answer are kept
scrubbed of personal data; without it they are `null` and `withheld` says why. The prompt's
features (`shared.drift.input_drift.PromptFeatures`: length, language, the tenant's `feature`
label) hold no text and are kept either way, for input-drift checks.

A message redelivered after its line was written but before its result was stored writes a
second line for the same request; readers keep the last line per request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts import ChatMessage
from shared.drift.input_drift import prompt_features
from shared.feedback.consent import Consent, pii_total
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.storage.json_lines import Cursor, JsonLinesLog
from shared.tenancy.registry import Deployment, Tenant


def model_key(deployment: str, model_version: str | None) -> str:
    """The name drift is tracked under: `<deployment>` or `<deployment>@<model version>`, made
    safe as one blob-name segment without dots (anything but letters, digits, `_@-` becomes `_`)."""
    raw = f"{deployment}@{model_version}" if model_version else deployment
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_@-" else "_" for c in raw)[:128]


class LoggedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: str
    content: str


class InferenceLogEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str
    request_id: str
    at: datetime
    deployment: str
    model: str | None
    model_version: str | None
    model_key: str
    feature: str | None
    features: dict[str, Any]
    prompt: list[LoggedMessage] | None = None
    answer: str | None = None
    withheld: str | None = None
    pii_removed: dict[str, int] = Field(default_factory=dict)


def user_text(messages: Iterable[ChatMessage]) -> str:
    """The text features are computed from: the user turns (system prompts are the app's)."""
    return "\n".join(m.content for m in messages if m.role == "user")


class InferenceLog:
    def __init__(
        self, store: BlobStore, consent: Consent, container: str = names.INFERENCE_LOG_CONTAINER
    ) -> None:
        self._log = JsonLinesLog(store, container)
        self._consent = consent

    @staticmethod
    def base(tenant_id: str, day: date) -> str:
        return tenant_path(tenant_id, day.isoformat())

    async def record(
        self,
        tenant: Tenant,
        *,
        request_id: str,
        messages: list[ChatMessage],
        feature: str | None,
        deployment: Deployment,
        model: str | None,
        answer: str,
        at: datetime,
    ) -> None:
        kept = await self._consent.keep(tenant.policy, [*(m.content for m in messages), answer])
        prompt_kept, answer_kept = kept[:-1], kept[-1]
        prompt = None
        if answer_kept.text is not None:
            prompt = [
                LoggedMessage(role=m.role, content=k.text or "")
                for m, k in zip(messages, prompt_kept, strict=True)
            ]
        entry = InferenceLogEntry(
            tenant_id=tenant.id,
            request_id=request_id,
            at=at,
            deployment=deployment.name,
            model=model,
            model_version=deployment.model_version,
            model_key=model_key(deployment.name, deployment.model_version),
            feature=feature,
            features=prompt_features(user_text(messages), feature).to_json(),
            prompt=prompt,
            answer=answer_kept.text,
            withheld=answer_kept.withheld,
            pii_removed=pii_total(kept),
        )
        await self._log.append(
            self.base(tenant.id, at.date()), entry.model_dump_json().encode("utf-8")
        )

    async def read_day(
        self, tenant_id: str, day: date, since: Cursor | None = None
    ) -> tuple[list[InferenceLogEntry], Cursor]:
        """The entries of one day after `since` (unreadable lines skipped), and the new cursor."""
        lines, cursor = await self._log.read(self.base(tenant_id, day), since or Cursor())
        entries = []
        for line in lines:
            try:
                entries.append(InferenceLogEntry.model_validate_json(line))
            except ValidationError:
                continue
        return entries, cursor

    async def by_request(
        self, tenant_id: str, days: Iterable[date]
    ) -> dict[str, InferenceLogEntry]:
        """Every entry of those days by request id (the last line wins)."""
        found: dict[str, InferenceLogEntry] = {}
        for day in days:
            entries, _ = await self.read_day(tenant_id, day)
            found.update((e.request_id, e) for e in entries)
        return found
