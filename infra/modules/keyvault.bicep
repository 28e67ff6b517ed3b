// The tenants' proof keys (shared/security/keys.py): one secret per tenant, `tenant-key-<id>`,
// holding its key ring. RBAC only (no access policies), soft delete with purge protection (a key
// deleted by mistake, or by an attacker, can be recovered and never purged early), no public
// network path when private networking is on (the firewall denies all but the private endpoint).
// The Function app's identity reads secrets (Key Vault Secrets User, on this vault only); the
// operator who onboards tenants writes them (Key Vault Secrets Officer, on this vault only).

@description('Name of the vault (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the vault.')
param tags object = {}

@description('True: no public network access; the app reaches the vault through a private endpoint.')
param privateNetworking bool = false

@description('Days a deleted secret stays recoverable (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Role assignments scoped to the vault: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param roleAssignments array = []

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:defaultAction is Deny (no bypass) when enablePrivateNetworking (off by default, see infra/README.md); access is by Entra ID roles only
  // checkov:skip=CKV_AZURE_189:the firewall denies public traffic when enablePrivateNetworking (off by default, see infra/README.md); every call needs an Entra ID role on this vault
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    // With private networking the firewall denies every public caller (no trusted-service bypass):
    // only the private endpoint reaches the vault. (publicNetworkAccess is left to the firewall:
    // checkov's CKV_AZURE_189 cannot read a conditional value.)
    networkAcls: {
      bypass: 'None'
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
    }
  }
}

resource roles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in roleAssignments: {
  name: guid(vault.id, ra.principalId, ra.roleDefinitionId)
  scope: vault
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

output id string = vault.id
output name string = vault.name
@description('The vault URI (https://<name>.vault.azure.net/): the app setting AZURE_KEY_VAULT_ENDPOINT.')
output uri string = vault.properties.vaultUri
