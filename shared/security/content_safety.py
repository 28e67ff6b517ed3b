"""Optional Content Safety checks around deployments that have no built-in content filter.

Azure OpenAI deployments filter prompts and answers themselves (`shared.inference.content_filter`
reads their verdicts). A model on AI Services without that filter (a registry deployment with
`content_safety: true`) is guarded here instead, with Azure AI Content Safety:

- pre-check, before the model is called: text analysis (`text:analyze`: Hate, SelfHarm, Sexual,
  Violence; severities 0/2/4/6) of every message, and Prompt Shields (`text:shieldPrompt`) of the
  user turns. A category at or above `severity_threshold` (default 4, medium: Azure OpenAI's
  default) or a detected attack raises `ContentFiltered` (stage `prompt`, source
  `content_safety`): no model call, a `filtered` result;
- post-check, after an answer: text analysis of the answer; a flagged answer comes back as a
  withheld completion (`content=""`, `finish_reason: content_filter`, stage `completion`), metered
  as it was paid for.

`ContentSafetyGuard` wraps the model port (shared.runtime builds it): a deployment without the flag
passes straight through. A flagged deployment with no Content Safety endpoint configured
(`CONTENT_SAFETY_ENDPOINT`) is a configuration error: nothing is sent unchecked. Content Safety's
own failures map to the model errors (429 -> `ModelRateLimited`, 5xx -> `ModelServerError`, a
connection or timeout error -> `ModelConnectionError` / `ModelTimeout`, 401/403/404 ->
`ModelConfigurationError`), so the resilience layer retries, breaks and reschedules them as it
does the model's. Texts longer than one call takes (10,000 characters) are checked in chunks.

Clients: `azure.ai.contentsafety.aio.ContentSafetyClient` (azure-ai-contentsafety 1.0.0): its
`analyze_text` for text analysis, and its `send_request` (the same pipeline: auth, logging) for
Prompt Shields, which that release has no method for (`POST {endpoint}/contentsafety/
text:shieldPrompt?api-version=2024-09-01`, `{"userPrompt", "documents"}` ->
`{"userPromptAnalysis": {"attackDetected"}, "documentsAnalysis": [...]}`). Keys locally
(`MODEL_API_KEY`, header `Ocp-Apim-Subscription-Key`), the managed identity in Azure (scope
`https://cognitiveservices.azure.com/.default`). devhost's model simulator answers both routes
(devhost/models/content_filter.py).

Libraries weighed: `azure-ai-contentsafety` is Microsoft's client of this service and the one
used; raw `httpx` would re-implement its auth and retries; `presidio` / `detoxify` classify text
locally but are neither Azure's policy nor a prompt shield.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from azure.ai.contentsafety.aio import ContentSafetyClient
from azure.ai.contentsafety.models import AnalyzeTextOptions, AnalyzeTextOutputType
from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.rest import HttpRequest

from shared.contracts import ChatMessage, ContentFilter, FilterCategory, InferenceParameters
from shared.inference.model_clients import Completion, ModelPort
from shared.inference.model_errors import (
    ContentFiltered,
    ModelCallError,
    ModelConfigurationError,
    ModelConnectionError,
    ModelTimeout,
    error_for_status,
)
from shared.settings import Settings
from shared.tenancy.registry import Deployment

SHIELD_API_VERSION: Final = "2024-09-01"
MAX_CHARS: Final = 10_000
_CATEGORIES: Final = {"Hate": "hate", "SelfHarm": "self_harm", "Sexual": "sexual"}
_CATEGORY_NAMES: Final = {**_CATEGORIES, "Violence": "violence"}
_SEVERITY_WORDS: Final = {0: "safe", 2: "low", 4: "medium", 6: "high"}


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    severity_threshold: int = 4
    """A category at this severity or above is filtered (0 safe, 2 low, 4 medium, 6 high)."""
    shield_prompts: bool = True
    concurrency: int = 4
    """Content Safety calls in flight per check (long texts are chunked)."""


class ContentChecker(Protocol):
    async def check_prompt(self, messages: Sequence[ChatMessage]) -> ContentFilter | None: ...

    async def check_answer(self, text: str) -> ContentFilter | None: ...

    async def close(self) -> None: ...


class AzureContentSafety:
    """`ContentChecker` over azure-ai-contentsafety (module docstring)."""

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        credential: AsyncTokenCredential | None = None,
        policy: SafetyPolicy | None = None,
        timeout_s: float = 10.0,
        **client_options: Any,
    ) -> None:
        if api_key is None and credential is None:
            raise ValueError("content safety needs MODEL_API_KEY (local) or a credential (Azure)")
        auth: AzureKeyCredential | AsyncTokenCredential = (
            AzureKeyCredential(api_key) if api_key is not None else credential  # type: ignore[assignment]
        )
        self.policy = policy or SafetyPolicy()
        self._client = ContentSafetyClient(
            endpoint.rstrip("/"),
            auth,
            retry_total=0,  # retrying is the resilience layer's
            connection_timeout=min(timeout_s, 10.0),
            read_timeout=timeout_s,
            **client_options,
        )

    async def check_prompt(self, messages: Sequence[ChatMessage]) -> ContentFilter | None:
        text = "\n".join(m.content for m in messages)
        user = "\n".join(m.content for m in messages if m.role == "user")
        checks = [self._analyze(chunk) for chunk in _chunks(text)]
        if self.policy.shield_prompts:
            checks += [self._shield(chunk) for chunk in _chunks(user)]
        flagged = await self._gather(checks)
        return _verdict("prompt", flagged)

    async def check_answer(self, text: str) -> ContentFilter | None:
        flagged = await self._gather([self._analyze(chunk) for chunk in _chunks(text)])
        return _verdict("completion", flagged)

    async def close(self) -> None:
        await self._client.close()

    async def _gather(self, checks: list[Any]) -> list[FilterCategory]:
        gate = asyncio.Semaphore(max(1, self.policy.concurrency))

        async def one(check: Any) -> list[FilterCategory]:
            async with gate:
                found: list[FilterCategory] = await check
                return found

        found: list[FilterCategory] = []
        for part in await asyncio.gather(*(one(c) for c in checks)):
            found.extend(part)
        return found

    async def _analyze(self, text: str) -> list[FilterCategory]:
        options = AnalyzeTextOptions(
            text=text, output_type=AnalyzeTextOutputType.FOUR_SEVERITY_LEVELS
        )
        result = await self._client.analyze_text(options)
        found = []
        for item in result.categories_analysis or []:
            severity = item.severity if isinstance(item.severity, int) else 0
            name = _CATEGORY_NAMES.get(str(item.category))
            if name is None or severity <= 0:
                continue
            found.append(
                FilterCategory(
                    category=name,
                    filtered=severity >= self.policy.severity_threshold,
                    severity=_SEVERITY_WORDS.get(severity, str(severity)),
                )
            )
        return found

    async def _shield(self, user_prompt: str) -> list[FilterCategory]:
        request = HttpRequest(
            "POST",
            "/text:shieldPrompt",
            params={"api-version": SHIELD_API_VERSION},
            json={"userPrompt": user_prompt, "documents": []},
        )
        response = await self._client.send_request(request)
        response.raise_for_status()
        body = response.json()
        analysis = body.get("userPromptAnalysis") if isinstance(body, dict) else None
        attack = isinstance(analysis, dict) and analysis.get("attackDetected") is True
        if not attack:
            return []
        return [FilterCategory(category="jailbreak", filtered=True, detected=True)]


def content_checker(
    settings: Settings, credential: AsyncTokenCredential | None
) -> AzureContentSafety | None:
    """The checker `CONTENT_SAFETY_ENDPOINT` names (with `MODEL_API_KEY` locally, the managed
    identity in Azure), or None when it is not set."""
    endpoint = settings.content_safety_endpoint
    if not endpoint or (settings.model_api_key is None and credential is None):
        return None
    return AzureContentSafety(
        endpoint,
        api_key=settings.model_api_key,
        credential=None if settings.model_api_key else credential,
        timeout_s=min(settings.model_timeout_seconds, 30.0),
    )


class ContentSafetyGuard:
    """The model port with the pre- and post-check for deployments that have `content_safety`;
    the others pass through untouched."""

    def __init__(self, inner: ModelPort, checker: ContentChecker | None) -> None:
        self.inner = inner
        self.checker = checker

    async def complete(
        self,
        deployment: Deployment,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
        *,
        tenant_id: str,
    ) -> Completion:
        if not deployment.content_safety:
            return await self.inner.complete(deployment, messages, parameters, tenant_id=tenant_id)
        checker = self.checker
        if checker is None:
            raise ModelConfigurationError(
                f"deployment {deployment.name!r} needs content safety checks, and "
                "CONTENT_SAFETY_ENDPOINT is not set",
                deployment=deployment.name,
            )
        verdict = await _checked(deployment, checker.check_prompt(messages))
        if verdict is not None:
            raise ContentFiltered(
                f"deployment {deployment.name!r}: Content Safety refused the prompt",
                deployment=deployment.name,
                content_filter=verdict,
                status_code=None,
            )
        completion = await self.inner.complete(
            deployment, messages, parameters, tenant_id=tenant_id
        )
        if completion.content_filter is not None or not completion.content:
            return completion
        verdict = await _checked(deployment, checker.check_answer(completion.content))
        if verdict is None:
            return completion
        return dataclasses.replace(
            completion, content="", finish_reason="content_filter", content_filter=verdict
        )

    async def close(self) -> None:
        await self.inner.close()
        if self.checker is not None:
            await self.checker.close()


async def _checked(deployment: Deployment, check: Any) -> ContentFilter | None:
    """The check's verdict; Content Safety's failures as the model errors (module docstring)."""
    name = deployment.name
    try:
        verdict: ContentFilter | None = await check
    except ModelCallError:
        raise
    except (ServiceRequestTimeoutError, ServiceResponseTimeoutError, TimeoutError):
        raise ModelTimeout(f"content safety for {name!r} timed out", deployment=name) from None
    except (ServiceRequestError, ServiceResponseError):
        raise ModelConnectionError(
            f"content safety for {name!r} could not be reached", deployment=name
        ) from None
    except HttpResponseError as exc:
        response: Any = exc.response
        headers = dict(response.headers) if response is not None else {}
        error = error_for_status(exc.status_code or 500, deployment=name, headers=headers)
        raise type(error)(
            f"content safety for {name!r} answered HTTP {exc.status_code}",
            deployment=name,
            status_code=error.status_code,
            retry_after_s=error.retry_after_s,
            service_request_id=error.service_request_id,
        ) from None
    except AzureError as exc:
        raise ModelConfigurationError(
            f"content safety for {name!r}: {type(exc).__name__}", deployment=name
        ) from None
    return verdict


def _verdict(stage: str, flagged: list[FilterCategory]) -> ContentFilter | None:
    if not any(c.filtered for c in flagged):
        return None
    return ContentFilter(
        stage="prompt" if stage == "prompt" else "completion",
        source="content_safety",
        categories=tuple(flagged),
    )


def _chunks(text: str) -> list[str]:
    """`text` in pieces Content Safety takes (at most MAX_CHARS code points); none if empty."""
    return [text[i : i + MAX_CHARS] for i in range(0, len(text), MAX_CHARS)] if text else []
