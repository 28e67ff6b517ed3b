"""End to end through devhost at three times a deployment's capacity: every request is answered
(or fails with a reason), once, and nothing is dead-lettered.

contoso (dedicated) has one deployment and no fallback. The simulator enforces 120 RPM on it (20
requests per 10 s window) while the registry declares 300 RPM, so the resilience layer meets real
429s with retry-after and must wait, retry, or reschedule the requests on Service Bus rather than
let the host burn their deliveries. The burst starts with a 429 asking for 12 s (longer than the
longest in-process wait), so requests are also rescheduled: each must still be answered once.
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

from devhost.demo import Resilience, install_faults
from devhost.stack import MODELS_CONFIG, LocalStack, StackOptions
from devhost.tenant_keys import Signers, proven_message
from shared.storage import names

BURST = 60  # three 10-second windows of the throttled deployment, sent at once
pytestmark = pytest.mark.slow


def throttled_contoso(path: Path) -> Path:
    config = json.loads(MODELS_CONFIG.read_text())
    for deployment in config["deployments"]:
        if deployment["name"] == "contoso-gpt-4o":
            deployment.update(rpm=120)
    path.write_text(json.dumps(config))
    return path


async def _burst(
    connection: str, models_url: str, signers: Signers
) -> tuple[Counter[str], dict[str, str], int]:
    """Send the burst; return replies per request id, each reply's status, dead letters."""
    fault = {"deployment": "contoso-gpt-4o", "kind": "429", "count": 1, "retry_after_s": 12}
    await install_faults(models_url, [fault])
    ids = [f"overload-{uuid.uuid4()}" for _ in range(BURST)]
    replies: Counter[str] = Counter()
    status: dict[str, str] = {}
    async with ServiceBusClient.from_connection_string(connection) as bus:
        async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
            batch = [
                proven_message(
                    signers("contoso"),
                    json.dumps(
                        {
                            "tenant_id": "contoso",
                            "request_id": rid,
                            "messages": [{"role": "user", "content": "How do I rotate a key?"}],
                            "parameters": {"max_tokens": 32},
                        }
                    ),
                    message_id=rid,
                    reply_to="replies-contoso",
                )
                for rid in ids
            ]
            await sender.send_messages(batch)
        deadline = time.monotonic() + 180
        async with bus.get_queue_receiver("replies-contoso") as receiver:
            while len(status) < BURST and time.monotonic() < deadline:
                for msg in await receiver.receive_messages(max_message_count=50, max_wait_time=2):
                    rid = str(msg.correlation_id)
                    if rid in ids:
                        replies[rid] += 1
                        body = json.loads(b"".join(msg.body))
                        status[rid] = body.get("status", body.get("type", "?"))
                    await receiver.complete_message(msg)
            # Anything late (a second reply to one request) would show up now.
            for msg in await receiver.receive_messages(max_message_count=50, max_wait_time=3):
                if str(msg.correlation_id) in ids:
                    replies[str(msg.correlation_id)] += 1
                await receiver.complete_message(msg)
        async with bus.get_queue_receiver(
            names.INFERENCE_REQUESTS, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            dead = len(await dlq.peek_messages(max_message_count=100))
    return replies, status, dead


def test_three_times_capacity_every_request_answered_once_nothing_dead_lettered(
    tmp_path: Path,
) -> None:
    options = StackOptions(data_dir=tmp_path, models_config=throttled_contoso(tmp_path / "m.json"))
    with LocalStack(options) as stack:
        settings = stack.app_settings()
        replies, status, dead = asyncio.run(
            _burst(
                settings["ServiceBusConnection"],
                settings["AZURE_OPENAI_ENDPOINT"],
                Signers(stack.keys_file),
            )
        )
        seen = Resilience.from_log(stack.logs / "host.log")

    assert dead == 0
    assert len(status) == BURST, f"{BURST - len(status)} requests got no reply"
    assert set(replies.values()) == {1}, "a request was answered more than once"
    assert Counter(status.values()) == {"succeeded": BURST}
    contoso = seen.per_tenant["contoso"]
    assert contoso["reschedules"] > 0, "nothing was rescheduled: the long retry-after was not met"
    assert contoso["throttled"] > 0, "no 429 reached the client: the overload was not reached"
