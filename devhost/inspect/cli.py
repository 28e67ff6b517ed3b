"""`python -m devhost inspect` (or `python3 dev.py inspect`): look inside a running local stack.

Reads the env file `dev.py up` wrote (default `.devhost-data/up/devhost.env`), gathers the
snapshot (`collect.py`) and prints it as tables (`render.py`) or, with `--json`, as one JSON
object. Exit status 0; 1 when the env file is missing or the stack does not answer (the message
says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from azure.core.exceptions import AzureError
from azure.servicebus.exceptions import ServiceBusError
from rich.console import Console

from devhost.envfile import read_env_file
from devhost.inspect.collect import collect
from devhost.inspect.render import render


def run_inspect(args: argparse.Namespace) -> int:
    if not args.env_file.is_file():
        print(
            f"inspect: {args.env_file} not found: start the stack with `python3 dev.py up` "
            "(it writes that file), or pass --env-file",
            file=sys.stderr,
        )
        return 1
    env = read_env_file(args.env_file)
    try:
        snapshot = asyncio.run(collect(env, tenants=args.tenant, limit=args.limit))
    except KeyError as exc:
        print(f"inspect: {args.env_file} has no {exc}: is it devhost's?", file=sys.stderr)
        return 1
    except (AzureError, ServiceBusError, OSError) as exc:
        print(
            f"inspect: the stack of {args.env_file} did not answer ({type(exc).__name__}: "
            f"{exc}); is `python3 dev.py up` still running?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(snapshot, indent=2, default=str))
    else:
        render(snapshot, Console())
    return 0
