"""The whole local stack: broker, Azurite, Redis, model simulator and Functions host, as processes.

Each part is a real server on a free loopback port; the host gets the app settings that point the
Function app at them, exactly the names Bicep sets in Azure (see shared/settings.py).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from devhost.azurite import Azurite, create_containers, seed_registry
from devhost.jobrunner.process import JobRunnerProcess
from devhost.processes import ROOT, ChildProcess, free_port, python_module
from devhost.redis import RedisServer
from devhost.servicebus.launcher import BrokerProcess
from devhost.tenant_keys import KEYS_FILE_NAME, ensure_tenant_keys
from shared.storage import names

MODELS_CONFIG = ROOT / "devhost" / "models.config.json"
REGISTRY = ROOT / "devhost" / "registry.json"
SERVICEBUS_CONFIG = ROOT / "devhost" / "servicebus.config.json"
MODEL_API_KEY = "sim-key"
HOST_READY_TEXT = "functions host ready"
# Where the app reads the registry, as in Azure (`blob://config/registry.json`): the stack copies
# `StackOptions.registry` there at start, so promotion and onboarding change a copy, never the
# checked-in file.
REGISTRY_BLOB = f"{names.CONFIG_CONTAINER}/registry.json"


@dataclass(frozen=True)
class StackPorts:
    """Fixed loopback ports (`dev.py up --fixed-ports`): each part's usual one."""

    servicebus: int = 5672  # AMQP, as the Service Bus emulator
    servicebus_admin: int = 5300  # the management API, as the emulator's
    azurite: int = 10000  # Azurite's blob default
    redis: int = 6379
    models: int = 8081
    functions: int = 7071  # the Functions host's default

    def check_free(self, host: str = "127.0.0.1") -> None:
        """PortInUse naming the part whose port something else holds."""
        for part, port in vars(self).items():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    raise PortInUse(
                        f"{part} needs port {port} on {host}, which something else holds"
                    ) from None


class PortInUse(RuntimeError):
    pass


@dataclass
class StackOptions:
    data_dir: Path
    models_config: Path = MODELS_CONFIG
    registry: Path = REGISTRY
    servicebus_config: Path = SERVICEBUS_CONFIG
    extra_settings: dict[str, str] = field(default_factory=dict)
    # None: free ports, new on every start; StackPorts(): the fixed, documented ones.
    ports: StackPorts | None = None
    # True: data_dir is from an earlier start; its registry blob is kept, not re-seeded.
    keep_data: bool = False


