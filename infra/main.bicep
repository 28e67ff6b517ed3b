// The whole system in one resource group, keyless and least-privilege. `azd up` provisions this
// and deploys the Function app (service `api` in azure.yaml) into it. See infra/README.md.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds every resource name and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region for all resources (it must offer Flex Consumption; see infra/README.md).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group; empty for rg-<environmentName>.')
param resourceGroupName string = ''

@description('Python version of the Function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances the Function app scales out to (it scales in to zero); Flex Consumption takes 40 to 1000.')
@minValue(40)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Memory of each Function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Service Bus tier: Standard (pay per operation) or Premium (dedicated; forced when enablePrivateNetworking is true).')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('Peek-lock duration of every queue (ISO 8601, at most PT5M); the host renews it while a handler runs.')
param serviceBusLockDuration string = 'PT1M'

@description('Deliveries before a message goes to the dead-letter queue.')
@minValue(1)
param serviceBusMaxDeliveryCount int = 10

@description('Time to live of a message (ISO 8601); expired messages are dead-lettered, not dropped.')
param serviceBusMessageTimeToLive string = 'P14D'

@description('Window for duplicate detection by message id (ISO 8601).')
param serviceBusDuplicateDetectionWindow string = 'PT10M'

@description('Replication of the app storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSku string = 'Standard_LRS'

@description('Days after which usage logs, rejection records, the inference log and feedback are deleted by the lifecycle rule.')
@minValue(1)
param logRetentionDays int = 90

@description('Days after which inference results are deleted by the lifecycle rule.')
@minValue(1)
param resultRetentionDays int = 30

@description('Region of the Azure OpenAI account (model and SKU availability differ by region).')
param openAiLocation string = location

@description('Azure OpenAI data-plane API version the app uses.')
param openAiApiVersion string = '2024-10-21'

// The default pooled model must be open to new deployments: check the Azure OpenAI model
// retirement table before changing it (gpt-4o-mini 2024-07-18 Global Standard retired 2026-10-01).
// gpt-4.1-mini takes max_tokens and temperature as the app sends them, with the GA data-plane API
// version below; a reasoning model (o-series, gpt-5 family) would need a newer one.
@description('Model of the default pooled deployment (an Azure OpenAI model open to new deployments in openAiLocation).')
param pooledModelName string = 'gpt-4.1-mini'

@description('Version of pooledModelName.')
param pooledModelVersion string = '2025-04-14'

@description('Deployment type (SKU) of the default pooled deployment: GlobalStandard, DataZoneStandard or Standard (regional).')
@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
param pooledModelSku string = 'GlobalStandard'

@description('Capacity of the default pooled deployment, in thousands of tokens per minute.')
@minValue(1)
param pooledModelCapacity int = 30

@description('Deployments shared by all pooled tenants: [{ name, model, version, sku, capacity }] (capacity in thousands of tokens per minute). By default one deployment named after pooledModelName.')
param pooledDeployments array = [
  {
    name: pooledModelName
    model: pooledModelName
    version: pooledModelVersion
    sku: pooledModelSku
    capacity: pooledModelCapacity
  }
]

@description('Tenants: [{ id, mode: pooled | dedicated | tuned, deployments: [{ name, model, version, sku?, capacity }] }]. Each dedicated tenant gets its own deployments; see infra/README.md.')
param tenants array = []

@description('Also deploy an Azure AI Services (Foundry) account for models reached with azure-ai-inference.')
param deployAiServices bool = false

@description('Deployments on the AI Services account: [{ name, model, version, format, sku, capacity }], e.g. format Microsoft for Phi models.')
param aiServicesDeployments array = []

@description('Azure Managed Redis SKU of the shared tenant quota counters (Balanced_B0 is the smallest).')
param redisSkuName string = 'Balanced_B0'

@description('Replicate the quota counters cache (Enabled, for the SLA) or not (Disabled, half the cost; the app degrades to per-instance quotas while the cache is away).')
@allowed([
  'Enabled'
  'Disabled'
])
param redisHighAvailability string = 'Enabled'

@description('VM size of the fine-tuning GPU cluster (it needs GPU quota in the region).')
param mlComputeVmSize string = 'Standard_NC4as_T4_v3'

@description('LowPriority (spot capacity, preemptible, far cheaper) or Dedicated.')
@allowed([
  'LowPriority'
  'Dedicated'
])
param mlComputeVmPriority string = 'LowPriority'

@description('Most nodes of the fine-tuning cluster (it always scales in to zero).')
@minValue(1)
param mlComputeMaxNodes int = 1

@description('Idle time before a cluster node is released (ISO 8601).')
param mlComputeIdleTimeBeforeScaleDown string = 'PT10M'

@description('Blob container that fine-tuning jobs read training data from; the cluster identity may read only this container.')
param trainingDataContainerName string = 'training'

@description('Object id of a developer who gets the data-plane roles to run the app locally against this environment (azd fills it with the signed-in user, AZURE_PRINCIPAL_ID); empty for none.')
param principalId string = ''

@description('Kind of principalId: User (a person) or ServicePrincipal (e.g. a CI identity).')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Network isolation: private endpoints for storage, Service Bus (Premium), Azure OpenAI / AI Services and the AML workspace, a VNet-integrated Function app, and no public network access to those services. Off by default.')
param enablePrivateNetworking bool = false

// ---------------------------------------------------------------------------------------------
// Names (they must match shared/names.py and shared/settings.py: a contract test checks them)
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// Queues a function of this app triggers on (function_app.py): the scale controller watches them.
var triggeredQueueNames = [
  'inference-requests'
  'feedback'
  'finetune-jobs'
]

var queueNames = [
  'inference-requests'
  'inference-results'
  'feedback'
  'finetune-jobs'
]

// Each tenant gets its own reply queue (the registry's reply_queues), so a tenant app reads only
// its own replies.
var tenantReplyQueueNames = [for t in tenants: 'replies-${t.id}']

var dataContainerNames = [
  'results'
  'rejected'
  'usage'
  'config'
  'uploads'
  'inference-log'
  'feedback'
  'drift'
  'training'
  'batches'
  'jobs'
  'models'
]

var configContainerName = 'config'
var tenantRegistry = 'blob://${configContainerName}/registry.json'

var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var storageAccountName = '${abbrs.storageStorageAccounts}${resourceToken}'
var serviceBusName = '${abbrs.serviceBusNamespaces}${resourceToken}'
var openAiName = '${abbrs.cognitiveServicesOpenAI}${resourceToken}'
var aiServicesName = '${abbrs.cognitiveServicesAIServices}${resourceToken}'
var mlWorkspaceName = '${abbrs.machineLearningServicesWorkspaces}${resourceToken}'
var mlStorageAccountName = '${abbrs.storageStorageAccounts}ml${resourceToken}'
var redisName = '${abbrs.cacheRedisEnterprise}${resourceToken}'
// The tenants' proof keys: a vault of their own (the AML workspace has another for its secrets).
var tenantKeyVaultName = '${abbrs.keyVaultVaults}t${resourceToken}'

// Premium is the only Service Bus tier with private endpoints.
var effectiveServiceBusSku = enablePrivateNetworking ? 'Premium' : serviceBusSku

// Pooled deployments, then every dedicated tenant's own deployments, on the one account.
var dedicatedTenants = filter(tenants, tenant => tenant.mode == 'dedicated')
var dedicatedDeploymentLists = [for tenant in dedicatedTenants: tenant.deployments]
var openAiDeployments = concat(pooledDeployments, flatten(dedicatedDeploymentLists))

// ---------------------------------------------------------------------------------------------
// Built-in role definition ids: the least each identity needs, each assigned on one resource
// ---------------------------------------------------------------------------------------------

// Azure Service Bus Data Receiver: receive, complete, abandon and dead-letter messages
var serviceBusDataReceiverRoleId = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
// Azure Service Bus Data Sender: send and schedule messages
var serviceBusDataSenderRoleId = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
// The Functions scale controller reads each triggered queue's length, whose runtime properties need
// Manage on the queue: Azure Service Bus Data Owner, on each triggered queue only (not the namespace)
var serviceBusDataOwnerRoleId = '090c5cfd-751d-490a-894a-3ce6f1109419'
// Storage Blob Data Contributor: read, write and delete blobs (no RBAC or account management)
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
// Storage Blob Data Reader: read blobs
var storageBlobDataReaderRoleId = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
// Storage Queue Data Contributor: the Functions host's blob-trigger and poison queues
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Storage Table Data Contributor: the Functions host's diagnostic events table
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Cognitive Services OpenAI User: call inference on Azure OpenAI deployments (no management)
var cognitiveServicesOpenAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
// Fine-tuning on the Azure OpenAI account only: training files, jobs, deployments of their results
// (no accounts, no keys; the narrowest built-in role that fine-tunes). Role:
// Cognitive Services OpenAI Contributor
var cognitiveServicesOpenAiContributorRoleId = 'a001fd3d-188f-4b5d-821b-7da978bf7442'
// Cognitive Services User: call inference on AI Services models (keys are disabled on the account)
var cognitiveServicesUserRoleId = 'a97b65f3-24c7-4388-baec-2e87135dc908'
// Monitoring Metrics Publisher: send telemetry to Application Insights with Entra ID auth
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
// AzureML Data Scientist: submit and read jobs in the workspace (no compute or workspace changes)
var azureMlDataScientistRoleId = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
// AcrPull: pull training environment images
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
// Key Vault Secrets User: read secret values (the tenants' proof keys), on the tenant key vault only
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
// Writing the tenants' proof keys (tenants add, rotate-key, retire-key), on that vault only. Role:
// Key Vault Secrets Officer
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

// The developer (principalId) gets, when set, what a local run of the app needs: the queues, the app
// storage, the models and the quota cache; not the AML workspace or any management role.
var hasDeveloper = !empty(principalId)

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module appIdentity 'modules/identity.bicep' = {
  name: 'app-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module trainingIdentity 'modules/identity.bicep' = {
  name: 'training-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}train-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    roleAssignments: [
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: monitoringMetricsPublisherRoleId
        description: 'Function app telemetry with Entra ID auth'
      }
    ]
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSku
    containerNames: concat(dataContainerNames, [
      deploymentContainerName
    ])
    lifecycleRules: [
      {
        name: 'expire-old-logs'
        prefixes: [
          'usage/'
          'rejected/'
          'inference-log/'
          'feedback/'
        ]
        deleteAfterDays: logRetentionDays
      }
      {
        name: 'expire-old-results'
        prefixes: [
          'results/'
        ]
        deleteAfterDays: resultRetentionDays
      }
    ]
    privateNetworking: enablePrivateNetworking
    roleAssignments: concat([
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: storageBlobDataContributorRoleId
        description: 'Function app: host storage, deployment package, data containers'
      }
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: storageQueueDataContributorRoleId
        description: 'Function app: blob trigger queues of the Functions host'
      }
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: storageTableDataContributorRoleId
        description: 'Function app: diagnostic events table of the Functions host'
      }
    ], hasDeveloper ? [
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: storageBlobDataContributorRoleId
        description: 'Developer: the data containers, from a local run'
      }
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: storageQueueDataContributorRoleId
        description: 'Developer: storage queues, from a local run'
      }
    ] : [])
    containerRoleAssignments: [
      {
        container: trainingDataContainerName
        principalId: trainingIdentity.outputs.principalId
        roleDefinitionId: storageBlobDataReaderRoleId
        description: 'AML compute: read training data, nothing else'
      }
    ]
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: serviceBusName
    location: location
    tags: tags
    skuName: effectiveServiceBusSku
    queueNames: concat(queueNames, tenantReplyQueueNames)
    lockDuration: serviceBusLockDuration
    maxDeliveryCount: serviceBusMaxDeliveryCount
    defaultMessageTimeToLive: serviceBusMessageTimeToLive
    duplicateDetectionHistoryTimeWindow: serviceBusDuplicateDetectionWindow
    privateNetworking: enablePrivateNetworking
    roleAssignments: concat([
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: serviceBusDataReceiverRoleId
        description: 'Function app: Service Bus triggers'
      }
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: serviceBusDataSenderRoleId
        description: 'Function app: results, fan-out, fine-tune jobs'
      }
    ], hasDeveloper ? [
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: serviceBusDataReceiverRoleId
        description: 'Developer: receive from the queues, from a local run'
      }
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: serviceBusDataSenderRoleId
        description: 'Developer: send to the queues, from a local run'
      }
    ] : [])
    queueRoleAssignments: [for queueName in triggeredQueueNames: {
      queue: queueName
      principalId: appIdentity.outputs.principalId
      roleDefinitionId: serviceBusDataOwnerRoleId
      description: 'Function app: the scale controller reads the queue length (this queue only)'
    }]
  }
}

