"""The job runner's HTTP API (aiohttp), over `devhost.jobrunner.runner.Runner`.

- `POST /jobs` (a `JobRequest`, see jobs.py) -> 201 {"name", "status"}; the same name again ->
  200 with the existing job; 400 {"error"} when the body is not a valid request.
- `GET /jobs/{name}` -> 200 {"name", "status", "error", "metrics", "lineage", "outputs", "tags",
  "created_at", "started_at", "finished_at", "deployments"}; status in Azure ML's words
  (Queued, Running, Completed, Failed, Canceled); metrics while Running: {"step", "max_steps",
  "loss"}; once Completed: every number of metrics.json plus train_loss, validation_loss;
  outputs once Completed: {"adapter": "<prefix>/adapter", "metrics": "<prefix>/metrics.json",
  "lineage": "<prefix>/lineage.json"}; 404 unknown.
- `POST /jobs/{name}/cancel` -> 200 {"name", "status"} (a finished job is left as it is).
- `POST /jobs/{name}/deploy` {"deployment", "base"} -> 200 {"deployment", "model"}: the model
  simulator serves the candidate as `deployment` (its `PUT /admin/tuned/{deployment}`); 409 when
  the job has not Completed, 400 / 502 when the simulator refuses or cannot be reached.
- `GET /health` -> 200 {"jobs": n}.

`start_runner(...)` serves on host:port (0: a free port) in the running loop and returns a
`RunningRunner` (`.url`, `await .stop()`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from devhost.jobrunner.jobs import NAME, JobRequest
from devhost.jobrunner.runner import Runner, RunnerError

MAX_BODY_BYTES: Final = 1024 * 1024
SHUTDOWN_TIMEOUT_S: Final = 2.0
_DEPLOYMENT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise RunnerError(400, "the body is not JSON") from None


class Api:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_get("/health", self._health)
        app.router.add_post("/jobs", self._submit)
        app.router.add_get("/jobs/{name}", self._get)
        app.router.add_post("/jobs/{name}/cancel", self._cancel)
        app.router.add_post("/jobs/{name}/deploy", self._deploy)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except RunnerError as err:
            return _error(err.status, str(err))
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": len(self.runner.jobs)})

    async def _submit(self, request: web.Request) -> web.Response:
        try:
            job = JobRequest.model_validate(await _body(request))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()
            )
            return _error(400, f"not a valid job: {problems}")
        record, created = self.runner.submit(job)
        return web.json_response(
            {"name": record.name, "status": record.status}, status=201 if created else 200
        )

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if not NAME.match(name):
            raise RunnerError(404, f"job {name!r} not found")
        return name

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self.runner.get(self._name(request)).view())

    async def _cancel(self, request: web.Request) -> web.Response:
        record = await self.runner.cancel(self._name(request))
        return web.json_response({"name": record.name, "status": record.status})

    async def _deploy(self, request: web.Request) -> web.Response:
        name = self._name(request)
        body = await _body(request)
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        deployment, base = body.get("deployment"), body.get("base")
        if not isinstance(deployment, str) or not _DEPLOYMENT.match(deployment):
            return _error(400, "'deployment' must be 1-64 of [A-Za-z0-9._-]")
        if not isinstance(base, str) or not base:
            return _error(400, "'base' (the simulator deployment tuned from) is required")
        return web.json_response(await self.runner.deploy(name, deployment, base))


class RunningRunner:
    def __init__(self, runner: Runner, app_runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self._app_runner = app_runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self._app_runner.cleanup()
        await self.runner.close()


async def start_runner(
    *,
    work_dir: Path,
    python: Path,
    storage_connection: str,
    simulator_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    max_concurrent: int = 1,
) -> RunningRunner:
    runner = Runner(
        work_dir=work_dir,
        python=python,
        storage_connection=storage_connection,
        simulator_url=simulator_url,
        max_concurrent=max_concurrent,
    )
    await runner.start()
    app_runner = web.AppRunner(
        Api(runner).app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await app_runner.setup()
    try:
        site = web.TCPSite(app_runner, host, port)
        await site.start()
    except BaseException:
        await app_runner.cleanup()
        await runner.close()
        raise
    bound = app_runner.addresses[0][1]  # the port chosen for port 0
    return RunningRunner(runner, app_runner, host, int(bound))
