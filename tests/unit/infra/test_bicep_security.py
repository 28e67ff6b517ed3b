"""Keyless and least privilege: the rules checkov has no checks for (Service Bus, App Insights,
role assignments, list* calls), and the cost rules (scale to zero, low priority)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.unit.infra import bicep_model as bicep
from tests.unit.infra import roles
from tests.unit.infra.bicep_model import INFRA, MAIN, Scope

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _props(resource: Mapping[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = bicep.body(resource["config"]).get("properties") or {}
    return properties


def _text_without_comments(path: Path) -> str:
    return "\n".join(line.split("//")[0] for line in path.read_text().splitlines())


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: p.name)
def test_no_list_keys_or_key_material(path: Path) -> None:
    text = path.read_text()
    calls = re.findall(r"\blist[A-Z]\w*\s*\(", text)
    assert not calls, f"{path.name} calls {calls}: use a managed identity, not keys"
    for needle in ("AccountKey=", "SharedAccessKey", "InstrumentationKey=", "APPINSIGHTS_"):
        assert needle not in text, f"{path.name} contains {needle}"
    for name, declaration in bicep.section(path, "parameters").items():
        assert bicep.decorator(declaration, "secure") is None, f"{path.name}: secret param {name}"


LOCAL_AUTH_SWITCHES = [
    ("Microsoft.ServiceBus/namespaces", ("disableLocalAuth",)),
    ("Microsoft.CognitiveServices/accounts", ("disableLocalAuth",)),
    ("Microsoft.Insights/components", ("DisableLocalAuth",)),
    ("Microsoft.OperationalInsights/workspaces", ("features", "disableLocalAuth")),
    ("Microsoft.MachineLearningServices/workspaces/computes", ("disableLocalAuth",)),
]


@pytest.mark.parametrize(
    ("resource_type", "switch"), LOCAL_AUTH_SWITCHES, ids=[t for t, _ in LOCAL_AUTH_SWITCHES]
)
def test_local_auth_is_disabled(resource_type: str, switch: tuple[str, ...]) -> None:
    found = bicep.all_resources(resource_type)
    assert found, f"no {resource_type} in infra/"
    for path, symbol, resource in found:
        value: Any = _props(resource)
        for step in switch:
            value = value.get(step) if isinstance(value, dict) else None
        assert value is True, f"{path.name}:{symbol} does not set {'.'.join(switch)}: true"


def test_storage_accounts_are_keyless_private_and_tls12() -> None:
    accounts = bicep.all_resources("Microsoft.Storage/storageAccounts")
    assert len(accounts) == 2  # the app's and the AML workspace's
    for path, symbol, resource in accounts:
        properties = _props(resource)
        where = f"{path.name}:{symbol}"
        assert properties["allowSharedKeyAccess"] is False, where
        assert properties["allowBlobPublicAccess"] is False, where
        assert properties["minimumTlsVersion"] == "TLS1_2", where
        assert properties["supportsHttpsTrafficOnly"] is True, where
        assert properties["defaultToOAuthAuthentication"] is True, where
    for path, symbol, resource in bicep.all_resources(
        "Microsoft.Storage/storageAccounts/blobServices/containers"
    ):
        assert _props(resource)["publicAccess"] == "None", f"{path.name}:{symbol}"


def test_key_vault_and_registry_are_keyless() -> None:
    vaults = bicep.all_resources("Microsoft.KeyVault/vaults")  # AML's, and the tenant keys'
    assert len(vaults) == 2
    for _, _, vault in vaults:
        assert _props(vault)["enableRbacAuthorization"] is True
        assert _props(vault)["enablePurgeProtection"] is True
    ((_, _, registry),) = bicep.all_resources("Microsoft.ContainerRegistry/registries")
    assert _props(registry)["adminUserEnabled"] is False
    assert _props(registry)["anonymousPullEnabled"] is False


def test_aml_datastores_use_identities_not_account_keys() -> None:
    ((_, _, workspace),) = bicep.all_resources("Microsoft.MachineLearningServices/workspaces")
    assert _props(workspace)["systemDatastoresAuthMode"] == "Identity"


# --- role assignments ---------------------------------------------------------------------------


def test_role_assignments_are_loops_scoped_to_one_resource_and_named_by_guid() -> None:
    assignments = bicep.all_resources("Microsoft.Authorization/roleAssignments")
    assert len(assignments) >= 6
    for path, symbol, resource in assignments:
        where = f"{path.name}:{symbol}"
        assert resource["api_version"] >= "2022-04-01", where
        item = bicep.loop_item(resource["config"])
        assert item, f"{where} is not a loop over an array of assignments"
        config = bicep.body(resource["config"])
        scope = bicep.accessor(config.get("scope"))
        assert scope, f"{where} has no scope: assign on the one resource, not the group"
        assert scope.split("[")[0] in bicep.resources(path), f"{where}: scope {scope}"
        name = bicep.function_call(config["name"], "guid")
        assert name is not None, f"{where}: name is not guid(...)"
        assert bicep.accessor(name["base_string"]) == f"{scope}.id", where
        assert bicep.accessor(name["extra_string_1"]) == f"{item}.principalId", where
        assert bicep.accessor(name["extra_string_2"]) == f"{item}.roleDefinitionId", where
        properties = config["properties"]
        assert bicep.accessor(properties["principalId"]) == f"{item}.principalId", where
        # `ra.?principalType ?? 'ServicePrincipal'`: identities by default, a developer (User)
        # only where main.bicep says so (principalId); pycep reads it as ra.(principalType ?? ...)
        principal_type = properties["principalType"]
        assert bicep.accessor(principal_type) is None, where  # not a bare reference
        assert {item, "principalType", "ServicePrincipal"} <= bicep.strings(principal_type), where
        role = bicep.function_call(properties["roleDefinitionId"], "subscription_resource_id")
        assert role is not None, where
        assert role["resource_type"] == "Microsoft.Authorization/roleDefinitions", where


def test_every_role_assignment_parameter_is_looped_into_assignments() -> None:
    for path in bicep.bicep_files():
        assignments = bicep.resources(path, "Microsoft.Authorization/roleAssignments")
        looped = {bicep.loop_array(resource["config"]) for resource in assignments.values()}
        for name in bicep.section(path, "parameters"):
            if name.endswith(("roleAssignments", "RoleAssignments")):
                assert name in looped, f"{path.name}: {name} is never assigned"


def test_no_owner_contributor_or_data_owner_role_anywhere() -> None:
    for path in bicep.bicep_files():
        for guid in GUID.findall(path.read_text()):
            assert guid.lower() not in roles.FORBIDDEN, (
                f"{path.name} uses {roles.FORBIDDEN[guid.lower()]}"
            )
    for grant in bicep.grants():
        assert grant.role_id in roles.ALLOWED, f"{grant.module}.{grant.param}: {grant.role_id}"


def test_role_ids_are_named_variables_with_a_comment_naming_the_role() -> None:
    lines = MAIN.read_text().splitlines()
    variables = bicep.section(MAIN, "variables")
    role_variables = {name: v["value"] for name, v in variables.items() if name.endswith("RoleId")}
    assert len(role_variables) >= len(roles.ALLOWED) - 1
    for name, value in role_variables.items():
        assert isinstance(value, str), name
        assert GUID.fullmatch(value), name
        assert value in roles.ALLOWED, f"{name} = {value} is not a known least-privilege role"
        (number,) = [i for i, line in enumerate(lines) if line.startswith(f"var {name} =")]
        comment = lines[number - 1]
        assert comment.startswith("//"), f"{name} has no comment"
        assert roles.ALLOWED[value] in comment, f"the comment above {name} does not name the role"


def test_training_identity_reads_training_data_and_nothing_else() -> None:
    mine = {
        (grant.module, grant.param, grant.role_id)
        for grant in bicep.grants()
        if grant.principal == "trainingIdentity"
    }
    assert mine == {
        # the app's data: read, and only the training data container
        ("storage", "containerRoleAssignments", roles.STORAGE_BLOB_DATA_READER),
        # the AML workspace's own artifact store and image registry, for the job's outputs
        ("ml", "storageRoleAssignments", roles.STORAGE_BLOB_DATA_CONTRIBUTOR),
        ("ml", "registryRoleAssignments", roles.ACR_PULL),
    }
    (container_grant,) = [
        g for g in bicep.grants() if g.principal == "trainingIdentity" and g.module == "storage"
    ]
    assert container_grant.entry["container"] == "trainingDataContainerName"


def test_the_app_identity_gets_no_management_role() -> None:
    app_roles = {grant.role_id for grant in bicep.grants() if grant.principal == "appIdentity"}
    assert app_roles
    assert app_roles <= set(roles.ALLOWED) - {roles.ACR_PULL, roles.STORAGE_BLOB_DATA_READER}


# --- hosting and cost -----------------------------------------------------------------------------


def test_function_app_runs_on_flex_consumption_with_its_user_assigned_identity() -> None:
    call = bicep.function_app_call()
    ((_, plan),) = bicep.resources(call.path, "Microsoft.Web/serverfarms").items()
    assert bicep.body(plan["config"])["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert _props(plan)["reserved"] is True
    ((_, site),) = bicep.resources(call.path, "Microsoft.Web/sites").items()
    config = bicep.body(site["config"])
    assert config["kind"] == "functionapp,linux"
    assert config["identity"]["type"] == "UserAssigned"
    properties = config["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    app_config = properties["functionAppConfig"]
    storage = app_config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert app_config["runtime"]["name"] == "python"
    assert app_config["runtime"]["version"] == "pythonVersion"
    versions = bicep.decorator(bicep.section(call.path, "parameters")["pythonVersion"], "allowed")
    assert set(versions or []) <= {"3.11", "3.12"}
    assert {"instanceMemoryMB", "maximumInstanceCount"} <= set(app_config["scaleAndConcurrency"])
    policies = bicep.resources(call.path, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {bicep.body(p["config"])["name"] for p in policies.values()} == {"scm", "ftp"}
    assert all(_props(p)["allow"] is False for p in policies.values())


def test_function_app_settings_use_the_identity_and_no_keys() -> None:
    settings = bicep.function_app_settings()
    for name in (
        "AzureWebJobsStorage",  # a connection string
        "ServiceBusConnection",  # a connection string
        "MODEL_API_KEY",
        "APPINSIGHTS_INSTRUMENTATIONKEY",
        "FUNCTIONS_WORKER_RUNTIME",  # Flex Consumption takes it from functionAppConfig
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
    ):
        assert name not in settings, name
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert auth.startswith("ClientId=")
    assert auth.endswith(";Authorization=AAD")


def test_service_bus_is_standard_by_default_and_its_queues_keep_every_message() -> None:
    parameters = bicep.section(MAIN, "parameters")
    assert parameters["serviceBusSku"]["default"] == "Standard"
    assert bicep.decorator(parameters["serviceBusSku"], "allowed") == ["Standard", "Premium"]
    ((_, _, queues),) = bicep.all_resources("Microsoft.ServiceBus/namespaces/queues")
    properties = _props(queues)
    assert properties["deadLetteringOnMessageExpiration"] is True
    assert properties["requiresDuplicateDetection"] is True
    assert properties["requiresSession"] is False
    for name in ("lockDuration", "maxDeliveryCount", "duplicateDetectionHistoryTimeWindow"):
        assert name in properties, name
    call = bicep.module("serviceBus")
    for argument in ("lockDuration", "maxDeliveryCount", "skuName"):
        assert argument in call.params, f"main.bicep does not set {argument}"


def test_gpu_cluster_scales_to_zero_on_low_priority_by_default() -> None:
    ((_, _, compute),) = bicep.all_resources(
        "Microsoft.MachineLearningServices/workspaces/computes"
    )
    properties = _props(compute)
    assert properties["computeType"] == "AmlCompute"
    cluster = properties["properties"]
    assert cluster["scaleSettings"]["minNodeCount"] == 0
    call = bicep.module("ml")
    scope = Scope.of(call)
    assert bicep.resolve(cluster["vmPriority"], scope) == "LowPriority"
    main_parameters = bicep.section(MAIN, "parameters")
    for argument in ("computeVmSize", "computeMaxNodes", "computeVmPriority"):
        assert call.params[argument] in main_parameters, f"{argument} is not a main parameter"
    assert bicep.resolve(cluster["scaleSettings"]["maxNodeCount"], scope) == 1


def test_network_isolation_is_a_documented_parameter_off_by_default() -> None:
    parameter = bicep.section(MAIN, "parameters")["enablePrivateNetworking"]
    assert parameter["default"] is False
    assert "private endpoints" in (bicep.decorator(parameter, "description") or "")
    for symbol in ("storage", "serviceBus", "openAi", "aiServices", "ml"):
        assert bicep.module(symbol).params["privateNetworking"] == "enablePrivateNetworking"
    assert bicep.module("network").config["condition"] == "enablePrivateNetworking"
    subnet = bicep.function_app_call().params["virtualNetworkSubnetId"]
    assert "enablePrivateNetworking" in bicep.strings(subnet)


# --- decisions of issue 14: scale controller, host storage, the developer ---------------------


def _triggered_queues() -> set[str]:
    """The queues function_app.py triggers on (`queue_name=names.X`), by their names."""
    from shared.storage import names

    source = (bicep.REPO / "function_app.py").read_text()
    return {getattr(names, constant) for constant in re.findall(r"queue_name=names\.(\w+)", source)}


def test_account_scoped_roles_are_only_on_their_account() -> None:
    for role, (module, param) in roles.ACCOUNT_SCOPED_ONLY.items():
        grants = [g for g in bicep.grants() if g.role_id == role]
        assert grants, roles.ALLOWED[role]
        for grant in grants:
            assert (grant.module, grant.param, grant.principal) == (module, param, "appIdentity")


def test_service_bus_data_owner_is_on_each_triggered_queue_only() -> None:
    owner = [g for g in bicep.grants() if g.role_id in roles.QUEUE_SCOPED_ONLY]
    assert owner, "the scale controller gets no role to read queue length"
    for grant in owner:
        assert (grant.module, grant.param, grant.principal) == (
            "serviceBus",
            "queueRoleAssignments",
            "appIdentity",
        ), grant
    triggered = bicep.resolve("triggeredQueueNames", bicep.Scope(MAIN))
    assert set(triggered) == _triggered_queues()
    loop = bicep.module("serviceBus").params["queueRoleAssignments"]
    assert bicep.loop_array(loop) == "triggeredQueueNames"
    assert loop["config"]["queue"] == bicep.loop_item(loop)


def test_host_storage_gets_blob_contributor_queue_and_table_but_not_blob_owner() -> None:
    app_storage = {
        g.role_id
        for g in bicep.grants()
        if g.principal == "appIdentity" and (g.module, g.param) == ("storage", "roleAssignments")
    }
    assert app_storage == {
        roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
        roles.STORAGE_QUEUE_DATA_CONTRIBUTOR,
        roles.STORAGE_TABLE_DATA_CONTRIBUTOR,
    }


DEVELOPER_ROLES = {
    ("storage", "roleAssignments", roles.STORAGE_BLOB_DATA_CONTRIBUTOR),
    ("storage", "roleAssignments", roles.STORAGE_QUEUE_DATA_CONTRIBUTOR),
    ("serviceBus", "roleAssignments", roles.SERVICE_BUS_DATA_RECEIVER),
    ("serviceBus", "roleAssignments", roles.SERVICE_BUS_DATA_SENDER),
    ("openAi", "roleAssignments", roles.COGNITIVE_SERVICES_OPENAI_USER),
    ("aiServices", "roleAssignments", roles.COGNITIVE_SERVICES_USER),
    # the operator who ran azd writes tenant proof keys (shared.admin tenants add / rotate-key)
    ("tenantKeys", "roleAssignments", roles.KEY_VAULT_SECRETS_OFFICER),
}


def test_the_developer_gets_the_data_roles_of_a_local_run_and_only_when_named() -> None:
    parameters = bicep.section(MAIN, "parameters")
    assert parameters["principalId"]["default"] == ""
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    empty = {"function": {"type": "empty", "parameters": {"item_to_test": "principalId"}}}
    assert bicep.section(MAIN, "variables")["hasDeveloper"]["value"] == {
        "operator": {"type": "not", "operands": {"bool_value": empty}}
    }
    developer = [g for g in bicep.grants() if g.principal == bicep.DEVELOPER]
    assert {(g.module, g.param, g.role_id) for g in developer} == DEVELOPER_ROLES
    for grant in developer:
        assert grant.entry["principalType"] == "principalType", grant
        value = bicep.module(grant.module).params[grant.param]
        assert "hasDeveloper" in bicep.strings(value), f"{grant.module}: not conditional"
    redis = bicep.strings(bicep.module("redis").params["accessPolicyAssignments"])
    assert {"hasDeveloper", "principalId"} <= redis
