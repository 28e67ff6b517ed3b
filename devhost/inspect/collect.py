"""What `inspect` shows, gathered from a running stack with the real SDKs (no private files).

    snapshot = await collect(env, tenants=None, limit=5, events_limit=20)
    {
      "tenants": {"<id>": {
          "mode": "pooled",
          "results": {"total": 12, "succeeded": 11, "failed": 1, "recent": [{request_id, status,
                      deployment, total_tokens, completed_at}, ...]},
          "rejections": {"total": 2, "by_reason": {"invalid_request": 2}, "recent": [...]},
          "usage": {"calls": 13, "prompt_tokens": .., "completion_tokens": .., "total_tokens": ..,
                    "by_deployment": {"gpt-4o-mini-pool-a": {"calls": 9, "total_tokens": ..}}},
          "reply_queue": "replies-<id>"}},
      "unknown_rejections": {"total": 1, "by_reason": {...}, "recent": [...]},
      "queues": [{"name", "active", "scheduled", "dead_letter", "total"}],
      "dead_letters": [{"queue", "tenant_id", "message_id", "reason", "description", "enqueued"}],
      "events": [{"at", "event", "tenant_id", "deployment", "detail"}]     (events.py)
    }

Sources: the registry blob (TENANT_REGISTRY) for the tenants; blobs `results/<t>/`, `rejected/<t>/`
and `usage/<t>/*.jsonl` (azure-storage-blob); queue depths from the management API
(`ServiceBusAdministrationClient`, its runtime properties); dead letters peeked, not received,
from each queue's dead-letter sub-queue (`azure-servicebus`); events from the host's log
(DEVHOST_LOGS). Errors: a missing setting is a KeyError naming it (the env file is not the stack's).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from devhost.inspect.events import recent_events
from shared.admin.queues import admin_client
from shared.admin.tenants import reply_queue_name
from shared.storage import names
from shared.tenancy.registry import blob_location, parse_registry

_PEEK = 50


async def _read_json_blobs(
    container: ContainerClient, prefix: str
) -> list[tuple[Any, dict[str, Any]]]:
    """(last modified, parsed body) of each JSON blob under prefix, newest first."""
    found = [b async for b in container.list_blobs(name_starts_with=prefix)]

    async def read(name: str) -> dict[str, Any]:
        data = await (await container.download_blob(name)).readall()
        try:
            parsed = json.loads(data)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    bodies = await asyncio.gather(*(read(b.name) for b in found))
    pairs = [(b.last_modified, body) for b, body in zip(found, bodies, strict=True)]
    return sorted(pairs, key=lambda pair: pair[0], reverse=True)


async def _results(blobs: BlobServiceClient, tenant: str, limit: int) -> dict[str, Any]:
    container = blobs.get_container_client(names.RESULTS_CONTAINER)
    pairs = await _read_json_blobs(container, f"{tenant}/")
    results = [body for _, body in pairs if body.get("type") == "inference.result"]
    status = Counter(str(r.get("status", "?")) for r in results)
    return {
        "total": len(results),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
        "recent": [
            {
                "request_id": r.get("request_id"),
                "status": r.get("status"),
                "deployment": r.get("deployment"),
                "total_tokens": (r.get("usage") or {}).get("total_tokens"),
                "completed_at": r.get("completed_at"),
                "failure": (r.get("failure") or {}).get("reason"),
            }
            for r in results[:limit]
        ],
    }


async def _rejections(blobs: BlobServiceClient, prefix: str, limit: int) -> dict[str, Any]:
    container = blobs.get_container_client(names.REJECTED_CONTAINER)
    records = [body for _, body in await _read_json_blobs(container, f"{prefix}/")]
    return {
        "total": len(records),
        "by_reason": dict(Counter(str(r.get("reason", "?")) for r in records).most_common()),
        "recent": [
            {
                "message_id": r.get("message_id"),
                "type": r.get("type"),
                "reason": r.get("reason"),
                "detail": r.get("detail"),
                "rejected_at": r.get("rejected_at"),
            }
            for r in records[:limit]
        ],
    }


async def _usage(blobs: BlobServiceClient, tenant: str) -> dict[str, Any]:
    container = blobs.get_container_client(names.USAGE_CONTAINER)
    totals: Counter[str] = Counter()
    by_deployment: dict[str, Counter[str]] = {}
    async for blob in container.list_blobs(name_starts_with=f"{tenant}/"):
        data = await (await container.download_blob(blob.name)).readall()
        for raw in data.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            counts = Counter(
                {
                    "calls": int(line.get("calls", 1)),
                    "prompt_tokens": int(line.get("prompt_tokens", 0)),
                    "completion_tokens": int(line.get("completion_tokens", 0)),
                    "total_tokens": int(line.get("total_tokens", 0)),
                }
            )
            totals.update(counts)
            by_deployment.setdefault(str(line.get("deployment", "?")), Counter()).update(counts)
    keys = ("calls", "prompt_tokens", "completion_tokens", "total_tokens")
    return {
        **{k: totals.get(k, 0) for k in keys},
        "by_deployment": {
            name: {"calls": c["calls"], "total_tokens": c["total_tokens"]}
            for name, c in sorted(by_deployment.items())
        },
    }


async def _queues(admin_connection: str) -> list[dict[str, Any]]:
    async with admin_client(admin_connection) as admin:
        return [
            {
                "name": q.name,
                "active": q.active_message_count,
                "scheduled": q.scheduled_message_count,
                "dead_letter": q.dead_letter_message_count,
                "total": q.total_message_count,
            }
            async for q in admin.list_queues_runtime_properties()
        ]


def _tenant_of(message: Any) -> str | None:
    props = message.application_properties or {}
    for key in (b"tenant_id", "tenant_id"):
        if key in props:
            value = props[key]
            return value.decode() if isinstance(value, bytes) else str(value)
    try:
        body = json.loads(b"".join(message.body))
    except (ValueError, TypeError):
        return None
    tenant = body.get("tenant_id") if isinstance(body, dict) else None
    return tenant if isinstance(tenant, str) else None


async def _dead_letters(connection: str, queues: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with ServiceBusClient.from_connection_string(connection) as bus:
        for queue in queues:
            async with bus.get_queue_receiver(
                queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            ) as receiver:
                for message in await receiver.peek_messages(max_message_count=_PEEK):
                    enqueued = message.enqueued_time_utc
                    found.append(
                        {
                            "queue": queue,
                            "tenant_id": _tenant_of(message),
                            "message_id": message.message_id,
                            "reason": message.dead_letter_reason,
                            "description": message.dead_letter_error_description,
                            "enqueued": enqueued.isoformat() if enqueued else None,
                        }
                    )
    return found


async def _registry_tenants(blobs: BlobServiceClient, env: Mapping[str, str]) -> dict[str, str]:
    """Tenant id -> mode, from the registry the app reads."""
    location = blob_location(env.get("TENANT_REGISTRY", "blob://config/registry.json"))
    if location is None:
        path = Path(env["TENANT_REGISTRY"])
        data = await asyncio.to_thread(path.read_bytes)
        registry = parse_registry(data, source=str(path), env=dict(env))
    else:
        container, name = location
        data = await (await blobs.get_blob_client(container, name).download_blob()).readall()
        registry = parse_registry(data, source=env["TENANT_REGISTRY"], env=dict(env))
    return {t.id: t.mode.value for t in registry.tenants}


async def collect(
    env: Mapping[str, str],
    *,
    tenants: list[str] | None = None,
    limit: int = 5,
    events_limit: int = 20,
) -> dict[str, Any]:
    async with BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"]) as blobs:
        modes = await _registry_tenants(blobs, env)
        chosen = tenants or sorted(modes)
        queues = await _queues(env["ServiceBusAdminConnection"])
        with_dead = [q["name"] for q in queues if q["dead_letter"]]
        dead = await _dead_letters(env["ServiceBusConnection"], with_dead)
        per_tenant: dict[str, Any] = {}
        for tenant in chosen:
            results, rejections, usage = await asyncio.gather(
                _results(blobs, tenant, limit),
                _rejections(blobs, tenant, limit),
                _usage(blobs, tenant),
            )
            per_tenant[tenant] = {
                "mode": modes.get(tenant, "(not registered)"),
                "results": results,
                "rejections": rejections,
                "usage": usage,
                "reply_queue": reply_queue_name(tenant),
            }
        unknown = await _rejections(blobs, names.UNKNOWN_TENANT_PREFIX, limit)
    log = Path(env.get("DEVHOST_LOGS", ".")) / "host.log"
    events = recent_events(log, events_limit)
    if tenants:
        wanted = set(tenants)
        reply_queues = {reply_queue_name(t) for t in tenants}
        queues = [
            q for q in queues if q["name"] in reply_queues or not q["name"].startswith("replies-")
        ]
        dead = [d for d in dead if d["tenant_id"] in wanted]
        events = [e for e in events if e["tenant_id"] in wanted or e["tenant_id"] is None]
    return {
        "tenants": per_tenant,
        "unknown_rejections": unknown,
        "queues": queues,
        "dead_letters": dead,
        "events": events,
    }
