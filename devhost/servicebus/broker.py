"""The AMQP side of the broker: links, transfers and dispositions mapped onto queue semantics.

Runs on proton's single-threaded reactor. Every state change is written to the store inside the
current reactor pass; acknowledgements (send accepted, settlement confirmed, management replies)
are held back and released only after the pass's single commit, so nothing acknowledged is lost.
"""

from __future__ import annotations

import functools
import logging
import queue as queue_module
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from proton import Condition, Delivery, Endpoint, Link, Message, Session, Terminus, symbol

from devhost.servicebus import management
from devhost.servicebus.codec import BrokerStamp, read_sent_fields, split_batch, stamp
from devhost.servicebus.entity import LockLost, Queue
from devhost.servicebus.sas import SasPolicy, TokenRejected
from devhost.servicebus.store import Row, Store

log = logging.getLogger("devhost.servicebus")

MAX_MESSAGE_BYTES = 256 * 1024
DEAD_LETTER_SUFFIX = "/$deadletterqueue"
MANAGEMENT_SUFFIX = "/$management"
CBS_NODE = "$cbs"
SESSION_FILTER = symbol("com.microsoft:session-filter")
_RECEIVE_CREDIT = 1000
_TICK_S = 0.05


_Handler = Callable[["Broker", Any], None]


def _guarded(method: _Handler) -> _Handler:
    """A bug or a hostile peer on one connection closes that connection, never the broker."""

    @functools.wraps(method)
    def wrapper(self: Broker, event: Any) -> None:
        try:
            method(self, event)
        except Exception:
            log.exception("error handling %s; closing that connection", event.type)
            conn = getattr(event, "connection", None)
            if conn is not None and conn.state & Endpoint.LOCAL_ACTIVE:
                conn.condition = Condition("amqp:internal-error", "The broker hit an error.")
                conn.close()

    return wrapper


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Address:
    queue: str
    dead_letter: bool
    management: bool


def parse_address(raw: str | None) -> Address | None:
    """`amqps://host/queue[/$DeadLetterQueue][/$management]` or a bare path → its parts."""
    if not raw:
        return None
    path = raw
    if "://" in raw:
        rest = raw.split("://", 1)[1]
        path = rest.split("/", 1)[1] if "/" in rest else ""
    path = path.strip("/").lower()
    management_node = path.endswith(MANAGEMENT_SUFFIX)
    if management_node:
        path = path[: -len(MANAGEMENT_SUFFIX)]
    dead_letter = path.endswith(DEAD_LETTER_SUFFIX)
    if dead_letter:
        path = path[: -len(DEAD_LETTER_SUFFIX)]
    return Address(path, dead_letter, management_node)


@dataclass(eq=False)
class Consumer:
    link: Link
    queue: Queue
    dead_letter: bool
    receive_and_delete: bool


@dataclass
class _ConnectionAuth:
    audiences: set[str] = field(default_factory=set)


