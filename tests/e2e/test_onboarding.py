"""Onboarding end to end against devhost: `python -m shared.admin tenants add`, a request as the new
tenant answered, `devhost inspect` on that known state, `tenants remove`; and the azd
postprovision hook's script writing a first registry that the app then serves from.

Everything is real: the broker (its management API too), Azurite, the simulator, the host process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.__main__ import stack_env
from devhost.envfile import write_env_file
from devhost.stack import REGISTRY_BLOB, LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_message
from examples.tenant_app import ask
from shared.admin.queues import admin_client
from shared.security.sign import TenantSigner
from shared.storage import names

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
REFRESH_S = 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Path]]:
    data = tmp_path_factory.mktemp("onboarding")
    options = StackOptions(
        data_dir=data, extra_settings={"TENANT_REGISTRY_REFRESH_SECONDS": str(REFRESH_S)}
    )
    with LocalStack(options) as running:
        env_file = write_env_file(data / "devhost.env", stack_env(running))
        yield running, env_file


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )


def _admin(env_file: Path, *args: str) -> dict[str, Any]:
    done = _run("-m", "shared.admin", "--env-file", str(env_file), "--json", "tenants", *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _send_broken(connection: str, signer: TenantSigner) -> str:
    tenant = signer.tenant_id
    message_id = str(uuid.uuid4())
    body = {
        "type": "inference.request",
        "version": 1,
        "tenant_id": tenant,
        "request_id": message_id,
    }
    bus = ServiceBusClient.from_connection_string(connection)
    async with bus, bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        await sender.send_messages(
            proven_message(
                signer, json.dumps(body), message_id=message_id, reply_to=f"replies-{tenant}"
            )
        )
    return message_id


async def _blob_names(storage: str, container: str, prefix: str) -> list[str]:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        client = blobs.get_container_client(container)
        return [n async for n in client.list_blob_names(name_starts_with=prefix)]


def _wait_for(check: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_add_answer_inspect_remove(stack: tuple[LocalStack, Path]) -> None:
    running, env_file = stack
    settings = running.app_settings()
    started = time.monotonic()
    added = _admin(env_file, "add", "northwind", "--mode", "pooled", "--tokens-per-minute", "20000")
    assert added["reply_queue"] == {"name": "replies-northwind", "created": True}
    assert added["tenant"]["quota"] == {"tokens_per_minute": 20000}
    assert added["connection"] == settings["ServiceBusConnection"]
    assert added["waited_s"] == REFRESH_S
    assert time.monotonic() - started >= REFRESH_S
    # Its first proof key, made and shown once, and stored where the app reads it.
    assert added["key"]["created"] is True
    northwind = TenantSigner("northwind", added["key"]["id"], added["key"]["secret"])
    assert Signers(running.keys_file)("northwind") == northwind

    reply = asyncio.run(ask(added["connection"], northwind, "Which plan?", 60))
    assert reply["type"] == "inference.result"
    assert reply["tenant_id"] == "northwind"
    broken = asyncio.run(_send_broken(settings["ServiceBusConnection"], northwind))
    _wait_for(
        lambda: asyncio.run(
            _blob_names(settings["AzureWebJobsStorage"], names.REJECTED_CONTAINER, "northwind/")
        )
    )

    look = _run(
        "-m", "devhost", "inspect", "--env-file", str(env_file), "--tenant", "northwind", "--json"
    )
    assert look.returncode == 0, look.stderr
    snapshot = json.loads(look.stdout)
    mine = snapshot["tenants"]["northwind"]
    assert (mine["mode"], mine["results"]["total"], mine["results"]["succeeded"]) == (
        "pooled",
        1,
        1,
    )
    assert mine["results"]["recent"][0]["request_id"] == reply["request_id"]
    assert mine["rejections"]["total"] == 1
    assert mine["rejections"]["recent"][0]["message_id"] == broken
    assert mine["usage"]["calls"] == 1
    assert mine["usage"]["total_tokens"] == reply["usage"]["total_tokens"]  # type: ignore[index]
    queues = {q["name"]: q for q in snapshot["queues"]}
    assert queues["replies-northwind"]["active"] == 1  # the rejection, sent back, not yet read
    assert "replies-tailwind" not in queues  # --tenant keeps to that tenant's queues
    assert snapshot["dead_letters"] == []
    table = _run("-m", "devhost", "inspect", "--env-file", str(env_file), "--tenant", "northwind")
    assert table.returncode == 0
    assert "northwind" in table.stdout
    assert "Dead letters: none" in table.stdout

    listed = _admin(env_file, "list")
    assert "northwind" in {t["id"] for t in listed["tenants"]}
    removed = _admin(env_file, "remove", "northwind")
    assert removed["reply_queue_deleted"] is True

    async def queue_gone() -> None:
        async with admin_client(
            settings["ServiceBusAdminConnection"]
            if "ServiceBusAdminConnection" in settings
            else stack_env(running)["ServiceBusAdminConnection"]
        ) as client:
            with pytest.raises(ResourceNotFoundError):
                await client.get_queue("replies-northwind")

    asyncio.run(queue_gone())
    time.sleep(REFRESH_S + 0.5)
    after = asyncio.run(_send_broken(settings["ServiceBusConnection"], northwind))
    _wait_for(
        lambda: (
            f"{names.UNKNOWN_TENANT_PREFIX}/{after}.json"
            in asyncio.run(
                _blob_names(settings["AzureWebJobsStorage"], names.REJECTED_CONTAINER, "_unknown/")
            )
        )
    )


def test_an_invalid_id_is_refused_and_nothing_is_created(stack: tuple[LocalStack, Path]) -> None:
    _, env_file = stack
    done = _run(
        "-m",
        "shared.admin",
        "--env-file",
        str(env_file),
        "tenants",
        "add",
        "North_Wind",
        "--mode",
        "pooled",
    )
    assert done.returncode == 1
    assert "not a valid tenant id" in done.stderr


def test_the_postprovision_hook_writes_a_registry_the_app_serves(
    stack: tuple[LocalStack, Path],
) -> None:
    running, _env_file = stack
    settings = stack_env(running)

    async def drop_registry() -> None:
        async with BlobServiceClient.from_connection_string(settings["AzureWebJobsStorage"]) as b:
            container, name = REGISTRY_BLOB.split("/", 1)
            await b.get_blob_client(container, name).delete_blob()

    asyncio.run(drop_registry())
    outputs = {
        # What `azd provision` puts in the environment (Bicep outputs), for the local simulator.
        "POOLED_DEPLOYMENTS": json.dumps(
            [
                {
                    "name": "gpt-4o-mini-pool-a",
                    "model": "gpt-4o-mini",
                    "version": "2024-07-18",
                    "sku": "GlobalStandard",
                    "capacity": 200,
                }
            ]
        ),
        "TENANTS": json.dumps([{"id": "tailwind", "mode": "pooled", "deployments": []}]),
    }
    hook = [str(ROOT / "infra" / "hooks" / "postprovision.py")]
    first = _run(*hook, env={**settings, **outputs})
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    again = _run(*hook, env={**settings, **outputs})
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout

    time.sleep(REFRESH_S + 0.5)
    tailwind = Signers(running.keys_file)("tailwind")
    reply = asyncio.run(ask(settings["ServiceBusConnection"], tailwind, "Hello?", 60))
    assert reply["type"] == "inference.result"
    assert reply["deployment"] == "gpt-4o-mini-pool-a"  # the only deployment the hook wrote
