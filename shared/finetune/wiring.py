"""The fine-tuning backends the settings describe (`FINETUNE_BACKEND` and the names each needs).

- `local`: `LOCAL_TRAINING_RUNNER_URL` (devhost's job runner; it also deploys to the simulator);
- `azure_openai`: `AZURE_OPENAI_ENDPOINT` for files and fine-tuning jobs, and
  `AZURE_SUBSCRIPTION_ID`, `AZURE_RESOURCE_GROUP`, `AZURE_OPENAI_NAME` to deploy the
  result (ARM);
- `azure_ml`: `AZURE_SUBSCRIPTION_ID`, `AZURE_RESOURCE_GROUP`, `AZURE_ML_WORKSPACE_NAME`,
  `AZURE_ML_COMPUTE_NAME`.

Serving an Azure ML-trained adapter needs a managed online endpoint deployment (model, scoring
environment, instance type), which is not built: `NotServed` fails such a job at its deploy step
with that reason; the model stays registered in the workspace.

A backend whose settings are missing is simply not configured: a job that needs it is rejected
with the reason (`launcher.NoBackend`), and nothing else is affected.
"""

from __future__ import annotations

from azure.core.credentials_async import AsyncTokenCredential

from shared.finetune.backends.aoai_deployer import AzureOpenAIDeployer
from shared.finetune.backends.azure_openai import AzureOpenAIFineTuning
from shared.finetune.backends.port import (
    BackendError,
    ServedModel,
    TrainedModel,
    TrainingSpec,
)
from shared.finetune.launcher import Backend, Backends
from shared.settings import Settings
from shared.storage.blob_store import BlobStore


def backends_from_settings(
    settings: Settings, store: BlobStore, credential: AsyncTokenCredential | None
) -> Backends:
    configured: dict[str, Backend] = {}
    arm = (settings.azure_subscription_id, settings.azure_resource_group)
    if settings.azure_openai_endpoint and credential and settings.azure_openai_account_name:
        trainer = AzureOpenAIFineTuning.connect(
            settings.azure_openai_endpoint,
            store,
            credential=credential,
            api_version=settings.azure_openai_api_version,
        )
        if all(arm):
            deployer = AzureOpenAIDeployer(
                credential,
                settings.azure_subscription_id or "",
                settings.azure_resource_group or "",
                settings.azure_openai_account_name,
            )
            configured["azure_openai"] = Backend("azure_openai", trainer, deployer)
    workspace = (settings.azure_ml_workspace_name, settings.azure_ml_compute_name)
    if all(arm) and all(workspace) and settings.storage_blob_uri:
        # azure-ai-ml takes seconds to import: only an app that uses a workspace pays for it.
        from shared.finetune.backends.azure_ml import AzureMLBackend  # noqa: PLC0415

        aml = AzureMLBackend.connect(
            subscription_id=settings.azure_subscription_id or "",
            resource_group=settings.azure_resource_group or "",
            workspace=settings.azure_ml_workspace_name or "",
            managed_identity_client_id=settings.managed_identity_client_id,
            compute=settings.azure_ml_compute_name,
            blob_url=settings.storage_blob_uri,
            identity_client_id=settings.azure_ml_training_identity_client_id,
        )
        configured["azure_ml"] = Backend("azure_ml", aml, NotServed("azure_ml"))
    if settings.local_training_runner_url:
        from shared.finetune.backends.local_runner import LocalRunnerBackend  # noqa: PLC0415

        local = LocalRunnerBackend(settings.local_training_runner_url)
        configured["local"] = Backend("local", local, local)
    return Backends(configured, settings.finetune_backend)


class NotServed:
    """A deployer for a backend whose models this system cannot serve yet (see module doc)."""

    def __init__(self, backend: str) -> None:
        self._backend = backend

    async def deploy(
        self, model: TrainedModel, *, deployment: str, spec: TrainingSpec
    ) -> ServedModel:
        raise BackendError(
            f"{model.model} is registered in {self._backend}, but serving it needs a managed "
            "online endpoint deployment, which this system does not create yet"
        )