class Broker:
    """A proton event handler; one instance serves every connection."""

    def __init__(self, queues: dict[str, Queue], store: Store, policy: SasPolicy) -> None:
        self.queues = queues
        self.store = store
        self.policy = policy
        self._consumers: dict[tuple[str, bool], list[Consumer]] = {}
        self._consumer_by_link: dict[Link, Consumer] = {}
        self._reply_links: dict[tuple[Session, str], Link] = {}
        self._auth: dict[Any, _ConnectionAuth] = {}
        self._after_commit: list[Callable[[], None]] = []
        self._stop_requested = False
        self._last_sweep_ms = 0
        self._commands: queue_module.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = (
            queue_module.SimpleQueue()
        )
        self.on_ready: Callable[[], None] | None = None
        self.container: Any = None

    # -- lifecycle -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop_requested = True

    def submit(self, action: Callable[[], Any]) -> Future[Any]:
        """Run `action` on the reactor thread at its next tick (any thread may call this). The
        future is resolved after that pass's commit, so an answered change is on disk."""
        future: Future[Any] = Future()
        self._commands.put((future, action))
        return future

    def _run_commands(self) -> None:
        while True:
            try:
                future, action = self._commands.get_nowait()
            except queue_module.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = action()
            except Exception as exc:
                self._after_commit.append(functools.partial(future.set_exception, exc))
                continue
            self._after_commit.append(functools.partial(future.set_result, result))

    def add_queue(self, queue: Queue) -> None:
        self.queues[queue.name] = queue

    def remove_queue(self, name: str) -> None:
        """Forget a queue; its receivers are detached with amqp:not-found, as when an entity is
        deleted in Service Bus."""
        self.queues.pop(name, None)
        for dead_letter in (False, True):
            for consumer in self._consumers.pop((name, dead_letter), []):
                self._consumer_by_link.pop(consumer.link, None)
                if consumer.link.state & Endpoint.LOCAL_ACTIVE:
                    consumer.link.condition = Condition(
                        "amqp:not-found", f"The messaging entity '{name}' was deleted."
                    )
                    consumer.link.close()

    def on_reactor_init(self, event: Any) -> None:
        self.container = event.container
        event.container.schedule(_TICK_S, self)
        if self.on_ready:
            self.on_ready()

    @_guarded
    def on_timer_task(self, event: Any) -> None:
        if self._stop_requested:
            self._flush()
            event.container.stop()
            return
        self._run_commands()
        now = now_ms()
        for queue in self.queues.values():
            queue.expire_locks(now)
            queue.activate_scheduled(now)
            if now - self._last_sweep_ms >= 1000:
                queue.expire_due(now)
                queue.forget_old_ids(now)
        if now - self._last_sweep_ms >= 1000:
            self._last_sweep_ms = now
        self._flush()
        for queue in self.queues.values():
            self._dispatch(queue, False)
            self._dispatch(queue, True)
        event.container.schedule(_TICK_S, self)

    @_guarded
    def on_reactor_quiesced(self, event: Any) -> None:
        self._flush()

    def _flush(self) -> None:
        """Commit this pass's writes, then release the acknowledgements that waited for them."""
        self.store.commit()
        pending, self._after_commit = self._after_commit, []
        for action in pending:
            action()

    # -- connections, sessions, links ----------------------------------------------------------
    @_guarded
    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS PLAIN")
        sasl.allow_insecure_mechs = True

    @_guarded
    def on_connection_remote_open(self, event: Any) -> None:
        conn = event.connection
        self._auth[conn] = _ConnectionAuth()
        if conn.state & Endpoint.LOCAL_UNINIT:
            conn.container = "devhost-servicebus"
            conn.open()

    @_guarded
    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    @_guarded
    def on_link_remote_open(self, event: Any) -> None:
        link: Link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        raw = link.remote_source.address if link.is_sender else link.remote_target.address
        if raw == CBS_NODE:
            self._open_node_link(link, CBS_NODE)
            return
        address = parse_address(raw)
        if address is None:
            self._refuse(link, "amqp:invalid-field", "The link has no address.")
            return
        queue = self.queues.get(address.queue)
        if queue is None:
            self._refuse(
                link,
                "amqp:not-found",
                f"The messaging entity '{address.queue}' could not be found.",
            )
            return
        if not self._authorized(link, address.queue):
            self._refuse(
                link, "amqp:unauthorized-access", "Unauthorized access: no valid token for entity."
            )
            return
        if address.management:
            self._open_node_link(link, raw or "")
            return
        if link.is_sender:
            self._open_consumer(link, queue, address)
        else:
            if address.dead_letter:
                self._refuse(link, "amqp:not-allowed", "Cannot send to a dead-letter queue.")
                return
            link.max_message_size = MAX_MESSAGE_BYTES
            link.open()
            link.flow(_RECEIVE_CREDIT)

    def _open_node_link(self, link: Link, node: str) -> None:
        if link.is_sender:
            self._reply_links[(link.session, node.lower())] = link
        link.open()
        if link.is_receiver:
            link.flow(_RECEIVE_CREDIT)

    def _open_consumer(self, link: Link, queue: Queue, address: Address) -> None:
        filters = _read_data(link.remote_source.filter)
        if filters and SESSION_FILTER in filters:
            # Answer the attach as the SDK expects of a session link, then detach with the
            # reason, so the SDK raises a clear error instead of failing in its attach callback.
            link.properties = {symbol("com.microsoft:locked-until-utc"): 0}
            link.condition = Condition(
                "amqp:not-implemented", "Sessions are not supported by the local broker."
            )
            link.open()
            link.close()
            return
        consumer = Consumer(
            link=link,
            queue=queue,
            dead_letter=address.dead_letter,
            receive_and_delete=link.remote_snd_settle_mode == Link.SND_SETTLED,
        )
        self._consumers.setdefault((queue.name, address.dead_letter), []).append(consumer)
        self._consumer_by_link[link] = consumer
        link.open()

    def _refuse(self, link: Link, condition: str, description: str) -> None:
        log.info("refusing link %s: %s", link.name, description)
        if link.is_sender:
            link.source.address = None
            link.source.type = Terminus.UNSPECIFIED
        else:
            link.target.address = None
            link.target.type = Terminus.UNSPECIFIED
        link.condition = Condition(condition, description)
        link.open()
        link.close()

    def _authorized(self, link: Link, queue: str) -> bool:
        auth = self._auth.get(link.connection)
        if auth is None:
            return False
        return "" in auth.audiences or queue in auth.audiences

    @_guarded
    def on_link_remote_close(self, event: Any) -> None:
        self._forget_link(event.link)
        if event.link.state & Endpoint.LOCAL_ACTIVE:
            event.link.close()

    @_guarded
    def on_link_remote_detach(self, event: Any) -> None:
        self.on_link_remote_close(event)

    @_guarded
    def on_session_remote_close(self, event: Any) -> None:
        session = event.session
        for link in [link for link in self._consumer_by_link if link.session == session]:
            self._forget_link(link)
        if session.state & Endpoint.LOCAL_ACTIVE:
            session.close()

    @_guarded
    def on_connection_remote_close(self, event: Any) -> None:
        self._forget_connection(event.connection)
        if event.connection.state & Endpoint.LOCAL_ACTIVE:
            event.connection.close()

    @_guarded
    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget_connection(event.connection)

    @_guarded
    def on_transport_error(self, event: Any) -> None:
        cond = event.transport.condition
        log.info("transport error: %s", cond.description if cond else "unknown")

    def _forget_connection(self, conn: Any) -> None:
        self._auth.pop(conn, None)
        for link in [link for link in self._consumer_by_link if link.connection == conn]:
            self._forget_link(link)
        for key in [k for k, link in self._reply_links.items() if link.connection == conn]:
            del self._reply_links[key]

    def _forget_link(self, link: Link) -> None:
        consumer = self._consumer_by_link.pop(link, None)
        if consumer is not None:
            peers = self._consumers.get((consumer.queue.name, consumer.dead_letter), [])
            if consumer in peers:
                peers.remove(consumer)
        for key in [k for k, v in self._reply_links.items() if v == link]:
            del self._reply_links[key]

    # -- flow and dispatch ---------------------------------------------------------------------
    @_guarded
    def on_link_flow(self, event: Any) -> None:
        link: Link = event.link
        consumer = self._consumer_by_link.get(link)
        if consumer is None:
            return
        self._dispatch(consumer.queue, consumer.dead_letter)
        if link.drain_mode and link.credit > 0:
            link.drained()

    def _dispatch(self, queue: Queue, dead_letter: bool) -> None:
        consumers = self._consumers.get((queue.name, dead_letter))
        if not consumers:
            return
        now = now_ms()
        while True:
            progressed = False
            for consumer in list(consumers):
                if consumer.link.credit <= 0:
                    continue
                row = queue.next_ready(dead_letter, now)
                if row is None:
                    return
                self._deliver(consumer, row, now)
                progressed = True
            if not progressed:
                return
            # Rotate so the next pass starts with another consumer: fair share among receivers.
            consumers.append(consumers.pop(0))

    def _deliver(self, consumer: Consumer, row: Row, now: int) -> None:
        queue = consumer.queue
        if consumer.receive_and_delete:
            payload = stamp(row.payload, self._stamp(queue, row, None))
            queue.take(row)
            delivery = consumer.link.delivery(uuid.uuid4().bytes_le)
            consumer.link.send(payload)
            consumer.link.advance()
            delivery.settle()
            return
        lock = queue.lock(row, now)
        payload = stamp(row.payload, self._stamp(queue, row, lock.until_ms))
        delivery = consumer.link.delivery(lock.token.bytes_le)
        # proton hands binary tags back as text, so the token rides on the delivery instead.
        delivery.lock_token = lock.token
        consumer.link.send(payload)
        consumer.link.advance()

    @staticmethod
    def _stamp(queue: Queue, row: Row, locked_until: int | None) -> BrokerStamp:
        return BrokerStamp(
            sequence_number=row.seq,
            enqueued_ms=row.enqueued_ms,
            delivery_count=row.delivery_count,
            state=row.state,
            locked_until_ms=locked_until,
            dead_letter_source=queue.name if row.dead_lettered else None,
            dead_letter_reason=row.dl_reason,
            dead_letter_description=row.dl_description,
        )

    # -- deliveries ----------------------------------------------------------------------------
    @_guarded
    def on_delivery(self, event: Any) -> None:
        delivery: Delivery = event.delivery
        link: Link = event.link
        if link.is_receiver:
            if delivery.readable and not delivery.partial:
                self._on_transfer(link, delivery)
        elif delivery.updated and delivery.remote_state:
            self._on_settlement(link, delivery)

    def _on_transfer(self, link: Link, delivery: Delivery) -> None:
        data = link.recv(delivery.pending) or b""
        link.advance()
        if link.credit < _RECEIVE_CREDIT // 2:
            link.flow(_RECEIVE_CREDIT - link.credit)
        node = link.target.address or ""
        if node == CBS_NODE:
            self._answer(link, delivery, data, self._cbs)
            return
        address = parse_address(node)
        if address is None:
            self._reject(delivery, "amqp:not-found", "no such node")
            return
        if address.management:
            self._answer(link, delivery, data, self._management_for(address))
            return
        self._on_send(address, delivery, data)

    def _on_send(self, address: Address, delivery: Delivery, data: bytes) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            self._reject(
                delivery,
                "amqp:link:message-size-exceeded",
                f"The message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes.",
            )
            return
        queue = self.queues.get(address.queue)
        if queue is None:  # deleted through the management API while the link was open
            self._reject(
                delivery,
                "amqp:not-found",
                f"The messaging entity '{address.queue}' could not be found.",
            )
            return
        now = now_ms()
        try:
            parts = [(raw, read_sent_fields(raw)) for raw in split_batch(data)]
        except Exception as exc:  # a malformed message is the sender's error, not the broker's
            self._reject(delivery, "amqp:decode-error", f"The message could not be decoded: {exc}")
            return
        for raw, fields in parts:
            queue.enqueue(
                raw,
                message_id=fields.message_id,
                session_id=fields.session_id,
                ttl_ms=fields.ttl_ms,
                scheduled_ms=fields.scheduled_ms,
                now_ms=now,
            )

        def acknowledge() -> None:
            delivery.update(Delivery.ACCEPTED)
            delivery.settle()
            self._dispatch(queue, False)

        self._after_commit.append(acknowledge)

    def _reject(self, delivery: Delivery, condition: str, description: str) -> None:
        # The SDK reads condition, description and info by position: info must be present.
        delivery.local.condition = Condition(condition, description, _error_info())
        delivery.update(Delivery.REJECTED)
        delivery.settle()

    def _on_settlement(self, link: Link, delivery: Delivery) -> None:
        consumer = self._consumer_by_link.get(link)
        if consumer is None or delivery.local_state:
            if delivery.remote_settled:
                delivery.settle()
            return
        queue = consumer.queue
        token: uuid.UUID | None = getattr(delivery, "lock_token", None)
        if token is None:
            delivery.settle()
            return
        state = delivery.remote_state
        remote = delivery.remote
        now = now_ms()
        try:
            if state == Delivery.ACCEPTED:
                queue.complete(token, now)
            elif state == Delivery.MODIFIED:
                if remote.undeliverable:
                    queue.defer(token, now)
                else:
                    queue.abandon(token, now)
            elif state == Delivery.REJECTED:
                info = (remote.condition.info if remote.condition else None) or {}
                queue.dead_letter(
                    token,
                    _text(info.get("DeadLetterReason")),
                    _text(info.get("DeadLetterErrorDescription")),
                    now,
                )
            elif state == Delivery.RELEASED:
                queue.release(token, now)
            else:
                return
        except LockLost as exc:
            delivery.local.condition = Condition(
                "com.microsoft:message-lock-lost", str(exc), _error_info()
            )
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return

        def confirm() -> None:
            delivery.update(state)
            delivery.settle()
            self._dispatch(queue, consumer.dead_letter)

        self._after_commit.append(confirm)

    # -- request/response nodes ----------------------------------------------------------------
    def _answer(
        self,
        link: Link,
        delivery: Delivery,
        data: bytes,
        handler: Callable[[Message, Any], management.Reply],
    ) -> None:
        request = Message()
        try:
            request.decode(data)
        except Exception:
            self._reject(delivery, "amqp:decode-error", "The request could not be decoded.")
            return
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        reply = handler(request, link.connection)
        response = Message(
            body=reply.body,
            correlation_id=request.id,
            properties=reply.properties,
        )
        node = (request.reply_to or link.target.address or "").lower()
        reply_link = self._reply_links.get((link.session, node)) or self._reply_links.get(
            (link.session, (link.target.address or "").lower())
        )
        if reply_link is None:
            log.warning("no reply link for %s", node)
            return

        def send() -> None:
            reply_link.delivery(uuid.uuid4().bytes)
            reply_link.send(response.encode())
            reply_link.advance()
            for key in {(reply.queue, False), (reply.queue, True)}:
                queue = self.queues.get(key[0] or "")
                if queue is not None:
                    self._dispatch(queue, key[1])

        self._after_commit.append(send)

    def _cbs(self, request: Message, connection: Any) -> management.Reply:
        props = request.properties or {}
        if props.get("operation") != "put-token":
            return management.cbs_reply(501, "Only put-token is supported.")
        token = request.body
        # The SDK labels SAS tokens "jwt" too; what counts is the token itself.
        if not isinstance(token, str):
            return management.cbs_reply(401, "Only SAS tokens are accepted by the local broker.")
        try:
            resource = self.policy.verify(token)
        except TokenRejected as exc:
            log.info("put-token refused: %s", exc)
            return management.cbs_reply(401, str(exc))
        auth = self._auth.setdefault(connection, _ConnectionAuth())
        auth.audiences.add(_entity_of(resource))
        return management.cbs_reply(202, "Accepted")

    def _management_for(self, address: Address) -> Callable[[Message, Any], management.Reply]:
        queue = self.queues[address.queue]

        def handle(request: Message, _connection: Any) -> management.Reply:
            return management.handle(queue, address.dead_letter, request, now_ms(), self._stamp)

        return handle


def _entity_of(resource: str) -> str:
    """`sb://host/queue` → `queue`; a namespace-wide token → ''."""
    parsed = parse_address(resource if "://" in resource else "sb://" + resource)
    return "" if parsed is None else parsed.queue


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _error_info() -> dict[symbol, str]:
    """Service Bus puts a tracking id in every error's info; proton would drop an empty map."""
    return {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}


def _read_data(data: Any) -> Any:
    """The value in a proton Data (a terminus filter, say); its cursor must be moved first."""
    if data is None:
        return None
    data.rewind()
    return data.get_object() if data.next() else None
