"""The devhost registry, changed as a document and parsed again (never `model_copy`: a copy keeps
the original's cached lookups, `deployment_by_name` and `tenant_by_id`, so the change would not be
seen by routing)."""

from __future__ import annotations

import json
from pathlib import Path

from shared.tenancy.registry import Registry, parse_registry

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"


def devhost_registry(
    base_url: str = "https://aoai.example",
    *,
    content_safety: tuple[str, ...] = (),
    only: dict[str, tuple[str, ...]] | None = None,
) -> Registry:
    """The registry with endpoints at `base_url` (the simulator), `content_safety: true` on the
    named deployments, and (`only`) tenants limited to the named deployments."""
    document = json.loads(DEVHOST_REGISTRY.read_text())
    for deployment in document["deployments"]:
        if deployment["name"] in content_safety:
            deployment["content_safety"] = True
    for tenant in document["tenants"]:
        if only and tenant["id"] in only:
            tenant["deployments"] = list(only[tenant["id"]])
    env = {"AZURE_OPENAI_ENDPOINT": base_url, "AZURE_AI_SERVICES_ENDPOINT": f"{base_url}/models"}
    return parse_registry(json.dumps(document), env=env)
