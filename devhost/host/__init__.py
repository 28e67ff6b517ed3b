"""The local Functions host: runs function_app.py's triggers as the Azure Functions host would.

    python -m devhost.host --script-root . [--settings local.settings.json] [--http-port 7071]

or, in-process (tests):

    async with FunctionsHost(script_root, settings={"ServiceBusConnection": ...}) as host:
        ...

Service Bus queue, blob, timer and HTTP triggers; host.json's Service Bus, blob, HTTP and
functionTimeout options. See runner.py for the lifecycle and each *_trigger.py for its trigger.
"""

from devhost.host.discovery import DiscoveryError, FunctionSpec
from devhost.host.options import HostJsonError, HostOptions
from devhost.host.runner import READY_TEXT, FunctionsHost, HostStartupError
from devhost.host.settings import SettingsError

__all__ = [
    "READY_TEXT",
    "DiscoveryError",
    "FunctionSpec",
    "FunctionsHost",
    "HostJsonError",
    "HostOptions",
    "HostStartupError",
    "SettingsError",
]
