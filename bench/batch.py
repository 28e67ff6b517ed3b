"""Batch upload beside interactive traffic: does a 5,000-row batch slow another tenant down?

Everything is real: Azurite, broker, Functions host (its blob trigger polls `uploads`), Redis,
model simulator. Two pooled tenants share two pooled deployments: `bulk` uploads a 5,000-row JSONL
file; `live` sends single requests at a steady rate and waits for each reply. Runs, each on a
fresh stack:
- `calm`: `live` alone (the baseline);
- `batch`: the same, while `bulk`'s batch runs.

Figures: the batch's rows per second (upload to `completed`, and rows settled within the window),
`live`'s p95 (send to reply) in both runs and their ratio (target <= 1.5), and the intake's peak
memory (tracemalloc, streaming the upload from Azurite) for a 5,000- and a 50,000-row file: flat in
the file's size means the ratio stays near 1 while the file grows 10x.

    python -m bench.batch [--rows 5000] [--window 60] [--big 50000] [--bulk-rpm 1200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from bench.noisy_neighbour import TenantLoad, p95, send_at_rate
from devhost.azurite import Azurite, create_containers
from devhost.stack import MODELS_CONFIG, LocalStack, StackOptions, fresh_data_dir
from devhost.tenant_keys import Signers
from shared.batch.fanout import RowMessage
from shared.batch.files import files_for
from shared.batch.intake import Upload
from shared.batch.record import BatchRecord
from shared.batch.service import Batches
from shared.contracts.batch import batch_id_for
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry import parse_registry
from shared.tenancy.registry_source import StaticRegistry

BULK, LIVE = "bulk", "live"
LIVE_RPM = 60
BULK_QUOTA_RPM = 1_200  # its batch share (0.5 at 90%) paces the rows at 9 rows/s
DEPLOYMENTS = (("gpt-4o-mini-pool-a", 1_000_000, 6_000), ("gpt-4o-mini-pool-b", 1_000_000, 6_000))


def models_config(path: Path) -> Path:
    """The simulator without limits: what is measured is the system's own scheduling."""
    config = json.loads(MODELS_CONFIG.read_text())
    for d in config["deployments"]:
        d.update(tpm=0, rpm=0)
    path.write_text(json.dumps(config))
    return path


def registry_document(bulk_rpm: int = BULK_QUOTA_RPM) -> dict[str, Any]:
    return {
        "version": 1,
        "deployments": [
            {
                "name": name,
                "kind": "azure_openai",
                "mode": "pooled",
                "endpoint": "${AZURE_OPENAI_ENDPOINT}",
                "capacity": {"tokens_per_minute": tpm, "requests_per_minute": rpm},
            }
            for name, tpm, rpm in DEPLOYMENTS
        ],
        "tenants": [
            {"id": BULK, "mode": "pooled", "quota": {"requests_per_minute": bulk_rpm}},
            {"id": LIVE, "mode": "pooled", "quota": {"requests_per_minute": 600}},
        ],
    }


def batch_file(rows: int) -> bytes:
    line = json.dumps(
        {
            "messages": [{"role": "user", "content": "Classify this support ticket: refund"}],
            "parameters": {"max_tokens": 16},
        }
    )
    return ((line + "\n") * rows).encode()


async def upload(storage: str, tenant: str, data: bytes) -> tuple[str, str]:
    """(blob name, batch id)."""
    name = f"{tenant}/batch/{uuid.uuid4().hex[:8]}.jsonl"
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        written = await blobs.get_blob_client(names.UPLOADS_CONTAINER, name).upload_blob(
            data, content_settings=ContentSettings(content_type="application/x-ndjson")
        )
    return name, batch_id_for(tenant, name, str(written["etag"]))


async def record(storage: str, tenant: str, batch_id: str) -> BatchRecord | None:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        blob = blobs.get_blob_client(names.BATCHES_CONTAINER, f"{tenant}/{batch_id}.json")
        if not await blob.exists():
            return None
        return BatchRecord.model_validate_json(await (await blob.download_blob()).readall())


