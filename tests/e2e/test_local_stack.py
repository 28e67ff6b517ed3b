"""End to end through devhost: three tenants, hundreds of requests, a host killed mid-run.

Everything is real: the broker process, Azurite, the model simulator over HTTP and the Functions
host process running the repository's own `function_app.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.demo import (
    TENANTS,
    Tally,
    collect_replies,
    collect_unknown,
    play_stranger,
    play_tenant,
    routing_violations,
    simulator_stats,
)
from devhost.stack import MODELS_CONFIG, SERVICEBUS_CONFIG, LocalStack, StackOptions
from devhost.tenant_keys import Signers
from shared.storage import names

PER_TENANT = 100
pytestmark = pytest.mark.slow


def short_lock_config(path: Path) -> Path:
    """The system's queues with a 5 s lock, so messages locked by a killed host return soon."""
    config = json.loads(SERVICEBUS_CONFIG.read_text())
    for queue in config["UserConfig"]["Namespaces"][0]["Queues"]:
        queue["Properties"]["LockDuration"] = "PT5S"
    path.write_text(json.dumps(config))
    return path


def unthrottled_models(path: Path) -> Path:
    """The local deployments without TPM/RPM limits: throttling and the retries it calls for are
    the resilience layer's (tested with the simulator); here every request must get through."""
    config = json.loads(MODELS_CONFIG.read_text())
    for deployment in config["deployments"]:
        deployment.update(tpm=0, rpm=0)
    path.write_text(json.dumps(config))
    return path


async def _result_count(storage: str, tenant: str) -> int:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        container = blobs.get_container_client(names.RESULTS_CONTAINER)
        return len([b async for b in container.list_blobs(name_starts_with=f"{tenant}/")])


async def _scenario(stack: LocalStack) -> tuple[list[Tally], Tally, bool]:
    settings = stack.app_settings()
    tallies = [Tally(tenant, mode) for tenant, mode in TENANTS]
    stranger = Tally("(unknown)", "-")
    killed = False
    async with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as bus:
        await asyncio.gather(
            *(play_tenant(bus, t, PER_TENANT, signers=Signers(stack.keys_file)) for t in tallies),
            play_stranger(bus, stranger),
        )
        deadline = time.monotonic() + 240
        collecting = asyncio.gather(
            *(collect_replies(bus, t, deadline) for t in tallies),
            collect_unknown(settings["AzureWebJobsStorage"], stranger, deadline),
        )
        total = sum(len(t.sent_at) for t in tallies)
        while time.monotonic() < deadline:
            if sum(len(t.answered) for t in tallies) >= total // 3:
                break
            await asyncio.sleep(0.1)
        if sum(len(t.answered) for t in tallies) < total:
            await asyncio.to_thread(stack.kill_host)
            killed = True
            await asyncio.to_thread(stack.start_host)
        await collecting
    return tallies, stranger, killed


def test_three_tenants_every_request_accounted_for_across_a_host_crash(tmp_path: Path) -> None:
    options = StackOptions(
        data_dir=tmp_path,
        servicebus_config=short_lock_config(tmp_path / "sb.json"),
        models_config=unthrottled_models(tmp_path / "models.json"),
    )
    with LocalStack(options) as stack:
        tallies, stranger, killed = asyncio.run(_scenario(stack))
        settings = stack.app_settings()
        stats = asyncio.run(simulator_stats(settings["AZURE_OPENAI_ENDPOINT"]))
        results = {
            t.tenant: asyncio.run(_result_count(settings["AzureWebJobsStorage"], t.tenant))
            for t in tallies
        }

    assert killed, "the host finished before it could be killed: raise PER_TENANT"
    for t in tallies:
        assert not t.pending, f"{t.tenant}: {len(t.pending)} requests unaccounted for"
        assert len(t.answered) == PER_TENANT
        assert len(t.rejected) == 1  # the request it sent without messages
        assert results[t.tenant] == PER_TENANT
    assert not stranger.pending
    # garbage, an unknown tenant, and contoso spoofed (no proof; a made-up key) with its reason
    assert len(stranger.rejected) == 4
    assert stranger.not_served() == []
    assert routing_violations(stats) == []
    served = {
        t: sum(d["ok"] for d in v["deployments"].values()) for t, v in stats["tenants"].items()
    }
    for t in tallies:
        # A redelivery after the crash may repeat a call whose result was not stored yet.
        assert PER_TENANT <= served[t.tenant] <= PER_TENANT + 20


def test_the_example_tenant_app_gets_its_answer(tmp_path: Path) -> None:
    from examples.tenant_app import ask

    with LocalStack(StackOptions(data_dir=tmp_path)) as stack:
        connection = stack.app_settings()["ServiceBusConnection"]
        contoso = Signers(stack.keys_file)("contoso")
        reply = asyncio.run(ask(connection, contoso, "How do I rotate my API key?", 30))
    assert reply["type"] == "inference.result"
    assert reply["tenant_id"] == "contoso"
    assert reply["deployment"] == "contoso-gpt-4o"
