"""End to end through devhost: spoofed tenant claims on the real broker are refused by the real
Functions host, with their reasons, and contoso's data is left byte for byte as it was.

tailwind's app (holding its own key and send rights on the shared queues) claims to be contoso:
once with no proof, once signed with its own key, once signing for contoso's route over HTTP.
contoso's own proven request is answered before and after.
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
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.demo import simulator_stats
from devhost.stack import LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_headers, proven_message
from shared.security.sign import TenantSigner
from shared.storage import names
from tests.e2e.test_local_stack import unthrottled_models

pytestmark = pytest.mark.slow


def request(tenant: str, request_id: str) -> str:
    return json.dumps(
        {
            "tenant_id": tenant,
            "request_id": request_id,
            "messages": [{"role": "user", "content": "How do I rotate my API key?"}],
            "parameters": {"max_tokens": 16},
        }
    )


async def contoso_blobs(storage: str) -> dict[str, bytes]:
    """Every blob under `contoso/` in every container, byte for byte."""
    found: dict[str, bytes] = {}
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        for container in names.CONTAINERS:
            client = blobs.get_container_client(container)
            if not await client.exists():
                continue
            async for name in client.list_blob_names(name_starts_with="contoso/"):
                found[f"{container}/{name}"] = bytes(
                    await (await client.download_blob(name)).readall()
                )
    return found


async def rejection(storage: str, message_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        blob = blobs.get_blob_client(names.REJECTED_CONTAINER, f"_unknown/{message_id}.json")
        while time.monotonic() < deadline:
            if await blob.exists():
                record: dict[str, Any] = json.loads(await (await blob.download_blob()).readall())
                return record
            await asyncio.sleep(0.3)
    raise AssertionError(f"no rejection record for {message_id}")


async def answered(bus: ServiceBusClient, request_id: str, timeout_s: float = 60) -> list[str]:
    """Wait for the reply to `request_id` on replies-contoso; every reply id read meanwhile."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    async with bus.get_queue_receiver("replies-contoso") as receiver:
        while request_id not in seen and time.monotonic() < deadline:
            for msg in await receiver.receive_messages(max_message_count=10, max_wait_time=1):
                seen.append(str(msg.correlation_id))
                await receiver.complete_message(msg)
    assert request_id in seen, f"contoso's {request_id} was not answered"
    return seen


async def scenario(stack: LocalStack) -> None:
    settings = stack.app_settings()
    storage = settings["AzureWebJobsStorage"]
    signers = Signers(stack.keys_file)
    contoso, tailwind = signers("contoso"), signers("tailwind")
    first, last = f"b-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    bare, forged = f"spoof-{uuid.uuid4().hex[:8]}", f"spoof-{uuid.uuid4().hex[:8]}"
    async with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as bus:
        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            await sender.send_messages(
                proven_message(
                    contoso, request("contoso", first), message_id=first, reply_to="replies-contoso"
                )
            )
        await answered(bus, first)
        before = await contoso_blobs(storage)
        assert any(name.startswith("results/contoso/") for name in before)

        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            await sender.send_messages(
                [
                    ServiceBusMessage(
                        request("contoso", bare), message_id=bare, reply_to="replies-contoso"
                    ),
                    proven_message(  # tailwind's key, contoso's name
                        TenantSigner("contoso", tailwind.key_id, tailwind.secret),
                        request("contoso", forged),
                        message_id=forged,
                        reply_to="replies-contoso",
                    ),
                ]
            )
        assert (await rejection(storage, bare))["reason"] == "tenant_proof_missing"
        record = await rejection(storage, forged)
        assert (record["reason"], record["tenant_id"]) == ("tenant_proof_invalid", "contoso")
        assert tailwind.secret not in json.dumps(record)

        api = f"http://127.0.0.1:{stack.http_port}/api"
        url = f"{api}/tenants/contoso/models"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers=proven_headers(tailwind, "GET", url)) as response,
        ):
            assert response.status == 401
            assert (await response.json())["error"] == "tenant_proof_invalid"

        # contoso's blobs after the spoofs: byte for byte as before them.
        assert await contoso_blobs(storage) == before

        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            await sender.send_messages(
                proven_message(
                    contoso, request("contoso", last), message_id=last, reply_to="replies-contoso"
                )
            )
        replies = await answered(bus, last)
        assert bare not in replies
        assert forged not in replies  # no rejection was answered on contoso's queue either
    stats = await simulator_stats(settings["AZURE_OPENAI_ENDPOINT"])
    served = stats["tenants"]["contoso"]["deployments"]["contoso-gpt-4o"]["ok"]
    assert served == 2  # contoso's two: no spoof reached contoso's dedicated deployment


def test_spoofed_tenant_claims_on_the_broker_are_refused(tmp_path: Path) -> None:
    options = StackOptions(
        data_dir=tmp_path, models_config=unthrottled_models(tmp_path / "models.json")
    )
    with LocalStack(options) as stack:
        asyncio.run(scenario(stack))
