"""What the local host takes from `host.json`, with the real host's defaults.

Keys are matched case-insensitively, as the Functions host's configuration does. Service Bus
options are read in both shapes the extension bundles have used:

    extensions.serviceBus.maxConcurrentCalls / autoCompleteMessages /
        maxAutoLockRenewalDuration / prefetchCount                       (bundle 3+, extension 5)
    extensions.serviceBus.messageHandlerOptions.maxConcurrentCalls / autoComplete /
        maxAutoRenewDuration                                             (bundle 1-2, extension 4)

When a value is given in both, the newer shape wins. Durations are .NET TimeSpans
(`[d.]hh:mm:ss[.fff]`); `functionTimeout: "-1"` means no limit.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("devhost.host")
_T = TypeVar("_T")

_TIMESPAN = re.compile(
    r"^(?P<neg>-)?(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?)?$"
)


class HostJsonError(ValueError):
    """host.json is missing a required value or has one of the wrong shape."""


def parse_timespan(text: str) -> float:
    """A .NET TimeSpan (`00:05:00`, `1.02:00:00`, `00:00:00.80`) in seconds."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise HostJsonError(f"{text!r} is not a TimeSpan like 00:05:00")
    seconds = (
        int(match["days"] or 0) * 86400
        + int(match["h"]) * 3600
        + int(match["m"]) * 60
        + int(match["s"] or 0)
        + float(f"0.{match['f']}" if match["f"] else 0)
    )
    return -seconds if match["neg"] else seconds


@dataclass(frozen=True)
class ClientRetryOptions:
    """`extensions.serviceBus.clientRetryOptions`: the SDK's own retries of one operation."""

    mode: str = "exponential"
    try_timeout_s: float = 60.0
    delay_s: float = 0.8
    max_delay_s: float = 60.0
    max_retries: int = 3


@dataclass(frozen=True)
class ServiceBusOptions:
    # The real default is 16 per CPU; locally one process stands for one instance.
    max_concurrent_calls: int = 16
    prefetch_count: int = 0
    auto_complete_messages: bool = True
    max_auto_lock_renewal_s: float = 300.0
    retry: ClientRetryOptions = field(default_factory=ClientRetryOptions)


@dataclass(frozen=True)
class BlobOptions:
    # `extensions.blobs.maxDegreeOfParallelism`: blobs processed at once, per function.
    max_degree_of_parallelism: int = 8
    # `extensions.queues.maxDequeueCount`: the real host drives blob triggers through a queue, so
    # this bounds the tries of one blob before it is recorded as poison.
    max_dequeue_count: int = 5


@dataclass(frozen=True)
class HttpOptions:
    route_prefix: str = "api"
    # `extensions.http.maxConcurrentRequests`; None (-1 in host.json): unbounded.
    max_concurrent_requests: int | None = None


# host.json `logging.logLevel` categories -> the Python loggers that stand for them locally.
# ("Function" has no counterpart: the worker sends a function's logs through the root logger.)
LOG_CATEGORIES = {
    "default": "",
    "host": "devhost.host",
    "host.results": "devhost.host",
    "azure.messaging.servicebus": "azure.servicebus",
    "azure.core": "azure.core",
    "azure.storage.blobs": "azure.storage.blob",
}
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


@dataclass(frozen=True)
class HostOptions:
    function_timeout_s: float | None = None
    service_bus: ServiceBusOptions = field(default_factory=ServiceBusOptions)
    blobs: BlobOptions = field(default_factory=BlobOptions)
    http: HttpOptions = field(default_factory=HttpOptions)
    # Python logger name ("" = root) -> level, from `logging.logLevel`.
    log_levels: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, script_root: Path) -> HostOptions:
        """From `<script_root>/host.json`; the defaults when there is none."""
        path = script_root / "host.json"
        if not path.exists():
            log.warning("host.json not found in %s; using the defaults", script_root)
            return cls()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise HostJsonError(f"{path}: {exc}") from exc
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "host.json") -> HostOptions:
        if not isinstance(doc, Mapping):
            raise HostJsonError(f"{source}: the document must be a JSON object")
        reader = _Reader(doc, source)
        version = reader.get("version")
        if version != "2.0":
            log.warning("%s: version is %r; the host reads the 2.0 schema", source, version)
        timeout = reader.get("functionTimeout")
        function_timeout_s: float | None = None
        if timeout is not None:
            seconds = reader.timespan("functionTimeout")
            function_timeout_s = None if seconds is None or seconds < 0 else seconds
        return cls(
            function_timeout_s=function_timeout_s,
            service_bus=_service_bus(reader),
            blobs=_blobs(reader),
            http=_http(reader),
            log_levels=_log_levels(reader),
        )


