// One private endpoint to one sub-resource of a service, registered in its private DNS zones.

@description('Name of the private endpoint.')
param name string

@description('Azure region.')
param location string

@description('Tags for the endpoint.')
param tags object = {}

@description('Subnet the endpoint gets its address from.')
param subnetId string

@description('Resource type of the service, e.g. Microsoft.Storage/storageAccounts.')
param serviceResourceType string

@description('Name of the service (in this resource group).')
param serviceName string

@description('Sub-resource (group id): blob, queue, namespace, account, amlworkspace.')
param groupId string

@description('Names of the private DNS zones (in this resource group) to register the endpoint in.')
param privateDnsZoneNames array

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: resourceId(serviceResourceType, serviceName)
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource dnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [for zoneName in privateDnsZoneNames: {
      name: replace(zoneName, '.', '-')
      properties: {
        privateDnsZoneId: resourceId('Microsoft.Network/privateDnsZones', zoneName)
      }
    }]
  }
}

output id string = endpoint.id
