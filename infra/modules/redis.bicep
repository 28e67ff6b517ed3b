// Azure Managed Redis (Microsoft.Cache/redisEnterprise): the tenant quota counters that every
// Function app instance shares (shared/resilience/quotas.py). Entra ID only: access keys are
// disabled on the database, TLS 1.2 on port 10000, and each identity that may use it gets the
// database's `default` access policy (the one data-access policy Azure Managed Redis offers: data
// commands, no management), assigned on this one database and nothing else.

@description('Name of the cluster (also the first label of its host name).')
param name string

@description('Azure region.')
param location string

@description('Tags for the cluster.')
param tags object = {}

@description('SKU; the counters are a few keys per tenant, so the smallest Balanced size is plenty.')
param skuName string = 'Balanced_B0'

@description('Replicate the data (the SLA needs it). Off halves the cost; losing the counters only resets a minute of quota history, and the app degrades to per-instance limits while the cache is away.')
@allowed([
  'Enabled'
  'Disabled'
])
param highAvailability string = 'Enabled'

@description('Identities that may read and write the database: [{ principalId, description }]; each gets the default data access policy.')
param accessPolicyAssignments array = []

resource cluster 'Microsoft.Cache/redisEnterprise@2025-04-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-04-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    // One endpoint that a non-cluster client (redis-py) can use; the quota scripts keep each
    // counter's keys in one hash slot.
    clusteringPolicy: 'EnterpriseCluster'
    // Every counter expires by itself; never evict one early (that would loosen a quota).
    evictionPolicy: 'NoEviction'
    accessKeysAuthentication: 'Disabled'
  }
}

resource accessPolicies 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-04-01' = [for assignment in accessPolicyAssignments: {
  parent: database
  name: replace(guid(database.id, assignment.principalId), '-', '')
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: assignment.principalId
    }
  }
}]

output id string = cluster.id
output name string = cluster.name
output hostName string = cluster.properties.hostName
// What the app setting REDIS_URL holds: TLS, no credentials in it (the app uses Entra ID).
output url string = 'rediss://${cluster.properties.hostName}:${database.properties.port}'
