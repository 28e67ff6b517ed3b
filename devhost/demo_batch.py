"""The demo's batch act: a tenant drops a JSONL file into `uploads`, watches a progress bar, and
gets a results file back in input order, with its bad rows in an errors file.

Played as a tenant would: upload with the real blob SDK, read progress from the progress endpoint
(`GET /api/tenants/{tenant}/batches/{batch_id}`, proving the tenant with its key) when the host's
URL is given, else from the batch record, then read both files and check that every row is in
exactly one of them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from devhost.tenant_keys import Signers, proven_headers
from shared.batch.record import BatchRecord
from shared.contracts.batch import BatchProgress, batch_id_for
from shared.security.sign import TenantSigner
from shared.storage import names

TENANT = "tailwind"
BAD_ROWS = ("{not json", '{"tenant_id": "contoso", "messages": [{"role": "user", "content": "x"}]}')


@dataclass
class BatchActResult:
    tenant: str
    batch_id: str = ""
    rows: int = 0
    bad_rows: int = 0
    seconds: float = 0.0
    progress: BatchProgress | None = None
    results: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)


def batch_file(rows: int) -> tuple[bytes, int]:
    """`rows` good rows with two bad ones among them; (the file, its bad row count)."""
    lines: list[str] = []
    for i in range(rows):
        lines.append(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": f"Summarise support ticket #{i}"}],
                    "parameters": {"max_tokens": 30},
                    "feature": "summary",
                }
            )
        )
        if i in (rows // 3, 2 * rows // 3):
            lines.append(BAD_ROWS[0] if i == rows // 3 else BAD_ROWS[1])
    return ("\n".join(lines) + "\n").encode(), len(BAD_ROWS)


async def batch_act(
    storage: str,
    *,
    http_url: str | None = None,
    rows: int = 40,
    timeout_s: float = 180.0,
    tenant: str = TENANT,
    signers: Signers | None = None,
) -> BatchActResult:
    """Upload, follow, check. `http_url`: the host's `/api` base, for the progress endpoint."""
    result = BatchActResult(tenant=tenant)
    data, result.bad_rows = batch_file(rows)
    result.rows = rows + result.bad_rows
    name = f"{tenant}/batch/demo-{uuid.uuid4().hex[:8]}.jsonl"
    started = time.monotonic()
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        uploaded = await blobs.get_blob_client(names.UPLOADS_CONTAINER, name).upload_blob(
            data, content_settings=ContentSettings(content_type="application/x-ndjson")
        )
        result.batch_id = batch_id_for(tenant, name, str(uploaded["etag"]))
        print(
            f"batch act ({tenant}): uploaded {names.UPLOADS_CONTAINER}/{name}, {result.rows} rows"
        )
        signer = signers(tenant) if signers is not None and http_url else None
        progress = await _follow(
            blobs, http_url, tenant, result.batch_id, started + timeout_s, signer=signer
        )
        result.seconds = time.monotonic() - started
        result.progress = progress
        if progress is None or progress.state != "completed":
            state = progress.state if progress else "no record"
            result.problems.append(f"the batch did not complete in {timeout_s:.0f} s ({state})")
            return result
        results = await _lines(blobs, progress.results_blob)
        errors = await _lines(blobs, progress.errors_blob)
    result.results, result.errors = len(results), len(errors)
    lines = sorted([r["line"] for r in results] + [e["line"] for e in errors])
    if lines != list(range(1, result.rows + 1)):
        result.problems.append("not every row is in exactly one of the results and errors files")
    if [r["line"] for r in results] != sorted(r["line"] for r in results):
        result.problems.append("the results are not in input order")
    if len(errors) != result.bad_rows:
        result.problems.append(f"{len(errors)} rows in the errors file, {result.bad_rows} expected")
    return result


async def _follow(
    blobs: BlobServiceClient,
    http_url: str | None,
    tenant: str,
    batch_id: str,
    deadline: float,
    *,
    signer: TenantSigner | None = None,
) -> BatchProgress | None:
    width = 40
    progress: BatchProgress | None = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            progress = await _progress(blobs, http, http_url, tenant, batch_id, signer=signer)
            if progress is not None:
                total = max(progress.counts.rows, 1)
                settled = progress.done + progress.failed
                filled = int(width * settled / total)
                sys.stderr.write(
                    f"\r  [{'#' * filled}{'.' * (width - filled)}] {settled}/{total} rows "
                    f"(done {progress.done}, failed {progress.failed}, pending "
                    f"{progress.pending}) {progress.state}   "
                )
                sys.stderr.flush()
                if progress.state in ("completed", "rejected"):
                    break
            await asyncio.sleep(0.5)
    sys.stderr.write("\n")
    return progress


async def _progress(
    blobs: BlobServiceClient,
    http: aiohttp.ClientSession,
    http_url: str | None,
    tenant: str,
    batch_id: str,
    *,
    signer: TenantSigner | None = None,
) -> BatchProgress | None:
    if http_url:
        url = f"{http_url.rstrip('/')}/tenants/{tenant}/batches/{batch_id}"
        headers = proven_headers(signer, "GET", url) if signer is not None else {}
        try:
            async with http.get(url, headers=headers) as response:
                if response.status == 200:
                    return BatchProgress.model_validate_json(await response.read())
                return None
        except aiohttp.ClientError:
            return None
    record = blobs.get_blob_client(names.BATCHES_CONTAINER, f"{tenant}/{batch_id}.json")
    if not await record.exists():
        return None
    body = await (await record.download_blob()).readall()
    return BatchRecord.model_validate_json(body).progress()


async def _lines(blobs: BlobServiceClient, path: str | None) -> list[dict[str, Any]]:
    if not path:
        return []
    container, name = path.split("/", 1)
    data = await (await blobs.get_blob_client(container, name).download_blob()).readall()
    return [json.loads(line) for line in data.decode().splitlines() if line]


def describe(result: BatchActResult) -> list[str]:
    """The act as the demo prints it."""
    progress = result.progress
    if progress is None:
        return [f"batch act ({result.tenant}): no progress seen"]
    rate = (progress.done + progress.failed) / result.seconds if result.seconds else 0.0
    return [
        f"batch act ({result.tenant}): batch {result.batch_id} {progress.state} in "
        f"{result.seconds:.1f} s ({rate:.1f} rows/s, paced to half the tenant's quota): "
        f"{progress.done} done, {progress.failed} failed, {progress.pending} pending",
        f"  {result.results} lines in {progress.results_blob or '-'} (input order)",
        f"  {result.errors} lines in {progress.errors_blob or '-'} (line number and reason each)",
    ]
