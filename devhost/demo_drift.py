"""The demo's drift act: a tuned tenant's model decays mid-run, its users say so, the system
notices, reports with a chart, and asks for exactly one fine-tuning job.

fabrikam's app sends requests in waves through Service Bus, with the topic (`#billing`, ...) in the
prompt and as the request's `feature`; halfway its mix shifts towards `#legal` (input drift). The
simulator's `fabrikam-ft-v1` decays after a number of answers (`quality_schedule` in
devhost/models.config.json). fabrikam's synthetic users read each answer's verdict (the
simulator's ` [sim: good answer]` marker) and rate it up or down on the `feedback` queue, some with
a correction that carries personal data the system must scrub. The act then reads, from Azurite,
the drift reports the monitor wrote, saves the chart next to the demo's data, and reads the
job the Functions host recorded for the `finetune.request` (demo_finetune.py follows it on).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.models.quality import verdict_of
from devhost.tenant_keys import Signers, proven_headers, proven_message
from shared.security.sign import FEEDBACK
from shared.storage import names

TENANT = "fabrikam"
TOPICS_BEFORE = (("billing", 0.7), ("shipping", 0.3))
TOPICS_AFTER = (("billing", 0.25), ("shipping", 0.15), ("legal", 0.6))
QUESTIONS = {
    "billing": "Why was I charged twice this month?",
    "shipping": "Where is my parcel right now?",
    "legal": "Can I cancel the contract early without a fee?",
}


@dataclass
class DriftActResult:
    sent: int = 0
    answered: int = 0
    rated: int = 0
    good_before: list[bool] = field(default_factory=list)
    good_after: list[bool] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    chart_file: Path | None = None
    finetune_requests: list[dict[str, Any]] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def drift_reports(self) -> list[dict[str, Any]]:
        return [r for r in self.reports if r.get("drift")]


def _topic(rng: random.Random, shifted: bool) -> str:
    mix = TOPICS_AFTER if shifted else TOPICS_BEFORE
    pick = rng.random()
    for topic, share in mix:
        pick -= share
        if pick <= 0:
            return topic
    return mix[-1][0]


def _request(request_id: str, topic: str, i: int) -> bytes:
    return json.dumps(
        {
            "type": "inference.request",
            "version": 1,
            "tenant_id": TENANT,
            "request_id": request_id,
            "messages": [
                {"role": "system", "content": "You are fabrikam's support assistant."},
                {"role": "user", "content": f"#{topic} {QUESTIONS[topic]} (ticket {i})"},
            ],
            "parameters": {"max_tokens": 64},
            "feature": topic,
        }
    ).encode()


def _feedback(request_id: str, good: bool, rng: random.Random, i: int) -> bytes:
    body: dict[str, Any] = {
        "type": "feedback",
        "version": 1,
        "tenant_id": TENANT,
        "request_id": request_id,
        "rating": "up" if good else "down",
    }
    if not good and rng.random() < 0.5:
        body["correction"] = (
            f"The right answer for ticket {i}: see your account page, or write to "
            "jane.roe@example.com / call +44 20 7946 0123."
        )
        body["labels"] = ["wrong-answer"]
    return json.dumps(body).encode()


async def wave(
    bus: ServiceBusClient,
    result: DriftActResult,
    rng: random.Random,
    *,
    first: int,
    size: int,
    shifted: bool,
    deadline: float,
    signers: Signers,
) -> None:
    reply_queue = f"replies-{TENANT}"
    signer = signers(TENANT)
    pending: dict[str, int] = {}
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        batch = []
        for i in range(first, first + size):
            request_id = f"{TENANT}-drift-{uuid.uuid4().hex[:12]}"
            pending[request_id] = i
            batch.append(
                proven_message(
                    signer,
                    _request(request_id, _topic(rng, shifted), i),
                    message_id=request_id,
                    reply_to=reply_queue,
                )
            )
        await sender.send_messages(batch)
        result.sent += len(batch)
    ratings = []
    async with bus.get_queue_receiver(reply_queue, prefetch_count=50) as receiver:
        while pending and time.monotonic() < deadline:
            for msg in await receiver.receive_messages(max_message_count=50, max_wait_time=1):
                body = json.loads(b"".join(msg.body))
                request_id = str(msg.correlation_id)
                await receiver.complete_message(msg)
                i = pending.pop(request_id, -1)
                if i < 0 or body.get("status") != "succeeded":
                    continue
                result.answered += 1
                result.served_by.append(str(body.get("deployment")))
                good = verdict_of(body["message"]["content"])
                if good is None:
                    continue
                (result.good_after if shifted else result.good_before).append(good)
                ratings.append(
                    proven_message(
                        signer,
                        _feedback(request_id, good, rng, i),
                        message_id=f"fb-{request_id}",
                        contract_type=FEEDBACK,
                    )
                )
    if ratings:
        async with bus.get_queue_sender(names.FEEDBACK) as sender:
            await sender.send_messages(ratings)
        result.rated += len(ratings)


async def _reports(storage: str, since: str) -> list[dict[str, Any]]:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        container = blobs.get_container_client(names.DRIFT_CONTAINER)
        found = []
        async for name in container.list_blob_names(name_starts_with=f"{TENANT}/"):
            if name.endswith(".json") and "/state/" not in name and name > f"{TENANT}/{since}":
                data = await (await container.download_blob(name)).readall()
                found.append({"blob": f"{names.DRIFT_CONTAINER}/{name}", **json.loads(data)})
        return found


async def _save_chart(storage: str, chart: str, to: Path) -> Path:
    container, _, name = chart.partition("/")
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        data = await (await blobs.get_blob_client(container, name).download_blob()).readall()
    await asyncio.to_thread(_write, to, bytes(data))
    return to


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _finetune_requests(storage: str, settle_s: float) -> list[dict[str, Any]]:
    """The fine-tune requests the Functions host recorded as jobs for the tenant (the host takes
    them off `finetune-jobs` at once), after letting late sends land."""
    await asyncio.sleep(settle_s)
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        container = blobs.get_container_client(names.JOBS_CONTAINER)
        found = []
        async for name in container.list_blob_names(name_starts_with=f"{TENANT}/ftj-"):
            data = await (await container.download_blob(name)).readall()
            found.append(json.loads(data)["request"])
        return found


async def _evaluate_now(host_url: str, signers: Signers) -> None:
    """POST /api/tenants/fabrikam/drift: the operator's on-demand drift check (proven with the
    tenant's key, which the operator can read)."""
    url = f"{host_url}/api/tenants/{TENANT}/drift"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, headers=proven_headers(signers(TENANT), "POST", url)) as response,
    ):
        response.raise_for_status()


