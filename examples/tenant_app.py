"""A tenant app: send one `inference.request` and wait for its reply on the tenant's reply queue.

    python examples/tenant_app.py --env-file .devhost-data/up/devhost.env --tenant tailwind \
        "Which plan includes priority support?"

Where it connects, first found: `--connection` (a connection string), `--namespace` (Azure: the
namespace's host name, signing in as the app's own identity with DefaultAzureCredential: the
identity `shared.admin tenants add --app-principal-id` granted), the `ServiceBusConnection` or
`ServiceBusConnection__fullyQualifiedNamespace` of `--env-file` (devhost's, or `azd env
get-values` output), then the same names in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from azure.identity.aio import DefaultAzureCredential
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from dotenv import dotenv_values


async def ask(
    connection: str, tenant: str, question: str, timeout_s: float, *, namespace: bool = False
) -> dict[str, object]:
    """`connection` is a connection string, or with `namespace` a namespace host name."""
    if namespace:
        async with DefaultAzureCredential() as credential:
            bus = ServiceBusClient(connection, credential)
            return await _ask(bus, tenant, question, timeout_s)
    return await _ask(
        ServiceBusClient.from_connection_string(connection), tenant, question, timeout_s
    )


async def _ask(
    client: ServiceBusClient, tenant: str, question: str, timeout_s: float
) -> dict[str, object]:
    request_id = str(uuid.uuid4())
    reply_queue = f"replies-{tenant}"
    request = {
        "type": "inference.request",
        "version": 1,
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [{"role": "user", "content": question}],
        "parameters": {"max_tokens": 100},
    }
    async with client as bus:
        async with bus.get_queue_sender("inference-requests") as sender:
            await sender.send_messages(
                ServiceBusMessage(
                    json.dumps(request),
                    message_id=request_id,  # the queue drops a resend of the same id
                    reply_to=reply_queue,
                    content_type="application/json",
                )
            )
        async with bus.get_queue_receiver(reply_queue, max_wait_time=timeout_s) as receiver:
            async for reply in receiver:
                if reply.correlation_id != request_id:
                    # Another request of this tenant's: leave it for whoever waits for it.
                    await receiver.abandon_message(reply)
                    continue
                await receiver.complete_message(reply)
                body: dict[str, object] = json.loads(b"".join(reply.body))
                return body
    raise TimeoutError(f"no reply to {request_id} within {timeout_s}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connection", help="a Service Bus connection string")
    parser.add_argument("--namespace", help="Azure: <name>.servicebus.windows.net")
    parser.add_argument("--env-file", type=Path, help="a .env file with the settings")
    parser.add_argument("--tenant", default="tailwind")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the reply (a throttled request may be rescheduled for minutes)",
    )
    parser.add_argument("question")
    args = parser.parse_args()
    settings: dict[str, str | None] = dict(os.environ)
    if args.env_file:
        settings.update(dotenv_values(args.env_file))
    choices = [
        (args.connection, False),
        (args.namespace, True),
        (settings.get("ServiceBusConnection"), False),
        (settings.get("ServiceBusConnection__fullyQualifiedNamespace"), True),
    ]
    found = [(where, is_namespace) for where, is_namespace in choices if where]
    if not found:
        parser.error("give --connection, --namespace or --env-file")
    where, is_namespace = found[0]
    reply = asyncio.run(
        ask(where, args.tenant, args.question, args.timeout, namespace=is_namespace)
    )
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("type") == "inference.result" else 1


if __name__ == "__main__":
    sys.exit(main())