module openAi 'modules/cognitive.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: openAiName
    location: openAiLocation
    tags: tags
    kind: 'OpenAI'
    deployments: openAiDeployments
    privateNetworking: enablePrivateNetworking
    roleAssignments: concat([
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: cognitiveServicesOpenAiUserRoleId
        description: 'Function app: Azure OpenAI inference'
      }
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: cognitiveServicesOpenAiContributorRoleId
        description: 'Function app: fine-tuning jobs and deployments of their results'
      }
    ], hasDeveloper ? [
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: cognitiveServicesOpenAiUserRoleId
        description: 'Developer: Azure OpenAI inference, from a local run'
      }
    ] : [])
  }
}

module aiServices 'modules/cognitive.bicep' = if (deployAiServices) {
  name: 'aiservices'
  scope: rg
  params: {
    name: aiServicesName
    location: location
    tags: tags
    kind: 'AIServices'
    deployments: aiServicesDeployments
    privateNetworking: enablePrivateNetworking
    roleAssignments: concat([
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: cognitiveServicesUserRoleId
        description: 'Function app: AI Services model inference'
      }
    ], hasDeveloper ? [
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: cognitiveServicesUserRoleId
        description: 'Developer: AI Services model inference, from a local run'
      }
    ] : [])
  }
}

