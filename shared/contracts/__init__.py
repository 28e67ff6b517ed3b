"""What tenants send and get back, one module per contract.

`inference` holds `inference.request` / `inference.result` / `inference.rejected` v1 and the helpers
every contract shares; its names are re-exported here, so `shared.contracts.X` names them.
`feedback` holds `feedback` v1 and the stored feedback record; `finetune` the `finetune.request`
that drift detection sends; `batch` the batch upload's files and progress (`batch.result`,
`batch.error`, `batch.progress`).
"""

from shared.contracts.batch import (
    BATCH_ERROR_TYPE,
    BATCH_PROGRESS_TYPE,
    BATCH_RESULT_TYPE,
    BatchCounts,
    BatchProgress,
    BatchRejection,
    BatchResultLine,
    BatchRowError,
    parse_batch_row,
)
from shared.contracts.feedback import (
    FEEDBACK_TYPE,
    Feedback,
    FeedbackReason,
    FeedbackRecord,
    parse_feedback,
)
from shared.contracts.finetune import FINETUNE_REQUEST_TYPE, FinetuneRequest
from shared.contracts.inference import (
    CONTRACT_VERSION,
    LABEL_PATTERN,
    REJECTED_TYPE,
    REQUEST_ID_PATTERN,
    REQUEST_TYPE,
    RESULT_TYPE,
    TENANT_ID_PATTERN,
    ChatMessage,
    ContractError,
    Failure,
    FailureReason,
    InferenceParameters,
    InferenceRequest,
    InferenceResult,
    RejectionReason,
    RejectionRecord,
    TokenUsage,
    UsageRecord,
    error_location,
    format_validation_error,
    parse_inference_request,
)

__all__ = [
    "BATCH_ERROR_TYPE",
    "BATCH_PROGRESS_TYPE",
    "BATCH_RESULT_TYPE",
    "CONTRACT_VERSION",
    "FEEDBACK_TYPE",
    "FINETUNE_REQUEST_TYPE",
    "LABEL_PATTERN",
    "REJECTED_TYPE",
    "REQUEST_ID_PATTERN",
    "REQUEST_TYPE",
    "RESULT_TYPE",
    "TENANT_ID_PATTERN",
    "BatchCounts",
    "BatchProgress",
    "BatchRejection",
    "BatchResultLine",
    "BatchRowError",
    "ChatMessage",
    "ContractError",
    "Failure",
    "FailureReason",
    "Feedback",
    "FeedbackReason",
    "FeedbackRecord",
    "FinetuneRequest",
    "InferenceParameters",
    "InferenceRequest",
    "InferenceResult",
    "RejectionReason",
    "RejectionRecord",
    "TokenUsage",
    "UsageRecord",
    "error_location",
    "format_validation_error",
    "parse_batch_row",
    "parse_feedback",
    "parse_inference_request",
]
