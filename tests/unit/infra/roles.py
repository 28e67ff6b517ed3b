"""Built-in Azure role definition ids the infra tests name (from the Azure built-in roles list)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

SERVICE_BUS_DATA_RECEIVER: Final = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
SERVICE_BUS_DATA_SENDER: Final = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
STORAGE_BLOB_DATA_CONTRIBUTOR: Final = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_READER: Final = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_QUEUE_DATA_CONTRIBUTOR: Final = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR: Final = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
SERVICE_BUS_DATA_OWNER: Final = "090c5cfd-751d-490a-894a-3ce6f1109419"
COGNITIVE_SERVICES_OPENAI_USER: Final = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
COGNITIVE_SERVICES_USER: Final = "a97b65f3-24c7-4388-baec-2e87135dc908"
COGNITIVE_SERVICES_OPENAI_CONTRIBUTOR: Final = "a001fd3d-188f-4b5d-821b-7da978bf7442"
MONITORING_METRICS_PUBLISHER: Final = "3913510d-42f4-4e42-8a64-420c390055eb"
AZUREML_DATA_SCIENTIST: Final = "f6c7c914-8db3-469d-8ca1-694a8f32e121"
ACR_PULL: Final = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
KEY_VAULT_SECRETS_USER: Final = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER: Final = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"

# Every role this system may assign: data-plane roles, or narrowly scoped ones.
ALLOWED: Mapping[str, str] = {
    SERVICE_BUS_DATA_RECEIVER: "Azure Service Bus Data Receiver",
    SERVICE_BUS_DATA_SENDER: "Azure Service Bus Data Sender",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Storage Blob Data Contributor",
    STORAGE_BLOB_DATA_READER: "Storage Blob Data Reader",
    STORAGE_QUEUE_DATA_CONTRIBUTOR: "Storage Queue Data Contributor",
    STORAGE_TABLE_DATA_CONTRIBUTOR: "Storage Table Data Contributor",
    # Only on a queue a function triggers on, for the scale controller (see QUEUE_SCOPED_ONLY).
    SERVICE_BUS_DATA_OWNER: "Azure Service Bus Data Owner",
    COGNITIVE_SERVICES_OPENAI_USER: "Cognitive Services OpenAI User",
    COGNITIVE_SERVICES_USER: "Cognitive Services User",
    # Only on the Azure OpenAI account, for fine-tuning (see ACCOUNT_SCOPED_ONLY).
    COGNITIVE_SERVICES_OPENAI_CONTRIBUTOR: "Cognitive Services OpenAI Contributor",
    MONITORING_METRICS_PUBLISHER: "Monitoring Metrics Publisher",
    AZUREML_DATA_SCIENTIST: "AzureML Data Scientist",
    ACR_PULL: "AcrPull",
    # Tenant proof keys (shared/security/keys.py), on the tenant key vault only (VAULT_SCOPED_ONLY):
    # the app reads secret values, the operator who onboards tenants writes them. Neither manages
    # the vault or its access (Key Vault Administrator stays forbidden).
    KEY_VAULT_SECRETS_USER: "Key Vault Secrets User",
    KEY_VAULT_SECRETS_OFFICER: "Key Vault Secrets Officer",
}

# Roles allowed only on the tenant key vault (module, param), each for one principal.
VAULT_SCOPED_ONLY: Mapping[str, tuple[str, str, str]] = {
    KEY_VAULT_SECRETS_USER: ("tenantKeys", "roleAssignments", "appIdentity"),
    KEY_VAULT_SECRETS_OFFICER: ("tenantKeys", "roleAssignments", "principalId"),
}

# Roles never to be assigned: they manage resources or access, or own the data.
FORBIDDEN: Mapping[str, str] = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-925d-4f14568abc8a": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68": "Cognitive Services Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
}

# Roles allowed only on a single queue (never on the namespace): the test names the queues.
QUEUE_SCOPED_ONLY: Mapping[str, str] = {
    SERVICE_BUS_DATA_OWNER: "Azure Service Bus Data Owner",
}

# Roles allowed only on the one account named (module, param): Azure OpenAI fine-tuning uploads
# files, runs jobs and deploys their results on the app's own Azure OpenAI account.
ACCOUNT_SCOPED_ONLY: Mapping[str, tuple[str, str]] = {
    COGNITIVE_SERVICES_OPENAI_CONTRIBUTOR: ("openAi", "roleAssignments"),
}