// Tenant quota counters shared by every instance. Azure Managed Redis has no Azure RBAC data
// roles: the app's identity gets the database's `default` access policy (Entra ID; keys disabled).
module redis 'modules/redis.bicep' = {
  name: 'redis'
  scope: rg
  params: {
    name: redisName
    location: location
    tags: tags
    skuName: redisSkuName
    highAvailability: redisHighAvailability
    accessPolicyAssignments: concat([
      {
        principalId: appIdentity.outputs.principalId
        description: 'Function app: read and write tenant quota counters'
      }
    ], hasDeveloper ? [
      {
        principalId: principalId
        description: 'Developer: tenant quota counters, from a local run'
      }
    ] : [])
  }
}

// Each tenant's proof key ring (shared/security/keys.py): the app reads them, nobody else; the
// operator who ran azd (principalId) writes them with `python -m shared.admin tenants add`.
module tenantKeys 'modules/keyvault.bicep' = {
  name: 'tenant-keys'
  scope: rg
  params: {
    name: tenantKeyVaultName
    location: location
    tags: tags
    privateNetworking: enablePrivateNetworking
    roleAssignments: concat([
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: keyVaultSecretsUserRoleId
        description: 'Function app: read tenant proof keys (verify messages)'
      }
    ], hasDeveloper ? [
      {
        principalId: principalId
        principalType: principalType
        roleDefinitionId: keyVaultSecretsOfficerRoleId
        description: 'Operator: write tenant proof keys (shared.admin tenants add / rotate-key)'
      }
    ] : [])
  }
}

