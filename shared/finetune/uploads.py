"""Training data by upload: the blob trigger's handler (function_app.py calls it).

A tenant uploads chat examples as `uploads/<tenant_id>/training/<name>.jsonl`; the intake
(`shared.finetune.training_intake.TrainingUploads`, built once by the runtime as
`Runtime.training_uploads`) checks the file, scrubs its good rows into the tenant's training pool
(`shared.finetune.training_pool`), writes the bad rows' line numbers and reasons to
`rejected/<tenant>/training/<stem>.<upload_id>.jsonl`, and sends a `finetune.request` when the
tenant's policy asks for one. The row format and limits are in `shared.finetune.training_rows`;
docs/contracts.md ("Training data uploads") says it all in prose.

The intake lives in its own module because the runtime builds it: this module imports the
runtime, which imports the intake.
"""

from __future__ import annotations

from shared.runtime import Runtime, get_runtime
from shared.storage import names


async def handle_training_upload(blob_name: str, runtime: Runtime | None = None) -> None:
    """A blob under `uploads/<tenant>/training/`: `blob_name` as the trigger names it, with or
    without its container (`uploads/fabrikam/training/faq.jsonl` or `fabrikam/training/...`).

    Returns when the upload is filed (pooled, or refused with its rejection file written); the
    outcome is the record `training/<tenant>/uploads/<upload_id>.json`. Raises only for what a
    later try can fix (storage, the queue): the trigger's retry resumes where this one stopped
    and never pools a row twice."""
    rt = runtime if runtime is not None else get_runtime()
    name = blob_name.removeprefix(f"{names.UPLOADS_CONTAINER}/")
    await rt.training_uploads.take(name)
