"""The local host's view of an app: its functions and triggers, host.json, settings, paths and
routes, without starting anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devhost.host import discovery
from devhost.host.blob_trigger import BlobPath, BlobPathError
from devhost.host.discovery import DiscoveryError, FunctionSpec
from devhost.host.http_trigger import RouteError, compile_route
from devhost.host.options import HostJsonError, HostOptions, parse_timespan
from devhost.host.settings import (
    SettingsError,
    apply_settings,
    connection_setting,
    read_local_settings,
    remove_settings,
    resolve,
)

SAMPLES = Path(__file__).resolve().parents[1] / "integration" / "sample_app"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_module puts the script root first on sys.path (as the worker does); a sample app's
    # folder left there would shadow the repository's own `function_app` for later tests.
    monkeypatch.setattr(sys, "path", list(sys.path))


def discovered(folder: str) -> dict[str, FunctionSpec]:
    module = discovery.load_module(SAMPLES / folder)
    return {f.name: f for f in discovery.discover(discovery.app_of(module))}


# -- discovery ------------------------------------------------------------------------------------
def test_service_bus_sample_triggers() -> None:
    specs = discovered("servicebus")
    assert set(specs) == {"work", "work_sync"}
    work = specs["work"]
    assert work.trigger_type == discovery.SERVICE_BUS
    assert work.arg_name == "msg"
    assert work.prop("queueName") == "%SAMPLE_QUEUE%"
    assert work.prop("connection") == "SampleServiceBus"
    assert work.is_async
    assert not specs["work_sync"].is_async
    assert specs["work_sync"].arg_name == "message"


def test_blob_timer_and_http_sample_triggers() -> None:
    blob = discovered("blob")["on_upload"]
    assert (blob.trigger_type, blob.arg_name) == (discovery.BLOB, "blob")
    assert blob.prop("path") == "%SAMPLE_CONTAINER%/in/{name}"
    assert blob.prop("connection") == "AzureWebJobsStorage"

    timers = discovered("timer")
    assert timers["tick"].prop("schedule") == "*/1 * * * * *"
    assert not timers["tick"].prop("runOnStartup")
    assert timers["on_startup"].prop("runOnStartup") is True

    http = discovered("http")
    assert http["item"].prop("route") == "items/{id:int}"
    assert sorted(http["item"].prop("methods")) == ["GET", "POST"]
    assert http["boom"].prop("methods") is None  # every method
    assert http["boom"].trigger_type == discovery.HTTP


def test_the_real_function_app_is_one_service_bus_trigger_at_least() -> None:
    module = discovery.load_module(ROOT)
    specs = {f.name: f for f in discovery.discover(discovery.app_of(module))}
    infer = specs["infer"]
    assert infer.trigger_type == discovery.SERVICE_BUS
    assert (infer.prop("queueName"), infer.prop("connection")) == (
        "inference-requests",
        "ServiceBusConnection",
    )
    assert infer.is_async


def test_a_missing_function_app_or_app_attribute_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match=r"function_app\.py not found"):
        discovery.load_module(tmp_path)
    (tmp_path / "function_app.py").write_text("application = 1\n")
    with pytest.raises(DiscoveryError, match=r"app = func\.FunctionApp"):
        discovery.app_of(discovery.load_module(tmp_path))


def test_unsupported_bindings_are_refused_naming_the_function() -> None:
    app = func.FunctionApp()

    @app.function_name("with_output")
    @app.blob_output(arg_name="out", path="c/x", connection="AzureWebJobsStorage")
    @app.service_bus_queue_trigger(arg_name="msg", queue_name="q", connection="SB")
    def with_output(msg: func.ServiceBusMessage, out: func.Out[str]) -> None: ...

    with pytest.raises(DiscoveryError, match=r"'with_output': binding 'blob'"):
        discovery.discover(app)


def test_topic_triggers_and_extra_parameters_are_refused() -> None:
    topics = func.FunctionApp()

    @topics.service_bus_topic_trigger(
        arg_name="msg", topic_name="t", subscription_name="s", connection="SB"
    )
    def on_topic(msg: func.ServiceBusMessage) -> None: ...

    with pytest.raises(DiscoveryError, match="only Service Bus queue triggers"):
        discovery.discover(topics)

    extra = func.FunctionApp()

    @extra.timer_trigger(arg_name="timer", schedule="0 * * * * *")
    def needs_context(timer: func.TimerRequest, context: Any) -> None: ...

    with pytest.raises(DiscoveryError, match=r"parameters \['context'\]"):
        discovery.discover(extra)


# -- host.json ------------------------------------------------------------------------------------
def test_the_repositorys_host_json() -> None:
    doc = json.loads((ROOT / "host.json").read_text())
    written = doc["extensions"]["serviceBus"]
    options = HostOptions.load(ROOT)
    sb = options.service_bus
    assert sb.max_concurrent_calls == written["maxConcurrentCalls"]
    assert sb.prefetch_count == written.get("prefetchCount", 0)
    assert sb.auto_complete_messages is written.get("autoCompleteMessages", True)
    assert sb.max_auto_lock_renewal_s == parse_timespan(written["maxAutoLockRenewalDuration"])
    retry = written["clientRetryOptions"]
    assert (sb.retry.mode, sb.retry.max_retries) == (retry["mode"], retry["maxRetries"])
    assert sb.retry.delay_s == parse_timespan(retry["delay"])
    assert options.function_timeout_s == parse_timespan(doc["functionTimeout"])
    assert options.http.route_prefix == "api"
    assert options.log_levels["azure.servicebus"] == 30  # "Azure.Messaging.ServiceBus": Warning


def test_service_bus_options_in_the_newer_shape() -> None:
    sb = HostOptions.from_dict(
        {
            "version": "2.0",
            "extensions": {
                "serviceBus": {
                    "maxConcurrentCalls": 3,
                    "prefetchCount": 10,
                    "autoCompleteMessages": False,
                    "maxAutoLockRenewalDuration": "00:00:30",
                }
            },
        }
    ).service_bus
    assert (sb.max_concurrent_calls, sb.prefetch_count) == (3, 10)
    assert sb.auto_complete_messages is False
    assert sb.max_auto_lock_renewal_s == 30


def test_service_bus_options_in_the_older_message_handler_shape() -> None:
    sb = HostOptions.from_dict(
        {
            "version": "2.0",
            "extensions": {
                "serviceBus": {
                    "prefetchCount": 5,
                    "messageHandlerOptions": {
                        "maxConcurrentCalls": 4,
                        "autoComplete": False,
                        "maxAutoRenewDuration": "00:02:00",
                    },
                }
            },
        }
    ).service_bus
    assert (sb.max_concurrent_calls, sb.prefetch_count, sb.auto_complete_messages) == (4, 5, False)
    assert sb.max_auto_lock_renewal_s == 120


def test_the_newer_shape_wins_and_keys_are_case_insensitive() -> None:
    sb = HostOptions.from_dict(
        {
            "version": "2.0",
            "Extensions": {
                "ServiceBus": {
                    "MaxConcurrentCalls": 7,
                    "messageHandlerOptions": {"maxConcurrentCalls": 4},
                }
            },
        }
    ).service_bus
    assert sb.max_concurrent_calls == 7


def test_defaults_and_other_sections() -> None:
    empty = HostOptions.from_dict({"version": "2.0"})
    assert empty.service_bus.max_concurrent_calls == 16
    assert empty.service_bus.auto_complete_messages is True
    assert empty.function_timeout_s is None
    assert (empty.blobs.max_dequeue_count, empty.http.route_prefix) == (5, "api")
    other = HostOptions.from_dict(
        {
            "version": "2.0",
            "functionTimeout": "-1",
            "extensions": {
                "http": {"routePrefix": "", "maxConcurrentRequests": 2},
                "queues": {"maxDequeueCount": 2},
                "blobs": {"maxDegreeOfParallelism": 3},
            },
        }
    )
    assert other.function_timeout_s is None
    assert (other.http.route_prefix, other.http.max_concurrent_requests) == ("", 2)
    assert (other.blobs.max_dequeue_count, other.blobs.max_degree_of_parallelism) == (2, 3)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"extensions": {"serviceBus": {"maxConcurrentCalls": 0}}}, "at least 1"),
        ({"extensions": {"serviceBus": {"maxConcurrentCalls": "many"}}}, "whole number"),
        ({"extensions": {"serviceBus": {"autoCompleteMessages": "yes"}}}, "true or false"),
        ({"functionTimeout": "five minutes"}, "not a TimeSpan"),
        ({"functionTimeout": 300}, "TimeSpan string"),
    ],
)
def test_bad_host_json_values_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(HostJsonError, match=message):
        HostOptions.from_dict({"version": "2.0", **doc})


def test_timespans() -> None:
    assert parse_timespan("00:05:00") == 300
    assert parse_timespan("1.02:00:00") == 93600
    assert parse_timespan("00:00:00.80") == pytest.approx(0.8)
    assert parse_timespan("00:01") == 60


def test_a_missing_host_json_means_defaults(tmp_path: Path) -> None:
    assert HostOptions.load(tmp_path) == HostOptions()
    (tmp_path / "host.json").write_text("{not json")
    with pytest.raises(HostJsonError):
        HostOptions.load(tmp_path)


# -- settings -------------------------------------------------------------------------------------
def test_local_settings_values_do_not_override_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"A": "from-file", "B": "from-file", "FLAG": True, "N": 3},
                "Host": {"LocalHttpPort": 7072},
            }
        )
    )
    values, port = read_local_settings(path)
    assert port == 7072
    assert values == {"A": "from-file", "B": "from-file", "FLAG": "true", "N": "3"}
    env = {"A": "from-env"}
    added = apply_settings(values, env)
    assert env == {"A": "from-env", "B": "from-file", "FLAG": "true", "N": "3"}
    assert set(added) == {"B", "FLAG", "N"}
    env["N"] = "changed since"
    remove_settings(added, env)
    assert env == {"A": "from-env", "N": "changed since"}


def test_binding_expressions_and_connection_settings() -> None:
    env = {"Q": "work", "SB": "Endpoint=sb://x/", "AzureWebJobsStore": "conn"}
    assert resolve("%Q%-dlq", env) == "work-dlq"
    assert resolve("plain", env) == "plain"
    with pytest.raises(SettingsError, match="%MISSING%"):
        resolve("%MISSING%", env)
    assert connection_setting("f", "Service Bus", "SB", env) == "Endpoint=sb://x/"
    assert connection_setting("f", "storage", "Store", env) == "conn"
    with pytest.raises(SettingsError, match=r"function 'infer'.*'ServiceBusConnection' is not set"):
        connection_setting("infer", "Service Bus", "ServiceBusConnection", env)
    identity = {"ServiceBusConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net"}
    with pytest.raises(SettingsError, match="needs a connection string"):
        connection_setting("infer", "Service Bus", "ServiceBusConnection", identity)


# -- blob paths and HTTP routes -------------------------------------------------------------------
def test_blob_paths() -> None:
    path = BlobPath.parse("uploads/{tenant}/batch/{name}")
    assert (path.container, path.prefix) == ("uploads", "")
    assert path.match("tailwind/batch/a/b.jsonl") == {"tenant": "tailwind", "name": "a/b.jsonl"}
    assert path.match("tailwind/training/x") is None
    simple = BlobPath.parse("samples/in/{name}")
    assert simple.prefix == "in/"
    assert simple.match("in/x.txt") == {"name": "x.txt"}
    with pytest.raises(BlobPathError):
        BlobPath.parse("just-a-container")


def _http(route: str | None, methods: list[str] | None = None) -> FunctionSpec:
    binding: dict[str, Any] = {"type": "httpTrigger", "name": "req", "route": route}
    if methods:
        binding["methods"] = methods
    return FunctionSpec("fn", "httpTrigger", "req", binding, func=lambda req: None)


def test_routes() -> None:
    item = compile_route(_http("items/{id:int}", ["GET"]), "api")
    assert item.template == "/api/items/{id:int}"
    assert item.match("/api/items/42") == {"id": "42"}
    assert item.match("/API/Items/42/") == {"id": "42"}
    assert item.match("/api/items/x") is None
    assert item.methods == {"GET"}
    optional = compile_route(_http("orders/{id?}"), "")
    assert optional.match("/orders") == {}
    assert optional.match("/orders/7") == {"id": "7"}
    rest = compile_route(_http("files/{*path}"), "v1")
    assert rest.match("/v1/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert compile_route(_http(None), "api").match("/api/fn") == {}
    with pytest.raises(RouteError):
        compile_route(_http("{id?}/x"), "api")
