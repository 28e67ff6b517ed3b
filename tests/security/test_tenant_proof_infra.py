"""The Bicep of the tenant proof keys: a vault of their own, RBAC with purge protection, read by the
app only (Key Vault Secrets User, that vault only), written by the operator only, closed to the
internet with private networking, and named to the app by its setting."""

from __future__ import annotations

from tests.unit.infra import bicep_model as bicep
from tests.unit.infra import roles

KEYVAULT = bicep.INFRA / "modules" / "keyvault.bicep"


def _props(resource: dict[str, object]) -> dict[str, object]:
    properties = bicep.body(resource["config"])["properties"]  # type: ignore[arg-type]
    assert isinstance(properties, dict)
    return properties


def test_the_vault_is_rbac_only_soft_deleted_and_purge_protected() -> None:
    [vault] = bicep.resources(KEYVAULT, "Microsoft.KeyVault/vaults").values()
    props = _props(vault)
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props
    acls = props["networkAcls"]
    assert isinstance(acls, dict)
    assert acls["bypass"] == "None"  # no trusted-service side door
    assert {"privateNetworking", "Deny", "Allow"} <= bicep.strings(acls["defaultAction"])


def test_secrets_roles_are_on_the_tenant_vault_only_each_for_its_one_principal() -> None:
    for role, where in roles.VAULT_SCOPED_ONLY.items():
        holders = [g for g in bicep.grants() if g.role_id == role]
        assert holders, roles.ALLOWED[role]
        assert {(g.module, g.param, g.principal) for g in holders} == {where}
    tenant_vault = [g for g in bicep.grants() if g.module == "tenantKeys"]
    assert {g.role_id for g in tenant_vault} == set(roles.VAULT_SCOPED_ONLY)
    assert roles.KEY_VAULT_SECRETS_OFFICER not in {
        g.role_id for g in bicep.grants() if g.principal == "appIdentity"
    }  # the app reads keys; it never writes them


def test_the_vault_follows_private_networking_and_gets_its_private_endpoint() -> None:
    call = bicep.module("tenantKeys")
    assert call.params["privateNetworking"] == "enablePrivateNetworking"
    targets = bicep.section(bicep.MAIN, "variables")["privateEndpointTargets"]
    [target] = [
        t for t in bicep.walk(targets) if isinstance(t, dict) and t.get("key") == "kv-tenants"
    ]
    assert (target["type"], target["groupId"]) == ("Microsoft.KeyVault/vaults", "vault")
    [zone] = target["zones"]
    assert bicep.resolve(zone, bicep.Scope(bicep.MAIN)) == "privatelink.vaultcore.azure.net"


def test_the_app_is_told_which_vault_and_that_proofs_are_required() -> None:
    settings = bicep.function_app_settings()
    assert bicep.accessor(settings["AZURE_KEY_VAULT_ENDPOINT"]) == "tenantKeys.outputs.uri"
    assert settings["TENANT_PROOF"] == "required"
