"""The batch share of a tenant's quota over real Redis: two instances' batch rows together stop at
the share, and the tenant's interactive requests still get the rest of the same counters."""

from __future__ import annotations

import asyncio
import uuid

from devhost.redis import RedisServer
from shared.resilience.quotas import TenantQuotas
from shared.tenancy.registry import Quota

QUOTA = Quota(requests_per_minute=40)


async def test_batch_rows_of_two_instances_stop_at_the_share_interactive_gets_the_rest(
    redis_server: RedisServer,
) -> None:
    prefix = f"test-batch-{uuid.uuid4().hex[:12]}"
    instances = [TenantQuotas(redis_server.url, key_prefix=prefix) for _ in range(2)]
    try:
        batch = await asyncio.gather(
            *(q.try_acquire("tenant-b", QUOTA, 1, share=0.5) for q in instances for _ in range(30))
        )
        assert sum(d.allowed for d in batch) == 20
        interactive = await asyncio.gather(
            *(q.try_acquire("tenant-b", QUOTA, 1) for q in instances for _ in range(15))
        )
        assert sum(d.allowed for d in interactive) == 20
        assert not any(q.degraded for q in instances)
    finally:
        for q in instances:
            await q.close()
