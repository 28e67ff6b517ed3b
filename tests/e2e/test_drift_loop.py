"""End to end through devhost: a tuned tenant's model decays, its users' feedback flows through
Service Bus, the drift monitor in the Functions host notices, writes a report and a chart, and
enqueues exactly one fine-tune request built from the tenant's own scrubbed data; the host takes
that request, the local job runner trains a LoRA adapter with training/, the watcher deploys and
registers it, the gate promotes it on held-out examples, the tenant's users rate it well again,
and an operator's rollback puts the decayed version back."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import aiohttp
import pytest
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.demo_drift import TENANT, DriftActResult, run_drift_act, wave
from devhost.demo_finetune import models_view, run_finetune_act
from devhost.stack import LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_headers
from shared.storage import names

pytestmark = pytest.mark.slow


async def _training_set(storage: str, blob: str) -> str:
    container, _, name = blob.partition("/")
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        data = await (await blobs.get_blob_client(container, name).download_blob()).readall()
    return bytes(data).decode("utf-8")


async def _rollback(host_url: str, signers: Signers) -> tuple[int, dict[str, object]]:
    url = f"{host_url}/api/tenants/{TENANT}/models/rollback"
    body = json.dumps({"by": "e2e operator", "why": "users complain about the new version"})
    headers = proven_headers(signers(TENANT), "POST", url, body.encode())
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def _served_by(servicebus: str, requests: int, signers: Signers) -> list[str]:
    result = DriftActResult()
    async with ServiceBusClient.from_connection_string(servicebus) as bus:
        await wave(
            bus,
            result,
            random.Random(3),
            first=50_000,
            size=requests,
            shifted=True,
            deadline=time.monotonic() + 120,
            signers=signers,
        )
    return result.served_by


def test_a_decayed_model_is_detected_retrained_promoted_and_rolled_back(
    tmp_path: Path,
) -> None:
    options = StackOptions(data_dir=tmp_path, extra_settings={"DRIFT_CHECK_EVERY": "20"})
    with LocalStack(options) as stack:
        settings = stack.app_settings()
        signers = Signers(stack.keys_file)
        result = asyncio.run(
            run_drift_act(
                settings["ServiceBusConnection"],
                settings["AzureWebJobsStorage"],
                f"http://127.0.0.1:{stack.http_port}",
                requests=420,
                timeout_s=300,
                chart_to=tmp_path / "chart.png",
                signers=signers,
            )
        )
        assert result.problems == []
        assert result.answered == result.sent == 420
        # the users saw the decay: the act is not passing on a detector that fires anyway
        before = sum(result.good_before) / len(result.good_before)
        after = sum(result.good_after) / len(result.good_after)
        assert before > after + 0.2
        [request] = result.finetune_requests
        assert request["tenant_id"] == TENANT
        assert request["tenants_in_dataset"] == [TENANT]
        assert request["current"]["deployment"] == "fabrikam-ft-v1"
        [quality_drift] = [r for r in result.drift_reports if r["quality"]["detected"]]
        assert quality_drift["action"]["kind"] == "finetune_requested"
        assert request["job_key"] == quality_drift["drift_event_id"]
        assert result.chart_file is not None
        assert result.chart_file.read_bytes()[:4] == b"\x89PNG"
        dataset = asyncio.run(
            _training_set(settings["AzureWebJobsStorage"], request["dataset"]["blob"])
        )
        lines = [json.loads(line) for line in dataset.splitlines()]
        assert len(lines) == request["dataset"]["examples"] >= 20
        assert "jane.roe@example.com" not in dataset  # corrections were scrubbed
        assert request["dataset"]["blob"].split("/")[0] == names.TRAINING_CONTAINER

        # The loop closes: the request is trained, evaluated and promoted, and served.
        host_url = f"http://127.0.0.1:{stack.http_port}"
        servicebus = settings["ServiceBusConnection"]
        tuned = asyncio.run(
            run_finetune_act(
                servicebus, host_url, result, requests=100, timeout_s=300, signers=signers
            )
        )
        assert tuned.problems == []
        assert tuned.job is not None
        assert tuned.job["backend"] == "local"
        states = [h["state"] for h in tuned.job["history"]]
        # `running` may pass between two watcher ticks on a job this small
        assert [s for s in states if s != "running"] == [
            "queued", "submitted", "succeeded", "evaluated", "promoted"
        ]  # fmt: skip
        metrics = tuned.job["evaluation"]
        assert metrics["decision"] == "promote"
        assert metrics["scorer"] == "judge:judge"
        assert tuned.recovered_share is not None
        assert tuned.decayed_share is not None
        assert tuned.recovered_share > tuned.decayed_share + 0.15
        candidate = tuned.job["candidate"]["deployment"]
        assert candidate == "fabrikam-ft-v2"
        # An operator rolls back: the decayed version serves again, and the job says so.
        status, entry = asyncio.run(_rollback(host_url, signers))
        assert status == 200, entry
        assert entry["deployment"] == "fabrikam-ft-v1"
        time.sleep(6)  # the host re-reads the registry every 5 s locally
        assert set(asyncio.run(_served_by(servicebus, 20, signers))) == {"fabrikam-ft-v1"}
        view = asyncio.run(models_view(host_url, signers))
        assert view["jobs"][-1]["state"] == "rolled_back"
        assert [e["action"] for e in view["timeline"]] == ["registered", "promoted", "rolled_back"]
