"""Two Functions host processes on one broker share a tenant's quota through Redis.

tailwind's quota is set to 20 requests per minute; 40 of its requests arrive at once and both hosts
take messages from the queue. Together they call the models at most 20 times in the minute (each
alone would allow 20, so two instances without the shared store would allow 40); the rest are
rescheduled for when the tenant has room, not rejected and not dead-lettered.

The quota is a sliding window counter (`shared/resilience/quotas.py`): exact within one fixed
minute, an estimate across a minute boundary (the previous minute's count is weighted by the part
still inside the sliding minute). So the burst is timed to start and be counted inside one minute.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

from devhost.demo import Resilience, log_fields, simulator_stats
from devhost.processes import free_port
from devhost.stack import REGISTRY, FunctionsHostProcess, LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_message
from shared.storage import names

QUOTA_RPM = 20
BURST = 40
pytestmark = pytest.mark.slow


def small_quota_registry(path: Path) -> Path:
    registry = json.loads(REGISTRY.read_text())
    for tenant in registry["tenants"]:
        if tenant["id"] == "tailwind":
            tenant["quota"] = {"requests_per_minute": QUOTA_RPM, "tokens_per_minute": 50000}
    path.write_text(json.dumps(registry))
    return path


async def _inside_one_minute(needed_s: float) -> None:
    """Wait for the next minute if the rest of this one is shorter than `needed_s`."""
    into = time.time() % 60
    if 60 - into < needed_s:
        await asyncio.sleep(60 - into + 0.5)


async def _burst(connection: str, signers: Signers) -> int:
    await _inside_one_minute(needed_s=25)
    async with ServiceBusClient.from_connection_string(connection) as bus:
        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            batch = []
            for _ in range(BURST):
                rid = f"scale-{uuid.uuid4()}"
                body = {
                    "tenant_id": "tailwind",
                    "request_id": rid,
                    "messages": [{"role": "user", "content": "Which plan has SSO?"}],
                    "parameters": {"max_tokens": 16},
                }
                batch.append(proven_message(signers("tailwind"), json.dumps(body), message_id=rid))
            await sender.send_messages(batch)
        await asyncio.sleep(20)  # well inside the minute: every message has been handled once
        async with bus.get_queue_receiver(
            names.INFERENCE_REQUESTS, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            return len(await dlq.peek_messages(max_message_count=100))


def _ok_calls(stats: dict[str, object], tenant: str) -> int:
    tenants = stats["tenants"]
    assert isinstance(tenants, dict)
    return sum(d["ok"] for d in tenants.get(tenant, {}).get("deployments", {}).values())


def _handled(log: Path) -> int:
    """Requests of tailwind an instance answered or put back (rescheduled) for later."""
    events = ("inference.completed", "inference.rescheduled")
    return sum(
        1
        for fields in log_fields(log.read_text().splitlines())
        if fields.get("event") in events and fields.get("tenant_id") == "tailwind"
    )


def test_two_host_instances_together_stay_within_the_tenants_quota(tmp_path: Path) -> None:
    options = StackOptions(data_dir=tmp_path, registry=small_quota_registry(tmp_path / "r.json"))
    with LocalStack(options) as stack:
        second = FunctionsHostProcess(
            stack.app_settings(), stack.logs / "host-2.log", free_port()
        ).start()
        try:
            started = time.monotonic()
            connection = stack.app_settings()["ServiceBusConnection"]
            dead = asyncio.run(_burst(connection, Signers(stack.keys_file)))
            assert time.monotonic() - started < 55, "the check must fall inside one minute"
            stats = asyncio.run(simulator_stats(stack.app_settings()["AZURE_OPENAI_ENDPOINT"]))
        finally:
            second.stop()
        logs = (stack.logs / "host.log", stack.logs / "host-2.log")
        first_host, second_host = (
            Resilience.from_log(log).per_tenant.get("tailwind", Counter()) for log in logs
        )

    served = _ok_calls(stats, "tailwind")
    assert served <= QUOTA_RPM, f"two instances together served {served} > {QUOTA_RPM} in a minute"
    assert served >= QUOTA_RPM // 2, "the quota was not used: something else held requests back"
    # Both instances took part (which of them meets the over-quota requests is a race), and the
    # quota they share made them reschedule.
    assert first_host.get("reschedules", 0) + second_host.get("reschedules", 0) > 0
    handled = [_handled(log) for log in logs]
    assert all(handled), f"an instance took no part: {handled}"
    assert dead == 0
