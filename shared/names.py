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

RESULTS_CONTAINER: Final = "results"
REJECTED_CONTAINER: Final = "rejected"
USAGE_CONTAINER: Final = "usage"
CONFIG_CONTAINER: Final = "config"
UPLOADS_CONTAINER: Final = "uploads"

CONTAINERS: Final = (
    RESULTS_CONTAINER,
    REJECTED_CONTAINER,
    USAGE_CONTAINER,
    CONFIG_CONTAINER,
    UPLOADS_CONTAINER,
)
