"""Batch uploads: a JSONL file of `inference.request` rows in, a JSONL file of results out.

docs/contracts.md ("Batch uploads") is the prose version of this module; keep the two in step.

- The tenant uploads `uploads/<tenant_id>/batch/<name>.jsonl`: one JSON object per line, each an
  `inference.request` whose `tenant_id` may be left out (the path's is used) and whose
  `request_id` may be left out (the row is named by its line). Blank lines are skipped.
- The batch's id is derived from the blob's name and ETag (`batch_id_for`): the same upload
  fired twice is one batch; the same name uploaded again (a new ETag) is a new one.
- Each valid row is sent to `inference-requests` as a request whose `request_id` and message id
  are `<batch_id>:<line>`; its result is `results/<tenant_id>/<batch_id>:<line>.json`.
- `batches/<tenant_id>/<batch_id>.json` is the batch record (`BatchProgress`, what the progress
  endpoint answers); `results/<tenant_id>/batches/<batch_id>.jsonl` holds one `BatchResultLine`
  per valid row, in input order, once every row has one; `.../<batch_id>.errors.jsonl` one
  `BatchRowError` per row refused at intake (line number and reason, never the row's text).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.inference import (
    CONTRACT_VERSION,
    REQUEST_TYPE,
    ContractError,
    InferenceRequest,
    InferenceResult,
    RejectionReason,
    RejectionRecord,
    decode_object,
    parse_inference_request,
)

BATCH_PROGRESS_TYPE: Final = "batch.progress"
BATCH_RESULT_TYPE: Final = "batch.result"
BATCH_ERROR_TYPE: Final = "batch.error"
BATCH_ID_PATTERN: Final = r"^b[0-9a-f]{24}$"

# Application properties that mark a request message as a batch row (lower priority).
BATCH_ID_PROPERTY: Final = "batch_id"
BATCH_LINE_PROPERTY: Final = "batch_line"
TRAFFIC_PROPERTY: Final = "traffic"
BATCH_TRAFFIC: Final = "batch"

BatchState = Literal["fanning_out", "running", "gathering", "completed", "rejected"]
RowStatus = Literal["succeeded", "failed", "filtered", "rejected"]


class BatchRejectionReason:
    """Why a whole upload was refused (the record's `rejection.reason`; nothing was sent)."""

    BAD_PATH: Final = "bad_path"
    UNKNOWN_TENANT: Final = "unknown_tenant"
    FILE_TOO_LARGE: Final = "file_too_large"
    EMPTY_FILE: Final = "empty_file"


class RowErrorReason:
    """Why one row was refused at intake (a `BatchRowError`'s `reason`)."""

    INVALID_JSON: Final = RejectionReason.INVALID_JSON
    INVALID_REQUEST: Final = RejectionReason.INVALID_REQUEST
    UNSUPPORTED_TYPE: Final = RejectionReason.UNSUPPORTED_TYPE
    UNSUPPORTED_VERSION: Final = RejectionReason.UNSUPPORTED_VERSION
    WRONG_TENANT: Final = "wrong_tenant"
    ROW_TOO_LARGE: Final = "row_too_large"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchRejection(_Strict):
    reason: str
    detail: str


class BatchCounts(_Strict):
    """`rows`: non-blank lines; `invalid`: refused at intake (in the errors file); `accepted`:
    sent for inference; of those `succeeded` and `failed` (a failed, filtered or rejected
    result) so far."""

    rows: int = Field(default=0, ge=0)
    invalid: int = Field(default=0, ge=0)
    accepted: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)


class BatchProgress(_Strict):
    """`batch.progress` v1: the batch record's public part, and the progress endpoint's answer.

    `done`: rows with an answer; `failed`: rows that ended without one (refused at intake, or a
    failed / rejected result); `pending`: the rest. `pending` is not final while `state` is
    `fanning_out` (rows are still being read)."""

    type: Literal["batch.progress"] = BATCH_PROGRESS_TYPE
    version: Literal[1] = CONTRACT_VERSION
    tenant_id: str
    batch_id: str
    source: str
    state: BatchState
    counts: BatchCounts
    done: int
    failed: int
    pending: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    results_blob: str | None = None
    errors_blob: str | None = None
    rejection: BatchRejection | None = None


class BatchRowError(_Strict):
    """`batch.error` v1: one line of `<batch_id>.errors.jsonl`: the row's line (1-based), why."""

    type: Literal["batch.error"] = BATCH_ERROR_TYPE
    line: int = Field(ge=1)
    reason: str
    detail: str


class BatchResultLine(_Strict):
    """`batch.result` v1: one line of `<batch_id>.jsonl` per accepted row, in input order.

    `succeeded` / `failed` / `filtered`: `result` is the row's `inference.result`; `rejected`:
    the model or the router refused it, `rejection` says why (`inference.rejected`)."""

    type: Literal["batch.result"] = BATCH_RESULT_TYPE
    line: int = Field(ge=1)
    request_id: str
    status: RowStatus
    result: InferenceResult | None = None
    rejection: RejectionRecord | None = None


def batch_id_for(tenant_id: str, blob_name: str, etag: str) -> str:
    """The batch of one version of one upload: the same (name, ETag) always gives the same id."""
    digest = hashlib.sha256(f"{tenant_id}\x00{blob_name}\x00{etag.strip(chr(34))}".encode())
    return "b" + digest.hexdigest()[:24]


def row_request_id(batch_id: str, line: int) -> str:
    """The request id (and message id) of a batch row: `<batch_id>:<line>`."""
    return f"{batch_id}:{line}"


def is_batch_id(value: str) -> bool:
    return re.fullmatch(BATCH_ID_PATTERN, value) is not None  # `$` of re.match takes a "\n"


def is_tenant_id(value: str) -> bool:
    """A well-formed tenant id (`shared.security.paths.check_tenant_id`: no look-alikes)."""
    # Imported here: shared.security.paths reads the contracts' id patterns.
    from shared.security.paths import UnsafeId, check_tenant_id  # noqa: PLC0415

    try:
        check_tenant_id(value)
    except UnsafeId:
        return False
    return True


def parse_batch_row(text: bytes, *, tenant_id: str, batch_id: str, line: int) -> InferenceRequest:
    """One row as the request that will be sent: `tenant_id` filled in from the path (a different
    one is `wrong_tenant`), `request_id` set to `<batch_id>:<line>`. Raises ContractError with a
    detail that names fields, never values."""
    document = decode_object(text, what="row")
    claimed = document.get("tenant_id")
    if claimed is not None and claimed != tenant_id:
        raise ContractError(
            RowErrorReason.WRONG_TENANT,
            "tenant_id differs from the tenant of the upload's path",
        )
    document = {**document, "tenant_id": tenant_id, "request_id": row_request_id(batch_id, line)}
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    try:
        encoded = body.encode("utf-8")
    except UnicodeEncodeError:
        encoded = json.dumps(document, separators=(",", ":")).encode("ascii")
    return parse_inference_request(encoded, {"type": REQUEST_TYPE})
