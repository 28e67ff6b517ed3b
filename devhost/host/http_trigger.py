"""HTTP triggers: an aiohttp server routing `/<routePrefix>/<route>` to the functions.

Routes are ASP.NET-style templates as the real host takes them: `items/{id}`, `items/{id:int}`,
an optional last segment `{id?}`, a catch-all `{*rest}`; literals match case-insensitively.
Without a route the function's name is the route; without methods every method is allowed.
Auth levels are not enforced locally. The function gets `func.HttpRequest`; it may return a
`func.HttpResponse`, a str or bytes (200), or None (204). An exception or a timeout is a 500 with
a short message naming the invocation, never a crash. `GET /admin/host/status` answers
`{"state": "Running"}` as the real host's status endpoint does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from devhost.host.discovery import FunctionSpec
from devhost.host.invocation import Invoker, Outcome
from devhost.host.options import HttpOptions

log = logging.getLogger("devhost.host")

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
_TOKEN = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([^}?=]+))?(?:=[^}?]*)?(\?)?\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


class RouteError(ValueError):
    pass


@dataclass(frozen=True)
class Route:
    spec: FunctionSpec
    template: str  # the full path template, with the prefix: /api/items/{id}
    regex: re.Pattern[str]
    methods: frozenset[str]
    precedence: tuple[int, int, int]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


def compile_route(spec: FunctionSpec, route_prefix: str) -> Route:
    route = str(spec.prop("route") or spec.name).strip("/")
    prefix = route_prefix.strip("/")
    template = "/" + "/".join(p for p in (prefix, route) if p)
    pattern = ""
    params = catch_all = 0
    segments = [s for s in template.split("/") if s]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        whole = _TOKEN.fullmatch(segment)
        if whole and whole.group(4) and not last:
            raise RouteError(f"function {spec.name!r}: only the last route segment is optional")
        if whole and (whole.group(4) or whole.group(1)):
            # An optional or catch-all parameter may be absent, slash included.
            name, constraint, star = whole.group(2), whole.group(3), whole.group(1)
            body = ".*" if star else _constraint(constraint)
            pattern += f"(?:/(?P<{name}>{body}))?"
            params += 1
            catch_all += 1 if star else 0
            continue
        pattern += "/"
        position = 0
        for token in _TOKEN.finditer(segment):
            pattern += _literal(segment[position : token.start()])
            if token.group(1):
                raise RouteError(f"function {spec.name!r}: a catch-all must be a whole segment")
            pattern += f"(?P<{token.group(2)}>{_constraint(token.group(3))})"
            params += 1
            position = token.end()
        pattern += _literal(segment[position:])
    if not segments:
        pattern = "/"
    methods = spec.prop("methods")
    allowed = frozenset(str(m).upper() for m in methods) if methods else frozenset(ALL_METHODS)
    return Route(
        spec=spec,
        template=template,
        regex=re.compile(f"^{pattern}/?$"),
        methods=allowed,
        precedence=(catch_all, params, -len(segments)),
    )


def _constraint(name: str | None) -> str:
    if name is None:
        return "[^/]+"
    return _CONSTRAINTS.get(name.split("(")[0].lower(), "[^/]+")


def _literal(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


class HttpServer:
    def __init__(
        self,
        specs: Iterable[FunctionSpec],
        options: HttpOptions,
        invoker: Invoker,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.routes = sorted(
            (compile_route(s, options.route_prefix) for s in specs), key=lambda r: r.precedence
        )
        self._invoker = invoker
        self._host = host
        self._requested_port = port
        self._limit = (
            asyncio.Semaphore(options.max_concurrent_requests)
            if options.max_concurrent_requests
            else None
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def describe(self) -> list[str]:
        lines = []
        for r in self.routes:
            methods = "*" if r.methods == frozenset(ALL_METHODS) else ",".join(sorted(r.methods))
            lines.append(f"{r.spec.name}: [{methods}] {self.url}{r.template}")
        return lines

    async def start(self, shutdown_timeout_s: float) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout_s
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._requested_port))
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        self.port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock)
        await site.start()

    async def stop(self) -> None:
        """Stop listening; requests in progress get the shutdown timeout to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.rstrip("/").lower() == "/admin/host/status":
            return web.json_response({"state": "Running"})
        for route in self.routes:
            params = route.match(path)
            if params is None or request.method.upper() not in route.methods:
                continue
            if self._limit is None:
                return await self._invoke(route, request, params)
            async with self._limit:
                return await self._invoke(route, request, params)
        # As in the real host, a method a route does not allow is a route that does not match.
        return web.Response(status=404, text=f"no function serves {request.method} {path}\n")

    async def _invoke(
        self, route: Route, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        body = await request.read()
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lowered = key.lower()
            headers[lowered] = f"{headers[lowered]}, {value}" if lowered in headers else value
        query: dict[str, str] = {}
        for key, value in request.query.items():
            query.setdefault(key, value)
        argument = func.HttpRequest(
            request.method,
            str(request.url),
            headers=headers,
            params=query,
            route_params=params,
            body=body,
        )
        fields = {"method": request.method, "route": route.template}
        invocation = await self._invoker.invoke(route.spec, argument, fields)
        if invocation.outcome is not Outcome.SUCCEEDED:
            return web.Response(
                status=500,
                text=(
                    f"function {route.spec.name!r} {invocation.outcome.value} "
                    f"(invocation {invocation.invocation_id})\n"
                ),
            )
        try:
            return to_web_response(invocation.value)
        except (TypeError, ValueError) as exc:
            log.warning(
                "function %s returned what is not an HTTP response: %s", route.spec.name, exc
            )
            return web.Response(
                status=500,
                text=f"function {route.spec.name!r} returned {type(invocation.value).__name__}, "
                "not an HttpResponse\n",
            )


def to_web_response(value: Any) -> web.Response:
    if value is None:
        return web.Response(status=204)
    if isinstance(value, str):
        return web.Response(status=200, text=value)
    if isinstance(value, bytes | bytearray):
        return web.Response(status=200, body=bytes(value), content_type="application/octet-stream")
    if not isinstance(value, func.HttpResponse):
        raise TypeError(f"unsupported return type {type(value).__name__}")
    headers: CIMultiDict[str] = CIMultiDict()
    for key, header in value.headers.items():
        if key.lower() not in {"content-length", "transfer-encoding"}:
            headers.add(key, header)
    if "content-type" not in headers:
        headers["Content-Type"] = f"{value.mimetype}; charset={value.charset}"
    return web.Response(status=value.status_code, body=value.get_body(), headers=headers)
