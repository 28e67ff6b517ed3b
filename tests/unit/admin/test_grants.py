"""The tenant app's role assignments as Azure Resource Manager receives them (azure-core runs; only
the HTTP answer is canned), and the ids and settings that must match the Bicep."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError

from shared.admin import grants
from shared.admin.grants import NamespaceRef, RoleAssigner, assignment_name, tenant_app_grants
from shared.admin.queues import REPLY_QUEUE_SETTINGS
from shared.admin.tenants import reply_queue_name
from tests.transport_fakes import AzureTransport

ROOT = Path(__file__).resolve().parents[3]
MAIN = (ROOT / "infra" / "main.bicep").read_text()
REF = NamespaceRef("sub-1", "rg-dev", "sb-abc")


class Token:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://management.azure.com/.default",)
        return AccessToken("token", 2_000_000_000)

    async def close(self) -> None:
        return None


async def test_the_tenant_app_gets_send_on_two_queues_and_receive_on_its_own() -> None:
    transport = AzureTransport(201, b"{}")
    assigner = RoleAssigner(Token(), REF, transport=transport)  # type: ignore[arg-type]
    for grant in tenant_app_grants("northwind"):
        assert await assigner.assign("oid-1", grant) is True
    made = []
    for request in transport.requests:
        assert request.method == "PUT"
        scope, _, name = request.url.partition(
            "/providers/Microsoft.Authorization/roleAssignments/"
        )
        name, _, query = name.partition("?")
        body = json.loads(request.content)["properties"]
        assert query == "api-version=2022-04-01"
        assert request.headers["Authorization"] == "Bearer token"
        assert name == assignment_name(
            scope.removeprefix("https://management.azure.com"),
            "oid-1",
            body["roleDefinitionId"].rsplit("/", 1)[1],
        )
        assert body["principalId"] == "oid-1"
        assert body["principalType"] == "ServicePrincipal"
        made.append((scope.rsplit("/queues/", 1)[1], body["roleDefinitionId"].rsplit("/", 1)[1]))
    assert made == [
        ("inference-requests", grants.SERVICE_BUS_DATA_SENDER),
        ("feedback", grants.SERVICE_BUS_DATA_SENDER),
        ("replies-northwind", grants.SERVICE_BUS_DATA_RECEIVER),
    ]
    assert transport.requests[0].url.startswith(
        "https://management.azure.com/subscriptions/sub-1/resourceGroups/rg-dev/providers/"
        "Microsoft.ServiceBus/namespaces/sb-abc/queues/inference-requests/providers/"
    )


async def test_an_existing_assignment_is_done_and_other_errors_are_raised() -> None:
    (grant, *_) = tenant_app_grants("northwind")
    exists = AzureTransport(409, b'{"error": {"code": "RoleAssignmentExists"}}')
    assert await RoleAssigner(Token(), REF, transport=exists).assign("o", grant) is False  # type: ignore[arg-type]
    denied = AzureTransport(403, b'{"error": {"code": "AuthorizationFailed"}}')
    with pytest.raises(HttpResponseError):
        await RoleAssigner(Token(), REF, transport=denied).assign("o", grant)  # type: ignore[arg-type]


async def test_revoke_deletes_the_same_name_and_a_missing_one_is_not_an_error() -> None:
    (grant, *_) = tenant_app_grants("northwind")
    gone = AzureTransport(404, b"")
    assert await RoleAssigner(Token(), REF, transport=gone).revoke("o", grant) is False  # type: ignore[arg-type]
    done = AzureTransport(200, b"{}")
    assert await RoleAssigner(Token(), REF, transport=done).revoke("o", grant) is True  # type: ignore[arg-type]
    (request,) = done.requests
    assert request.method == "DELETE"
    scope = REF.queue_scope("inference-requests")
    assert request.url.split("?")[0].endswith(
        f"{scope}/providers/Microsoft.Authorization/"
        f"roleAssignments/{assignment_name(scope, 'o', grant.role_id)}"
    )


def _bicep_role_ids() -> dict[str, str]:
    """Role name (from the comment above each role variable) -> its GUID, from main.bicep."""
    found = re.findall(r"// ([^:\n]+?)(?::[^\n]*)?\nvar \w+RoleId = '([0-9a-f-]{36})'", MAIN)
    return {name.strip(): guid for name, guid in found}


def test_role_ids_are_the_bicep_ones() -> None:
    declared = _bicep_role_ids()
    for role_id, name in grants.ROLE_NAMES.items():
        assert declared.get(name) == role_id, name


def test_reply_queues_are_named_and_set_up_as_the_bicep_makes_them() -> None:
    assert "'replies-${t.id}'" in MAIN
    assert reply_queue_name("x") == "replies-x"
    defaults = {
        "lock_duration": r"param serviceBusLockDuration string = '(\S+)'",
        "max_delivery_count": r"param serviceBusMaxDeliveryCount int = (\d+)",
        "default_message_time_to_live": r"param serviceBusMessageTimeToLive string = '(\S+)'",
        "duplicate_detection_history_time_window": (
            r"param serviceBusDuplicateDetectionWindow string = '(\S+)'"
        ),
    }
    for key, pattern in defaults.items():
        match = re.search(pattern, MAIN)
        assert match, pattern
        expected: object = int(match[1]) if key == "max_delivery_count" else match[1]
        assert REPLY_QUEUE_SETTINGS[key] == expected, key
    module = (ROOT / "infra" / "modules" / "servicebus.bicep").read_text()
    assert "deadLetteringOnMessageExpiration: true" in module
    assert "requiresDuplicateDetection: true" in module
    assert REPLY_QUEUE_SETTINGS["dead_lettering_on_message_expiration"] is True
    assert REPLY_QUEUE_SETTINGS["requires_duplicate_detection"] is True


def test_the_hooks_requirements_are_pinned_as_the_apps() -> None:
    app = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()}
    hook = (ROOT / "infra" / "hooks" / "requirements.txt").read_text().splitlines()
    pins = [line.strip() for line in hook if line.strip() and not line.startswith("#")]
    assert pins
    for pin in pins:
        assert pin in app, f"{pin} differs from requirements.txt"
