"""A tenant app: send one `inference.request` and wait for its reply on the tenant's reply queue.

    python examples/tenant_app.py --env-file .devhost-data/up/devhost.env --tenant tailwind \
        "Which plan includes priority support?"

Where it connects, first found: `--connection` (a connection string), `--namespace` (Azure: the
namespace's host name, signing in as the app's own identity with DefaultAzureCredential: the
identity `shared.admin tenants add --app-principal-id` granted), the `ServiceBusConnection` or
`ServiceBusConnection__fullyQualifiedNamespace` of `--env-file` (devhost's, or `azd env
get-values` output), then the same names in the environment.

How it proves its tenant (docs/security.md): every message carries an HMAC-SHA256 of its body,
id, reply_to, type and time with the tenant's key (`shared/security/sign.py`, a file the app can
copy). The key, first found: `TENANT_KEY_ID` and `TENANT_KEY` in the environment (what
`shared.admin tenants add` printed; keep the secret out of the command line and the code), then
the `TENANT_KEYS_FILE` of `--env-file` (devhost's local secrets file).
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

try:  # the signer a tenant app copies (standard library only); here, from this repository
    from shared.security.sign import TenantSigner
except ModuleNotFoundError:  # run as a script: examples/ is on the path, the repository root not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from shared.security.sign import TenantSigner


async def ask(
    connection: str,
    signer: TenantSigner,
    question: str,
    timeout_s: float,
    *,
    namespace: bool = False,
) -> dict[str, object]:
    """`connection` is a connection string, or with `namespace` a namespace host name; the
    tenant is the signer's."""
    if namespace:
        async with DefaultAzureCredential() as credential:
            bus = ServiceBusClient(connection, credential)
            return await _ask(bus, signer, question, timeout_s)
    return await _ask(
        ServiceBusClient.from_connection_string(connection), signer, question, timeout_s
    )


async def _ask(
    client: ServiceBusClient, signer: TenantSigner, question: str, timeout_s: float
) -> dict[str, object]:
    tenant = signer.tenant_id
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
    body = json.dumps(request).encode("utf-8")
    # The proof: an HMAC of exactly these bytes, this id and reply_to, and the time.
    proof = signer.message_properties(body, message_id=request_id, reply_to=reply_queue)
    async with client as bus:
        async with bus.get_queue_sender("inference-requests") as sender:
            await sender.send_messages(
                ServiceBusMessage(
                    body,
                    message_id=request_id,  # the queue drops a resend of the same id
                    reply_to=reply_queue,
                    content_type="application/json",
                    application_properties=proof,  # type: ignore[arg-type]
                )
            )
        async with bus.get_queue_receiver(reply_queue, max_wait_time=timeout_s) as receiver:
            async for reply in receiver:
                if reply.correlation_id != request_id:
                    # Another request of this tenant's: leave it for whoever waits for it.
                    await receiver.abandon_message(reply)
                    continue
                await receiver.complete_message(reply)
                answer: dict[str, object] = json.loads(b"".join(reply.body))
                return answer
    raise TimeoutError(f"no reply to {request_id} within {timeout_s}s")


def tenant_signer(tenant: str, settings: dict[str, str | None]) -> TenantSigner | None:
    """The tenant's key from TENANT_KEY_ID / TENANT_KEY, else from devhost's keys file."""
    key_id, secret = settings.get("TENANT_KEY_ID"), settings.get("TENANT_KEY")
    if key_id and secret:
        return TenantSigner(tenant, key_id, secret)
    keys_file = settings.get("TENANT_KEYS_FILE")
    if not keys_file or not Path(keys_file).is_file():
        return None
    rings = json.loads(Path(keys_file).read_text(encoding="utf-8"))["tenants"]
    active = [k for k in rings.get(tenant, {}).get("keys", []) if k["state"] == "active"]
    if not active:
        return None
    newest = max(active, key=lambda k: str(k["created_at"]))
    return TenantSigner(tenant, newest["id"], newest["secret"])


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
    signer = tenant_signer(args.tenant, settings)
    if signer is None:
        parser.error(
            f"no key for {args.tenant}: set TENANT_KEY_ID and TENANT_KEY, or give devhost's "
            "--env-file (its TENANT_KEYS_FILE)"
        )
    reply = asyncio.run(ask(where, signer, args.question, args.timeout, namespace=is_namespace))
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("type") == "inference.result" else 1


if __name__ == "__main__":
    sys.exit(main())
