"""Starting and stopping the broker: config and data dir in, a listening reactor out."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from proton.reactor import Container

from devhost.servicebus.admin_http import AdminServer
from devhost.servicebus.broker import Broker
from devhost.servicebus.config import BrokerConfig
from devhost.servicebus.entity import Queue
from devhost.servicebus.namespace import Namespace, apply_entities
from devhost.servicebus.sas import SasPolicy
from devhost.servicebus.store import Store

log = logging.getLogger("devhost.servicebus")

DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_KEY = "SAS_KEY_VALUE"


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    data_dir: Path
    config: BrokerConfig
    key_name: str = DEFAULT_KEY_NAME
    key: str = DEFAULT_KEY
    # The management API's port (admin_http.py); None: no management surface.
    admin_port: int | None = None


def connection_string(
    host: str, port: int, key_name: str = DEFAULT_KEY_NAME, key: str = DEFAULT_KEY
) -> str:
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName={key_name};"
        f"SharedAccessKey={key};UseDevelopmentEmulator=true;"
    )


def build_broker(options: ServerOptions) -> tuple[Broker, Store]:
    broker, store, _ = build_namespace(options)
    return broker, store


def build_namespace(options: ServerOptions) -> tuple[Broker, Store, Namespace]:
    """The broker with the config file's queues as changed at run time (`namespace.py`)."""
    store = Store(options.data_dir / "servicebus.sqlite3")
    rows_by_queue: dict[str, list] = {}  # type: ignore[type-arg]
    for row in store.rows():
        rows_by_queue.setdefault(row.queue, []).append(row)
    seen: dict[str, list[tuple[str, int]]] = {}
    for queue_name, message_id, until in store.remembered_ids():
        seen.setdefault(queue_name, []).append((message_id, until))
    last = store.last_sequences()
    queues: dict[str, Queue] = {}
    times: dict[str, tuple[int, int]] = {}
    for name, (props, created, updated) in apply_entities(
        options.config.queues(), store.entities()
    ).items():
        queue = Queue(name, props, store)
        queue.restore(rows_by_queue.get(name, []), last.get(name, 0), seen.get(name, []))
        queues[name] = queue
        times[name] = (created, updated)
    broker = Broker(queues, store, SasPolicy(options.key_name, options.key))
    return broker, store, Namespace(broker, store, times)


def serve(options: ServerOptions, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; the store is committed and closed on the way out."""
    broker, store, namespace = build_namespace(options)
    admin = (
        AdminServer(options.host, options.admin_port, namespace, broker.submit, broker.policy)
        if options.admin_port is not None
        else None
    )

    def ready() -> None:
        log.info(
            "servicebus broker ready on %s:%d (queues: %s)",
            options.host,
            options.port,
            ", ".join(sorted(broker.queues)),
        )
        if admin is not None:
            log.info("servicebus management API on http://%s:%d", options.host, admin.port)
        if on_ready:
            on_ready()

    broker.on_ready = ready

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("servicebus broker stopping (signal %d)", signum)
        broker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    container = Container(broker)
    container.listen(f"{options.host}:{options.port}")
    if admin is not None:
        admin.start()
    try:
        container.run()
    finally:
        if admin is not None:
            admin.stop()
        store.close()
        log.info("servicebus broker stopped")
