// Batch uploads on Flex Consumption: a blob trigger there has no polling; it is fed by Event Grid
// (`source=EventGrid` on the trigger in function_app.py). This module declares the storage
// account's Event Grid system topic (Microsoft.Storage.StorageAccounts: BlobCreated events).
//
// The subscription (BlobCreated, subject under /blobServices/default/containers/uploads/blobs/,
// ending in .jsonl, delivered to the app's blob extension webhook
// https://<app>/runtime/webhooks/blobs?functionName=Host.Functions.batch_upload&code=<key>) needs
// the app's `blobs_extension` system key. That key exists only once the code is deployed and the
// host has loaded the trigger, and reading it here would mean a list*() key call, which this
// template never makes (keyless; see tests/unit/infra/test_bicep_security.py). So azd's postdeploy
// hook creates it (infra/hooks/subscribe-uploads.sh, as Microsoft's Flex Consumption blob samples
// do), with the filter below, on the topic this module outputs.

@description('Name of the system topic.')
param name string

@description('Azure region (the storage account\'s).')
param location string

@description('Tags for the topic.')
param tags object = {}

@description('Name of the storage account whose blob events the topic carries.')
param storageAccountName string

@description('Container whose uploads start batches (shared/storage/names.py UPLOADS_CONTAINER).')
param uploadsContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = topic.name
output subjectBeginsWith string = '/blobServices/default/containers/${uploadsContainerName}/blobs/'
output subjectEndsWith string = '.jsonl'
