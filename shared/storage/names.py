"""Names of the queues and blob containers the code uses.

Bicep declares exactly these (a contract test reads this module), so they live in one place.
"""

from __future__ import annotations

from typing import Final

INFERENCE_REQUESTS: Final = "inference-requests"
INFERENCE_RESULTS: Final = "inference-results"
FEEDBACK: Final = "feedback"
FINETUNE_JOBS: Final = "finetune-jobs"

QUEUES: Final = (INFERENCE_REQUESTS, INFERENCE_RESULTS, FEEDBACK, FINETUNE_JOBS)

# Queues the app reads: a tenant's reply_to may never name one (a reply must not become a request).
INPUT_QUEUES: Final = (INFERENCE_REQUESTS, FEEDBACK, FINETUNE_JOBS)

# The app setting (prefix) that holds the Service Bus connection, as the trigger binding names it.
SERVICEBUS_CONNECTION: Final = "ServiceBusConnection"
# The app setting (prefix) of the storage account a blob trigger watches (the host storage).
STORAGE_CONNECTION: Final = "AzureWebJobsStorage"

RESULTS_CONTAINER: Final = "results"
REJECTED_CONTAINER: Final = "rejected"
USAGE_CONTAINER: Final = "usage"
CONFIG_CONTAINER: Final = "config"
UPLOADS_CONTAINER: Final = "uploads"
# Kept for analysis and training, within each tenant's consent (shared.feedback.consent).
INFERENCE_LOG_CONTAINER: Final = "inference-log"
FEEDBACK_CONTAINER: Final = "feedback"
DRIFT_CONTAINER: Final = "drift"
TRAINING_CONTAINER: Final = "training"
# Batch uploads: one record per batch (shared.batch.record).
BATCHES_CONTAINER: Final = "batches"
# Fine-tuning: one record per job, the fleet's admission state (shared.finetune.jobs, admission).
JOBS_CONTAINER: Final = "jobs"
# Trained adapters and their metrics and lineage, per tenant (local runner; AML keeps its own).
MODELS_CONTAINER: Final = "models"

CONTAINERS: Final = (
    RESULTS_CONTAINER,
    REJECTED_CONTAINER,
    USAGE_CONTAINER,
    CONFIG_CONTAINER,
    UPLOADS_CONTAINER,
    INFERENCE_LOG_CONTAINER,
    FEEDBACK_CONTAINER,
    DRIFT_CONTAINER,
    TRAINING_CONTAINER,
    BATCHES_CONTAINER,
    JOBS_CONTAINER,
    MODELS_CONTAINER,
)

# Rejections of messages whose tenant is not known are filed under this prefix.
UNKNOWN_TENANT_PREFIX: Final = "_unknown"
