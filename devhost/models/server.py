"""The aiohttp app that answers as Azure OpenAI and Azure AI Inference do, and its admin API.

Routes:
- `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (AsyncAzureOpenAI)
- `POST /models/chat/completions?api-version=...` and `POST /chat/completions?...`
  (azure-ai-inference ChatCompletionsClient; the body's `model` names the deployment).
  `ai_inference` deployments answer only here; `azure_openai` ones answer on both routes, as an
  AI Services resource does.
- Content filtering (devhost/models/content_filter.py): Azure OpenAI deployments refuse a prompt
  with a `[sim:harm:<category>]` / `[sim:jailbreak]` marker (400 `content_filter`) and withhold the
  answer to `[sim:harm-answer:<category>]` (`finish_reason: content_filter`), annotating every
  answer; Azure AI Content Safety's `POST /contentsafety/text:analyze` and `text:shieldPrompt`.
- `GET /admin/health`, `GET /admin/stats`, `POST /admin/reset`,
  `GET|POST|DELETE /admin/faults`, `GET /admin/deployments`, `PUT /admin/deployments/{name}`.
- Fine-tuning, as Azure OpenAI and ARM serve it (devhost/models/routes_finetuning.py):
  `/openai/files...`, `/openai/fine_tuning/jobs...`, ARM's
  `/subscriptions/.../accounts/{account}/deployments/{name}`, and `PUT /admin/tuned/{name}`.

Each served request is scored by the quality model (default `ScheduledQuality`: per deployment
and prompt topic, after the deployment's quality schedule), sent as `x-sim-quality`; with
`answer_verdicts` on, each reply ends with a drawn verdict's mark (see quality.py) and the
`x-sim-topic` and `x-sim-verdict` headers are sent. A tuned deployment is scored from its base's
current quality by `tuned_quality` (quality.py); a judge deployment answers with a similarity
score alone (judge.py, header `x-sim-judge-score`), never with a verdict mark.

The per-request path is lean: no file I/O, no logging, no pydantic; one limiter and one stats
cell per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import ValidationError

from devhost.models import content_filter, errors
from devhost.models.arm import ArmDeployment
from devhost.models.config import DeploymentConfig, SimulatorConfig, load_config
from devhost.models.faults import ANY_DEPLOYMENT, FaultBoard, FaultSpec
from devhost.models.finetuning import FineTuning
from devhost.models.judge import judge_score
from devhost.models.limiter import RateLimiter
from devhost.models.quality import (
    MARK_TOKENS,
    QualityModel,
    QualityPeek,
    ScheduledQuality,
    VerdictModel,
    Verdicts,
    mark_reply,
    quality_at,
    topic_of,
    tuned_quality,
)
from devhost.models.replies import Reply, make_reply
from devhost.models.routes_finetuning import FineTuningRoutes
from devhost.models.stats import NO_TENANT, Counters, Stats
from devhost.models.tokens import estimate_prompt_tokens

log = logging.getLogger("devhost.models")

Route = Literal["openai", "models"]
MAX_BODY_BYTES = 16 * 1024 * 1024
SHUTDOWN_TIMEOUT_S = 2.0
MAX_TUNED_DEPTH = 8
"""How far a chain of tuned deployments is followed to its base (a loop stops there)."""


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class _Deployment:
    config: DeploymentConfig
    limiter: RateLimiter


@dataclass(frozen=True, slots=True)
class _ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int | None
    n: int


def _parse_chat(body: Mapping[str, Any]) -> _ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' is required and must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _BadRequest("'max_tokens' must be an integer >= 1", "max_tokens")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise _BadRequest("'n' must be an integer from 1 to 128", "n")
    if body.get("stream"):
        raise _BadRequest("streaming is not supported by the models simulator", "stream")
    return _ChatRequest(messages, max_tokens, n)


class Simulator:
    """The simulator's state (deployments, limiters, faults, stats) and its request handlers."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        quality_model: QualityModel | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._keys = frozenset(config.api_keys)
        self._accept_any_bearer = config.accept_any_bearer
        self._default_max_tokens = config.default_max_tokens
        self._api_keys = list(config.api_keys)
        self._answer_verdicts = config.answer_verdicts
        model = quality_model or ScheduledQuality()
        self.quality_model: QualityModel = model
        self.verdicts: VerdictModel = model if isinstance(model, VerdictModel) else Verdicts()
        self.faults = FaultBoard(clock)
        self.stats = Stats()
        self._deployments: dict[str, _Deployment] = {}
        self.fine_tuning = FineTuning(
            config.fine_tuning, self.deployment_configs, clock=clock, wall=wall_clock
        )
        self.arm: dict[str, ArmDeployment] = {}
        """How ARM PUTs described their deployments (sku, model), by deployment name."""
        self.content_safety = content_filter.ContentSafetyRoutes(
            config.api_keys, accept_any_bearer=config.accept_any_bearer
        )
        for d in config.deployments:
            self.put_deployment(d)
        self._stopping = asyncio.Event()

    # ---- state, also used in-process by tests and the local stack ---------------------------

    @property
    def config(self) -> SimulatorConfig:
        return SimulatorConfig(
            api_keys=self._api_keys,
            deployments=[d.config for d in self._deployments.values()],
            default_max_tokens=self._default_max_tokens,
            accept_any_bearer=self._accept_any_bearer,
            answer_verdicts=self._answer_verdicts,
            fine_tuning=self.fine_tuning.config,
        )

    def deployment_configs(self) -> list[DeploymentConfig]:
        """The deployments served now, in the order they were added."""
        return [d.config for d in self._deployments.values()]

    def deployment_config(self, name: str) -> DeploymentConfig | None:
        dep = self._deployments.get(name)
        return dep.config if dep is not None else None

    def put_deployment(self, config: DeploymentConfig) -> bool:
        """Add or replace a deployment (fresh limiter, quality schedule and verdict draws; its
        configured faults installed). True when it is new."""
        new = config.name not in self._deployments
        self._deployments[config.name] = _Deployment(
            config, RateLimiter(config.tpm, config.rpm, self._clock)
        )
        self.faults.clear(config.name)
        self.verdicts.reset(config.name)
        for spec in config.faults:
            self.faults.add(config.name, spec)
        self.arm.pop(config.name, None)
        return new

    def remove_deployment(self, name: str) -> bool:
        """Stop serving a deployment (its faults go too, its stats stay). False if unknown."""
        if self._deployments.pop(name, None) is None:
            return False
        self.faults.clear(name)
        self.verdicts.reset(name)
        self.arm.pop(name, None)
        return True

    def reset(self) -> None:
        """Clear the stats, every limiter's state and the quality model's counts and draws (faults,
        files and fine-tuning jobs stay)."""
        self.stats.reset()
        self.verdicts.reset()
        for d in self._deployments.values():
            d.limiter.reset()

    def stop_hanging(self) -> None:
        """Wake the calls that a timeout fault holds, so a stop does not wait for them."""
        self._stopping.set()

    # ---- the HTTP app ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._aoai)
        app.router.add_post("/models/chat/completions", self._inference)
        app.router.add_post("/chat/completions", self._inference)
        app.router.add_get("/admin/health", self._health)
        app.router.add_get("/admin/stats", self._get_stats)
        app.router.add_post("/admin/reset", self._reset)
        app.router.add_get("/admin/faults", self._get_faults)
        app.router.add_post("/admin/faults", self._post_faults)
        app.router.add_delete("/admin/faults", self._delete_faults)
        app.router.add_get("/admin/deployments", self._get_deployments)
        app.router.add_put("/admin/deployments/{name}", self._put_deployment)
        FineTuningRoutes(self).add_to(app.router)
        self.content_safety.add_to(app.router)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _aoai(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, "openai", request.match_info["deployment"])

    async def _inference(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, "models", None)

    def auth_failure(self, request: web.Request) -> web.Response | None:
        """None when the request carries a valid api-key (or Bearer key); the 401 otherwise."""
        headers = request.headers
        key = headers.get("api-key")
        if key is not None and key in self._keys:
            return None
        auth = headers.get("Authorization")
        if auth is not None and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            if token in self._keys or (self._accept_any_bearer and token):
                return None
        self.stats.rejected["unauthorized"] += 1
        return errors.unauthorized(missing=key is None and auth is None)

    async def _chat(
        self, request: web.Request, route: Route, name: str | None
    ) -> web.StreamResponse:
        denied = self.auth_failure(request)
        if denied is not None:
            return denied
        api_version = request.query.get("api-version")
        if not api_version:
            self.stats.rejected["bad_request"] += 1
            return errors.bad_request("the api-version query parameter is required", "api-version")
        try:
            body = json.loads(await request.read())
        except ValueError:
            self.stats.rejected["bad_request"] += 1
            return errors.bad_request("the request body is not valid JSON")
        if not isinstance(body, dict):
            self.stats.rejected["bad_request"] += 1
            return errors.bad_request("the request body must be a JSON object")
        if name is None:
            name = body.get("model")
            if not isinstance(name, str) or not name:
                self.stats.rejected["bad_request"] += 1
                return errors.bad_request(
                    "'model' is required: on this endpoint it names the deployment", "model"
                )
        dep = self._deployments.get(name)
        if dep is None or (route == "openai" and dep.config.kind == "ai_inference"):
            self.stats.rejected["not_found"] += 1
            return errors.deployment_not_found(name)
        user = body.get("user")
        tenant = request.headers.get("x-tenant-id") or (
            user if isinstance(user, str) and user else NO_TENANT
        )
        cell = self.stats.cell(name, tenant)
        cell.requests += 1
        try:
            chat = _parse_chat(body)
        except _BadRequest as bad:
            cell.errors += 1
            return errors.bad_request(bad.message, bad.param)

        fault = self.faults.pick(name)
        withhold: str | None = None  # the category whose answer the filter withholds
        if fault is not None and fault.kind == "content_filter_completion":
            cell.faults += 1
            withhold = "violence"
        elif fault is not None:
            cell.faults += 1
            return await self._inject(request, fault)
        filters = dep.config.kind == "azure_openai"
        text = content_filter.prompt_text(chat.messages)
        if filters:
            refused = content_filter.prompt_verdict(text)
            if refused is not None:
                cell.filtered += 1
                return refused
            withhold = withhold or content_filter.harmful_answer_asked(text)

        prompt_tokens = estimate_prompt_tokens(chat.messages)
        charge = prompt_tokens + (chat.max_tokens or self._default_max_tokens) * chat.n
        decision = dep.limiter.try_acquire(charge)
        headers: dict[str, str] = {}
        if decision.remaining_requests is not None:
            headers["x-ratelimit-remaining-requests"] = str(decision.remaining_requests)
        if decision.remaining_tokens is not None:
            headers["x-ratelimit-remaining-tokens"] = str(decision.remaining_tokens)
        request_id = uuid.uuid4().hex
        headers["x-request-id"] = request_id
        headers["apim-request-id"] = request_id
        if not decision.admitted:
            cell.throttled += 1
            return errors.throttled(api_version, decision.limit, decision.retry_after_s, headers)

        config = dep.config
        if config.judge:
            score = judge_score(chat.messages)
            quality = config.quality
            replies = [Reply(str(score), 1, "stop") for _ in range(chat.n)]
            headers["x-sim-judge-score"] = str(score)
        else:
            if config.tuned is not None:
                quality = self.current_quality(config, tenant, chat.messages)
            else:
                quality = self.quality_model.score(config, tenant, chat.messages)
            replies = self._replies(name, chat, quality, headers, cell)
        completion_tokens = sum(r.tokens for r in replies)
        cell.ok += 1
        cell.prompt_tokens += prompt_tokens
        cell.completion_tokens += completion_tokens
        cell.quality_sum += quality
        headers["x-sim-quality"] = f"{quality:.4f}"
        headers["x-sim-deployment"] = name

        delay = config.latency_ms.seconds_for(completion_tokens)
        if delay > 0:
            await asyncio.sleep(delay)
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "finish_reason": r.finish_reason,
                "logprobs": None,
            }
            for i, r in enumerate(replies)
        ]
        if withhold is not None and filters:
            cell.filtered += 1
            choices = [content_filter.withheld_choice(i, withhold) for i in range(chat.n)]
        elif filters:
            for choice in choices:
                choice["content_filter_results"] = content_filter.SAFE_CHOICE
        else:
            harmful = content_filter.harmful_answer_asked(text)
            if harmful is not None:  # no built-in filter: the harm reaches the answer
                for choice in choices:
                    choice["message"]["content"] += f" [sim:harm:{harmful}]"
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": config.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if filters:
            payload["prompt_filter_results"] = content_filter.SAFE_PROMPT
        return web.Response(
            body=json.dumps(payload).encode(), content_type="application/json", headers=headers
        )

    def _replies(
        self,
        name: str,
        chat: _ChatRequest,
        quality: float,
        headers: dict[str, str],
        cell: Counters,
    ) -> list[Reply]:
        if not self._answer_verdicts:
            return [make_reply(name, chat.messages, chat.max_tokens, i) for i in range(chat.n)]
        # Drawn before any await, so the draws follow the order the requests arrived in.
        verdicts = [self.verdicts.draw(name, quality) for _ in range(chat.n)]
        budget = None if chat.max_tokens is None else max(chat.max_tokens - MARK_TOKENS, 0)
        headers["x-sim-topic"] = topic_of(chat.messages)
        headers["x-sim-verdict"] = ",".join("good" if good else "poor" for good in verdicts)
        cell.verdicts += len(verdicts)
        cell.good += sum(verdicts)
        return [
            mark_reply(make_reply(name, chat.messages, budget, i), good)
            for i, good in enumerate(verdicts)
        ]

    def current_quality(
        self,
        config: DeploymentConfig,
        tenant: str,
        messages: Sequence[Mapping[str, Any]],
        depth: int = 0,
    ) -> float:
        """The deployment's chance of a good answer to these messages now, counting nothing; for
        a tuned deployment, `tuned_quality` over its base's current chance (quality.py)."""
        tuned = config.tuned
        if tuned is None:
            model = self.quality_model
            if isinstance(model, QualityPeek):
                return model.peek(config, tenant, messages)
            return quality_at(config, topic_of(messages), 0)
        topic = topic_of(messages)
        base = self._deployments.get(tuned.base)
        if base is None or base.config is config or depth >= MAX_TUNED_DEPTH:
            base_quality = quality_at(config, topic, 0)  # what it copied from its base
        else:
            base_quality = self.current_quality(base.config, tenant, messages, depth + 1)
        examples = tuned.examples_by_topic.get(topic, 0)
        return tuned_quality(base_quality, examples, self.fine_tuning.config)

    async def _inject(self, request: web.Request, fault: FaultSpec) -> web.StreamResponse:
        if fault.kind in ("500", "503", "429"):
            return errors.injected(int(fault.kind), fault.retry_after_s)
        if fault.kind == "content_filter":
            return content_filter.prompt_filtered(["violence"])
        if fault.kind == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.hang_s)
        # Drop the connection without an answer: the client sees a reset / disconnect.
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError

    # ---- admin -------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "deployments": sorted(self._deployments)})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.report())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults.describe()})

    async def _post_faults(self, request: web.Request) -> web.Response:
        """Body: one fault `{"deployment": "d", "kind": "503", ...}` or
        `{"deployment": "d", "faults": [{...}, ...]}`; deployment "*" means every deployment."""
        try:
            body = await request.json()
        except ValueError:
            return errors.bad_request("the request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("deployment"), str):
            return errors.bad_request("'deployment' (a name, or '*') is required", "deployment")
        name = body.pop("deployment")
        if name != ANY_DEPLOYMENT and name not in self._deployments:
            return errors.deployment_not_found(name)
        raw = body.get("faults", [body])
        try:
            specs = [FaultSpec.model_validate(f) for f in raw]
        except (ValidationError, TypeError) as err:
            return errors.bad_request(f"invalid fault: {err}")
        added = [self.faults.add(name, s) for s in specs]
        ids = {f.id for f in added}
        described = [f for f in self.faults.describe() if f["id"] in ids]
        return web.json_response({"faults": described}, status=201)

    async def _delete_faults(self, request: web.Request) -> web.Response:
        cleared = self.faults.clear(request.query.get("deployment"))
        return web.json_response({"cleared": cleared})

    async def _get_deployments(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"deployments": [d.config.model_dump() for d in self._deployments.values()]}
        )

    async def _put_deployment(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            config = DeploymentConfig.model_validate({**body, "name": name})
        except (ValueError, TypeError) as err:
            return errors.bad_request(f"invalid deployment: {err}")
        new = self.put_deployment(config)
        return web.json_response(config.model_dump(), status=201 if new else 200)

    async def _not_found(self, request: web.Request) -> web.Response:
        return errors.resource_not_found()


class RunningSimulator:
    """A simulator serving on a port. `await stop()` (or `async with`) ends it."""

    def __init__(self, simulator: Simulator, runner: web.AppRunner, host: str, port: int):
        self.simulator = simulator
        self._runner = runner
        self.host = host
        self.port = port
        self._stopped = False

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        return self.simulator.stats.report()

    def reset(self) -> None:
        self.simulator.reset()

    def add_fault(self, deployment: str, spec: FaultSpec | Mapping[str, Any]) -> str:
        """Install a fault now; returns its id."""
        fault = spec if isinstance(spec, FaultSpec) else FaultSpec.model_validate(spec)
        return self.simulator.faults.add(deployment, fault).id

    def clear_faults(self, deployment: str | None = None) -> int:
        return self.simulator.faults.clear(deployment)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.simulator.stop_hanging()
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_simulator(
    config: SimulatorConfig | str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] = time.monotonic,
    quality_model: QualityModel | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> RunningSimulator:
    """Start serving on host:port (port 0: a free port) in the running event loop. `clock`
    (seconds, monotonic) drives limits, faults and fine-tuning phases; `wall_clock` (Unix
    seconds) stamps files and jobs."""
    if not isinstance(config, SimulatorConfig):
        config = load_config(config)
    simulator = Simulator(config, clock=clock, quality_model=quality_model, wall_clock=wall_clock)
    runner = web.AppRunner(
        simulator.app(),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    log.debug("models simulator bound to %s:%d", host, bound)
    return RunningSimulator(simulator, runner, host, int(bound))
