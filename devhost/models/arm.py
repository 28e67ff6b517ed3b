"""Azure OpenAI deployments as Azure Resource Manager serves them (azure-mgmt-cognitiveservices).

    PUT|GET|DELETE /subscriptions/{sub}/resourceGroups/{rg}/providers/
        Microsoft.CognitiveServices/accounts/{account}/deployments/{name}?api-version=...
    GET            .../accounts/{account}/deployments?api-version=...

PUT body (the SDK's `Deployment` model):

    {"sku": {"name": "Standard", "capacity": 10},
     "properties": {"model": {"format": "OpenAI", "name": "<model>", "version": "1"}}}

The answer is the deployment resource, `provisioningState: Succeeded` at once (201 when new, 200
when replaced, no `Azure-AsyncOperation` header), so the SDK's long-running-operation poller
finishes on the first response. `properties.model.name` is a fine-tuned model of a succeeded job
(the deployment is then tuned from that job's base, devhost/models/quality.py) or a base model some
deployment serves (the new one copies that deployment's qualities); anything else is a 400
`DeploymentModelNotSupported`. `sku.capacity` is in units of 1,000 tokens per minute, as Standard
deployments count it. The subscription, resource group and account in the path are not checked:
the simulator is one account. Errors are ARM's shape, `{"error": {"code", "message"}}`.

Authentication stands in for Entra ID at ARM: any non-empty `Authorization: Bearer` token.

Hand-written: the resource is a handful of fields, built from the SDK's model definitions
(azure.mgmt.cognitiveservices.models.Deployment, DeploymentProperties, DeploymentModel, Sku).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from devhost.models.config import DeploymentConfig
from devhost.models.finetuning import ApiError

RESOURCE_TYPE: Final = "Microsoft.CognitiveServices/accounts/deployments"
TPM_PER_CAPACITY: Final = 1000
SKU_NAMES: Final = frozenset(
    {"Standard", "GlobalStandard", "DataZoneStandard", "ProvisionedManaged", "Developer"}
)


@dataclass(frozen=True, slots=True)
class ArmDeployment:
    """What a PUT asked for; kept to answer GETs as it was written."""

    sku_name: str
    capacity: int
    model_format: str
    model_name: str
    model_version: str
    created_at: str


def parse_put(body: object) -> ArmDeployment:
    """The deployment a PUT body asks for; ApiError 400 naming the bad field."""
    if not isinstance(body, Mapping):
        raise _invalid("The request body must be a JSON object.")
    sku = body.get("sku") or {"name": "Standard", "capacity": 1}
    properties = body.get("properties")
    if not isinstance(sku, Mapping) or not isinstance(properties, Mapping):
        raise _invalid("'sku' and 'properties' must be objects.")
    model = properties.get("model")
    if not isinstance(model, Mapping):
        raise _invalid("'properties.model' is required.")
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid("'properties.model.name' is required.")
    sku_name = sku.get("name", "Standard")
    if sku_name not in SKU_NAMES:
        raise _invalid(f"'sku.name' must be one of {', '.join(sorted(SKU_NAMES))}.")
    capacity = sku.get("capacity", 1)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise _invalid("'sku.capacity' must be an integer of at least 1.")
    return ArmDeployment(
        sku_name=str(sku_name),
        capacity=capacity,
        model_format=str(model.get("format") or "OpenAI"),
        model_name=name,
        model_version=str(model.get("version") or "1"),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )


def implied(config: DeploymentConfig) -> ArmDeployment:
    """How a deployment from the config file looks at ARM."""
    return ArmDeployment(
        sku_name="Standard",
        capacity=max(1, math.ceil(config.tpm / TPM_PER_CAPACITY)),
        model_format="OpenAI" if config.kind == "azure_openai" else "Microsoft",
        model_name=config.model,
        model_version="1",
        created_at="2024-01-01T00:00:00.000000Z",
    )


def resource(path: str, name: str, arm: ArmDeployment, config: DeploymentConfig) -> dict[str, Any]:
    """The deployment resource as ARM returns it (`path` is its id, without the query)."""
    tpm = config.tpm
    return {
        "id": path,
        "name": name,
        "type": RESOURCE_TYPE,
        "sku": {"name": arm.sku_name, "capacity": arm.capacity},
        "systemData": {
            "createdAt": arm.created_at,
            "createdBy": "devhost",
            "createdByType": "Application",
            "lastModifiedAt": arm.created_at,
            "lastModifiedBy": "devhost",
            "lastModifiedByType": "Application",
        },
        "etag": f'"{_etag(name, arm)}"',
        "properties": {
            "model": {
                "format": arm.model_format,
                "name": arm.model_name,
                "version": arm.model_version,
            },
            "provisioningState": "Succeeded",
            "capabilities": {"chatCompletion": "true"},
            "rateLimits": [
                # Azure: 6 requests per minute per 1,000 TPM, counted per 10 seconds.
                {"key": "request", "renewalPeriod": 10, "count": max(1, tpm // 1000)},
                {"key": "token", "renewalPeriod": 60, "count": tpm},
            ],
            "versionUpgradeOption": "NoAutoUpgrade",
        },
    }


def _etag(name: str, arm: ArmDeployment) -> str:
    text = f"{name}|{arm.sku_name}|{arm.capacity}|{arm.model_name}|{arm.model_version}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidResourceProperties", message)


def model_not_supported(model: str) -> ApiError:
    return ApiError(
        400,
        "DeploymentModelNotSupported",
        f"The model 'Format:OpenAI,Name:{model}' is not supported: it is neither a fine-tuned "
        "model of a succeeded job nor a base model of this resource.",
    )


def not_found(name: str) -> ApiError:
    return ApiError(
        404,
        "DeploymentNotFound",
        f"The Resource '{RESOURCE_TYPE}/{name}' under this account was not found.",
    )
