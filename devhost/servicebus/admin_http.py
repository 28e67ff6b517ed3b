"""The broker's management surface: the Service Bus ATOM management API over HTTP.

What `azure.servicebus.management.ServiceBusAdministrationClient` sends, answered as Service Bus
answers it (documents in `atom.py`). Like the official emulator, it listens on its own port (the
emulator's default is 5300) and its connection string is the broker's with that port:
`Endpoint=sb://127.0.0.1:<admin port>;SharedAccessKeyName=...;UseDevelopmentEmulator=true;`.

    GET    /health                         200 "healthy" (no auth), a readiness probe
    GET    /$Resources/queues?$skip&$top   feed of queues (runtime counts included)
    GET    /$Resources/topics              empty feed (the broker has no topics)
    GET    /<queue>[?enrich=...]           entry, or an empty feed when there is no such queue
    PUT    /<queue>                        create: 201 entry; 409 if it exists;
           with If-Match: *                update its properties: 200 entry; 404 if missing
    DELETE /<queue>                        200; 404 if missing
    anything else                          400 / 404 / 405 with an <Error> body

Every request but /health needs `Authorization: SharedAccessSignature ...` signed with the
broker's key (401 otherwise), as the SDK's shared-key credential sends it. Operations run on the
reactor thread through `Broker.submit` and are answered after they are committed.

Libraries weighed: aiohttp (already a devhost dependency) would need its own event loop thread
beside proton's reactor; `http.server`'s threading server does the few requests an operator
makes with no loop to manage, and each handler waits only for its own future.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ValidationError

from devhost.servicebus import atom
from devhost.servicebus.config import QueueProperties
from devhost.servicebus.namespace import BadEntity, EntityExists, EntityNotFound, Namespace
from devhost.servicebus.sas import SasPolicy, TokenRejected

log = logging.getLogger("devhost.servicebus.admin")

Submit = Callable[[Callable[[], Any]], Any]
_TIMEOUT_S = 10.0
_MAX_BODY = 256 * 1024
_DEFAULT_TOP = 100


class AdminServer:
    """`start()` serves on a thread; `stop()` closes the socket. `port` is the bound port."""

    def __init__(
        self,
        host: str,
        port: int,
        namespace: Namespace,
        submit: Submit,
        policy: SasPolicy,
        *,
        namespace_name: str = "sbemulatorns",
    ) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {
                "namespace": namespace,
                "submit": staticmethod(submit),
                "policy": policy,
                "namespace_name": namespace_name,
            },
        )
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="servicebus-admin", daemon=True
        )

    def start(self) -> AdminServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    namespace: Namespace
    submit: Submit
    policy: SasPolicy
    namespace_name: str
    protocol_version = "HTTP/1.1"
    server_version = "devhost-servicebus-admin"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("admin %s", format % args)

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _atom(self, status: int, body: bytes, kind: str) -> None:
        self._send(status, body, f"application/atom+xml;type={kind};charset=utf-8")

    def _error(self, status: int, detail: str) -> None:
        self._send(status, atom.error(status, detail), "application/xml; charset=utf-8")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise BadEntity(f"the request body is larger than {_MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.namespace_name}"

    def _authorized(self) -> bool:
        token = self.headers.get("Authorization") or ""
        try:
            self.policy.verify(token)
        except TokenRejected as exc:
            self._error(401, f"Unauthorized: {exc}")
            return False
        return True

    def _run(self, action: Callable[[], Any]) -> Any:
        return self.submit(action).result(timeout=_TIMEOUT_S)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path).strip("/"), parse_qs(parts.query)
        if method == "GET" and path == "health":
            self._send(200, b"healthy", "text/plain")
            return
        if not self._authorized():
            return
        try:
            if method == "GET" and path.lower().startswith("$resources/"):
                self._list(path.split("/", 1)[1].lower(), query)
            elif not path or path.startswith("$"):
                self._error(404, f"no such resource: /{path}")
            elif method == "GET":
                self._get(path)
            elif method == "PUT":
                self._put(path)
            elif method == "DELETE":
                self._run(lambda: self.namespace.delete(path))
                self._send(200, b"", "application/xml; charset=utf-8")
            else:
                self._error(405, f"{method} is not supported")
        except EntityExists as exc:
            self._error(409, f"Conflict. {exc}")
        except EntityNotFound as exc:
            self._error(404, f"Not found. {exc}")
        except (BadEntity, atom.ParseError, ValidationError) as exc:
            self._error(400, f"Bad request. {exc}")
        except FutureTimeout:
            self._error(503, "the broker did not answer in time")

    # -- operations ---------------------------------------------------------------------------
    def _list(self, kind: str, query: dict[str, list[str]]) -> None:
        if kind != "queues":
            self._atom(200, atom.feed([], self._base_url(), self.namespace_name), "feed")
            return
        skip = int((query.get("$skip") or ["0"])[0])
        top = int((query.get("$top") or [str(_DEFAULT_TOP)])[0])
        views = self._run(self.namespace.list)
        page = views[skip : skip + top]
        base = f"{self._base_url()}/$Resources/queues"
        next_link = (
            f"{base}?$skip={skip + top}&$top={top}&api-version=2021-05"
            if skip + top < len(views)
            else None
        )
        body = atom.feed(page, base, self.namespace_name, next_link=next_link)
        self._atom(200, body, "feed")

    def _get(self, name: str) -> None:
        view = self._run(lambda: self.namespace.get(name))
        if view is None:  # how Service Bus says "no such entity": 200 with an empty feed
            body = atom.feed([], self._base_url(), self.namespace_name, title="Publicly Listed")
            self._atom(200, body, "feed")
            return
        self._atom(200, atom.queue_entry(view, self._base_url(), self.namespace_name), "entry")

    def _put(self, name: str) -> None:
        props = QueueProperties.model_validate(atom.parse_queue_description(self._body()))
        if self.headers.get("If-Match"):
            view = self._run(lambda: self.namespace.update(name, props))
            status = HTTPStatus.OK
        else:
            view = self._run(lambda: self.namespace.create(name, props))
            status = HTTPStatus.CREATED
        self._atom(status, atom.queue_entry(view, self._base_url(), self.namespace_name), "entry")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")
