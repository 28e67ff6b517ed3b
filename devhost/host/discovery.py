"""Finding the app's functions: import `function_app.py`, read each function's trigger binding.

`app.get_functions()` builds (and registers the names of) every function, so it may be called
once per `FunctionApp`; `discover` is the one place that calls it. Each function becomes a
`FunctionSpec`: its name, the trigger binding as function.json would hold it (camelCase keys,
enums as strings), the trigger argument's name and the user's callable.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

SERVICE_BUS = "serviceBusTrigger"
BLOB = "blobTrigger"
TIMER = "timerTrigger"
HTTP = "httpTrigger"
SUPPORTED_TRIGGERS = (SERVICE_BUS, BLOB, TIMER, HTTP)

_loaded = itertools.count(1)


class DiscoveryError(ValueError):
    """The app cannot be loaded, or a function uses something the local host cannot drive."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger_type: str
    arg_name: str
    binding: Mapping[str, Any]
    func: Callable[..., Any] = field(repr=False)
    is_async: bool = False

    def prop(self, key: str, default: Any = None) -> Any:
        """A trigger binding property by its function.json name (`queueName`, `path`)."""
        return self.binding.get(key, default)


def load_module(script_root: Path, module_name: str | None = None) -> ModuleType:
    """Import `<script_root>/function_app.py` with the script root on `sys.path` (as the Python
    worker does, so it can import its own packages). A fresh module each call; with no name
    given it gets a unique one, so tests can load several apps into one process."""
    path = script_root / "function_app.py"
    if not path.is_file():
        raise DiscoveryError(f"{path} not found: --script-root must hold function_app.py")
    root = str(script_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    name = module_name or f"_devhost_function_app_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DiscoveryError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def app_of(module: ModuleType) -> func.FunctionApp:
    app = getattr(module, "app", None)
    if not isinstance(app, func.FunctionApp):
        raise DiscoveryError(
            f"{module.__file__}: expected a module attribute `app = func.FunctionApp()`"
        )
    return app


def discover(app: func.FunctionApp) -> list[FunctionSpec]:
    """Every function of the app with its trigger; unsupported bindings are refused here, at
    startup, with the function's name, rather than at its first invocation."""
    return [_spec(fn) for fn in app.get_functions()]


def _spec(fn: func.Function) -> FunctionSpec:
    name = fn.get_function_name() or fn.get_user_function().__name__
    bindings = json.loads(fn.get_function_json()).get("bindings", [])
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise DiscoveryError(f"function {name!r} must have exactly one trigger")
    trigger = triggers[0]
    trigger_type = str(trigger["type"])
    if trigger_type not in SUPPORTED_TRIGGERS:
        raise DiscoveryError(
            f"function {name!r}: trigger {trigger_type!r} is not supported by the local host "
            f"(supported: {', '.join(SUPPORTED_TRIGGERS)})"
        )
    for other in bindings:
        if other is trigger:
            continue
        if trigger_type == HTTP and other.get("type") == "http" and other.get("name") == "$return":
            continue
        raise DiscoveryError(
            f"function {name!r}: binding {other.get('type')!r} ({other.get('name')!r}) is not "
            "supported by the local host; reach storage and queues through shared/ instead"
        )
    _check_trigger(name, trigger)
    user = fn.get_user_function()
    _check_parameters(name, user, str(trigger["name"]))
    return FunctionSpec(
        name=name,
        trigger_type=trigger_type,
        arg_name=str(trigger["name"]),
        binding=trigger,
        func=user,
        is_async=inspect.iscoroutinefunction(user),
    )


def _check_trigger(name: str, trigger: Mapping[str, Any]) -> None:
    kind = trigger["type"]
    if kind == SERVICE_BUS:
        if "topicName" in trigger or "queueName" not in trigger:
            raise DiscoveryError(
                f"function {name!r}: only Service Bus queue triggers are supported"
            )
        if trigger.get("isSessionsEnabled"):
            raise DiscoveryError(f"function {name!r}: session-enabled triggers are not supported")
        if str(trigger.get("cardinality") or "one").lower() != "one":
            raise DiscoveryError(f"function {name!r}: only cardinality 'one' is supported")
    elif kind == BLOB:
        path = str(trigger.get("path") or "")
        if "/" not in path.strip("/"):
            raise DiscoveryError(
                f"function {name!r}: blob path {path!r} must be '<container>/<pattern>'"
            )
    elif kind == TIMER and not trigger.get("schedule"):
        raise DiscoveryError(f"function {name!r}: a timer trigger needs a schedule")


def _check_parameters(name: str, user: Callable[..., Any], arg_name: str) -> None:
    params = inspect.signature(user).parameters
    if arg_name not in params:
        raise DiscoveryError(f"function {name!r} has no parameter {arg_name!r} for its trigger")
    required = [
        p.name
        for p in params.values()
        if p.name != arg_name
        and p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        raise DiscoveryError(
            f"function {name!r}: parameters {required} have no binding the local host can fill "
            "(it passes only the trigger argument)"
        )
