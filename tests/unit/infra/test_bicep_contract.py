"""The contract between the code and the Bicep: every setting `shared/settings.py` reads is set in
the Function app's app settings (or is optional in Azure), every queue and container that
`shared/storage/names.py` names is declared, and each data-plane
access the code makes has its role."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from shared.settings import OPTIONAL_IN_AZURE, Settings
from shared.storage import names
from tests.unit.infra import bicep_model as bicep
from tests.unit.infra import roles
from tests.unit.infra.bicep_model import MAIN, Scope


def _env_names(field_name: str, field: FieldInfo) -> tuple[str, ...]:
    """The environment variable names pydantic-settings reads a field from."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    if isinstance(alias, str):
        return (alias,)
    return (field.alias or field_name,)


SETTINGS: dict[str, tuple[str, ...]] = {
    field_name: _env_names(field_name, field) for field_name, field in Settings.model_fields.items()
}
REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {
    field_name: choices
    for field_name, choices in SETTINGS.items()
    if not all(choice in OPTIONAL_IN_AZURE for choice in choices)
}
APP_IDENTITY_CLIENT_ID = "appIdentity.outputs.clientId"


def test_settings_are_introspected_not_listed() -> None:
    assert "TENANT_REGISTRY" in {name for choices in SETTINGS.values() for name in choices}
    assert len(REQUIRED_SETTINGS) >= 6


@pytest.mark.parametrize("field_name", sorted(REQUIRED_SETTINGS))
def test_each_setting_the_code_reads_is_set_in_the_function_app(field_name: str) -> None:
    choices = REQUIRED_SETTINGS[field_name]
    settings = bicep.function_app_settings()
    assert any(choice in settings for choice in choices), (
        f"Settings.{field_name} reads {' or '.join(choices)}, which the Function app's app "
        "settings in infra/ do not set (set it, or list it in OPTIONAL_IN_AZURE)"
    )


@pytest.mark.parametrize("field_name", sorted(REQUIRED_SETTINGS))
def test_each_setting_is_an_output_under_the_same_name(field_name: str) -> None:
    outputs = bicep.section(MAIN, "outputs")
    assert any(choice in outputs for choice in REQUIRED_SETTINGS[field_name]), field_name


def test_optional_settings_set_in_azure_are_never_secrets() -> None:
    settings = bicep.function_app_settings()
    for name in OPTIONAL_IN_AZURE & set(settings):
        assert "KEY" not in name.upper(), name
        assert name not in {"AzureWebJobsStorage", "ServiceBusConnection"}, name


def test_identity_based_connections_name_the_user_assigned_identity() -> None:
    settings = bicep.function_app_settings()
    servicebus = getattr(names, "SERVICEBUS_CONNECTION", "ServiceBusConnection")
    for connection, endpoint in (
        (servicebus, "fullyQualifiedNamespace"),
        ("AzureWebJobsStorage", "blobServiceUri"),
    ):
        assert f"{connection}__{endpoint}" in settings
        assert settings[f"{connection}__credential"] == "managedidentity", connection
        assert bicep.accessor(settings[f"{connection}__clientId"]) == APP_IDENTITY_CLIENT_ID
    assert bicep.accessor(settings["AZURE_CLIENT_ID"]) == APP_IDENTITY_CLIENT_ID
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert auth == "ClientId=${identityClientId};Authorization=AAD"
    assert bicep.accessor(bicep.function_app_call().params["identityClientId"]) == (
        APP_IDENTITY_CLIENT_ID
    )


def test_setting_values_agree_with_the_code_defaults() -> None:
    settings = bicep.function_app_settings()
    for env_name, field_name in (
        ("TENANT_REGISTRY", "tenant_registry"),
        ("AZURE_OPENAI_API_VERSION", "azure_openai_api_version"),
    ):
        if field_name in Settings.model_fields:
            assert settings[env_name] == Settings.model_fields[field_name].default, env_name
    registry = settings["TENANT_REGISTRY"]
    assert registry.startswith("blob://")
    assert registry.removeprefix("blob://").split("/")[0] in names.CONTAINERS


def _declared(resource_type: str, call_symbol: str) -> set[str]:
    """The names a module creates in a `[for name in ...]` loop of `resource_type`."""
    call = bicep.module(call_symbol)
    loops = [
        resource
        for resource in bicep.resources(call.path, resource_type).values()
        if not resource["existing"]
    ]
    assert len(loops) == 1, f"{call.path.name} should create {resource_type} in one loop"
    array = bicep.loop_array(loops[0]["config"])
    return bicep.strings(bicep.resolve(array, Scope.of(call)))


@pytest.mark.parametrize("queue", names.QUEUES)
def test_each_queue_the_code_uses_is_declared(queue: str) -> None:
    assert queue in _declared("Microsoft.ServiceBus/namespaces/queues", "serviceBus")


@pytest.mark.parametrize("container", names.CONTAINERS)
def test_each_container_the_code_uses_is_declared(container: str) -> None:
    declared = _declared("Microsoft.Storage/storageAccounts/blobServices/containers", "storage")
    assert container in declared