module ml 'modules/ml.bicep' = {
  name: 'ml'
  scope: rg
  params: {
    workspaceName: mlWorkspaceName
    keyVaultName: '${abbrs.keyVaultVaults}${resourceToken}'
    storageAccountName: mlStorageAccountName
    containerRegistryName: '${abbrs.containerRegistryRegistries}${resourceToken}'
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    location: location
    tags: tags
    computeName: 'gpu-cluster'
    computeVmSize: mlComputeVmSize
    computeVmPriority: mlComputeVmPriority
    computeMaxNodes: mlComputeMaxNodes
    computeIdleTimeBeforeScaleDown: mlComputeIdleTimeBeforeScaleDown
    computeIdentityId: trainingIdentity.outputs.id
    privateNetworking: enablePrivateNetworking
    trainingDataStorageAccountId: storage.outputs.id
    workspaceRoleAssignments: [
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: azureMlDataScientistRoleId
        description: 'Function app: submit and watch fine-tuning jobs'
      }
    ]
    storageRoleAssignments: [
      {
        principalId: appIdentity.outputs.principalId
        roleDefinitionId: storageBlobDataContributorRoleId
        description: 'Function app: upload job code snapshots, read job outputs'
      }
      {
        principalId: trainingIdentity.outputs.principalId
        roleDefinitionId: storageBlobDataContributorRoleId
        description: 'AML compute: write job outputs and models to the workspace datastore'
      }
    ]
    registryRoleAssignments: [
      {
        principalId: trainingIdentity.outputs.principalId
        roleDefinitionId: acrPullRoleId
        description: 'AML compute: pull the training environment image'
      }
    ]
  }
}