class ModelSimulatorProcess(ChildProcess):
    def __init__(self, config: Path, log_path: Path, port: int | None = None) -> None:
        port = port or free_port()
        super().__init__(
            python_module("devhost.models", "--port", str(port), "--config", str(config)),
            port,
            log_path=log_path,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class FunctionsHostProcess(ChildProcess):
    def __init__(self, settings: dict[str, str], log_path: Path, http_port: int) -> None:
        super().__init__(
            python_module(
                "devhost.host", "--script-root", str(ROOT), "--http-port", str(http_port)
            ),
            http_port,
            log_path=log_path,
            env=settings,
            ready_text=HOST_READY_TEXT,
            ready_timeout_s=60.0,
        )


class LocalStack:
    """Start with `with LocalStack(options) as stack:`; everything started is stopped on exit."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.logs = options.data_dir / "logs"
        self.broker: BrokerProcess | None = None
        self.azurite: Azurite | None = None
        self.redis: RedisServer | None = None
        self.models: ModelSimulatorProcess | None = None
        self.host: FunctionsHostProcess | None = None
        self.jobrunner: JobRunnerProcess | None = None
        self.http_port = options.ports.functions if options.ports else free_port()
        # Each tenant's proof key (shared/security/keys.py), made at start: TENANT_KEYS_FILE.
        self.keys_file = options.data_dir / KEYS_FILE_NAME

    def start(self, with_host: bool = True) -> Self:
        self.logs.mkdir(parents=True, exist_ok=True)
        ports = self.options.ports
        if ports is not None:
            ports.check_free()
        try:
            self.broker = BrokerProcess(
                self.options.data_dir / "servicebus",
                config=self.options.servicebus_config,
                log_path=self.logs / "servicebus.log",
                port=ports.servicebus if ports else None,
                admin_port=ports.servicebus_admin if ports else None,
            ).start()
            self.azurite = Azurite(
                location=self.options.data_dir / "azurite", port=ports.azurite if ports else None
            ).start()
            asyncio.run(create_containers(self.azurite.connection_string))
            asyncio.run(
                seed_registry(
                    self.azurite.connection_string,
                    self.options.registry,
                    REGISTRY_BLOB,
                    replace=not self.options.keep_data,
                )
            )
            ensure_tenant_keys(self.keys_file, self.options.registry)
            self.redis = RedisServer(
                data_dir=self.options.data_dir / "redis",
                log_path=self.logs / "redis.log",
                port=ports.redis if ports else None,
            ).start()
            self.models = ModelSimulatorProcess(
                self.options.models_config,
                self.logs / "models.log",
                ports.models if ports else None,
            ).start()
            self.jobrunner = JobRunnerProcess(
                storage_connection=self.azurite.connection_string,
                simulator_url=self.models.url,
                work_dir=self.options.data_dir / "jobrunner",
                log_path=self.logs / "jobrunner.log",
            ).start()
            if with_host:
                self.start_host()
        except BaseException:
            self.stop()
            raise
        return self

    def app_settings(self) -> dict[str, str]:
        """What `local.settings.json` would hold: the same names the Bicep app settings use."""
        if not (self.broker and self.azurite and self.redis and self.models):
            raise RuntimeError("start the backends first")
        return {
            "ServiceBusConnection": self.broker.connection_string,
            "AzureWebJobsStorage": self.azurite.connection_string,
            "TENANT_REGISTRY": f"blob://{REGISTRY_BLOB}",
            "AZURE_OPENAI_ENDPOINT": self.models.url,
            "AZURE_AI_SERVICES_ENDPOINT": f"{self.models.url}/models",
            # The simulator answers Content Safety too (a registry deployment's content_safety).
            "CONTENT_SAFETY_ENDPOINT": self.models.url,
            "MODEL_API_KEY": MODEL_API_KEY,
            "REDIS_URL": self.redis.url,
            # A registry change (promotion, onboarding) reaches the app within 5 s locally.
            "TENANT_REGISTRY_REFRESH_SECONDS": "5",
            "TENANT_PROOF": "required",
            "TENANT_KEYS_FILE": str(self.keys_file),
            **self._finetune_settings(),
            **self.options.extra_settings,
        }

    def _finetune_settings(self) -> dict[str, str]:
        """Fine-tuning on the local job runner (what stands in for Azure ML), judged by the
        simulator's judge deployment."""
        if self.jobrunner is None:
            return {}
        return {
            "FINETUNE_BACKEND": "local",
            "LOCAL_TRAINING_RUNNER_URL": self.jobrunner.url,
            "FINETUNE_JUDGE_DEPLOYMENT": "judge",
        }

    def start_host(self) -> FunctionsHostProcess:
        self.host = FunctionsHostProcess(
            self.app_settings(), self.logs / "host.log", self.http_port
        ).start()
        return self.host

    def kill_host(self) -> None:
        """SIGKILL, as a crashed or scaled-in instance looks to Service Bus."""
        if self.host is not None:
            self.host.kill()

    def stop(self) -> None:
        for part in (self.host, self.jobrunner, self.models, self.broker):
            if part is not None:
                part.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.azurite is not None:
            self.azurite.stop()

    def __enter__(self) -> Self:
        """Starts the whole stack, unless `start()` already ran (to choose `with_host`)."""
        return self if self.broker is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def exited(self) -> list[tuple[str, int | None, Path]]:
        """The parts whose process has ended: (name, exit status, log file)."""
        parts: list[tuple[str, ChildProcess | None, Path]] = [
            ("Service Bus broker", self.broker, self.logs / "servicebus.log"),
            ("Model simulator", self.models, self.logs / "models.log"),
            ("Job runner (local AML)", self.jobrunner, self.logs / "jobrunner.log"),
            ("Functions host", self.host, self.logs / "host.log"),
        ]
        ended = [
            (name, part.proc.returncode, log)
            for name, part, log in parts
            if part is not None and part.proc is not None and part.proc.poll() is not None
        ]
        for name, server, log in (
            ("Azurite", self.azurite, self.options.data_dir / "azurite"),
            ("Redis", self.redis, self.logs / "redis.log"),
        ):
            if server is not None and not server.running:
                ended.append((name, None, log))
        return ended

    def describe(self) -> list[tuple[str, str]]:
        if not (self.broker and self.azurite and self.redis and self.models):
            raise RuntimeError("start the backends first")
        return [
            ("Service Bus (AMQP)", f"amqp://127.0.0.1:{self.broker.port}"),
            ("Service Bus management", f"http://127.0.0.1:{self.broker.admin_port}"),
            ("Azurite blob", self.azurite.blob_endpoint),
            ("Redis (tenant quotas)", self.redis.url),
            ("Model simulator", self.models.url),
            ("Job runner (local AML)", self.jobrunner.url if self.jobrunner else "-"),
            ("Functions host HTTP", f"http://127.0.0.1:{self.http_port}/api"),
            ("Tenant proof keys", str(self.keys_file)),
            ("Logs", str(self.logs)),
        ]


def fresh_data_dir(name: str) -> Path:
    path = ROOT / ".devhost-data" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
