"""A fine-tune request's dataset: checked against its manifest, then split into train and held-out.

Checks (each failure is a `DatasetProblem` with a reason code the intake records):
- `dataset_missing`: the JSONL or its manifest is not in `training/`;
- `dataset_outside_tenant`: a `tenant`-scope dataset not under `training/<tenant>/`, or a manifest
  whose tenants differ from the request's `tenants_in_dataset`;
- `dataset_checksum_mismatch`: sha256 of the JSONL differs from the request's or the manifest's;
- `dataset_invalid`: a line that is not a chat example (`{"messages": [...]}` ending with an
  assistant turn);
- `dataset_too_small`: fewer than `MIN_TRAIN + MIN_HELD_OUT` examples.

Split: every example goes to held-out or train by the sha256 of its line (not its position), the
`held_out_share` with the smallest hashes held out (at least `MIN_HELD_OUT`, at most
`MAX_HELD_OUT`), so the same dataset always splits the same way and a redelivered request writes
the same two blobs: `training/<tenant>/<dataset>.train.jsonl` and `.heldout.jsonl` (created once).
The held-out examples are never trained on; the gate scores candidates on them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from shared.contracts.finetune import FinetuneRequest
from shared.storage import names
from shared.storage.blob_store import BlobStore

MIN_TRAIN: Final = 10
"""Azure OpenAI fine-tuning needs at least 10 training examples."""
MIN_HELD_OUT: Final = 5
MAX_HELD_OUT: Final = 200
JSONL: Final = "application/x-ndjson"


class DatasetProblem(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SplitDataset:
    train_blob: str
    heldout_blob: str
    train_examples: int
    heldout_examples: int
    train_sha256: str


def _blob_path(blob: str) -> str:
    """`training/<tenant>/<file>` as the name inside the training container."""
    prefix = f"{names.TRAINING_CONTAINER}/"
    return blob[len(prefix) :] if blob.startswith(prefix) else blob


def _is_example(row: Any) -> bool:
    if not isinstance(row, dict):
        return False
    messages = row.get("messages")
    return (
        isinstance(messages, list)
        and len(messages) >= 2
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        and messages[-1].get("role") == "assistant"
    )


async def load_and_split(
    store: BlobStore, request: FinetuneRequest, *, held_out_share: float = 0.15
) -> SplitDataset:
    """Check the request's dataset and write its train and held-out parts (see module doc)."""
    name, manifest_name = _blob_path(request.dataset.blob), _blob_path(request.dataset.manifest)
    if request.scope == "tenant" and not (
        name.startswith(f"{request.tenant_id}/")
        and manifest_name.startswith(f"{request.tenant_id}/")
    ):
        raise DatasetProblem(
            "dataset_outside_tenant", "a tenant-scope dataset must be the tenant's own"
        )
    blob = await store.read(names.TRAINING_CONTAINER, name)
    manifest_blob = await store.read(names.TRAINING_CONTAINER, manifest_name)
    if blob is None or manifest_blob is None:
        raise DatasetProblem("dataset_missing", "the dataset or its manifest is not in storage")
    digest = hashlib.sha256(blob.data).hexdigest()
    try:
        manifest = json.loads(manifest_blob.data)
    except ValueError:
        raise DatasetProblem("dataset_invalid", "the manifest is not JSON") from None
    if digest != request.dataset.sha256 or manifest.get("sha256") != digest:
        raise DatasetProblem(
            "dataset_checksum_mismatch",
            "the dataset's sha256 differs from the request's or the manifest's",
        )
    if sorted(manifest.get("tenants", [])) != sorted(request.tenants_in_dataset):
        raise DatasetProblem(
            "dataset_outside_tenant", "the manifest's tenants differ from tenants_in_dataset"
        )
    lines = [line for line in blob.data.split(b"\n") if line.strip()]
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not _is_example(row):
            raise DatasetProblem("dataset_invalid", f"line {number} is not a chat example")
    if len(lines) < MIN_TRAIN + MIN_HELD_OUT:
        raise DatasetProblem(
            "dataset_too_small",
            f"{len(lines)} examples; at least {MIN_TRAIN + MIN_HELD_OUT} are needed "
            f"({MIN_TRAIN} to train, {MIN_HELD_OUT} held out)",
        )
    held = min(MAX_HELD_OUT, max(MIN_HELD_OUT, round(len(lines) * held_out_share)))
    held = min(held, len(lines) - MIN_TRAIN)
    ranked = sorted(range(len(lines)), key=lambda i: hashlib.sha256(lines[i]).hexdigest())
    held_out = set(ranked[:held])
    train = b"".join(lines[i] + b"\n" for i in range(len(lines)) if i not in held_out)
    heldout = b"".join(lines[i] + b"\n" for i in range(len(lines)) if i in held_out)
    stem = name.removesuffix(".jsonl")
    train_name, heldout_name = f"{stem}.train.jsonl", f"{stem}.heldout.jsonl"
    for part, data in ((train_name, train), (heldout_name, heldout)):
        await store.create(names.TRAINING_CONTAINER, part, data, content_type=JSONL)
    return SplitDataset(
        train_blob=f"{names.TRAINING_CONTAINER}/{train_name}",
        heldout_blob=f"{names.TRAINING_CONTAINER}/{heldout_name}",
        train_examples=len(lines) - held,
        heldout_examples=held,
        train_sha256=hashlib.sha256(train).hexdigest(),
    )


async def read_rows(store: BlobStore, blob: str) -> list[dict[str, Any]]:
    """The JSON rows of `<container>/<name>` ([] when it is missing)."""
    container, _, name = blob.partition("/")
    found = await store.read(container, name)
    if found is None:
        return []
    return [json.loads(line) for line in found.data.split(b"\n") if line.strip()]
