"""The `.env` file `devhost up` writes: every connection string and endpoint of the running stack.

    ServiceBusConnection='Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=...;UseDevelopmentEmulator=true;'
    ServiceBusAdminConnection='Endpoint=sb://127.0.0.1:5300;...'     the management API
    AzureWebJobsStorage='DefaultEndpointsProtocol=http;...'
    TENANT_REGISTRY=blob://config/registry.json
    ...                                                              every app setting
    FUNCTIONS_HTTP=http://127.0.0.1:7071/api                        the host's HTTP triggers
    DEVHOST_LOGS=/.../.devhost-data/up/logs

Each line is `NAME=value` with the value quoted as a POSIX shell would need it (`shlex.quote`), so
the same line works pasted into a shell (`export` it, or `set -a; . file; set +a`), in a `.env`
loader (python-dotenv, docker `--env-file` takes it unquoted: use the shell form), or read back
with `read_env_file`. The printed lines of `dev.py up` are these lines.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

HEADER = "# Written by `python3 dev.py up` for the stack it runs; rewritten on every start.\n"


def line(name: str, value: str) -> str:
    return f"{name}={shlex.quote(value)}"


def render(values: Mapping[str, str]) -> str:
    return HEADER + "".join(line(k, v) + "\n" for k, v in values.items())


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    """Write atomically (a reader never sees half a file), readable by the owner only (the file
    holds the local stand-ins' well-known keys, but a habit kept is a habit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render(values))
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def read_env_file(path: Path) -> dict[str, str]:
    return {k: v for k, v in dotenv_values(path).items() if v is not None}
