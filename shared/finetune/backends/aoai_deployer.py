"""Serving a fine-tuned Azure OpenAI model: an ARM deployment on the account, as a `ModelDeployer`.

    deployer = AzureOpenAIDeployer(credential, subscription_id, resource_group, account_name,
                                   capacity=10)
    served = await deployer.deploy(trained, deployment="fabrikam-ft-v2", spec=spec)
    # ServedModel(kind="azure_openai", model="fabrikam-ft-v2", endpoint="${AZURE_OPENAI_ENDPOINT}")

Uses `azure.mgmt.cognitiveservices.aio.CognitiveServicesManagementClient`
(`deployments.begin_create_or_update`, a long-running PUT of
`/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/
{account}/deployments/{name}`) with the body
`{"sku": {"name": "Standard", "capacity": <capacity>}, "properties": {"model": {"format":
"OpenAI", "name": <fine_tuned_model>, "version": "1"}}}`. `capacity` is in units of 1,000 tokens
per minute. The deployment then answers chat at `{AZURE_OPENAI_ENDPOINT}/openai/deployments/
{name}/chat/completions`, which is what the returned `ServedModel` says (`endpoint` as the
registry writes it, an `${ENV}` reference).

Idempotent by deployment name: the deployment is read first; one that already serves this model
is returned as it is (a retried deploy writes nothing); one that serves another model is a
non-retryable `BackendError` (a name is never taken from a model that may be serving); a missing
one is created.

Role: the caller's identity needs, on the Azure OpenAI account (or its resource group),
`Microsoft.CognitiveServices/accounts/deployments/write` and `.../read`: **Cognitive Services
Contributor** (25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68) grants them; so does Cognitive Services
OpenAI Contributor (a001fd3d-188f-4b5d-821b-7da978bf7442), whose actions include
`accounts/deployments/write` since fall 2023, the narrower choice when the backend holds that
role already. Source: Microsoft Learn, "Role-based access control for Azure OpenAI" ("Create new
model deployments or edit existing model deployments [Added Fall 2023]") and the built-in role
definitions.

Errors: the SDK's own retries are off (`retry_total=0`); each step (read, create) is retried with
`tenacity` on 408, 409, 429, 5xx and connection errors, waiting the service's `retry-after-ms` /
`retry-after` (capped) or full-jitter backoff; what still fails is a `BackendError`, retryable for
those and for 401/403 (role propagation), not for 400/404 (a model the account cannot deploy, an
account that does not exist).

Locally (`base_url` = the models simulator, plain http on loopback) bearer tokens are allowed over
http (`enforce_https=False`), never to any other host.

Hand-written: the retry is tenacity's; the rest is one SDK call and its checks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.cognitiveservices.aio import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import (
    Deployment,
    DeploymentModel,
    DeploymentProperties,
    Sku,
)

from shared.finetune.backends.azure_openai import DEFAULT_RETRY, RetrySettings
from shared.finetune.backends.port import (
    BackendError,
    ServedModel,
    TrainedModel,
    TrainingSpec,
)
from shared.inference.model_errors import retry_after_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")

KIND: Final = "azure_openai"
ENDPOINT_REF: Final = "${AZURE_OPENAI_ENDPOINT}"
MODEL_FORMAT: Final = "OpenAI"
MODEL_VERSION: Final = "1"
_TRANSIENT_STATUS: Final = frozenset({408, 409, 429})
_AUTH_STATUS: Final = frozenset({401, 403})
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def is_transient(error: BaseException) -> bool:
    """Worth another try: no connection or no answer, or HTTP 408, 409, 429 or 5xx."""
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        return error.status_code in _TRANSIENT_STATUS or error.status_code >= 500
    return False


def _status(error: AzureError) -> int | None:
    return error.status_code if isinstance(error, HttpResponseError) else None


def _retry_hint(error: BaseException | None) -> float | None:
    if isinstance(error, HttpResponseError) and error.response is not None:
        headers = getattr(error.response, "headers", None) or {}
        return retry_after_seconds(dict(headers))
    return None


def _loopback_http(url: str | None) -> bool:
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK


class AzureOpenAIDeployer:
    """The `ModelDeployer` for Azure OpenAI fine-tuned models (see the module docstring)."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        subscription_id: str,
        resource_group: str,
        account_name: str,
        *,
        capacity: int = 1,
        sku: str = "Standard",
        base_url: str | None = None,
        endpoint: str = ENDPOINT_REF,
        retry: RetrySettings = DEFAULT_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CognitiveServicesManagementClient | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity is in units of 1,000 TPM and at least 1")
        self._resource_group = resource_group
        self._account = account_name
        self._capacity = capacity
        self._sku = sku
        self._endpoint = endpoint
        self._retry = retry
        self._sleep = sleep
        options: dict[str, Any] = {"retry_total": 0}
        if base_url:
            options["base_url"] = base_url
        self._client = client or CognitiveServicesManagementClient(
            credential, subscription_id, **options
        )
        # Bearer tokens over plain http only to the local simulator.
        self._call_options: dict[str, Any] = (
            {"enforce_https": False} if _loopback_http(base_url) else {}
        )

    async def close(self) -> None:
        await self._client.close()

    async def deploy(
        self, model: TrainedModel, *, deployment: str, spec: TrainingSpec
    ) -> ServedModel:
        served = ServedModel(kind=KIND, model=deployment, endpoint=self._endpoint)
        existing = await self._call(f"read deployment {deployment}", lambda: self._get(deployment))
        if existing is not None:
            current = _model_name(existing)
            if current == model.model:
                return served
            raise BackendError(
                f"deployment {deployment} already serves {current or 'another model'}, "
                f"not {model.model}"
            )
        created = await self._call(
            f"create deployment {deployment}", lambda: self._create(deployment, model.model)
        )
        state = created.properties.provisioning_state if created.properties else None
        if state is not None and str(state) != "Succeeded":
            raise BackendError(
                f"deployment {deployment} ended {state}", retryable=str(state) != "Failed"
            )
        log.info(
            "deployed %s as %s for %s (job %s)",
            model.model,
            deployment,
            spec.tenant_id,
            spec.job_id,
        )
        return served

    async def _get(self, deployment: str) -> Deployment | None:
        try:
            return await self._client.deployments.get(
                self._resource_group, self._account, deployment, **self._call_options
            )
        except ResourceNotFoundError:
            return None

    async def _create(self, deployment: str, model_name: str) -> Deployment:
        body = Deployment(
            sku=Sku(name=self._sku, capacity=self._capacity),
            properties=DeploymentProperties(
                model=DeploymentModel(format=MODEL_FORMAT, name=model_name, version=MODEL_VERSION)
            ),
        )
        poller = await self._client.deployments.begin_create_or_update(
            self._resource_group, self._account, deployment, body, **self._call_options
        )
        return await poller.result()

    # ---- retry ---------------------------------------------------------------------------

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        retrying = self._retry.retrying(retry_on=is_transient, hint=_retry_hint, sleep=self._sleep)
        try:
            async for attempt in retrying:
                with attempt:
                    return await operation()
        except AzureError as exc:
            status = _status(exc)
            retryable = is_transient(exc) or status in _AUTH_STATUS
            code = getattr(getattr(exc, "error", None), "code", None)
            shown = f"HTTP {status}" if status is not None else type(exc).__name__
            if code:
                shown += f" ({code})"
            message = getattr(exc, "message", None) or str(exc)
            raise BackendError(f"ARM {what}: {shown}: {message}", retryable=retryable) from exc
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover


def _model_name(deployment: Deployment) -> str | None:
    properties = deployment.properties
    model = properties.model if properties is not None else None
    return model.name if model is not None else None
