// Service Bus namespace with the queues the code uses. Keyless: SAS (local) auth is disabled, so
// only Entra ID identities with a Data Sender / Data Receiver role can reach the queues.

@description('Name of the namespace.')
param name string

@description('Azure region.')
param location string

@description('Tags for the namespace.')
param tags object = {}

@description('Standard (pay per operation) or Premium (dedicated messaging units; needed for private endpoints).')
@allowed([
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

@description('Messaging units when Premium (1, 2, 4, 8 or 16).')
param premiumCapacity int = 1

@description('Names of the queues to create.')
param queueNames array

@description('Peek-lock duration (ISO 8601, at most PT5M); the Functions host renews the lock while a message is processed.')
param lockDuration string = 'PT1M'

@description('Deliveries before a message is dead-lettered.')
@minValue(1)
param maxDeliveryCount int = 10

@description('Time to live of a message (ISO 8601); an expired message is dead-lettered.')
param defaultMessageTimeToLive string = 'P14D'

@description('Window in which a message id seen before is dropped as a duplicate (ISO 8601).')
param duplicateDetectionHistoryTimeWindow string = 'PT10M'

@description('True: no public network access; reach the namespace through a private endpoint (Premium only).')
param privateNetworking bool = false

@description('Role assignments scoped to the namespace: [{ principalId, roleDefinitionId, description, principalType? }] (principalType defaults to ServicePrincipal).')
param roleAssignments array = []

@description('Role assignments scoped to one queue: [{ queue, principalId, roleDefinitionId, description, principalType? }].')
param queueRoleAssignments array = []

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
    capacity: skuName == 'Premium' ? premiumCapacity : null
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for queueName in queueNames: {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    defaultMessageTimeToLive: defaultMessageTimeToLive
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionHistoryTimeWindow
    requiresSession: false
    enableBatchedOperations: true
  }
}]

resource namespaceRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for ra in roleAssignments: {
  name: guid(namespace.id, ra.principalId, ra.roleDefinitionId)
  scope: namespace
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
}]

resource assignedQueues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = [for ra in queueRoleAssignments: {
  parent: namespace
  name: ra.queue
}]

resource queueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (ra, i) in queueRoleAssignments: {
  name: guid(assignedQueues[i].id, ra.principalId, ra.roleDefinitionId)
  scope: assignedQueues[i]
  properties: {
    principalId: ra.principalId
    principalType: ra.?principalType ?? 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ra.roleDefinitionId)
    description: ra.description
  }
  dependsOn: [
    queues
  ]
}]

output id string = namespace.id
output name string = namespace.name
@description('Host name of the namespace, e.g. sb-xyz.servicebus.windows.net (from its endpoint, so sovereign clouds work).')
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
