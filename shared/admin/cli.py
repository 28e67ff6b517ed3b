"""`python -m shared.admin [--env-file F] [--json] tenants add|list|show|remove|set-policy ...`

    tenants add ID --mode pooled|dedicated|tuned [--deployment NAME ...]
                   [--own-deployment NAME[:TPM] ...] [--fallback-to-pooled]
                   [--tokens-per-minute N] [--requests-per-minute N] [--max-concurrent N]
                   [--log-prompts] [--share-for-training] [--allow-tuning]
                   [--app-principal-id OBJECT_ID] [--no-wait]
        1. the registry: the tenant's entry with its reply queue (ETag-guarded, `tenants.py`),
        2. its reply queue `replies-ID` (`queues.py`; Azure: as the operator, Data Owner),
        3. Azure with --app-principal-id: the tenant app's grants (`grants.py`); locally: prints
           the connection its app uses (one key for everything, as the emulator has),
        3b. the tenant's first proof key (`shared/security/tenant_onboarding.py`): stored in
           Key Vault (AZURE_KEY_VAULT_ENDPOINT) or devhost's keys file (TENANT_KEYS_FILE), its
           id and secret printed once for the tenant's app (docs/security.md),
        4. waits TENANT_REGISTRY_REFRESH_SECONDS, after which the app has re-read the registry
           (--no-wait skips it). Running it again changes nothing and repairs a missing step.
    tenants list | show ID
    tenants rotate-key ID            a second active key (the rollover: both are valid)
    tenants retire-key ID KEY_ID     the old key out: messages signed with it are refused
    tenants remove ID [--app-principal-id OBJECT_ID] [--keep-queue]
        registry entry (and deployments it owns), reply queue and its messages, grants.
    tenants set-policy ID [--log-prompts true|false] [--share-for-training ...] [--allow-tuning ...]
                   [--tuning-cooldown-hours H] [--min-training-examples N]
                   [--tokens-per-minute N|none] [--requests-per-minute N|none]
                   [--max-concurrent N|none]

Exit status: 0 done; 1 refused or failed (the message says why and what was already done);
2 bad usage. `--json` prints what was done as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from shared.admin.connect import AdminSettings, Connections
from shared.admin.grants import tenant_app_grants
from shared.admin.tenants import (
    AdminError,
    NewDeployment,
    TenantSpec,
    add_tenant,
    check_tenant_id,
    find_tenant,
    leftover_data,
    owned_deployments,
    remove_tenant,
    reply_queue_name,
    set_policy,
)
from shared.security.keys import KeyRingError
from shared.security.tenant_onboarding import first_key, handover, retire, rotate, where
from shared.tenancy.registry import IsolationMode, RegistryError
from shared.tenancy.registry_store import RegistryConflict

Out = Callable[[str], None]


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"true", "yes", "1", "on"}:
        return True
    if lowered in {"false", "no", "0", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("a limit is a positive number, or none")
    return value


def _own_deployment(text: str) -> NewDeployment:
    name, _, tpm = text.partition(":")
    return NewDeployment(name, int(tpm)) if tpm else NewDeployment(name)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m shared.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--env-file", type=Path, help="read the settings from this .env file")
    root.add_argument("--json", action="store_true", help="print one JSON object")
    groups = root.add_subparsers(dest="group", required=True)
    tenants = groups.add_parser("tenants", help="onboard, list, change and remove tenants")
    sub = tenants.add_subparsers(dest="command", required=True)

    add = sub.add_parser("add", help="register a tenant, create its reply queue, grant its app")
    add.add_argument("tenant_id")
    add.add_argument("--mode", required=True, choices=[m.value for m in IsolationMode])
    add.add_argument("--deployment", action="append", default=[], help="may use (repeat)")
    add.add_argument(
        "--own-deployment",
        action="append",
        type=_own_deployment,
        default=[],
        metavar="NAME[:TPM]",
        help="dedicated: a deployment of its own (in Azure: from the Bicep tenants parameter)",
    )
    add.add_argument("--fallback-to-pooled", action="store_true")
    _quota_options(add, int)
    add.add_argument("--log-prompts", action="store_true")
    add.add_argument("--share-for-training", action="store_true")
    add.add_argument("--allow-tuning", action="store_true")
    add.add_argument("--app-principal-id", help="Azure: object id of the tenant app's identity")
    add.add_argument(
        "--principal-type",
        default="ServicePrincipal",
        choices=["ServicePrincipal", "User", "Group"],
    )
    add.add_argument("--no-wait", action="store_true", help="do not wait for the app's reload")
    add.add_argument(
        "--reuse-data",
        action="store_true",
        help="take over the data a removed tenant of this id left (refused otherwise)",
    )

    rotate = sub.add_parser("rotate-key", help="a second proof key for a rollover")
    rotate.add_argument("tenant_id")
    retire = sub.add_parser("retire-key", help="rotate a proof key out")
    retire.add_argument("tenant_id")
    retire.add_argument("key_id")

    sub.add_parser("list", help="every tenant")
    show = sub.add_parser("show", help="one tenant as the registry has it")
    show.add_argument("tenant_id")

    remove = sub.add_parser("remove", help="unregister, delete its reply queue, revoke grants")
    remove.add_argument("tenant_id")
    remove.add_argument("--app-principal-id", help="Azure: revoke this identity's grants")
    remove.add_argument("--keep-queue", action="store_true")

    policy = sub.add_parser("set-policy", help="change a tenant's data policy and quota")
    policy.add_argument("tenant_id")
    for flag in ("--log-prompts", "--share-for-training", "--allow-tuning"):
        policy.add_argument(flag, type=_bool, metavar="true|false")
    policy.add_argument("--tuning-cooldown-hours", type=float)
    policy.add_argument("--min-training-examples", type=int)
    _quota_options(policy, _limit)
    return root


def _quota_options(p: argparse.ArgumentParser, kind: Callable[[str], Any]) -> None:
    for flag in ("--tokens-per-minute", "--requests-per-minute", "--max-concurrent"):
        p.add_argument(flag, type=kind, metavar="N", default=argparse.SUPPRESS)


def _quota(args: argparse.Namespace) -> dict[str, Any]:
    """The quota options given (absent ones are not in `args`); None: remove that limit."""
    keys = ("tokens_per_minute", "requests_per_minute", "max_concurrent")
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


async def _add(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    tenant_id = check_tenant_id(args.tenant_id)
    policy = {
        k: True for k in ("log_prompts", "share_for_training", "allow_tuning") if getattr(args, k)
    }
    spec = TenantSpec(
        id=tenant_id,
        mode=IsolationMode(args.mode),
        deployments=tuple(args.deployment) or None,
        new_deployments=tuple(args.own_deployment),
        quota={k: v for k, v in _quota(args).items() if v is not None},
        policy=policy,
        fallback_to_pooled=args.fallback_to_pooled,
    )
    known = find_tenant((await c.registry.read()).document, tenant_id) is not None
    if not known and c.blobs is not None and not args.reuse_data:
        held = await leftover_data(c.blobs, tenant_id)
        if held:
            raise AdminError(
                f"tenant id {tenant_id} was used before: its data is still in "
                f"{', '.join(held)}; choose another id, or pass --reuse-data to take that data "
                "over knowingly (`tenants remove` keeps a tenant's data)"
            )
    stored = await c.registry.update(add_tenant(spec))
    tenant = find_tenant(stored.document, tenant_id)
    out(f"registry: tenant {tenant_id} ({args.mode}) in {c.registry.reference}")
    done: dict[str, Any] = {"tenant": tenant, "registry": c.registry.reference}
    queue = reply_queue_name(tenant_id)
    assert c.queues is not None
    try:
        created = await c.queues.ensure_queue(queue)
    except AzureError as exc:
        raise AdminError(
            f"the registry has {tenant_id}, but its reply queue {queue} could not be created "
            f"({type(exc).__name__}: {exc}); in Azure this needs Azure Service Bus Data Owner on "
            "the namespace. Run the same command again once that is fixed."
        ) from None
    out(f"queue: {queue} {'created' if created else 'exists'}")
    done["reply_queue"] = {"name": queue, "created": created}
    done["key"] = await _first_key(c, tenant_id, out)
    if c.settings.local:
        connection = c.settings.servicebus_connection or "<ServiceBusConnection of dev.py up>"
        out("tenant app connection (local broker; in Azure the app uses its own identity):")
        out(f"  ServiceBusConnection={shlex.quote(connection)}")
        done["connection"] = connection
    elif args.app_principal_id and c.grants is not None:
        granted = []
        for grant in tenant_app_grants(tenant_id):
            made = await c.grants.assign(args.app_principal_id, grant, args.principal_type)
            out(f"grant: {grant.role_name} on queue {grant.queue} ({'made' if made else 'held'})")
            granted.append({"queue": grant.queue, "role": grant.role_name, "made": made})
        done["grants"] = granted
    elif args.app_principal_id:
        raise AdminError(
            "to grant, set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and "
            "AZURE_SERVICEBUS_NAMESPACE (azd env get-values has them)"
        )
    else:
        out("grants: none made (pass --app-principal-id with the tenant app's object id)")
    wait = 0.0 if args.no_wait else c.settings.refresh_seconds
    if wait:
        out(f"waiting {wait:g} s: the app re-reads the registry every {wait:g} s ...")
        await asyncio.sleep(wait)
    out(f"ready: {tenant_id} may send to inference-requests with reply_to={queue}")
    done["waited_s"] = wait
    return done


async def _first_key(c: Connections, tenant_id: str, out: Out) -> dict[str, Any] | None:
    if c.keys is None:
        out(
            "tenant proof key: none made (set TENANT_KEYS_FILE locally, AZURE_KEY_VAULT_ENDPOINT "
            "in Azure): the app refuses the tenant's messages until it has a key"
        )
        return None
    key, made = await first_key(c.keys, tenant_id)
    for text in handover(tenant_id, key, where(c.keys, tenant_id), shown=made):
        out(text)
    return {"id": key.id, "created": made, **({"secret": key.secret} if made else {})}


async def _rotate_key(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    tenant_id = check_tenant_id(args.tenant_id)
    if c.keys is None:
        raise AdminError("set TENANT_KEYS_FILE (local) or AZURE_KEY_VAULT_ENDPOINT (Azure)")
    try:
        key = await rotate(c.keys, tenant_id)
    except KeyRingError as exc:
        raise AdminError(str(exc)) from None
    for text in handover(tenant_id, key, where(c.keys, tenant_id), shown=True):
        out(text)
    out("both keys are valid now; once the app signs with the new one: tenants retire-key")
    return {"id": key.id, "secret": key.secret}


async def _retire_key(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    tenant_id = check_tenant_id(args.tenant_id)
    if c.keys is None:
        raise AdminError("set TENANT_KEYS_FILE (local) or AZURE_KEY_VAULT_ENDPOINT (Azure)")
    try:
        ring = await retire(c.keys, tenant_id, args.key_id)
    except KeyRingError as exc:
        raise AdminError(str(exc)) from None
    active = [k.id for k in ring.active]
    out(f"tenant proof key {args.key_id} retired; active: {', '.join(active)}")
    out("the app refuses it within TENANT_KEY_CACHE_SECONDS (300 s by default)")
    return {"retired": args.key_id, "active": active}


async def _remove(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    tenant_id = check_tenant_id(args.tenant_id)
    before = await c.registry.read()
    owned = owned_deployments(before.document, tenant_id)
    await c.registry.update(remove_tenant(tenant_id))
    out(f"registry: tenant {tenant_id} removed" + (f" with {', '.join(owned)}" if owned else ""))
    done: dict[str, Any] = {"tenant_id": tenant_id, "deployments_removed": owned}
    queue = reply_queue_name(tenant_id)
    if not args.keep_queue:
        assert c.queues is not None
        deleted = await c.queues.delete_queue(queue)
        out(f"queue: {queue} {'deleted' if deleted else 'was not there'}")
        done["reply_queue_deleted"] = deleted
    if args.app_principal_id and c.grants is not None:
        revoked = []
        for grant in tenant_app_grants(tenant_id):
            gone = await c.grants.revoke(args.app_principal_id, grant)
            out(f"grant: {grant.role_name} on queue {grant.queue} {'revoked' if gone else 'none'}")
            revoked.append({"queue": grant.queue, "role": grant.role_name, "revoked": gone})
        done["grants_revoked"] = revoked
    return done


async def _set_policy(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    policy = {
        k: getattr(args, k)
        for k in (
            "log_prompts",
            "share_for_training",
            "allow_tuning",
            "tuning_cooldown_hours",
            "min_training_examples",
        )
        if getattr(args, k) is not None
    }
    quota = _quota(args)
    if not policy and not quota:
        raise AdminError("nothing to change: name a policy or quota option")
    stored = await c.registry.update(set_policy(args.tenant_id, policy=policy, quota=quota))
    tenant = find_tenant(stored.document, args.tenant_id)
    out(f"registry: tenant {args.tenant_id} now {json.dumps(tenant, sort_keys=True)}")
    return {"tenant": tenant}


async def _list(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    stored = await c.registry.read()
    rows = []
    for t in stored.registry.tenants:
        allowed = [d.name for d in stored.registry.allowed_for(t)]
        rows.append(
            {
                "id": t.id,
                "mode": t.mode.value,
                "deployments": allowed,
                "reply_queues": list(t.reply_queues),
                "quota": t.quota.model_dump(exclude_none=True),
                "policy": t.policy.model_dump(),
            }
        )
    width = max([len(r["id"]) for r in rows] + [6])
    out(f"{'tenant':<{width}}  {'mode':<9}  deployments")
    for r in rows:
        out(f"{r['id']:<{width}}  {r['mode']:<9}  {', '.join(r['deployments'])}")
    return {"tenants": rows}


async def _show(args: argparse.Namespace, c: Connections, out: Out) -> dict[str, Any]:
    stored = await c.registry.read()
    tenant = stored.registry.tenant(check_tenant_id(args.tenant_id))
    if tenant is None:
        raise AdminError(f"no tenant {args.tenant_id!r} in the registry")
    shown = {
        "tenant": tenant.model_dump(mode="json"),
        "may_use": [d.name for d in stored.registry.allowed_for(tenant)],
        "reply_queue": reply_queue_name(tenant.id),
    }
    out(json.dumps(shown, indent=2))
    return shown


COMMANDS = {
    "add": _add,
    "remove": _remove,
    "set-policy": _set_policy,
    "list": _list,
    "show": _show,
    "rotate-key": _rotate_key,
    "retire-key": _retire_key,
}


async def run(args: argparse.Namespace, out: Out) -> dict[str, Any]:
    settings = AdminSettings.load(args.env_file)
    need_queues = args.command in {"add", "remove"}
    async with Connections.open(settings, need_queues=need_queues) as connections:
        return await COMMANDS[args.command](args, connections, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lines: list[str] = []
    out: Out = lines.append if args.json else print
    try:
        done = asyncio.run(run(args, out))
    except (AdminError, RegistryError, RegistryConflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AzureError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(done, indent=2, default=str))
    return 0
