"""Starting and stopping the broker: config and data dir in, a listening reactor out."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from proton.reactor import Container

from devhost.servicebus.broker import Broker
from devhost.servicebus.config import BrokerConfig
from devhost.servicebus.entity import Queue
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


def connection_string(
    host: str, port: int, key_name: str = DEFAULT_KEY_NAME, key: str = DEFAULT_KEY
) -> str:
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName={key_name};"
        f"SharedAccessKey={key};UseDevelopmentEmulator=true;"
    )


def build_broker(options: ServerOptions) -> tuple[Broker, Store]:
    store = Store(options.data_dir / "servicebus.sqlite3")
    rows_by_queue: dict[str, list] = {}  # type: ignore[type-arg]
    for row in store.rows():
        rows_by_queue.setdefault(row.queue, []).append(row)
    seen: dict[str, list[tuple[str, int]]] = {}
    for queue_name, message_id, until in store.remembered_ids():
        seen.setdefault(queue_name, []).append((message_id, until))
    last = store.last_sequences()
    queues: dict[str, Queue] = {}
    for name, props in options.config.queues().items():
        queue = Queue(name, props, store)
        queue.restore(rows_by_queue.get(name, []), last.get(name, 0), seen.get(name, []))
        queues[name] = queue
    return Broker(queues, store, SasPolicy(options.key_name, options.key)), store


def serve(options: ServerOptions, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; the store is committed and closed on the way out."""
    broker, store = build_broker(options)

    def ready() -> None:
        log.info(
            "servicebus broker ready on %s:%d (queues: %s)",
            options.host,
            options.port,
            ", ".join(sorted(broker.queues)),
        )
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
    try:
        container.run()
    finally:
        store.close()
        log.info("servicebus broker stopped")