async def watch_batch(
    storage: str, batch_id: str, started: float, window_s: float, timeout_s: float
) -> dict[str, Any]:
    settled_in_window = 0
    while time.monotonic() - started < timeout_s:
        now = await record(storage, BULK, batch_id)
        if now is not None:
            settled = now.counts.succeeded + now.counts.failed
            if time.monotonic() - started <= window_s:
                settled_in_window = settled
            if now.state == "completed":
                seconds = time.monotonic() - started
                return {
                    "rows": now.counts.rows,
                    "succeeded": now.counts.succeeded,
                    "failed": now.counts.failed + now.counts.invalid,
                    "seconds": round(seconds, 1),
                    "rows_per_s": round(now.counts.rows / seconds, 1),
                    "rows_per_s_in_window": round(settled_in_window / window_s, 1),
                }
        await asyncio.sleep(1.0)
    return {"completed": False, "settled_in_window": settled_in_window}


async def collect(
    bus: ServiceBusClient, load: TenantLoad, sending: asyncio.Task[None], until: float
) -> None:
    """`load`'s replies until every request sent has one (after the sending ended) or `until`."""
    async with bus.get_queue_receiver(names.INFERENCE_RESULTS, prefetch_count=100) as receiver:
        while time.monotonic() < until:
            for msg in await receiver.receive_messages(max_message_count=100, max_wait_time=1):
                reply = json.loads(b"".join(msg.body))
                rid = str(msg.correlation_id)
                if reply.get("tenant_id") == load.tenant and rid in load.sent:
                    if reply.get("status") == "succeeded":
                        load.answered.setdefault(rid, time.monotonic())
                    else:
                        load.failed.add(rid)
                await receiver.complete_message(msg)
            if sending.done() and len(load.answered) + len(load.failed) >= len(load.sent):
                return


async def play(
    settings: dict[str, str], *, rows: int, window_s: float, timeout_s: float
) -> dict[str, Any]:
    live = TenantLoad(LIVE, LIVE_RPM)
    warm = TenantLoad(LIVE, 120)
    figures: dict[str, Any] = {}
    signers = Signers(Path(settings["TENANT_KEYS_FILE"]))  # each request proves its tenant
    async with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as bus:
        sending = asyncio.create_task(send_at_rate(bus, warm, 2.0, signers))  # open connections
        await collect(bus, warm, sending, time.monotonic() + 30)
        watching = None
        if rows:
            _, batch_id = await upload(settings["AzureWebJobsStorage"], BULK, batch_file(rows))
            watching = asyncio.create_task(
                watch_batch(
                    settings["AzureWebJobsStorage"],
                    batch_id,
                    time.monotonic(),
                    window_s,
                    timeout_s,
                )
            )
            await asyncio.sleep(2.0)  # the trigger's poll and the fan-out start
        sending = asyncio.create_task(send_at_rate(bus, live, window_s, signers))
        await collect(bus, live, sending, time.monotonic() + window_s + 30)
        if watching is not None:
            figures["batch"] = await watching
    lat = live.latencies_ms()
    figures["live"] = {
        "sent": len(live.sent),
        "answered": len(live.answered),
        "p50_ms": round(statistics.median(lat)) if lat else None,
        "p95_ms": round(p95(lat) or 0) if lat else None,
    }
    return figures


def run(
    name: str, *, rows: int, window_s: float, timeout_s: float, bulk_rpm: int = BULK_QUOTA_RPM
) -> dict[str, Any]:
    data = fresh_data_dir(f"bench-batch-{name}")
    registry_path = data / "registry.json"
    registry_path.write_text(json.dumps(registry_document(bulk_rpm)))
    options = StackOptions(
        data_dir=data, models_config=models_config(data / "models.json"), registry=registry_path
    )
    with LocalStack(options) as stack:
        return asyncio.run(
            play(stack.app_settings(), rows=rows, window_s=window_s, timeout_s=timeout_s)
        )


class _CountingSender:
    """Counts the rows the fan-out would send (the memory figure is the intake's own)."""

    def __init__(self) -> None:
        self.rows = 0

    async def send_rows(self, queue: str, rows: Sequence[RowMessage]) -> None:
        self.rows += len(rows)

    async def close(self) -> None:
        return None