async def run_drift_act(
    servicebus: str,
    storage: str,
    host_url: str,
    *,
    requests: int = 420,
    wave_size: int = 50,
    timeout_s: float = 240.0,
    chart_to: Path | None = None,
    seed: int = 11,
    wait_for_request_s: float = 30.0,
    signers: Signers,
) -> DriftActResult:
    """Play the act; `result.problems` lists what a tenant or operator would call wrong."""
    rng = random.Random(seed)
    result = DriftActResult()
    since = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    deadline = time.monotonic() + timeout_s
    async with ServiceBusClient.from_connection_string(servicebus) as bus:
        for first in range(0, requests, wave_size):
            size = min(wave_size, requests - first)
            await wave(
                bus,
                result,
                rng,
                first=first,
                size=size,
                shifted=first >= requests // 2,
                deadline=deadline,
                signers=signers,
            )
        # The timer evaluates every 5 minutes; an operator's check reads the last ratings now.
        until = time.monotonic() + wait_for_request_s
        while time.monotonic() < until:
            await _evaluate_now(host_url, signers)
            result.reports = await _reports(storage, since)
            if any(r["action"]["kind"] == "finetune_requested" for r in result.drift_reports):
                break
            await asyncio.sleep(2.0)
        result.finetune_requests = await _finetune_requests(storage, settle_s=3.0)
    drifted = result.drift_reports
    if result.answered < result.sent:
        result.problems.append(f"{result.sent - result.answered} of {result.sent} not answered")
    if not drifted:
        result.problems.append("no drift report says the decay was detected")
    tuned = [r for r in result.finetune_requests if r.get("tenant_id") == TENANT]
    if len(tuned) != 1:
        result.problems.append(f"{len(tuned)} fine-tune requests enqueued, expected exactly 1")
    charts = [r["chart"] for r in drifted if r.get("chart")]
    if charts and chart_to is not None:
        result.chart_file = await _save_chart(storage, charts[0], chart_to)
    return result


def describe(result: DriftActResult) -> list[str]:
    """The act as the demo prints it."""

    def share(values: list[bool]) -> str:
        return f"{sum(values) / len(values):.0%} of {len(values)}" if values else "-"

    lines = [
        f"drift act ({TENANT}): {result.sent} requests, {result.answered} answered, "
        f"{result.rated} rated; good answers {share(result.good_before)} in the first half, "
        f"{share(result.good_after)} in the second (the topic mix shifted towards #legal too)",
    ]
    quality = [r for r in result.drift_reports if r.get("quality", {}).get("detected")]
    for report in (quality or result.drift_reports)[:1]:
        quality = report.get("quality", {})
        lines.append(f"  detected: {quality.get('reason', '?')}")
        lines.append(f"  report: {report['blob']}")
        if report.get("input"):
            lines.append(f"  inputs: {report['input'].get('reason', '?')}")
        lines.append(f"  action: {report['action']['kind']}: {report['action']['detail']}")
    if result.chart_file is not None:
        lines.append(f"  chart: {result.chart_file}")
    for request in result.finetune_requests:
        dataset = request.get("dataset", {})
        lines.append(
            f"  finetune-jobs: {request.get('job_key')} ({request.get('scope')} scope, "
            f"{dataset.get('examples')} examples in {dataset.get('blob')}, sha256 "
            f"{str(dataset.get('sha256'))[:12]}...)"
        )
    return lines
