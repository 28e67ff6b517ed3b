"""A tenant app: send one `inference.request` and wait for its reply on the tenant's reply queue.

    python examples/tenant_app.py --connection "<ServiceBusConnection>" --tenant tailwind \
        "Which plan includes priority support?"

With `python -m devhost up` running, take the connection string it prints. In Azure, use
`ServiceBusClient(fully_qualified_namespace, DefaultAzureCredential())` instead of a key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient


async def ask(connection: str, tenant: str, question: str, timeout_s: float) -> dict[str, object]:
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
    async with ServiceBusClient.from_connection_string(connection) as bus:
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
    parser.add_argument("--connection", required=True)
    parser.add_argument("--tenant", default="tailwind")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the reply (a throttled request may be rescheduled for minutes)",
    )
    parser.add_argument("question")
    args = parser.parse_args()
    reply = asyncio.run(ask(args.connection, args.tenant, args.question, args.timeout))
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("type") == "inference.result" else 1


if __name__ == "__main__":
    sys.exit(main())
