"""The local Functions host: load the app, start a listener per trigger, stop them cleanly.

    async with FunctionsHost(script_root, settings={"ServiceBusConnection": ...}) as host:
        host.functions, host.http_url
        ...

`start()` applies the settings (a local.settings.json path, or a dict of values; the script
root's local.settings.json when neither is given) without overriding the environment, reads
host.json, imports function_app.py, checks every trigger's settings (a missing connection setting
fails here, naming it), starts the listeners and the HTTP server, and logs the one ready line:
`functions host ready: <n> functions (<names>)`. `stop()` stops every listener taking new work,
gives in-flight invocations `grace_s` to finish, abandons (Service Bus) or forgets (blob: no
receipt) what did not, closes the clients and removes the settings it added.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Protocol, Self

from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.host import discovery
from devhost.host.blob_trigger import BlobPath, BlobPathError, BlobTriggerListener
from devhost.host.discovery import DiscoveryError, FunctionSpec
from devhost.host.http_trigger import HttpServer, RouteError
from devhost.host.invocation import Invoker
from devhost.host.ncrontab import CronError
from devhost.host.options import HostJsonError, HostOptions
from devhost.host.servicebus_trigger import ServiceBusQueueListener
from devhost.host.settings import (
    SettingsError,
    apply_settings,
    connection_setting,
    read_local_settings,
    remove_settings,
    resolve,
)
from devhost.host.timer_trigger import TimerListener, parse_schedule

log = logging.getLogger("devhost.host")
# Startup and shutdown lines: kept at INFO by the CLI whatever host.json's log levels say (the
# ready line is what scripts wait for).
lifecycle = logging.getLogger("devhost.host.lifecycle")

READY_TEXT = "functions host ready"


class HostStartupError(RuntimeError):
    """The host cannot start: a setting, a binding or host.json that is wrong; says which."""


class Listener(Protocol):
    def describe(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


class FunctionsHost:
    def __init__(
        self,
        script_root: Path | str,
        settings: Path | str | Mapping[str, str] | None = None,
        *,
        http_host: str = "127.0.0.1",
        http_port: int | None = None,
        grace_s: float = 10.0,
        module_name: str | None = None,
        host_id: str | None = None,
        blob_poll_interval_s: float = 1.0,
        servicebus_receive_wait_s: float = 1.0,
    ) -> None:
        self.script_root = Path(script_root).resolve()
        self._settings_source = settings
        self._http_host = http_host
        self._http_port = http_port
        self.grace_s = grace_s
        self._module_name = module_name
        self.host_id = host_id or _host_id(self.script_root)
        self._blob_poll_interval_s = blob_poll_interval_s
        self._receive_wait_s = servicebus_receive_wait_s
        self.options = HostOptions()
        self.functions: list[FunctionSpec] = []
        self.listeners: list[Listener] = []
        self.http: HttpServer | None = None
        self.module: ModuleType | None = None
        self._invoker: Invoker | None = None
        self._added_settings: dict[str, str] = {}
        self._sb_clients: dict[str, ServiceBusClient] = {}
        self._blob_clients: dict[str, BlobServiceClient] = {}
        self._started = False
        self._ready = False

    @property
    def http_url(self) -> str:
        if self.http is None or self.http.port is None:
            raise RuntimeError("the host is not started")
        return self.http.url

    @property
    def busy_threads(self) -> int:
        return self._invoker.busy_threads() if self._invoker else 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("the host is already started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        try:
            settings_port = self._apply_settings()
            self.options = HostOptions.load(self.script_root)
        except (SettingsError, HostJsonError) as exc:
            raise HostStartupError(str(exc)) from exc
        self.module = discovery.load_module(self.script_root, self._module_name)
        try:
            self.functions = discovery.discover(discovery.app_of(self.module))
        except DiscoveryError as exc:
            raise HostStartupError(str(exc)) from exc
        self._invoker = Invoker(self.options.function_timeout_s)
        http_specs = [f for f in self.functions if f.trigger_type == discovery.HTTP]
        try:
            self.listeners = [
                self._listener(f) for f in self.functions if f.trigger_type != discovery.HTTP
            ]
            self.http = HttpServer(
                http_specs,
                self.options.http,
                self._invoker,
                host=self._http_host,
                port=self._http_port if self._http_port is not None else (settings_port or 0),
            )
        except (SettingsError, CronError, BlobPathError, RouteError) as exc:
            raise HostStartupError(str(exc)) from exc
        started = await asyncio.gather(
            *(listener.start() for listener in self.listeners), return_exceptions=True
        )
        for result in started:
            if isinstance(result, BaseException):
                raise result
        for listener in self.listeners:
            lifecycle.info("listening: %s", listener.describe())
        try:
            await self.http.start(shutdown_timeout_s=self.grace_s)
        except OSError as exc:
            raise HostStartupError(f"the HTTP server cannot listen: {exc}") from exc
        lifecycle.info("http server listening on %s", self.http.url)
        for line in self.http.describe():
            lifecycle.info("http route: %s", line)
        names = ", ".join(f.name for f in self.functions)
        lifecycle.info("%s: %d functions (%s)", READY_TEXT, len(self.functions), names)
        self._ready = True

    async def stop(self) -> None:
        """Safe to call twice, and after a failed start."""
        if not self._started:
            return
        self._started = False
        stops = [listener.stop(self.grace_s) for listener in self.listeners]
        if self.http is not None:
            stops.append(self.http.stop())
        results = await asyncio.gather(*stops, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("a listener failed to stop cleanly", exc_info=result)
        for sb in self._sb_clients.values():
            await sb.close()
        for blobs in self._blob_clients.values():
            await blobs.close()
        self._sb_clients.clear()
        self._blob_clients.clear()
        self.listeners = []
        if self._invoker is not None:
            self._invoker.close()
        remove_settings(self._added_settings)
        self._added_settings = {}
        root = str(self.script_root)
        if self._module_name is None and root in sys.path:
            sys.path.remove(root)
        if self._ready:
            lifecycle.info("functions host stopped")
        self._ready = False

    def _apply_settings(self) -> int | None:
        source = self._settings_source
        port: int | None = None
        if source is None:
            default = self.script_root / "local.settings.json"
            source = default if default.exists() else {}
        if isinstance(source, Mapping):
            values = {str(k): str(v) for k, v in source.items()}
        else:
            values, port = read_local_settings(Path(source))
        self._added_settings = apply_settings(values)
        return port

    def _listener(self, spec: FunctionSpec) -> Listener:
        assert self._invoker is not None
        if spec.trigger_type == discovery.SERVICE_BUS:
            connection = str(spec.prop("connection") or "AzureWebJobsServiceBus")
            conn = connection_setting(spec.name, "Service Bus", connection)
            return ServiceBusQueueListener(
                spec,
                resolve(str(spec.prop("queueName"))),
                self._servicebus(conn),
                self.options.service_bus,
                self._invoker,
                receive_wait_s=self._receive_wait_s,
            )
        if spec.trigger_type == discovery.BLOB:
            connection = str(spec.prop("connection") or "AzureWebJobsStorage")
            conn = connection_setting(spec.name, "storage", connection)
            return BlobTriggerListener(
                spec,
                BlobPath.parse(resolve(str(spec.prop("path")))),
                self._blobs(conn),
                self.options.blobs,
                self._invoker,
                host_id=self.host_id,
                poll_interval_s=self._blob_poll_interval_s,
            )
        if spec.trigger_type == discovery.TIMER:
            return TimerListener(
                spec,
                parse_schedule(resolve(str(spec.prop("schedule")))),
                self._invoker,
                run_on_startup=bool(spec.prop("runOnStartup")),
            )
        raise HostStartupError(f"function {spec.name!r}: no listener for {spec.trigger_type}")

    def _servicebus(self, conn: str) -> ServiceBusClient:
        if conn not in self._sb_clients:
            retry = self.options.service_bus.retry
            try:
                self._sb_clients[conn] = ServiceBusClient.from_connection_string(
                    conn,
                    retry_total=retry.max_retries,
                    retry_backoff_factor=retry.delay_s,
                    retry_backoff_max=retry.max_delay_s,
                    retry_mode=retry.mode,
                )
            except ValueError as exc:
                raise SettingsError(f"bad Service Bus connection string: {exc}") from exc
        return self._sb_clients[conn]

    def _blobs(self, conn: str) -> BlobServiceClient:
        if conn not in self._blob_clients:
            try:
                self._blob_clients[conn] = BlobServiceClient.from_connection_string(conn)
            except ValueError as exc:
                raise SettingsError(f"bad storage connection string: {exc}") from exc
        return self._blob_clients[conn]


def _host_id(script_root: Path) -> str:
    """Like the real host's id (the app name): lower case, letters, digits and dashes."""
    name = re.sub(r"[^a-z0-9-]+", "-", script_root.name.lower()).strip("-")
    return (name or "functions-host")[:32]