async def intake_peak(connection: str, rows: int) -> dict[str, Any]:
    """tracemalloc's peak while the intake streams a `rows`-row upload from Azurite."""
    store = AzureBlobStore.from_connection_string(connection)
    sender = _CountingSender()
    batches = Batches(
        store=store,
        files=files_for(store),
        registry=StaticRegistry(parse_registry(json.dumps(registry_document()), env={})),
        sender=sender,
        clock=lambda: datetime.now(UTC),
    )
    data = batch_file(rows)
    name, _ = await upload(connection, BULK, data)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        progress = await batches.take(Upload(name))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await store.close()
    if progress is None or sender.rows != rows:
        raise RuntimeError(f"the intake sent {sender.rows} of {rows} rows: {progress}")
    return {
        "rows": rows,
        "file_mib": round(len(data) / 2**20, 2),
        "peak_mib": round(peak / 2**20, 2),
        "seconds": round(time.perf_counter() - started, 1),
    }


def memory_runs(sizes: tuple[int, int]) -> dict[str, Any]:
    data = fresh_data_dir("bench-batch-memory")
    with Azurite(location=data / "azurite") as azurite:
        asyncio.run(create_containers(azurite.connection_string))
        return {str(n): asyncio.run(intake_peak(azurite.connection_string, n)) for n in sizes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--big", type=int, default=50_000, help="the larger file of the memory run")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of interactive load")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the batch")
    parser.add_argument(
        "--bulk-rpm", type=int, default=BULK_QUOTA_RPM, help="the batch tenant's quota (RPM)"
    )
    parser.add_argument("--skip-stack", action="store_true", help="only the memory figures")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary: dict[str, Any] = {"rows": args.rows, "window_s": args.window}
    summary["intake_memory"] = memory_runs((args.rows, args.big))
    small, big = summary["intake_memory"][str(args.rows)], summary["intake_memory"][str(args.big)]
    summary["intake_peak_ratio_big_vs_small"] = round(big["peak_mib"] / small["peak_mib"], 2)
    if not args.skip_stack:
        calm = run("calm", rows=0, window_s=args.window, timeout_s=args.timeout)
        batch = run(
            "batch",
            rows=args.rows,
            window_s=args.window,
            timeout_s=args.timeout,
            bulk_rpm=args.bulk_rpm,
        )
        summary["runs"] = {"calm": calm, "batch": batch}
        calm_p95 = calm["live"]["p95_ms"] or 1
        summary["live_p95_ratio_batch_vs_calm"] = round(batch["live"]["p95_ms"] / calm_p95, 2)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"intake peak memory (tracemalloc), streaming from Azurite; file sizes {args.rows}"
        f" and {args.big} rows:"
    )
    for figures in summary["intake_memory"].values():
        print(
            f"  {figures['rows']:>7} rows  {figures['file_mib']:>7.2f} MiB file  "
            f"peak {figures['peak_mib']:.2f} MiB  ({figures['seconds']} s)"
        )
    print(
        f"  peak ratio {args.big} / {args.rows} rows: "
        f"{summary['intake_peak_ratio_big_vs_small']:.2f} (flat: ~1; the file grew "
        f"{args.big / args.rows:.0f}x)"
    )
    if "runs" in summary:
        runs = summary["runs"]
        print(
            f"live tenant {LIVE_RPM} RPM for {args.window:g}s; bulk uploads {args.rows} rows "
            f"(quota {args.bulk_rpm} RPM: its batch share paces rows at "
            f"{args.bulk_rpm * 0.5 * 0.9 / 60:.1f}/s)"
        )
        for name, figures in runs.items():
            live = figures["live"]
            print(
                f"  {name:6} live answered {live['answered']}/{live['sent']}  "
                f"p50 {live['p50_ms']} ms  p95 {live['p95_ms']} ms"
            )
        print(f"  batch: {runs['batch'].get('batch')}")
        print(
            f"live p95, batch / calm: {summary['live_p95_ratio_batch_vs_calm']:.2f} (target <= 1.5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
