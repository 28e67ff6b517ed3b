"""Queues created, changed and deleted while the broker runs (the management API's side of it).

Every method runs on the reactor thread (`Broker.submit`), so queue state is never touched by two
threads. Changes are written to the store's `entities` table in the same pass's commit: a queue
created at run time is there after a restart, and a deleted one stays deleted even if the config
file still lists it (`apply_entities`, called by `server.build_broker`).

Names follow Service Bus: 1-260 letters, digits, `.`, `-`, `_` and `/`, starting and ending with
a letter or digit, case-insensitive (kept lower-case, as the broker addresses them).
"""

from __future__ import annotations

import re

from devhost.servicebus.atom import QueueView
from devhost.servicebus.broker import Broker, now_ms
from devhost.servicebus.config import QueueProperties
from devhost.servicebus.entity import Queue
from devhost.servicebus.store import EntityRow, Store

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._/-]{0,258}[a-z0-9])?$")


class EntityExists(Exception):
    pass


class EntityNotFound(Exception):
    pass


class BadEntity(ValueError):
    pass


def check_name(name: str) -> str:
    lowered = name.lower()
    if not _NAME.fullmatch(lowered) or "//" in lowered:
        raise BadEntity(
            f"{name!r} is not a valid queue name: 1-260 letters, digits, '.', '-', '_', '/', "
            "starting and ending with a letter or digit"
        )
    return lowered


def apply_entities(
    configured: dict[str, QueueProperties], rows: list[EntityRow]
) -> dict[str, tuple[QueueProperties, int, int]]:
    """The queues to serve: the config file's, changed by what was created or deleted at run time.
    Name -> (properties, created ms, updated ms)."""
    started = now_ms()
    queues = {name: (props, started, started) for name, props in configured.items()}
    for row in rows:
        if row.deleted:
            queues.pop(row.name, None)
        else:
            props = QueueProperties.model_validate_json(row.properties)
            queues[row.name] = (props, row.created_ms, row.updated_ms)
    return queues


class Namespace:
    def __init__(self, broker: Broker, store: Store, times: dict[str, tuple[int, int]]) -> None:
        self._broker = broker
        self._store = store
        self._times = times  # name -> (created ms, updated ms)

    def get(self, name: str) -> QueueView | None:
        queue = self._broker.queues.get(name.lower())
        return None if queue is None else self._view(queue)

    def list(self) -> list[QueueView]:
        return [self._view(q) for _, q in sorted(self._broker.queues.items())]

    def create(self, name: str, props: QueueProperties) -> QueueView:
        name = check_name(name)
        _check_supported(props)
        if name in self._broker.queues:
            raise EntityExists(f"the queue '{name}' already exists")
        now = now_ms()
        self._store.save_entity(name, props.model_dump_json(), now, now)
        self._times[name] = (now, now)
        queue = Queue(name, props, self._store)
        self._broker.add_queue(queue)
        return self._view(queue)

    def update(self, name: str, props: QueueProperties) -> QueueView:
        name = check_name(name)
        _check_supported(props)
        queue = self._broker.queues.get(name)
        if queue is None:
            raise EntityNotFound(f"the queue '{name}' does not exist")
        now = now_ms()
        created = self._times.get(name, (now, now))[0]
        self._store.save_entity(name, props.model_dump_json(), created, now)
        self._times[name] = (created, now)
        queue.props = props
        return self._view(queue)

    def delete(self, name: str) -> None:
        name = name.lower()
        if name not in self._broker.queues:
            raise EntityNotFound(f"the queue '{name}' does not exist")
        self._store.delete_entity(name, now_ms())
        self._times.pop(name, None)
        self._broker.remove_queue(name)

    def _view(self, queue: Queue) -> QueueView:
        now = now_ms()
        created, updated = self._times.get(queue.name, (now, now))
        return QueueView(
            name=queue.name,
            properties=queue.props,
            counts=queue.counts(),
            size_bytes=queue.size_bytes(),
            created_ms=created,
            updated_ms=updated,
        )


def _check_supported(props: QueueProperties) -> None:
    if props.requires_session:
        raise BadEntity("sessions are not supported by the local broker (RequiresSession)")
