"""`finetune.request` v1: what drift detection sends to the `finetune-jobs` queue.

One message per confirmed drift event; its `message_id` is `job_key`, so Service Bus duplicate
detection and the job intake (idempotent by job key) both drop a repeat:

    {"type": "finetune.request", "version": 1, "job_key": "fabrikam.dft-3f2a...",
     "tenant_id": "fabrikam", "scope": "tenant",
     "base": {"deployment": "gpt-4o-mini-pool-a", "model": "gpt-4o-mini"},
     "current": {"deployment": "fabrikam-ft-v1", "model_version": "ft-1"},
     "dataset": {"blob": "training/fabrikam/ds-3f2a....jsonl",
                 "manifest": "training/fabrikam/ds-3f2a....manifest.json",
                 "sha256": "9c1e...", "examples": 412, "format": "chat-jsonl"},
     "reason": {"kind": "quality_drift", "report": "drift/fabrikam/20261130T101500Z.json",
                "summary": "quality fell from 0.86 to 0.58 ..."},
     "tenants_in_dataset": ["fabrikam"], "requested_at": "2026-11-30T10:15:00Z"}

`scope` is `tenant` (the tenant's own tuned model: only its data) or `shared` (a model other
tenants use: only tenants whose policy has `share_for_training`, listed in `tenants_in_dataset`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from shared.contracts.inference import REQUEST_ID_PATTERN, TENANT_ID_PATTERN, _Strict

FINETUNE_REQUEST_TYPE: Final = "finetune.request"
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"


class ModelRef(_Strict):
    deployment: str
    model: str | None = None
    model_version: str | None = None


class DatasetRef(_Strict):
    blob: str = Field(description="`training/<tenant>/<dataset_id>.jsonl` in the app's storage")
    manifest: str
    sha256: str = Field(pattern=SHA256_PATTERN)
    examples: int = Field(ge=1)
    format: Literal["chat-jsonl"] = "chat-jsonl"


class FinetuneReason(_Strict):
    kind: Literal["quality_drift", "input_drift", "operator", "training_upload"]
    report: str | None = Field(default=None, description="the drift report blob")
    summary: str = Field(max_length=2000)


class FinetuneRequest(_Strict):
    type: Literal["finetune.request"] = FINETUNE_REQUEST_TYPE
    version: Literal[1] = 1
    job_key: str = Field(pattern=REQUEST_ID_PATTERN)
    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    scope: Literal["tenant", "shared"]
    base: ModelRef
    current: ModelRef
    dataset: DatasetRef
    reason: FinetuneReason
    tenants_in_dataset: tuple[str, ...] = Field(min_length=1)
    requested_at: datetime
