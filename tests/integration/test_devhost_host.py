"""The local Functions host driving real triggers: the broker (AMQP, through the real SDK), Azurite,
timers and HTTP, in-process and as `python -m devhost.host` subprocesses.

Each test copies a small sample app (tests/integration/sample_app/<kind>/function_app.py) into
its own script root with the host.json it needs; the sample functions record what they got as
JSON lines in `$SAMPLE_RECORD_DIR/events.jsonl`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from devhost.host import READY_TEXT, FunctionsHost, HostStartupError
from devhost.host.blob_trigger import HOSTS_CONTAINER, POISON_CONTAINER
from devhost.models import RunningSimulator
from devhost.servicebus.launcher import BrokerProcess
from devhost.tenant_keys import Signers, ensure_tenant_keys, proven_message
from shared.storage import names
from tests.integration.sample_app.recorder import read_events

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parent / "sample_app"

QUEUES = {
    "work": {"LockDuration": "PT30S", "MaxDeliveryCount": 3},
    "slow": {"LockDuration": "PT3S", "MaxDeliveryCount": 3},
    "sync": {"LockDuration": "PT30S"},
}


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv("SAMPLE_RECORD_DIR", str(folder))
    return folder


@pytest.fixture
def sb(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker(QUEUES)


@pytest.fixture
async def sb_client(sb: BrokerProcess) -> AsyncIterator[ServiceBusClient]:
    async with ServiceBusClient.from_connection_string(
        sb.connection_string, retry_total=1, retry_backoff_factor=0.1
    ) as client:
        yield client


def script_root(tmp_path: Path, sample: str, host_json: dict[str, Any] | None = None) -> Path:
    root = tmp_path / f"app-{sample}"
    root.mkdir(exist_ok=True)
    shutil.copy(SAMPLES / sample / "function_app.py", root / "function_app.py")
    (root / "host.json").write_text(json.dumps({"version": "2.0", **(host_json or {})}))
    return root


def sb_settings(broker: BrokerProcess, queue: str = "work") -> dict[str, str]:
    return {
        "SampleServiceBus": broker.connection_string,
        "SAMPLE_QUEUE": queue,
        "SAMPLE_SYNC_QUEUE": "sync",
    }


def sb_host_json(**service_bus: Any) -> dict[str, Any]:
    return {"extensions": {"serviceBus": service_bus}}


async def eventually(
    check: Callable[[], bool], what: str, timeout_s: float = 15.0, every_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)


def events(folder: Path, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in read_events(folder)
        if e["event"] == kind and all(e.get(k) == v for k, v in match.items())
    ]


async def send(client: ServiceBusClient, queue: str, *messages: ServiceBusMessage) -> None:
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(list(messages))


def order(message_id: str, **body: Any) -> ServiceBusMessage:
    return ServiceBusMessage(json.dumps(body), message_id=message_id)


async def queue_depth(client: ServiceBusClient, queue: str) -> int:
    async with client.get_queue_receiver(queue) as receiver:
        return len(await receiver.peek_messages(max_message_count=100))


async def drained(client: ServiceBusClient, queue: str, timeout_s: float = 5.0) -> None:
    """The queue is empty (every message completed), within a moment for the last settlement."""
    deadline = time.monotonic() + timeout_s
    depth = await queue_depth(client, queue)
    while depth and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        depth = await queue_depth(client, queue)
    assert depth == 0, f"{depth} messages left on {queue}"


# -- Service Bus ----------------------------------------------------------------------------------
async def test_each_message_is_handled_once_and_completed_within_max_concurrent_calls(
    tmp_path: Path, records: Path, sb: BrokerProcess, sb_client: ServiceBusClient
) -> None:
    root = script_root(tmp_path, "servicebus", sb_host_json(maxConcurrentCalls=3))
    sent = [
        ServiceBusMessage(
            json.dumps({"sleep": 0.1}),
            message_id=f"m-{i}",
            correlation_id=f"c-{i}",
            content_type="application/json",
            subject="order",
            application_properties={"tenant_id": "tailwind", "n": i},
        )
        for i in range(15)
    ]
    await asyncio.gather(
        send(sb_client, "work", *sent),
        send(sb_client, "sync", *(order(f"s-{i}", sleep=0.05) for i in range(3))),
    )
    async with FunctionsHost(root, sb_settings(sb), servicebus_receive_wait_s=0.25):
        await eventually(lambda: len(events(records, "finished")) >= 18, "18 messages handled")
        await drained(sb_client, "work")
    started = events(records, "started", function="work")
    assert sorted(e["message_id"] for e in started) == sorted(f"m-{i}" for i in range(15))
    assert {e["delivery_count"] for e in started} == {1}  # 1 on the first delivery, as in Azure
    assert 2 <= max(e["in_flight"] for e in started) <= 3
    first = next(e for e in started if e["message_id"] == "m-3")
    assert first["application_properties"] == {"tenant_id": "tailwind", "n": 3}  # str, not bytes
    assert (first["correlation_id"], first["content_type"], first["subject"]) == (
        "c-3",
        "application/json",
        "order",
    )
    assert all(first[k] for k in ("lock_token", "sequence_number", "enqueued"))
    # The sync function ran too, on a worker thread.
    assert len(events(records, "finished", function="work_sync")) == 3


async def test_a_failing_handler_is_abandoned_redelivered_and_dead_lettered(
    tmp_path: Path, records: Path, sb: BrokerProcess, sb_client: ServiceBusClient
) -> None:
    root = script_root(tmp_path, "servicebus")
    async with FunctionsHost(root, sb_settings(sb), servicebus_receive_wait_s=0.25):
        await send(sb_client, "work", order("bad-1", fail=True), order("good-1"))
        await eventually(
            lambda: len(events(records, "started", message_id="bad-1")) >= 3, "three deliveries"
        )
        async with sb_client.get_queue_receiver(
            "work", sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            dead = await dlq.receive_messages(max_message_count=5, max_wait_time=10)
            assert [m.message_id for m in dead] == ["bad-1"]
            assert dead[0].dead_letter_reason == "MaxDeliveryCountExceeded"
            await dlq.complete_message(dead[0])
    attempts = events(records, "started", message_id="bad-1")
    assert [e["delivery_count"] for e in attempts] == [1, 2, 3]
    assert not events(records, "finished", message_id="bad-1")
    assert len(events(records, "finished", message_id="good-1")) == 1


async def test_the_receiver_survives_a_broker_restart(
    tmp_path: Path, records: Path, sb: BrokerProcess
) -> None:
    root = script_root(tmp_path, "servicebus")
    async with FunctionsHost(root, sb_settings(sb), servicebus_receive_wait_s=0.25):
        await asyncio.to_thread(sb.restart)  # same port and data: the connection drops
        async with ServiceBusClient.from_connection_string(sb.connection_string) as client:
            await send(client, "work", order("after-restart"))
            await eventually(lambda: bool(events(records, "finished")), "the message after")


async def test_the_lock_is_renewed_while_a_handler_outlives_the_lock_duration(
    tmp_path: Path, records: Path, sb: BrokerProcess, sb_client: ServiceBusClient
) -> None:
    root = script_root(tmp_path, "servicebus", sb_host_json(maxAutoLockRenewalDuration="00:01:00"))
    async with FunctionsHost(root, sb_settings(sb, queue="slow"), servicebus_receive_wait_s=0.25):
        await send(sb_client, "slow", order("long-1", sleep=3.6))  # LockDuration is 3 s
        await eventually(lambda: bool(events(records, "finished")), "the long handler")
        await drained(sb_client, "slow")
    assert [e["delivery_count"] for e in events(records, "started")] == [1]


async def test_stop_abandons_what_cannot_finish_within_the_grace_period(
    tmp_path: Path, records: Path, sb: BrokerProcess, sb_client: ServiceBusClient
) -> None:
    root = script_root(tmp_path, "servicebus")
    host = FunctionsHost(root, sb_settings(sb), grace_s=0.5, servicebus_receive_wait_s=0.25)
    await host.start()
    try:
        await send(sb_client, "work", order("stuck", sleep=60))
        await eventually(lambda: bool(events(records, "started")), "the handler to start")
    finally:
        started = time.monotonic()
        await host.stop()
    assert time.monotonic() - started < 5
    assert not events(records, "finished")
    async with sb_client.get_queue_receiver("work") as receiver:
        [left] = await receiver.peek_messages(max_message_count=10)
    # Abandoned (not left to its 30 s lock): available again, one delivery counted.
    assert (left.message_id, left.delivery_count) == ("stuck", 1)


async def test_a_missing_connection_setting_fails_startup_naming_it(tmp_path: Path) -> None:
    root = script_root(tmp_path, "servicebus")
    host = FunctionsHost(root, {"SAMPLE_QUEUE": "work", "SAMPLE_SYNC_QUEUE": "sync"})
    with pytest.raises(HostStartupError, match="'SampleServiceBus' is not set"):
        await host.start()
    assert "SAMPLE_QUEUE" not in os.environ  # what it added is removed again


# -- blobs ----------------------------------------------------------------------------------------
@pytest.fixture
async def blobs(azurite: Azurite) -> AsyncIterator[BlobServiceClient]:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service


async def test_a_blob_trigger_fires_once_per_blob_version_and_not_again_after_restart(
    tmp_path: Path, records: Path, azurite: Azurite, blobs: BlobServiceClient
) -> None:
    container = f"blob-{uuid.uuid4().hex[:12]}"
    await blobs.create_container(container)
    box = blobs.get_container_client(container)
    root = script_root(tmp_path, "blob", {"extensions": {"queues": {"maxDequeueCount": 2}}})
    settings = {"AzureWebJobsStorage": azurite.connection_string, "SAMPLE_CONTAINER": container}

    def seen() -> list[str]:
        return sorted(e["name"] for e in events(records, "blob"))

    for i in range(3):
        await box.upload_blob(f"in/b{i}.txt", f"body-{i}".encode())
    await box.upload_blob("elsewhere/x.txt", b"not under the trigger's path")
    async with FunctionsHost(root, settings, blob_poll_interval_s=0.2) as host:
        await eventually(lambda: len(seen()) >= 3, "three blobs")
        await box.upload_blob("in/fail-1.txt", b"bad")
        await eventually(
            lambda: seen().count(f"{container}/in/fail-1.txt") >= 2, "two tries of the bad blob"
        )
        host_id = host.host_id
        await asyncio.sleep(0.6)  # a few more polls: nothing runs twice
    assert seen() == sorted(
        [f"{container}/in/b{i}.txt" for i in range(3)] + [f"{container}/in/fail-1.txt"] * 2
    )
    first = next(e for e in events(records, "blob") if e["name"].endswith("b1.txt"))
    assert (first["content"], first["length"]) == ("body-1", 6)
    assert first["uri"].endswith(f"/{container}/in/b1.txt")

    receipt = blobs.get_blob_client(
        HOSTS_CONTAINER, f"blobreceipts/{host_id}/on_upload/{container}/in/b1.txt"
    )
    assert (await receipt.get_blob_properties()).metadata["status"] == "completed"
    poison = blobs.get_blob_client(POISON_CONTAINER, f"on_upload/{container}/in/fail-1.txt.json")
    record = json.loads(await (await poison.download_blob()).readall())
    assert (record["BlobName"], record["attempts"]) == ("in/fail-1.txt", 2)

    # A restarted host: the processed blobs stay done; a new blob and a new version run.
    (records / "events.jsonl").unlink()
    await box.upload_blob("in/b1.txt", b"body-1-v2", overwrite=True)
    await box.upload_blob("in/b9.txt", b"body-9")
    async with FunctionsHost(root, settings, blob_poll_interval_s=0.2):
        await eventually(lambda: len(seen()) >= 2, "the new blob and the new version")
        await asyncio.sleep(0.6)
    assert seen() == [f"{container}/in/b1.txt", f"{container}/in/b9.txt"]


# -- timers ---------------------------------------------------------------------------------------
async def test_timers_fire_on_schedule_and_on_startup(tmp_path: Path, records: Path) -> None:
    root = script_root(tmp_path, "timer")
    async with FunctionsHost(root, {}):
        await eventually(lambda: len(events(records, "tick")) >= 2, "two ticks", timeout_s=5)
    ticks = events(records, "tick")
    assert len(ticks) <= 4
    assert not any(t["past_due"] for t in ticks)
    nexts = [t["status"]["Next"] for t in ticks]
    assert len(set(nexts)) == len(nexts)  # one run per occurrence
    assert [e["past_due"] for e in events(records, "startup")] == [False]


# -- HTTP -----------------------------------------------------------------------------------------
async def test_http_round_trip_errors_and_route_prefix(tmp_path: Path) -> None:
    root = script_root(tmp_path, "http")
    async with FunctionsHost(root, {}) as host, aiohttp.ClientSession(host.http_url) as http:
        async with http.post(
            "/api/items/42?q=x&q=y&r=1", data=b"hello", headers={"x-sample": "yes"}
        ) as resp:
            assert resp.status == 201
            assert resp.headers["x-echo"] == "1"
            assert resp.content_type == "application/json"
            echo = await resp.json()
        assert echo["method"] == "POST"
        assert echo["route_params"] == {"id": "42"}
        assert echo["params"] == {"q": "x", "r": "1"}
        assert (echo["body"], echo["header"]) == ("hello", "yes")
        assert echo["url"].endswith("/api/items/42?q=x&q=y&r=1")

        async with http.get("/api/boom") as resp:
            assert resp.status == 500
            assert "'boom' failed (invocation" in await resp.text()
        async with http.get("/api/items/not-a-number") as resp:
            assert resp.status == 404
        async with http.put("/api/items/42") as resp:
            assert resp.status == 404  # a method the route does not allow
        async with http.get("/api/files/a/b.txt") as resp:
            assert (resp.status, await resp.text()) == (200, "path=a/b.txt")
        async with http.delete("/api/nothing") as resp:
            assert resp.status == 204
        async with http.get("/admin/host/status") as resp:
            assert await resp.json() == {"state": "Running"}

    (root / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}})
    )
    async with FunctionsHost(root, {}) as host, aiohttp.ClientSession(host.http_url) as http:
        async with http.get("/v1/files/x") as resp:
            assert (resp.status, await resp.text()) == (200, "path=x")
        async with http.get("/api/files/x") as resp:
            assert resp.status == 404


# -- the CLI, as a process ------------------------------------------------------------------------
class HostProcess:
    """`python -m devhost.host` with its stderr in a file; always killed at the end."""

    def __init__(self, args: list[str], log_path: Path, *, cwd: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devhost.host", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while READY_TEXT not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"host exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"host not ready in {timeout_s}s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return next(line for line in self.log().splitlines() if READY_TEXT in line)

    async def terminate(self, timeout_s: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"host still running {timeout_s}s after SIGTERM:\n{self.log()}"
                )
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def host_processes() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for process in started:
        process.kill()


async def test_sigterm_finishes_in_flight_work_takes_no_more_and_exits_0(
    tmp_path: Path,
    records: Path,
    sb: BrokerProcess,
    sb_client: ServiceBusClient,
    host_processes: list[HostProcess],
) -> None:
    root = script_root(tmp_path, "servicebus")
    settings = tmp_path / "local.settings.json"
    values = {**sb_settings(sb), "SAMPLE_RECORD_DIR": str(records)}
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    process = HostProcess(
        ["--script-root", str(root), "--settings", str(settings), "--grace-seconds", "15"],
        tmp_path / "host.log",
        cwd=root,
        env={},
    )
    host_processes.append(process)
    ready = await process.ready()
    assert ready.endswith(f"{READY_TEXT}: 2 functions (work, work_sync)")
    await send(sb_client, "work", order("in-flight", sleep=2, secret="body-marker-7f3a"))
    await eventually(lambda: bool(events(records, "started")), "the handler to start")
    process.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    await send(sb_client, "work", order("after-stop"))
    assert await process.terminate() == 0
    assert [e["message_id"] for e in events(records, "finished")] == ["in-flight"]
    assert not events(records, "started", message_id="after-stop")
    async with sb_client.get_queue_receiver("work") as receiver:
        left = await receiver.peek_messages(max_message_count=10)
    assert [m.message_id for m in left] == ["after-stop"]  # in-flight completed; the other waits
    log = process.log()
    assert "function.succeeded function=work" in log
    assert "message_id=in-flight" in log
    assert "body-marker-7f3a" not in log  # never a message body
    assert "functions host stopped" in log


async def test_a_missing_connection_setting_exits_2_naming_it(
    tmp_path: Path, host_processes: list[HostProcess]
) -> None:
    root = script_root(tmp_path, "servicebus")
    process = HostProcess(["--script-root", str(root)], tmp_path / "host.log", cwd=root, env={})
    host_processes.append(process)
    assert await asyncio.to_thread(process.proc.wait, 30) == 2
    assert "setting 'SampleServiceBus' is not set" in process.log()


@pytest.fixture
def stack_settings(
    broker: BrokerProcess, azurite: Azurite, model_simulator: RunningSimulator
) -> dict[str, str]:
    """The app settings of the real app against the local stack."""
    return {
        "ServiceBusConnection": broker.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "TENANT_REGISTRY": "devhost/registry.json",
        "AZURE_OPENAI_ENDPOINT": model_simulator.url,
        "AZURE_AI_SERVICES_ENDPOINT": f"{model_simulator.url}/models",
        "MODEL_API_KEY": "sim-key",
    }


async def test_the_real_function_app_serves_an_inference_request(
    tmp_path: Path,
    stack_settings: dict[str, str],
    broker: BrokerProcess,
    blobs: BlobServiceClient,
    host_processes: list[HostProcess],
) -> None:
    keys = ensure_tenant_keys(tmp_path / "tenant-keys.json", ROOT / "devhost" / "registry.json")
    env = {**stack_settings, "TENANT_KEYS_FILE": str(keys)}  # TENANT_PROOF: required (default)
    process = HostProcess(["--script-root", str(ROOT)], tmp_path / "host.log", cwd=ROOT, env=env)
    host_processes.append(process)
    assert "infer" in await process.ready()
    request_id = f"r-{uuid.uuid4().hex}"
    body = {
        "type": "inference.request",
        "version": 1,
        "tenant_id": "tailwind",
        "request_id": request_id,
        "messages": [{"role": "user", "content": "Which plan includes priority support?"}],
        "parameters": {"max_tokens": 16},
    }
    async with ServiceBusClient.from_connection_string(broker.connection_string) as client:
        message = proven_message(Signers(keys)("tailwind"), json.dumps(body), message_id=request_id)
        await send(client, names.INFERENCE_REQUESTS, message)
        result = blobs.get_blob_client(names.RESULTS_CONTAINER, f"tailwind/{request_id}.json")
        deadline = time.monotonic() + 30
        while not await result.exists():
            assert time.monotonic() < deadline, f"no result blob:\n{process.log()}"
            assert process.proc.poll() is None, process.log()
            await asyncio.sleep(0.1)
        stored = json.loads(await (await result.download_blob()).readall())
        assert (stored["tenant_id"], stored["request_id"]) == ("tailwind", request_id)
        assert stored["message"]["content"]
        await eventually(lambda: "function.succeeded function=infer" in process.log(), "the log")
        await drained(client, names.INFERENCE_REQUESTS)
    assert await process.terminate() == 0