// Network isolation (enablePrivateNetworking): VNet, private DNS zones, private endpoints.
var storageSuffix = environment().suffixes.storage
var blobZone = 'privatelink.blob.${storageSuffix}'
var queueZone = 'privatelink.queue.${storageSuffix}'
var tableZone = 'privatelink.table.${storageSuffix}'
var serviceBusZone = 'privatelink.servicebus.windows.net'
var openAiZone = 'privatelink.openai.azure.com'
var cognitiveServicesZone = 'privatelink.cognitiveservices.azure.com'
var aiServicesZone = 'privatelink.services.ai.azure.com'
var mlApiZone = 'privatelink.api.azureml.ms'
var mlNotebooksZone = 'privatelink.notebooks.azure.net'
var redisZone = 'privatelink.redis.azure.net'
var keyVaultZone = 'privatelink.vaultcore.azure.net'

var privateEndpointTargets = concat([
  {
    key: 'st-blob'
    type: 'Microsoft.Storage/storageAccounts'
    service: storageAccountName
    groupId: 'blob'
    zones: [
      blobZone
    ]
  }
  {
    key: 'st-queue'
    type: 'Microsoft.Storage/storageAccounts'
    service: storageAccountName
    groupId: 'queue'
    zones: [
      queueZone
    ]
  }
  {
    key: 'st-table'
    type: 'Microsoft.Storage/storageAccounts'
    service: storageAccountName
    groupId: 'table'
    zones: [
      tableZone
    ]
  }
  {
    key: 'sb'
    type: 'Microsoft.ServiceBus/namespaces'
    service: serviceBusName
    groupId: 'namespace'
    zones: [
      serviceBusZone
    ]
  }
  {
    key: 'oai'
    type: 'Microsoft.CognitiveServices/accounts'
    service: openAiName
    groupId: 'account'
    zones: [
      openAiZone
    ]
  }
  {
    key: 'mlw'
    type: 'Microsoft.MachineLearningServices/workspaces'
    service: mlWorkspaceName
    groupId: 'amlworkspace'
    zones: [
      mlApiZone
      mlNotebooksZone
    ]
  }
  {
    key: 'stml-blob'
    type: 'Microsoft.Storage/storageAccounts'
    service: mlStorageAccountName
    groupId: 'blob'
    zones: [
      blobZone
    ]
  }
  {
    key: 'amr'
    type: 'Microsoft.Cache/redisEnterprise'
    service: redisName
    groupId: 'redisEnterprise'
    zones: [
      redisZone
    ]
  }
  {
    key: 'kv-tenants'
    type: 'Microsoft.KeyVault/vaults'
    service: tenantKeyVaultName
    groupId: 'vault'
    zones: [
      keyVaultZone
    ]
  }
], deployAiServices ? [
  {
    key: 'ais'
    type: 'Microsoft.CognitiveServices/accounts'
    service: aiServicesName
    groupId: 'account'
    zones: [
      cognitiveServicesZone
      aiServicesZone
      openAiZone
    ]
  }
] : [])

module network 'modules/network.bicep' = if (enablePrivateNetworking) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
    privateDnsZoneNames: [
      blobZone
      queueZone
      tableZone
      serviceBusZone
      openAiZone
      cognitiveServicesZone
      aiServicesZone
      mlApiZone
      mlNotebooksZone
      redisZone
      keyVaultZone
    ]
  }
}

