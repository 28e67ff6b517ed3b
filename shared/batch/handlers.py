"""The batch functions' handlers: plain data in, plain data out (function_app.py calls these)."""

from __future__ import annotations

import json

from shared.batch.intake import Upload
from shared.contracts.batch import BatchProgress
from shared.runtime import Runtime, get_runtime
from shared.storage import names


async def handle_batch_upload(
    blob_path: str, runtime: Runtime | None = None
) -> BatchProgress | None:
    """A blob under `uploads/<tenant>/batch/`: `blob_path` as the trigger names it, with or
    without its container. Raises only for what a later try can fix (storage, the queue)."""
    rt = runtime if runtime is not None else get_runtime()
    name = blob_path.removeprefix(f"{names.UPLOADS_CONTAINER}/")
    return await rt.batches.take(Upload(name=name))


async def batch_progress_response(
    tenant_id: str, batch_id: str, runtime: Runtime | None = None
) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for `GET /api/tenants/{tenant_id}/batches/{batch_id}`: 200 and
    `batch.progress`, or 404 with the same answer for a batch that does not exist and one of
    another tenant (ids are not confirmed to exist by a different answer)."""
    rt = runtime if runtime is not None else get_runtime()
    progress = await rt.batches.progress(tenant_id, batch_id)
    if progress is None:
        body = {"error": "not_found", "detail": "no such batch for this tenant"}
        return 404, json.dumps(body).encode("utf-8")
    return 200, progress.model_dump_json().encode("utf-8")