def _service_bus(reader: _Reader) -> ServiceBusOptions:
    sb = "extensions.serviceBus"
    old = f"{sb}.messageHandlerOptions"
    defaults = ServiceBusOptions()
    max_calls = reader.first_int((f"{sb}.maxConcurrentCalls", f"{old}.maxConcurrentCalls"))
    auto_complete = reader.first_bool((f"{sb}.autoCompleteMessages", f"{old}.autoComplete"))
    renewal = reader.first_timespan(
        (f"{sb}.maxAutoLockRenewalDuration", f"{old}.maxAutoRenewDuration")
    )
    prefetch = reader.first_int((f"{sb}.prefetchCount",))
    if max_calls is not None and max_calls < 1:
        raise HostJsonError(f"{reader.source}: {sb}.maxConcurrentCalls must be at least 1")
    if prefetch is not None and prefetch < 0:
        raise HostJsonError(f"{reader.source}: {sb}.prefetchCount must not be negative")
    r = f"{sb}.clientRetryOptions"
    retry_defaults = ClientRetryOptions()
    retry = ClientRetryOptions(
        mode=str(reader.get(f"{r}.mode") or retry_defaults.mode).lower(),
        try_timeout_s=_or(reader.timespan(f"{r}.tryTimeout"), retry_defaults.try_timeout_s),
        delay_s=_or(reader.timespan(f"{r}.delay"), retry_defaults.delay_s),
        max_delay_s=_or(reader.timespan(f"{r}.maxDelay"), retry_defaults.max_delay_s),
        max_retries=_or(reader.first_int((f"{r}.maxRetries",)), retry_defaults.max_retries),
    )
    return ServiceBusOptions(
        max_concurrent_calls=_or(max_calls, defaults.max_concurrent_calls),
        prefetch_count=_or(prefetch, defaults.prefetch_count),
        auto_complete_messages=_or(auto_complete, defaults.auto_complete_messages),
        max_auto_lock_renewal_s=_or(renewal, defaults.max_auto_lock_renewal_s),
        retry=retry,
    )


def _blobs(reader: _Reader) -> BlobOptions:
    defaults = BlobOptions()
    parallelism = reader.first_int(("extensions.blobs.maxDegreeOfParallelism",))
    dequeue = reader.first_int(("extensions.queues.maxDequeueCount",))
    return BlobOptions(
        max_degree_of_parallelism=max(1, _or(parallelism, defaults.max_degree_of_parallelism)),
        max_dequeue_count=max(1, _or(dequeue, defaults.max_dequeue_count)),
    )


def _http(reader: _Reader) -> HttpOptions:
    prefix = reader.get("extensions.http.routePrefix")
    concurrent = reader.first_int(("extensions.http.maxConcurrentRequests",))
    return HttpOptions(
        route_prefix=HttpOptions.route_prefix if prefix is None else str(prefix).strip("/"),
        max_concurrent_requests=concurrent if concurrent is not None and concurrent > 0 else None,
    )


def _log_levels(reader: _Reader) -> dict[str, int]:
    levels = reader.get("logging.logLevel")
    if not isinstance(levels, Mapping):
        return {}
    out: dict[str, int] = {}
    # Less specific categories first, so "Host.Results" wins over "Host" for the same logger.
    for category, level in sorted(levels.items(), key=lambda kv: len(str(kv[0]))):
        logger = LOG_CATEGORIES.get(str(category).lower())
        value = _LEVELS.get(str(level).lower())
        if logger is not None and value is not None:
            out[logger] = value
    return out


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


class _Reader:
    """Dotted, case-insensitive paths into the host.json document."""

    def __init__(self, doc: Mapping[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source

    def get(self, path: str) -> Any:
        node: Any = self.doc
        for part in path.split("."):
            if not isinstance(node, Mapping):
                return None
            lowered = {str(k).lower(): v for k, v in node.items()}
            node = lowered.get(part.lower())
            if node is None:
                return None
        return node

    def timespan(self, path: str) -> float | None:
        value = self.get(path)
        if value is None:
            return None
        if isinstance(value, str):
            if value.strip() == "-1":
                return -1.0
            try:
                return parse_timespan(value)
            except HostJsonError as exc:
                raise HostJsonError(f"{self.source}: {path}: {exc}") from None
        raise HostJsonError(f"{self.source}: {path} must be a TimeSpan string like 00:05:00")

    def first_timespan(self, paths: tuple[str, ...]) -> float | None:
        for path in paths:
            value = self.timespan(path)
            if value is not None:
                return value
        return None

    def first_int(self, paths: tuple[str, ...]) -> int | None:
        for path in paths:
            value = self.get(path)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise HostJsonError(f"{self.source}: {path} must be a whole number")
            try:
                return int(value)
            except ValueError:
                raise HostJsonError(f"{self.source}: {path} must be a whole number") from None
        return None

    def first_bool(self, paths: tuple[str, ...]) -> bool | None:
        for path in paths:
            value = self.get(path)
            if value is None:
                continue
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "false"}:
                return value.lower() == "true"
            raise HostJsonError(f"{self.source}: {path} must be true or false")
        return None
