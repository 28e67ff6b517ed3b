"""The demo's fine-tuning act: the drift act's request becomes a tuned model that serves fabrikam.

The Functions host takes the `finetune.request` the drift act caused from `finetune-jobs`: the
intake checks it and records the job, admission gives it the GPU slot, the local job runner (what
stands in for Azure ML here) trains a LoRA adapter with the same `training/` entry point Azure ML
runs, the watcher deploys the result to the model simulator and registers it as fabrikam's next
model version, the gate scores it against the decayed model on held-out examples with the judge
deployment, and promotes it. The act follows that through the operator endpoint
(`GET /api/tenants/fabrikam/models`), then plays fabrikam's app again and its users rate the
answers: the good-answer rate should be back up, served by the new version.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from azure.servicebus.aio import ServiceBusClient

from devhost.demo_drift import TENANT, DriftActResult, wave
from devhost.tenant_keys import Signers, proven_headers

FINISHED = {"promoted", "rejected", "failed", "cancelled", "rolled_back"}


@dataclass
class FinetuneActResult:
    job: dict[str, Any] | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    serving_version: str | None = None
    after: DriftActResult = field(default_factory=DriftActResult)
    decayed_share: float | None = None
    waited_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def recovered_share(self) -> float | None:
        good = self.after.good_after
        return sum(good) / len(good) if good else None


async def models_view(host_url: str, signers: Signers) -> dict[str, Any]:
    """GET /api/tenants/fabrikam/models: the serving version, the timeline, the jobs."""
    url = f"{host_url}/api/tenants/{TENANT}/models"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=proven_headers(signers(TENANT), "GET", url)) as response,
    ):
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return body


async def run_finetune_act(
    servicebus: str,
    host_url: str,
    drift: DriftActResult,
    *,
    requests: int = 150,
    timeout_s: float = 300.0,
    registry_refresh_s: float = 3.0,
    seed: int = 17,
    signers: Signers,
) -> FinetuneActResult:
    """Follow fabrikam's job to its end, then measure its users' ratings of the new version."""
    result = FinetuneActResult()
    if drift.good_after:
        result.decayed_share = sum(drift.good_after) / len(drift.good_after)
    started = time.monotonic()
    deadline = started + timeout_s
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = await models_view(host_url, signers)
        jobs = view.get("jobs", [])
        if jobs and jobs[-1]["state"] in FINISHED:
            break
        await asyncio.sleep(2.0)
    result.waited_s = time.monotonic() - started
    jobs = view.get("jobs", [])
    result.job = jobs[-1] if jobs else None
    result.timeline = view.get("timeline", [])
    result.serving_version = view.get("serving_version")
    if result.job is None:
        result.problems.append("no fine-tuning job was recorded for the drift act's request")
        return result
    if result.job["state"] != "promoted":
        last = result.job["history"][-1]["reason"] if result.job["history"] else "?"
        result.problems.append(f"the job ended {result.job['state']}: {last}")
        return result
    await asyncio.sleep(registry_refresh_s)  # the app re-reads the registry this often
    rng = random.Random(seed)
    async with ServiceBusClient.from_connection_string(servicebus) as bus:
        for first in range(0, requests, 50):
            await wave(
                bus,
                result.after,
                rng,
                first=10_000 + first,
                size=min(50, requests - first),
                shifted=True,
                deadline=time.monotonic() + timeout_s,
                signers=signers,
            )
    result.serving_version = (await models_view(host_url, signers)).get("serving_version")
    recovered = result.recovered_share
    if result.after.answered < result.after.sent:
        result.problems.append(
            f"{result.after.sent - result.after.answered} of {result.after.sent} not answered "
            "after the promotion"
        )
    served = set(result.after.served_by)
    candidate = (result.job.get("candidate") or {}).get("deployment")
    if served != {candidate}:
        result.problems.append(f"after the promotion fabrikam was served by {sorted(served)}")
    if recovered is None or result.decayed_share is None or recovered <= result.decayed_share:
        result.problems.append("the good-answer rate did not recover after the promotion")
    return result


def describe(result: FinetuneActResult) -> list[str]:
    """The act as the demo prints it: the job's states, the gate's numbers, the versions."""
    lines = [f"fine-tuning act ({TENANT}): followed its job for {result.waited_s:.0f} s"]
    job = result.job
    if job is not None:
        lines.append(
            f"  job {job['job_id']} on {job.get('backend')}: {job['train_examples']} examples "
            f"trained on, {job['heldout_examples']} held out, {job.get('gpu_minutes', 0):.2f} "
            "GPU-minutes"
        )
        metrics = job.get("metrics") or {}
        if "validation_loss_before" in metrics and "validation_loss_after" in metrics:
            lines.append(
                f"  trainer (LoRA, {metrics.get('steps', 0):.0f} steps, "
                f"{metrics.get('seconds_per_step', 0):.2f} s/step): train loss "
                f"{metrics.get('first_train_loss', 0):.2f} -> {metrics.get('train_loss', 0):.2f}, "
                f"held-out loss {metrics['validation_loss_before']:.2f} -> "
                f"{metrics['validation_loss_after']:.2f}"
            )
        for step in job["history"]:
            lines.append(f"    {step['at'][11:19]} {step['state']:<10} {step['reason'][:110]}")
        evaluation = job.get("evaluation") or {}
        if evaluation.get("candidate"):
            lines.append(
                f"  gate ({evaluation.get('scorer')}): candidate "
                f"{evaluation['candidate'].get('mean')} vs current "
                f"{evaluation['current'].get('mean')} on {evaluation.get('examples')} held-out "
                f"examples; difference {evaluation.get('mean_difference')}, "
                f"{evaluation.get('confidence', 0):.0%} lower bound {evaluation.get('lower')} "
                f"vs margin {evaluation.get('margin')}: {evaluation.get('decision')}"
            )
    lines.append("  model versions:")
    for entry in result.timeline:
        lines.append(
            f"    {entry['at'][11:19]} {entry['action']:<11} {entry.get('deployment')} "
            f"({entry.get('model_version')}) by {entry['by']}"
            + (f", was {entry['previous']}" if entry.get("previous") else "")
        )
    if result.recovered_share is not None:
        decayed = f"{result.decayed_share:.0%}" if result.decayed_share is not None else "-"
        lines.append(
            f"  after the promotion: good answers {result.recovered_share:.0%} of "
            f"{len(result.after.good_after)} rated (decayed model: {decayed}), served by "
            f"{', '.join(sorted(set(result.after.served_by)))} ({result.serving_version})"
        )
    return lines


def as_json(result: FinetuneActResult) -> str:
    return json.dumps({"job": result.job, "timeline": result.timeline}, indent=2)
