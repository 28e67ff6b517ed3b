"""End to end through devhost: batch uploads into Azurite, the host's blob trigger (the Event Grid
source, polled locally), the broker, the inference function, and the progress endpoint over HTTP.

Every row of a mixed file ends in the results file or the errors file, exactly once; a whole file
that cannot be a batch (an unknown tenant, an empty file) is refused without sending anything.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from devhost.stack import LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_headers
from shared.contracts.batch import BatchProgress, batch_id_for
from shared.storage import names
from tests.e2e.test_local_stack import unthrottled_models

pytestmark = pytest.mark.slow
ROWS = 30


def mixed_file() -> tuple[bytes, set[int]]:
    """ROWS good rows and four bad ones; (the file, the bad rows' line numbers)."""
    lines: list[str] = []
    bad: set[int] = set()
    for i in range(ROWS):
        doc: dict[str, Any] = {
            "messages": [{"role": "user", "content": f"Summarise ticket {i}"}],
            "parameters": {"max_tokens": 20},
        }
        if i % 2:
            doc["tenant_id"] = "tailwind"
        lines.append(json.dumps(doc))
        if i in (3, 11, 17, 25):
            lines.append(
                {
                    3: "{not json",
                    11: json.dumps({"tenant_id": "contoso", "messages": doc["messages"]}),
                    17: json.dumps({"messages": []}),
                    25: json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
                }[i]
            )
            bad.add(len(lines))
        if i == 20:
            lines.append("")
    return ("\n".join(lines) + "\n").encode(), bad


async def upload(storage: str, name: str, data: bytes) -> str:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        written = await blobs.get_blob_client(names.UPLOADS_CONTAINER, name).upload_blob(
            data, content_settings=ContentSettings(content_type="application/x-ndjson")
        )
    return batch_id_for(name.split("/", 1)[0], name, str(written["etag"]))


async def follow(
    api: str, tenant: str, batch_id: str, timeout_s: float, signers: Signers
) -> BatchProgress:
    url = f"{api}/tenants/{tenant}/batches/{batch_id}"
    seen: BatchProgress | None = None
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            headers = proven_headers(signers(tenant), "GET", url)  # a fresh nonce each time
            async with http.get(url, headers=headers) as response:
                if response.status == 200:
                    seen = BatchProgress.model_validate_json(await response.read())
                    if seen.state in ("completed", "rejected"):
                        return seen
            await asyncio.sleep(0.5)
    raise AssertionError(f"batch {batch_id} did not finish in {timeout_s} s: {seen}")


async def lines_of(storage: str, path: str | None) -> list[dict[str, Any]]:
    assert path is not None
    container, name = path.split("/", 1)
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        data = await (await blobs.get_blob_client(container, name).download_blob()).readall()
    return [json.loads(line) for line in data.decode().splitlines() if line]


async def record_exists(storage: str, name: str) -> bool:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        return bool(await blobs.get_blob_client(names.BATCHES_CONTAINER, name).exists())


async def scenario(stack: LocalStack) -> None:
    storage = stack.app_settings()["AzureWebJobsStorage"]
    api = f"http://127.0.0.1:{stack.http_port}/api"
    data, bad = mixed_file()
    batch_id = await upload(storage, f"tailwind/batch/e2e-{uuid.uuid4().hex[:8]}.jsonl", data)
    stranger = await upload(storage, "globex/batch/e2e.jsonl", data)
    empty = await upload(storage, "contoso/batch/empty.jsonl", b"")
    signers = Signers(stack.keys_file)

    final = await follow(api, "tailwind", batch_id, 180, signers)
    assert final.state == "completed"
    assert (final.counts.rows, final.counts.invalid, final.counts.accepted) == (ROWS + 4, 4, ROWS)
    assert (final.done + final.failed, final.pending) == (ROWS + 4, 0)
    results = await lines_of(storage, final.results_blob)
    errors = await lines_of(storage, final.errors_blob)
    result_lines = [r["line"] for r in results]
    assert result_lines == sorted(result_lines)  # input order
    assert {e["line"] for e in errors} == bad
    every = result_lines + [e["line"] for e in errors]
    assert len(every) == len(set(every)) == ROWS + 4  # each row exactly once
    assert max(every) - len(every) == 1  # the blank line has a number but no row
    assert {r["status"] for r in results} == {"succeeded"}
    assert all(r["result"]["tenant_id"] == "tailwind" for r in results)

    empty_progress = await follow(api, "contoso", empty, 30, signers)
    assert empty_progress.rejection is not None
    assert empty_progress.rejection.reason == "empty_file"
    assert await record_exists(storage, f"{names.UNKNOWN_TENANT_PREFIX}/{stranger}.json")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api}/tenants/globex/batches/{stranger}") as response,
    ):
        # Nobody can prove globex (it has no key): not even told whether the batch exists.
        assert response.status == 401
        assert (await response.json())["error"] == "tenant_proof_missing"
    tailwind = proven_headers(signers("tailwind"), "GET", f"{api}/tenants/tailwind/batches/x")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api}/tenants/contoso/batches/{empty}", headers=tailwind) as response,
    ):
        assert response.status == 401  # tailwind's proof is no proof of contoso


def test_every_row_ends_in_the_results_or_the_errors_file_exactly_once(tmp_path: Path) -> None:
    options = StackOptions(
        data_dir=tmp_path, models_config=unthrottled_models(tmp_path / "models.json")
    )
    with LocalStack(options) as stack:
        asyncio.run(scenario(stack))
