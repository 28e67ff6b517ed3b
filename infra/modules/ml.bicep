// Azure Machine Learning workspace (with its own Key Vault, storage account and container registry,
// sharing the app's Application Insights) and a GPU compute cluster for fine-tuning jobs that
// scales to zero and runs on low-priority (spot) capacity by default.

@description('Name of the workspace.')
param workspaceName string

@description('Name of the workspace Key Vault.')
param keyVaultName string

@description('Name of the workspace storage account (its default datastores: code snapshots, job outputs, models).')
param storageAccountName string

@description('Name of the workspace container registry (training environment images).')
param containerRegistryName string

@description('Resource id of the Application Insights component the workspace reports to.')
param applicationInsightsId string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Name of the GPU compute cluster (2-16 characters).')
@minLength(2)
@maxLength(16)
param computeName string

@description('VM size of the cluster nodes; it must be a GPU size with quota in the region.')
param computeVmSize string

@description('LowPriority (spot capacity, can be preempted, much cheaper) or Dedicated.')
@allowed([
  'LowPriority'
  'Dedicated'
])
param computeVmPriority string = 'LowPriority'

@description('Most nodes the cluster scales out to.')
@minValue(1)
param computeMaxNodes int = 1

@description('Idle time before a node is released (ISO 8601).')
param computeIdleTimeBeforeScaleDown string = 'PT10M'

@description('Resource id of the user-assigned identity the cluster (and so each job) runs as.')
param computeIdentityId string

@description('True: the workspace and its dependencies have no public network access; jobs run in the workspace managed network.')
param privateNetworking bool = false

@description('Resource id of the app storage account that jobs read training data from (a managed network outbound rule is added for it when privateNetworking is true).')
param trainingDataStorageAccountId string

@description('Role assignments scoped to the workspace: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param workspaceRoleAssignments array = []

@description('Role assignments scoped to the workspace storage account: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param storageRoleAssignments array = []

@description('Role assignments scoped to the container registry: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param registryRoleAssignments array = []

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:defaultAction is Deny (trusted Azure services, i.e. AML, bypass) when enablePrivateNetworking (off by default, see infra/README.md)
  // checkov:skip=CKV_AZURE_189:the firewall denies public traffic when enablePrivateNetworking (off by default, see infra/README.md); the vault holds only AML workspace secrets
  name: keyVaultName
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
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
    }
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:defaultAction is Deny (the AML managed network reaches it through a private endpoint) when enablePrivateNetworking (off by default, see infra/README.md)
  // checkov:skip=CKV_AZURE_206:workspace artifacts (code snapshots, job outputs) are reproducible from the app storage and the training code; LRS keeps cost low
  // checkov:skip=CKV_AZURE_43:the name is a parameter (st + ml + uniqueString: 17 lowercase characters) that checkov cannot evaluate; the storage account naming rules hold
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
    }
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  // checkov:skip=CKV_AZURE_139:publicNetworkAccess is Disabled (Premium SKU, private endpoint) when enablePrivateNetworking (off by default, see infra/README.md)
  // checkov:skip=CKV_AZURE_163:image vulnerability scanning is Microsoft Defender for Containers, a subscription-level plan, not a registry property; the registry holds only AML-built training images
  // checkov:skip=CKV_AZURE_166:quarantine needs the Premium SKU and an external scanner; the registry holds only AML-built training images, so Basic is used unless enablePrivateNetworking is true
  name: containerRegistryName
  location: location
  tags: tags
  sku: {
    name: privateNetworking ? 'Premium' : 'Basic'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-06-01' = {
  // checkov:skip=CKV_AZURE_243:the managed network with a private endpoint outbound rule and the workspace private endpoint are created when enablePrivateNetworking (off by default, see infra/README.md)
  name: workspaceName
  location: location
  tags: tags
  kind: 'Default'
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: workspaceName
    keyVault: keyVault.id
    storageAccount: storage.id
    containerRegistry: registry.id
    applicationInsights: applicationInsightsId
    // No account keys: the default datastores are reached with the caller's or the compute's identity.
    systemDatastoresAuthMode: 'Identity'
    v1LegacyMode: false
    hbiWorkspace: false
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    // A Premium registry without public access cannot build images on the shared ACR Tasks agents:
    // build them on the cluster instead.
    imageBuildCompute: privateNetworking ? computeName : null
    // Create the managed network now, not on the first job (whose start would time out on it).
    provisionNetworkNow: privateNetworking
    managedNetwork: privateNetworking ? {
      isolationMode: 'AllowInternetOutbound'
      outboundRules: {
        'training-data-blob': {
          type: 'PrivateEndpoint'
          category: 'UserDefined'
          destination: {
            serviceResourceId: trainingDataStorageAccountId
            subresourceTarget: 'blob'
            sparkEnabled: false
          }
        }
      }
    } : {
      isolationMode: 'Disabled'
    }
  }
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2025-06-01' = {
  parent: workspace
  name: computeName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${computeIdentityId}': {}
    }
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'GPU cluster for per-tenant fine-tuning jobs; scales to zero when idle.'
    disableLocalAuth: true
    properties: {
      osType: 'Linux'
      vmSize: computeVmSize
      vmPriority: computeVmPriority
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: computeIdleTimeBeforeScaleDown
      }
      remoteLoginPortPublicAccess: 'Disabled'
      enableNodePublicIp: !privateNetworking
    }
  }
}

resource workspaceRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in workspaceRoleAssignments: {
  name: guid(workspace.id, ra.principalId, ra.roleDefinitionId)
  scope: workspace
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in storageRoleAssignments: {
  name: guid(storage.id, ra.principalId, ra.roleDefinitionId)
  scope: storage
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

resource registryRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in registryRoleAssignments: {
  name: guid(registry.id, ra.principalId, ra.roleDefinitionId)
  scope: registry
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output computeName string = compute.name
output storageAccountId string = storage.id
output storageAccountName string = storage.name
output keyVaultName string = keyVault.name
output containerRegistryName string = registry.name
