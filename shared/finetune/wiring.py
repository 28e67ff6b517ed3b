"""The fine-tuning backends the settings describe (`FINETUNE_BACKEND` and the names each needs).

- `local`: `LOCAL_TRAINING_RUNNER_URL` (devhost's job runner; it also deploys to the simulator);
- `azure_openai`: `AZURE_OPENAI_ENDPOINT` for files and fine-tuning jobs, and
  `AZURE_SUBSCRIPTION_ID`, `AZURE_RESOURCE_GROUP`, `AZURE_OPENAI_NAME` to deploy the
  result (ARM);
- `azure_ml`: `AZURE_SUBSCRIPTION_ID`, `AZURE_RESOURCE_GROUP`, `AZURE_ML_WORKSPACE_NAME`,
  `AZURE_ML_COMPUTE_NAME`.

A backend whose settings are missing is simply not configured: a job that needs it is rejected
with the reason (`launcher.NoBackend`), and nothing else is affected.
"""

from __future__ import annotations

from azure.core.credentials_async import AsyncTokenCredential

from shared.finetune.backends.aoai_deployer import AzureOpenAIDeployer
from shared.finetune.backends.azure_openai import AzureOpenAIFineTuning
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
    if settings.local_training_runner_url:
        from shared.finetune.backends.local_runner import LocalRunnerBackend  # noqa: PLC0415

        local = LocalRunnerBackend(settings.local_training_runner_url)
        configured["local"] = Backend("local", local, local)
    return Backends(configured, settings.finetune_backend)
