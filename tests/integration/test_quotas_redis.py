"""Tenant quotas over a real Redis-protocol server (devhost.redis, the `redis_server` fixture).

Instances that share the store together stay within a tenant's quota, in one process and in two
OS processes; the same load on memory-backed instances exceeds it (so the check can fail). An
unreachable store degrades to per-instance limits, logs it once, keeps serving, and is used again
once it answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from devhost.processes import ROOT, free_port
from devhost.redis import RedisServer
from shared.resilience.quotas import TOKENS_PER_MINUTE, TenantQuotas
from shared.structured_logging import fields_of
from shared.tenancy.registry import Quota

QUOTA = Quota(requests_per_minute=20)
ATTEMPTS_PER_INSTANCE = 30


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _prefix() -> str:
    """Each test its own keys on the session's server."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def _burst(instances: list[TenantQuotas], quota: Quota, tokens: int) -> list[int]:
    """Every instance tries ATTEMPTS_PER_INSTANCE times, all at once and interleaved; the number
    each admitted."""
    calls = [q for _ in range(ATTEMPTS_PER_INSTANCE) for q in instances]
    decisions = await asyncio.gather(*(q.try_acquire("tenant-a", quota, tokens) for q in calls))
    return [
        sum(d.allowed for q, d in zip(calls, decisions, strict=True) if q is instance)
        for instance in instances
    ]


async def test_two_instances_sharing_redis_stay_within_the_requests_quota(
    redis_server: RedisServer,
) -> None:
    prefix = _prefix()
    instances = [TenantQuotas(redis_server.url, key_prefix=prefix) for _ in range(2)]
    admitted = await _burst(instances, QUOTA, 1)
    assert sum(admitted) == QUOTA.requests_per_minute  # together: exactly the quota
    assert all(n > 0 for n in admitted), admitted  # both took part
    refused = await instances[1].try_acquire("tenant-a", QUOTA, 1)
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 60
    assert not any(q.degraded for q in instances)
    for q in instances:
        await q.close()


async def test_two_instances_sharing_redis_stay_within_the_tokens_quota(
    redis_server: RedisServer,
) -> None:
    quota = Quota(tokens_per_minute=1000, requests_per_minute=100)
    prefix = _prefix()
    instances = [TenantQuotas(redis_server.url, key_prefix=prefix) for _ in range(2)]
    admitted = await _burst(instances, quota, 100)
    assert sum(admitted) == 10  # 10 x 100 tokens = the 1000-token quota
    refused = await instances[0].try_acquire("tenant-a", quota, 100)
    assert (refused.allowed, refused.limit) == (False, TOKENS_PER_MINUTE)
    for q in instances:
        await q.close()


async def test_two_memory_backed_instances_together_exceed_the_quota() -> None:
    """The contrast: without the shared store each instance grants the whole quota."""
    instances = [TenantQuotas("memory://") for _ in range(2)]
    admitted = await _burst(instances, QUOTA, 1)
    assert admitted == [20, 20]
    assert sum(admitted) > (QUOTA.requests_per_minute or 0)


WORKER = """
import asyncio, json, sys, time
from shared.resilience.quotas import TenantQuotas
from shared.tenancy.registry import Quota

async def main(url, prefix, start_at, attempts):
    quotas = TenantQuotas(url, key_prefix=prefix)
    quota = Quota(requests_per_minute=20)
    await asyncio.sleep(max(0.0, start_at - time.time()))  # both processes start together
    decisions = await asyncio.gather(
        *(quotas.try_acquire("tenant-a", quota, 1) for _ in range(attempts))
    )
    print(json.dumps({"allowed": sum(d.allowed for d in decisions), "degraded": quotas.degraded}))
    await quotas.close()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


def _run_two_processes(url: str) -> list[dict[str, object]]:
    start_at = time.time() + 2.5
    args = [url, _prefix(), str(start_at), str(ATTEMPTS_PER_INSTANCE)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return results


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_two_processes_sharing_one_redis_stay_within_the_quota(
    redis_server: RedisServer, store: str
) -> None:
    results = _run_two_processes(redis_server.url if store == "redis" else "memory://")
    admitted = [int(str(r["allowed"])) for r in results]
    assert not any(r["degraded"] for r in results)
    if store == "redis":
        assert sum(admitted) == QUOTA.requests_per_minute, admitted
    else:  # the contrast: per-process counters grant the quota twice
        assert admitted == [20, 20]


@pytest.fixture
def quota_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="shared.resilience.quotas"):
        yield caplog


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if fields_of(r).get("event") == event]


async def test_an_unreachable_store_degrades_to_per_instance_limits_and_recovers(
    quota_log: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    port = free_port()  # nothing listens there: connection refused
    quotas = TenantQuotas(f"redis://127.0.0.1:{port}/0", key_prefix=_prefix(), clock=clock)
    quota = Quota(requests_per_minute=3)

    decisions = [await quotas.try_acquire("tenant-a", quota, 1) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]  # still limited
    assert quotas.degraded
    (warning,) = _events(quota_log, "quota.store_unavailable")
    assert warning.levelno == logging.WARNING
    fields = fields_of(warning)
    assert fields["store"] == f"redis://127.0.0.1:{port}"
    assert fields["error_type"] == "ConnectionError"
    assert warning.getMessage().startswith("quota.store_unavailable store=redis://127.0.0.1:")

    clock.advance(30.0)  # time to try the store again: still down, still serving, no new warning
    assert (await quotas.try_acquire("tenant-b", quota, 1)).allowed
    assert quotas.degraded
    assert len(_events(quota_log, "quota.store_unavailable")) == 1

    with RedisServer(port=port):
        clock.advance(10.0)  # not yet time to try again: per instance still
        assert (await quotas.try_acquire("tenant-c", quota, 1)).allowed
        assert quotas.degraded
        clock.advance(20.0)
        assert (await quotas.try_acquire("tenant-a", quota, 1)).allowed  # the store's fresh window
        assert not quotas.degraded
        assert len(_events(quota_log, "quota.store_recovered")) == 1
        await quotas.close()


async def test_a_store_that_never_answers_times_out_and_degrades() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever replies
        port = silent.getsockname()[1]
        quotas = TenantQuotas(f"redis://127.0.0.1:{port}/0", key_prefix=_prefix())
        started = time.monotonic()
        decision = await quotas.try_acquire("tenant-a", Quota(requests_per_minute=1), 1)
        assert decision.allowed
        assert quotas.degraded
        assert time.monotonic() - started < 3.0  # bounded by the store timeouts
        await quotas.close()


async def test_a_reachable_store_is_not_degraded(redis_server: RedisServer) -> None:
    """The contrast to the two tests above."""
    quotas = TenantQuotas(redis_server.url, key_prefix=_prefix())
    assert (await quotas.try_acquire("tenant-a", QUOTA, 1)).allowed
    assert not quotas.degraded
    await quotas.close()


def test_the_devhost_server_starts_on_a_free_port_and_cleans_up() -> None:
    server = RedisServer()
    with server:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16) == b"+PONG\r\n"
    assert not server.running
    assert not server.data_dir.exists()
