// The app's storage account: Functions host storage, the Flex Consumption deployment container, and
// the data containers the code uses. Keyless (no shared key), no anonymous blob access, TLS 1.2.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the account.')
param tags object = {}

@description('Replication. LRS is the cheapest; choose ZRS or GZRS where the region offers it and the data matters.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_LRS'

@description('Blob containers to create (the app data containers and the deployment package container).')
param containerNames array

@description('Lifecycle rules for old logs: [{ name, prefixes, deleteAfterDays }]. Prefixes are "<container>/<path>".')
param lifecycleRules array = []

@description('True: no public network access; reach the account through private endpoints only.')
param privateNetworking bool = false

@description('Role assignments scoped to the account: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param roleAssignments array = []

@description('Role assignments scoped to one container: [{ container, principalId, roleDefinitionId, description, principalType? }].')
param containerRoleAssignments array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:defaultAction is Deny when enablePrivateNetworking (off by default, see infra/README.md); with it off a Flex Consumption app has no fixed outbound address to allow, so Deny would lock it out of its own host storage
  // checkov:skip=CKV_AZURE_206:replication is the storageSku parameter; LRS is the default because ZRS is not offered in every Flex Consumption region and it keeps idle cost lowest
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
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

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(lifecycleRules)) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [for rule in lifecycleRules: {
        name: rule.name
        enabled: true
        type: 'Lifecycle'
        definition: {
          filters: {
            blobTypes: [
              'blockBlob'
              'appendBlob'
            ]
            prefixMatch: rule.prefixes
          }
          actions: {
            baseBlob: {
              delete: {
                daysAfterModificationGreaterThan: rule.deleteAfterDays
              }
            }
          }
        }
      }]
    }
  }
}

resource accountRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in roleAssignments: {
  name: guid(storage.id, ra.principalId, ra.roleDefinitionId)
  scope: storage
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

resource assignedContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for ra in containerRoleAssignments: {
  parent: blobService
  name: ra.container
}]

resource containerRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (ra, i) in containerRoleAssignments: {
  name: guid(assignedContainers[i].id, ra.principalId, ra.roleDefinitionId)
  scope: assignedContainers[i]
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
  dependsOn: [
    containers
  ]
}]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
