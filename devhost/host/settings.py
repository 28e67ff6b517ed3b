"""App settings: `local.settings.json` `Values` into the environment, and setting lookups.

As `func start` does, a value already in the environment wins over the file, so a setting can be
overridden per run (`ServiceBusConnection=... python -m devhost.host ...`). Binding properties
written as `%NAME%` (a queue name, a blob path, a schedule) are resolved from the settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A settings file that cannot be read, or a setting a function needs that is not set."""


_PERCENT = re.compile(r"%([^%]+)%")


def read_local_settings(path: Path) -> tuple[dict[str, str], int | None]:
    """The `Values` of a local.settings.json, as strings, and its `Host.LocalHttpPort`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise SettingsError(f"{path}: expected a JSON object with a `Values` object")
    if doc.get("IsEncrypted") is True:
        raise SettingsError(f"{path}: encrypted settings are not supported locally")
    values = doc.get("Values") or {}
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: `Values` must be an object of name -> string")
    port = (doc.get("Host") or {}).get("LocalHttpPort")
    return {str(k): _text(v) for k, v in values.items()}, int(port) if port else None


def apply_settings(
    values: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Set the values that are not set yet; returns those it set (to undo them later)."""
    env = os.environ if environ is None else environ
    added: dict[str, str] = {}
    for name, value in values.items():
        if name not in env:
            env[name] = value
            added[name] = value
    return added


def remove_settings(
    added: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> None:
    """Undo `apply_settings` (in-process hosts in tests): only values still as it left them."""
    env = os.environ if environ is None else environ
    for name, value in added.items():
        if env.get(name) == value:
            del env[name]


def resolve(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`%NAME%` placeholders replaced by the setting's value (a missing one is an error)."""
    env = os.environ if environ is None else environ

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise SettingsError(f"binding expression %{name}% names a setting that is not set")
        return env[name]

    return _PERCENT.sub(one, text)


def connection_setting(
    function: str, kind: str, name: str, environ: Mapping[str, str] | None = None
) -> str:
    """The connection string a binding's `connection` names: the setting itself, or
    `AzureWebJobs<name>` as the real host also accepts."""
    env = os.environ if environ is None else environ
    for candidate in (name, f"AzureWebJobs{name}"):
        value = env.get(candidate)
        if value:
            return value
    identity = [k for k in env if k.startswith(f"{name}__")]
    hint = (
        f" ({', '.join(sorted(identity))} is set, but the local host needs a connection string)"
        if identity
        else ""
    )
    raise SettingsError(
        f"function {function!r}: the {kind} connection setting {name!r} is not set{hint}; "
        f"put it in local.settings.json `Values` or the environment"
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)
