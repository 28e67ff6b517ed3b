"""A fine-tune request's dataset: checked against its manifest, then split into train and held-out.

Checks (each failure is a `DatasetProblem` with a reason code the intake records):
- `dataset_missing`: the JSONL or its manifest is not in `training/`;
- `dataset_outside_tenant`: a `tenant`-scope dataset not under `training/<tenant>/`, or a manifest
  whose tenants differ from the request's `tenants_in_dataset`;
- `dataset_checksum_mismatch`: sha256 of the JSONL differs from the request's or the manifest's;
- `dataset_invalid`: a line that is not a chat example (`{"messages": [...]}` ending with an
  assistant turn);
- `dataset_too_small`: fewer than `MIN_TRAIN + MIN_HELD_OUT` examples.

Split: repeated examples (the same messages) count once; examples are grouped by their prompt
(every message but the final answer) and whole groups go to one side, so no held-out prompt is
trained on; groups are held out in the order of their prompt's sha256 (not their position) until
`held_out_share` of the examples is (at least `MIN_HELD_OUT`, at most `MAX_HELD_OUT`), so the
same dataset always splits the same way and a redelivered request writes
the same two blobs: `training/<tenant>/<dataset>.train.jsonl` and `.heldout.jsonl` (created once).
The held-out examples are never trained on; the gate scores candidates on them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from shared.contracts.finetune import FinetuneRequest
from shared.security.paths import UnsafeId, tenant_path
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
    """`training/<tenant>/<file>` as the name inside the training container, every segment a
    safe id (`shared.security.paths`): `fabrikam/../contoso/x.jsonl` starts with `fabrikam/`,
    and an HTTP stack that resolves dot segments would read contoso's blob."""
    prefix = f"{names.TRAINING_CONTAINER}/"
    name = blob[len(prefix) :] if blob.startswith(prefix) else blob
    owner, *rest = name.split("/")
    try:
        return tenant_path(owner, *rest)
    except UnsafeId as exc:
        raise DatasetProblem(
            "dataset_path_unsafe", f"the dataset's blob name is not a safe path ({exc.problem})"
        ) from None


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
    lines, prompts = _distinct_examples(blob.data)
    if len(lines) < MIN_TRAIN + MIN_HELD_OUT:
        raise DatasetProblem(
            "dataset_too_small",
            f"{len(lines)} distinct examples; at least {MIN_TRAIN + MIN_HELD_OUT} are needed "
            f"({MIN_TRAIN} to train, {MIN_HELD_OUT} held out)",
        )
    target = min(MAX_HELD_OUT, max(MIN_HELD_OUT, round(len(lines) * held_out_share)))
    target = min(target, len(lines) - MIN_TRAIN)
    held_out: set[int] = set()
    for prompt in sorted(set(prompts), key=lambda k: hashlib.sha256(k).hexdigest()):
        if len(held_out) >= target:
            break
        group = {i for i, p in enumerate(prompts) if p == prompt}
        if len(lines) - len(held_out) - len(group) >= MIN_TRAIN:
            held_out |= group
    if len(held_out) < MIN_HELD_OUT:
        raise DatasetProblem(
            "dataset_too_small",
            f"too few distinct prompts to hold {MIN_HELD_OUT} examples out and keep "
            f"{MIN_TRAIN} to train on",
        )
    held = len(held_out)
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


def _distinct_examples(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The dataset's lines without repeats (the same messages, however the JSON is spaced), in
    order, each with its prompt's key (every message but the final assistant turn). Raises
    DatasetProblem `dataset_invalid` naming the first line that is not a chat example."""
    lines: list[bytes] = []
    prompts: list[bytes] = []
    seen: set[bytes] = set()
    for number, line in enumerate((x for x in data.split(b"\n") if x.strip()), start=1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not _is_example(row):
            raise DatasetProblem("dataset_invalid", f"line {number} is not a chat example")
        messages = row["messages"]
        key = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")
        if key in seen:
            continue
        seen.add(key)
        lines.append(line.strip())
        prompts.append(json.dumps(messages[:-1], sort_keys=True, ensure_ascii=False).encode())
    return lines, prompts


async def read_rows(store: BlobStore, blob: str) -> list[dict[str, Any]]:
    """The JSON rows of `<container>/<name>` ([] when it is missing)."""
    container, _, name = blob.partition("/")
    found = await store.read(container, name)
    if found is None:
        return []
    return [json.loads(line) for line in found.data.split(b"\n") if line.strip()]
