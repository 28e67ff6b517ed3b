"""An operator's drift check on demand (`POST /api/tenants/{tenant_id}/drift`, master key).

The same evaluation as the timer's, for one tenant, now: useful after a deployment change, in a
runbook, or in the demo. Answers `(status, JSON body)`: 200 with one summary per rating stream
that had anything new (`[]` when none had), 404 for a tenant the registry does not know.
"""

from __future__ import annotations

import json

from shared.runtime import Runtime


async def drift_now(runtime: Runtime, tenant_id: str) -> tuple[int, bytes]:
    registry = await runtime.registry.get()
    if registry.tenant(tenant_id) is None:
        body = {"reason": "unknown_tenant", "detail": "the tenant is not registered"}
        return 404, json.dumps(body).encode("utf-8")
    reports = await runtime.drift.evaluate_tenant(tenant_id, trigger="operator")
    summaries = [
        {
            "model_key": r.model_key,
            "drift": r.drift,
            "decision": r.decision,
            "action": r.action.model_dump(),
            "report": r.blob,
            "chart": r.chart,
        }
        for r in reports
    ]
    return 200, json.dumps({"tenant_id": tenant_id, "evaluated": summaries}).encode("utf-8")
