// Only deployed when enablePrivateNetworking is true: a VNet with a subnet for the Function app's
// outbound VNet integration and a subnet for private endpoints, plus the private DNS zones that
// make the services' public host names resolve to their private endpoints inside the VNet.

@description('Name of the virtual network.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Address space of the VNet.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet for the Function app VNet integration (delegated to Microsoft.App/environments, as Flex Consumption requires).')
param appSubnetPrefix string = '10.40.1.0/24'

@description('Subnet for private endpoints.')
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

@description('Private DNS zones to create and link to the VNet.')
param privateDnsZoneNames array

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'snet-app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'snet-private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zoneName in privateDnsZoneNames: {
  name: zoneName
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zoneName, i) in privateDnsZoneNames: {
  parent: zones[i]
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output id string = vnet.id
output appSubnetId string = vnet.properties.subnets[0].id
output privateEndpointSubnetId string = vnet.properties.subnets[1].id
