// An Azure OpenAI account (kind OpenAI) or an Azure AI Services / Foundry account (kind AIServices)
// with its model deployments. Keyless: local (API key) auth is disabled.

@description('Name of the account; also its custom subdomain (the endpoint host name).')
param name string

@description('Azure region (it decides which models and SKUs are offered).')
param location string

@description('Tags for the account.')
param tags object = {}

@description('OpenAI for Azure OpenAI; AIServices for Foundry models reached with azure-ai-inference.')
@allowed([
  'OpenAI'
  'AIServices'
])
param kind string = 'OpenAI'

@description('Deployments, created one at a time: [{ name, model, version, capacity, sku?, format? }]. sku defaults to GlobalStandard, format to OpenAI.')
param deployments array = []

@description('True: no public network access; reach the account through a private endpoint.')
param privateNetworking bool = false

@description('Role assignments scoped to the account: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param roleAssignments array = []

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134:publicNetworkAccess is Disabled (private endpoint only) when enablePrivateNetworking (off by default, see infra/README.md)
  name: name
  location: location
  tags: tags
  kind: kind
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
    }
  }
}

// Azure OpenAI rejects concurrent changes to the deployments of one account: create them in series.
@batchSize(1)
resource modelDeployments 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = [for deployment in deployments: {
  parent: account
  name: deployment.name
  sku: {
    name: deployment.?sku ?? 'GlobalStandard'
    capacity: deployment.capacity
  }
  properties: {
    model: {
      format: deployment.?format ?? 'OpenAI'
      name: deployment.model
      version: deployment.version
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}]

resource accountRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in roleAssignments: {
  name: guid(account.id, ra.principalId, ra.roleDefinitionId)
  scope: account
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

output id string = account.id
output name string = account.name
output endpoint string = account.properties.endpoint
@description('The Azure AI model inference endpoint (AIServices accounts), as azure-ai-inference expects it.')
output inferenceEndpoint string = 'https://${name}.services.ai.azure.com/models'
