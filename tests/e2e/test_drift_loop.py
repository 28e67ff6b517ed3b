"""End to end through devhost: a tuned tenant's model decays, its users' feedback flows through
Service Bus, the drift monitor in the Functions host notices, writes a report and a chart, and
enqueues exactly one fine-tune request built from the tenant's own scrubbed data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from azure.storage.blob.aio import BlobServiceClient

from devhost.demo_drift import TENANT, run_drift_act
from devhost.stack import LocalStack, StackOptions
from shared.storage import names

pytestmark = pytest.mark.slow


async def _training_set(storage: str, blob: str) -> str:
    container, _, name = blob.partition("/")
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        data = await (await blobs.get_blob_client(container, name).download_blob()).readall()
    return bytes(data).decode("utf-8")


def test_a_decayed_model_is_detected_and_exactly_one_finetune_is_requested(
    tmp_path: Path,
) -> None:
    options = StackOptions(data_dir=tmp_path, extra_settings={"DRIFT_CHECK_EVERY": "20"})
    with LocalStack(options) as stack:
        settings = stack.app_settings()
        result = asyncio.run(
            run_drift_act(
                settings["ServiceBusConnection"],
                settings["AzureWebJobsStorage"],
                f"http://127.0.0.1:{stack.http_port}",
                requests=420,
                timeout_s=300,
                chart_to=tmp_path / "chart.png",
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
