"""One typed settings object, read from the Function app's app settings (environment variables).

The names are the ones Bicep sets and `local.settings.json` uses; the infra contract test reads
the aliases below. Each connection has two forms, as the Functions runtime itself has: a connection
string (local stack) or identity-based `__fullyQualifiedNamespace` / `__blobServiceUri` (Azure).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)

    servicebus_connection_string: str | None = Field(
        default=None, validation_alias=AliasChoices("ServiceBusConnection")
    )
    servicebus_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ServiceBusConnection__fullyQualifiedNamespace"),
    )
    storage_connection_string: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage")
    )
    storage_blob_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__blobServiceUri")
    )
    managed_identity_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_CLIENT_ID")
    )
    tenant_registry: str = Field(
        default="blob://config/registry.json",
        validation_alias=AliasChoices("TENANT_REGISTRY"),
        description="a file path, or blob://<container>/<name> in the app's storage account",
    )
    azure_openai_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_OPENAI_ENDPOINT")
    )
    azure_ai_services_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_AI_SERVICES_ENDPOINT")
    )
    azure_openai_api_version: str = Field(
        default="2024-10-21", validation_alias=AliasChoices("AZURE_OPENAI_API_VERSION")
    )
    model_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_API_KEY"),
        description="local simulator only; in Azure the managed identity is used",
    )
    tenant_registry_refresh_seconds: float = Field(
        default=60.0,
        ge=0,
        validation_alias=AliasChoices("TENANT_REGISTRY_REFRESH_SECONDS"),
        description="how long a loaded registry is used before it is read again (0: every call)",
    )
    model_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("MODEL_TIMEOUT_SECONDS"),
        description="the time limit of one model call (the SDKs' own retries are off)",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL"),
        description=(
            "the shared store of tenant quota counters: redis://host:port/0 locally, "
            "rediss://<host>:10000 (Entra ID auth) in Azure; unset: per-instance limits"
        ),
    )

    script_root: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsScriptRoot"),
        description="the app's folder (host.json); set by the Functions host, else this checkout",
    )
    resilience_max_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        validation_alias=AliasChoices("RESILIENCE_MAX_WAIT_SECONDS"),
        description="the longest in-process wait before a retry; longer waits reschedule",
    )
    resilience_max_attempts: int = Field(
        default=8, ge=1, validation_alias=AliasChoices("RESILIENCE_MAX_ATTEMPTS")
    )
    reschedule_deadline_seconds: float = Field(
        default=900.0,
        gt=0,
        validation_alias=AliasChoices("RESCHEDULE_DEADLINE_SECONDS"),
        description="from a request's first enqueue to a failed result, when it cannot be served",
    )
    reschedule_max_attempts: int = Field(
        default=50, ge=0, validation_alias=AliasChoices("RESCHEDULE_MAX_ATTEMPTS")
    )
    model_default_max_tokens: int = Field(
        default=256,
        ge=1,
        validation_alias=AliasChoices("MODEL_DEFAULT_MAX_TOKENS"),
        description="what a deployment is assumed to charge a request that sets no max_tokens",
    )
    batch_max_upload_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        validation_alias=AliasChoices("BATCH_MAX_UPLOAD_BYTES"),
        description="a batch upload larger than this is refused whole, before it is read",
    )
    batch_quota_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        validation_alias=AliasChoices("BATCH_QUOTA_SHARE"),
        description="the part of a tenant's per-minute quota its batch rows may use; the rest "
        "is kept for its interactive requests",
    )
    drift_check_every: int = Field(
        default=50,
        ge=1,
        validation_alias=AliasChoices("DRIFT_CHECK_EVERY"),
        description="a drift evaluation runs after every this many first ratings of a model "
        "version (and on the drift timer)",
    )
    drift_window_days: int = Field(
        default=30,
        ge=1,
        le=365,
        validation_alias=AliasChoices("DRIFT_WINDOW_DAYS"),
        description="days of feedback and inference log a training set is built from",
    )

    finetune_backend: str = Field(
        default="auto",
        pattern=r"^(auto|azure_openai|azure_ml|local)$",
        validation_alias=AliasChoices("FINETUNE_BACKEND"),
        description="where fine-tuning jobs run: auto (by the base deployment's kind: "
        "azure_openai -> Azure OpenAI fine-tuning, ai_inference -> Azure ML), or one backend",
    )
    finetune_max_running_jobs: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("FINETUNE_MAX_RUNNING_JOBS"),
        description="fine-tuning jobs on the GPU at once (the GPU cluster's max nodes)",
    )
    finetune_judge_deployment: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FINETUNE_JUDGE_DEPLOYMENT"),
        description="the registry deployment (purpose: evaluation) that scores candidates; "
        "unset: token F1 against the reference answers",
    )
    finetune_gate_margin: float = Field(
        default=0.05,
        ge=0,
        le=1,
        validation_alias=AliasChoices("FINETUNE_GATE_MARGIN"),
        description="how much better (score 0..1) a candidate must be to be promoted",
    )
    finetune_gate_confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        validation_alias=AliasChoices("FINETUNE_GATE_CONFIDENCE"),
        description="the confidence of the paired bootstrap's lower bound",
    )
    local_training_runner_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LOCAL_TRAINING_RUNNER_URL"),
        description="devhost only: the job runner that stands in for Azure ML",
    )
    azure_subscription_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_SUBSCRIPTION_ID")
    )
    azure_resource_group: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_RESOURCE_GROUP")
    )
    azure_openai_account_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_OPENAI_NAME"),
        description="the Azure OpenAI account fine-tuned models are deployed on (ARM)",
    )
    azure_ml_workspace_name: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_ML_WORKSPACE_NAME")
    )
    azure_ml_compute_name: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_ML_COMPUTE_NAME")
    )
    azure_ml_training_identity_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_ML_TRAINING_IDENTITY_CLIENT_ID"),
        description="the GPU cluster's identity: the training job reads its data with it",
    )
    content_safety_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CONTENT_SAFETY_ENDPOINT"),
        description="Azure AI Content Safety (an AI Services or Content Safety endpoint) for the "
        "deployments whose registry entry has content_safety: true "
        "(shared/security/content_safety.py); unset: such deployments are not called",
    )
    tenant_proof: str = Field(
        default="required",
        pattern=r"^(required|off)$",
        validation_alias=AliasChoices("TENANT_PROOF"),
        description="required: a message or HTTP request that does not prove the tenant it names "
        "(HMAC, shared/security/proof.py) is refused; off: nothing is checked (tests only)",
    )
    key_vault_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_KEY_VAULT_ENDPOINT"),
        description="the Key Vault holding each tenant's proof keys (secret tenant-key-<id>), "
        "read with the managed identity",
    )
    tenant_keys_file: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TENANT_KEYS_FILE"),
        description="devhost only: the local secrets file of tenant proof keys",
    )
    tenant_key_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        validation_alias=AliasChoices("TENANT_KEY_CACHE_SECONDS"),
        description="how long a tenant's key ring is used before it is read again (a retired "
        "key stops working within this time; an unknown key id is looked up at once)",
    )


# Settings that Azure sets optionally or that only the local stack uses; the infra contract test
# accepts their absence from the Bicep app settings.
OPTIONAL_IN_AZURE: frozenset[str] = frozenset(
    {
        "ServiceBusConnection",
        "AzureWebJobsStorage",
        "MODEL_API_KEY",
        "AZURE_AI_SERVICES_ENDPOINT",
        "TENANT_REGISTRY_REFRESH_SECONDS",
        "MODEL_TIMEOUT_SECONDS",
        "AzureWebJobsScriptRoot",
        "RESILIENCE_MAX_WAIT_SECONDS",
        "RESILIENCE_MAX_ATTEMPTS",
        "RESCHEDULE_DEADLINE_SECONDS",
        "RESCHEDULE_MAX_ATTEMPTS",
        "MODEL_DEFAULT_MAX_TOKENS",
        "BATCH_MAX_UPLOAD_BYTES",
        "BATCH_QUOTA_SHARE",
        "DRIFT_CHECK_EVERY",
        "DRIFT_WINDOW_DAYS",
        "FINETUNE_BACKEND",
        "FINETUNE_MAX_RUNNING_JOBS",
        "FINETUNE_JUDGE_DEPLOYMENT",
        "FINETUNE_GATE_MARGIN",
        "FINETUNE_GATE_CONFIDENCE",
        "LOCAL_TRAINING_RUNNER_URL",
        "CONTENT_SAFETY_ENDPOINT",
        "TENANT_KEYS_FILE",
        "TENANT_KEY_CACHE_SECONDS",
    }
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Built once, lazily (never at import): tests clear the cache and set the environment."""
    return Settings()