module privateEndpoints 'modules/private-endpoint.bicep' = [for target in (enablePrivateNetworking ? privateEndpointTargets : []): {
  name: 'pep-${target.key}'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}${target.key}-${resourceToken}'
    location: location
    tags: tags
    subnetId: network.outputs.privateEndpointSubnetId
    serviceResourceType: target.type
    serviceName: target.service
    groupId: target.groupId
    privateDnsZoneNames: target.zones
  }
  dependsOn: [
    storage
    serviceBus
    openAi
    aiServices
    ml
    redis
    tenantKeys
  ]
}]

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: appIdentity.outputs.id
    identityClientId: appIdentity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: functionInstanceMemoryMB
    maximumInstanceCount: functionMaximumInstanceCount
    virtualNetworkSubnetId: enablePrivateNetworking ? network.outputs.appSubnetId : ''
    appSettings: concat([
      {
        name: 'ServiceBusConnection__fullyQualifiedNamespace'
        value: serviceBus.outputs.fullyQualifiedNamespace
      }
      {
        name: 'ServiceBusConnection__credential'
        value: 'managedidentity'
      }
      {
        name: 'ServiceBusConnection__clientId'
        value: appIdentity.outputs.clientId
      }
      {
        name: 'TENANT_REGISTRY'
        value: tenantRegistry
      }
      {
        name: 'AZURE_OPENAI_ENDPOINT'
        value: openAi.outputs.endpoint
      }
      {
        name: 'AZURE_OPENAI_API_VERSION'
        value: openAiApiVersion
      }
      {
        name: 'AZURE_OPENAI_NAME'
        value: openAi.outputs.name
      }
      {
        name: 'AZURE_SUBSCRIPTION_ID'
        value: subscription().subscriptionId
      }
      {
        name: 'AZURE_RESOURCE_GROUP'
        value: rg.name
      }
      {
        name: 'AZURE_ML_WORKSPACE_NAME'
        value: ml.outputs.workspaceName
      }
      {
        name: 'AZURE_ML_COMPUTE_NAME'
        value: ml.outputs.computeName
      }
      {
        name: 'AZURE_ML_TRAINING_IDENTITY_CLIENT_ID'
        value: trainingIdentity.outputs.clientId
      }
      {
        name: 'REDIS_URL'
        value: redis.outputs.url
      }
      {
        name: 'AZURE_KEY_VAULT_ENDPOINT'
        value: tenantKeys.outputs.uri
      }
      {
        name: 'TENANT_PROOF'
        value: 'required'
      }
    ], deployAiServices ? [
      {
        name: 'AZURE_AI_SERVICES_ENDPOINT'
        value: aiServices.outputs.inferenceEndpoint
      }
    ] : [])
  }
  dependsOn: [
    privateEndpoints
  ]
}

// Batch uploads (uploads/<tenant>/batch/*.jsonl): the storage account's Event Grid system topic;
// infra/hooks/subscribe-uploads.sh subscribes the batch_upload trigger to it after deployment.
module batchEvents 'modules/eventgrid.bicep' = {
  name: 'batch-events'
  scope: rg
  params: {
    name: '${abbrs.eventGridSystemTopics}${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    uploadsContainerName: 'uploads'
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs: azd stores them in the environment; the settings are named as shared/settings.py reads them
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_SUBSCRIPTION_ID string = subscription().subscriptionId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = functionApp.outputs.uri
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_SERVICEBUS_NAMESPACE string = serviceBus.outputs.name
output AZURE_OPENAI_NAME string = openAi.outputs.name
output AZURE_ML_WORKSPACE_NAME string = ml.outputs.workspaceName
output AZURE_ML_COMPUTE_NAME string = ml.outputs.computeName
output AZURE_ML_TRAINING_IDENTITY_CLIENT_ID string = trainingIdentity.outputs.clientId
output BATCH_EVENTS_TOPIC string = batchEvents.outputs.name
output BATCH_EVENTS_SUBJECT_BEGINS_WITH string = batchEvents.outputs.subjectBeginsWith
output BATCH_EVENTS_SUBJECT_ENDS_WITH string = batchEvents.outputs.subjectEndsWith
// Read by the postprovision hook (infra/hooks/postprovision.py), which writes the initial tenant
// registry from them: the registry and the tenants parameter come from one place.
output POOLED_DEPLOYMENTS array = pooledDeployments
output TENANTS array = tenants

output ServiceBusConnection__fullyQualifiedNamespace string = serviceBus.outputs.fullyQualifiedNamespace
output AzureWebJobsStorage__blobServiceUri string = storage.outputs.blobEndpoint
output AZURE_CLIENT_ID string = appIdentity.outputs.clientId
output TENANT_REGISTRY string = tenantRegistry
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_API_VERSION string = openAiApiVersion
output REDIS_URL string = redis.outputs.url
output AZURE_KEY_VAULT_ENDPOINT string = tenantKeys.outputs.uri
output TENANT_PROOF string = 'required'
output AZURE_AI_SERVICES_ENDPOINT string = deployAiServices ? aiServices.outputs.inferenceEndpoint : ''
