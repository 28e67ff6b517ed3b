#!/bin/sh
# azd postdeploy hook: subscribe the batch upload trigger to the storage account's Event Grid system
# topic (infra/modules/eventgrid.bicep explains why this step is not in Bicep). Idempotent: an
# existing subscription is updated. Needs the azd environment's outputs (azd sets them as env vars).
set -eu

: "${AZURE_RESOURCE_GROUP:?}" "${SERVICE_API_NAME:?}" "${BATCH_EVENTS_TOPIC:?}"
: "${BATCH_EVENTS_SUBJECT_BEGINS_WITH:?}" "${BATCH_EVENTS_SUBJECT_ENDS_WITH:?}"

key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$SERVICE_API_NAME" \
  --query "systemKeys.blobs_extension" -o tsv)
if [ -z "$key" ]; then
  echo "the blobs_extension key does not exist yet: is function batch_upload deployed?" >&2
  exit 1
fi
host=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$SERVICE_API_NAME" \
  --query "defaultHostName" -o tsv)
endpoint="https://${host}/runtime/webhooks/blobs?functionName=Host.Functions.batch_upload&code=${key}"

az eventgrid system-topic event-subscription create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --system-topic-name "$BATCH_EVENTS_TOPIC" \
  --name batch-uploads \
  --endpoint-type webhook \
  --endpoint "$endpoint" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "$BATCH_EVENTS_SUBJECT_BEGINS_WITH" \
  --subject-ends-with "$BATCH_EVENTS_SUBJECT_ENDS_WITH" \
  --max-delivery-attempts 30 \
  --event-ttl 1440 \
  --output none
echo "Event Grid: batch uploads under ${BATCH_EVENTS_SUBJECT_BEGINS_WITH} -> batch_upload"
