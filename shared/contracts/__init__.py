"""What tenants send and get back, one module per contract.

`inference` holds `inference.request` / `inference.result` / `inference.rejected` v1 and the helpers
every contract shares; its names are re-exported here, so `shared.contracts.X` names them.
"""

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
    "CONTRACT_VERSION",
    "LABEL_PATTERN",
    "REJECTED_TYPE",
    "REQUEST_ID_PATTERN",
    "REQUEST_TYPE",
    "RESULT_TYPE",
    "TENANT_ID_PATTERN",
    "ChatMessage",
    "ContractError",
    "Failure",
    "FailureReason",
    "InferenceParameters",
    "InferenceRequest",
    "InferenceResult",
    "RejectionReason",
    "RejectionRecord",
    "TokenUsage",
    "UsageRecord",
    "error_location",
    "format_validation_error",
    "parse_inference_request",
]