def test_training_data_and_lifecycle_rules_name_containers_the_code_uses() -> None:
    scope = Scope(MAIN)
    assert bicep.resolve("trainingDataContainerName", scope) in names.CONTAINERS
    rules = bicep.resolve(bicep.module("storage").params["lifecycleRules"], scope)
    assert rules, "no lifecycle rule for old logs"
    for rule in rules:
        for prefix in rule["prefixes"]:
            assert prefix.split("/")[0] in names.CONTAINERS, prefix
    log_rule = next(rule for rule in rules if "log" in rule["name"])
    assert f"{names.USAGE_CONTAINER}/" in log_rule["prefixes"]


@dataclass(frozen=True)
class Access:
    """A data-plane access the code makes, and the role on the one resource that allows it."""

    what: str
    module: str  # the module in main.bicep that makes the assignment
    param: str  # its role assignment parameter (which resource of the module is the scope)
    role_id: str


DATA_PLANE_ACCESS = (
    Access("receive from the queues (Service Bus triggers)", "serviceBus", "roleAssignments",
           roles.SERVICE_BUS_DATA_RECEIVER),
    Access("send results, fan-out requests and fine-tune jobs", "serviceBus", "roleAssignments",
           roles.SERVICE_BUS_DATA_SENDER),
    Access("read and write blobs (registry, results, usage, uploads, host storage)", "storage",
           "roleAssignments", roles.STORAGE_BLOB_DATA_CONTRIBUTOR),
    Access("Functions host queues of blob triggers", "storage", "roleAssignments",
           roles.STORAGE_QUEUE_DATA_CONTRIBUTOR),
    Access("Functions host diagnostic events table", "storage", "roleAssignments",
           roles.STORAGE_TABLE_DATA_CONTRIBUTOR),
    Access("scale controller reads the length of each triggered queue", "serviceBus",
           "queueRoleAssignments", roles.SERVICE_BUS_DATA_OWNER),
    Access("Azure OpenAI inference", "openAi", "roleAssignments",
           roles.COGNITIVE_SERVICES_OPENAI_USER),
    Access("Azure OpenAI fine-tuning: training files, jobs, deployments of results", "openAi",
           "roleAssignments", roles.COGNITIVE_SERVICES_OPENAI_CONTRIBUTOR),
    Access("AI Services inference (azure-ai-inference), when deployed", "aiServices",
           "roleAssignments", roles.COGNITIVE_SERVICES_USER),
    Access("telemetry to Application Insights with Entra ID auth", "monitoring",
           "roleAssignments", roles.MONITORING_METRICS_PUBLISHER),
    Access("submit and watch AML fine-tuning jobs", "ml", "workspaceRoleAssignments",
           roles.AZUREML_DATA_SCIENTIST),
    Access("upload AML job code snapshots, read job outputs", "ml", "storageRoleAssignments",
           roles.STORAGE_BLOB_DATA_CONTRIBUTOR),
    Access("read the tenants' proof keys (shared/security/keys.py)", "tenantKeys",
           "roleAssignments", roles.KEY_VAULT_SECRETS_USER),
)  # fmt: skip


@pytest.mark.parametrize("access", DATA_PLANE_ACCESS, ids=[a.what for a in DATA_PLANE_ACCESS])
def test_the_app_identity_has_the_role_for_each_access(access: Access) -> None:
    wanted = ("appIdentity", access.module, access.param, access.role_id)
    assert any(
        (grant.principal, grant.module, grant.param, grant.role_id) == wanted
        for grant in bicep.grants()
    ), f"{access.what}: main.bicep does not give the app {roles.ALLOWED[access.role_id]}"


def test_the_app_identity_has_no_role_beyond_what_the_code_needs() -> None:
    needed = {(a.module, a.param, a.role_id) for a in DATA_PLANE_ACCESS}
    granted = {
        (grant.module, grant.param, grant.role_id)
        for grant in bicep.grants()
        if grant.principal == "appIdentity"
    }
    assert granted == needed


def test_inference_roles_are_on_the_right_kind_of_account() -> None:
    scope = Scope(MAIN)
    assert bicep.resolve(bicep.module("openAi").params["kind"], scope) == "OpenAI"
    assert bicep.resolve(bicep.module("aiServices").params["kind"], scope) == "AIServices"
    assert bicep.module("aiServices").config["condition"] == "deployAiServices"


def test_each_tenant_gets_the_reply_queue_the_local_registry_names() -> None:
    """Bicep derives `replies-<tenant id>` from the tenants parameter; the local registry (the
    shape a deployed registry copies) names exactly that queue for every tenant."""
    import json

    main = MAIN.read_text()
    assert "'replies-${t.id}'" in main
    assert "concat(queueNames, tenantReplyQueueNames)" in main
    registry = json.loads((MAIN.parent.parent / "devhost" / "registry.json").read_text())
    for tenant in registry["tenants"]:
        assert f"replies-{tenant['id']}" in tenant["reply_queues"]
