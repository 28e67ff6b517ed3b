"""The simulator's fine-tuning routes: Azure OpenAI files and jobs, ARM deployments, admin tuning.

Data plane (the `openai` SDK's `AsyncAzureOpenAI` with `azure_endpoint`: base URL
`{endpoint}/openai`, `?api-version=` on every call; the simulator's key check as for chat):
- `POST /openai/files` (multipart: `file`, `purpose`) -> FileObject, 200;
  `GET /openai/files[?purpose=&after=&limit=&order=]` -> list; `GET /openai/files/{id}`;
  `GET /openai/files/{id}/content` -> the bytes; `DELETE /openai/files/{id}` -> FileDeleted.
- `POST /openai/fine_tuning/jobs` {model, training_file, validation_file?, hyperparameters?,
  method?, suffix?, seed?} -> FineTuningJob, 200; `GET /openai/fine_tuning/jobs[?after=&limit=]`;
  `GET /openai/fine_tuning/jobs/{id}`; `GET /openai/fine_tuning/jobs/{id}/events[?after=&limit=]`
  (newest first); `POST /openai/fine_tuning/jobs/{id}/cancel` -> the job, `cancelled`.
  (Shapes and timing: devhost/models/finetuning.py.)

Management plane (`azure.mgmt.cognitiveservices.aio.CognitiveServicesManagementClient` with
`base_url` = the simulator): deployments under any subscription / resource group / account
(devhost/models/arm.py). A deployment made there serves chat at
`/openai/deployments/{name}/chat/completions` at once.

Admin: `PUT /admin/tuned/{name}` {"base": "<deployment>", "model": "<model id>",
"training_jsonl": "<chat JSONL>"} serves `name` tuned from that data (201 new, 200 replaced;
400 when the JSONL is not in the fine-tuning format, 404 for an unknown base). The local training
runner calls it for each adapter it trained.

Errors: Azure's shape `{"error": {"code", "message", "param"}}`; 401 without a valid key (data
plane) or Bearer token (ARM), 400 without `api-version`.

Hand-written aiohttp handlers, like the chat routes in server.py: the shapes are the SDKs' models
(openai.types.FileObject, fine_tuning.FineTuningJob; azure.mgmt.cognitiveservices.models), and
each handler is a few lines over finetuning.py and arm.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from devhost.models import arm, errors
from devhost.models.config import DeploymentConfig, TunedFrom
from devhost.models.finetuning import (
    EVENTS_PAGE_DEFAULT,
    FILES_PAGE_DEFAULT,
    JOBS_PAGE_DEFAULT,
    ApiError,
    base_for_model,
    page_limit,
)
from devhost.models.training_data import TrainingDataError, examples_by_topic, parse_chat_jsonl

if TYPE_CHECKING:
    from devhost.models.server import Simulator

ARM_DEPLOYMENTS = (
    "/subscriptions/{subscription}/resourceGroups/{group}/providers/"
    "Microsoft.CognitiveServices/accounts/{account}/deployments"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tuned_config(
    name: str,
    base: DeploymentConfig,
    model: str,
    examples: Mapping[str, int],
    *,
    job: str | None,
    tpm: int | None = None,
) -> DeploymentConfig:
    """A deployment `name` serving `model`, tuned from `base` on `examples` (per topic): the
    base's kind, limits (or `tpm`) and latency, its qualities copied (they stand in when the base
    is gone), no schedule and no faults."""
    return DeploymentConfig(
        name=name,
        kind=base.kind,
        model=model,
        tpm=base.tpm if tpm is None else tpm,
        rpm=base.rpm if tpm is None else 0,
        latency_ms=base.latency_ms,
        quality=base.quality,
        quality_by_topic=base.quality_by_topic,
        tuned=TunedFrom(base=base.name, examples_by_topic=dict(examples), job=job),
    )


def _send(err: ApiError) -> web.Response:
    return errors.error_response(err.status, err.code, err.message, param=err.param)


async def _json_body(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None


class FineTuningRoutes:
    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator
        self._ft = simulator.fine_tuning

    def add_to(self, router: web.UrlDispatcher) -> None:
        data = self._data_plane
        router.add_post("/openai/files", data(self._upload))
        router.add_get("/openai/files", data(self._list_files))
        router.add_get("/openai/files/{file_id}", data(self._get_file))
        router.add_delete("/openai/files/{file_id}", data(self._delete_file))
        router.add_get("/openai/files/{file_id}/content", data(self._file_content))
        router.add_post("/openai/fine_tuning/jobs", data(self._create_job))
        router.add_get("/openai/fine_tuning/jobs", data(self._list_jobs))
        router.add_get("/openai/fine_tuning/jobs/{job_id}", data(self._get_job))
        router.add_get("/openai/fine_tuning/jobs/{job_id}/events", data(self._events))
        router.add_post("/openai/fine_tuning/jobs/{job_id}/cancel", data(self._cancel))
        manage = self._management_plane
        router.add_get(ARM_DEPLOYMENTS, manage(self._arm_list))
        router.add_get(ARM_DEPLOYMENTS + "/{name}", manage(self._arm_get))
        router.add_put(ARM_DEPLOYMENTS + "/{name}", manage(self._arm_put))
        router.add_delete(ARM_DEPLOYMENTS + "/{name}", manage(self._arm_delete))
        router.add_put("/admin/tuned/{name}", self._admin_tuned)

    # ---- guards ------------------------------------------------------------------------------

    def _data_plane(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            denied = self._sim.auth_failure(request)
            if denied is not None:
                return denied
            if not request.query.get("api-version"):
                return errors.bad_request(
                    "the api-version query parameter is required", "api-version"
                )
            try:
                return await handler(request)
            except ApiError as err:
                return _send(err)

        return guarded

    def _management_plane(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() != "bearer " or not auth[7:].strip():
                return errors.error_response(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing or is not a "
                    "Bearer token.",
                )
            if not request.query.get("api-version"):
                return errors.error_response(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            try:
                return await handler(request)
            except ApiError as err:
                return _send(err)

        return guarded

    # ---- files -------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "BadRequest", "upload the file as multipart/form-data", "file")
        form = await request.post()
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, web.FileField):
            raise ApiError(400, "BadRequest", "'file' (a file part) is required", "file")
        if not isinstance(purpose, str) or not purpose:
            raise ApiError(400, "BadRequest", "'purpose' is required", "purpose")
        data = upload.file.read()
        stored = self._ft.files.add(data, upload.filename or "upload", purpose)
        return web.json_response(stored.describe())

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        self._ft.write_results()
        query = request.query
        page = self._ft.files.page(
            purpose=query.get("purpose"),
            after=query.get("after"),
            limit=page_limit(query.get("limit"), FILES_PAGE_DEFAULT),
            order=query.get("order", "desc"),
        )
        return web.json_response(page)

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._ft.file(request.match_info["file_id"]).describe())

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._ft.file(request.match_info["file_id"])
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._ft.files.delete(request.match_info["file_id"]))

    # ---- jobs --------------------------------------------------------------------------------

    async def _create_job(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        job = self._ft.create_job(body)
        return web.json_response(job.describe(self._ft.now()))

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit = page_limit(query.get("limit"), JOBS_PAGE_DEFAULT)
        return web.json_response(self._ft.jobs_page(query.get("after"), limit))

    async def _get_job(self, request: web.Request) -> web.StreamResponse:
        job = self._ft.job(request.match_info["job_id"])
        return web.json_response(job.describe(self._ft.now()))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit = page_limit(query.get("limit"), EVENTS_PAGE_DEFAULT)
        page = self._ft.events_page(request.match_info["job_id"], query.get("after"), limit)
        return web.json_response(page)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        job = self._ft.cancel(request.match_info["job_id"])
        return web.json_response(job.describe(self._ft.now()))

    # ---- ARM deployments ---------------------------------------------------------------------

    def _resource(self, request: web.Request, name: str, config: DeploymentConfig) -> Any:
        path = request.path if request.path.endswith(f"/{name}") else f"{request.path}/{name}"
        described = self._sim.arm.get(name) or arm.implied(config)
        return arm.resource(path, name, described, config)

    async def _arm_list(self, request: web.Request) -> web.StreamResponse:
        configs = self._sim.deployment_configs()
        return web.json_response({"value": [self._resource(request, c.name, c) for c in configs]})

    async def _arm_get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        config = self._sim.deployment_config(name)
        if config is None:
            raise arm.not_found(name)
        return web.json_response(self._resource(request, name, config))

    async def _arm_put(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _NAME.match(name):
            raise ApiError(
                400,
                "InvalidResourceName",
                "A deployment name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit.",
            )
        wanted = arm.parse_put(await _json_body(request))
        capacity_tpm = wanted.capacity * arm.TPM_PER_CAPACITY
        job = self._ft.succeeded_model(wanted.model_name)
        if job is not None and job.base is not None:
            base = self._sim.deployment_config(job.base.name) or job.base
            config = tuned_config(
                name,
                base,
                wanted.model_name,
                job.examples_by_topic,
                job=job.id,
                tpm=capacity_tpm,
            )
        else:
            served = base_for_model(wanted.model_name, self._sim.deployment_configs())
            if served is None:
                raise arm.model_not_supported(wanted.model_name)
            config = DeploymentConfig(
                name=name,
                kind=served.kind,
                model=wanted.model_name,
                tpm=capacity_tpm,
                latency_ms=served.latency_ms,
                quality=served.quality,
                quality_by_topic=served.quality_by_topic,
            )
        new = self._sim.put_deployment(config)
        self._sim.arm[name] = wanted
        return web.json_response(self._resource(request, name, config), status=201 if new else 200)

    async def _arm_delete(self, request: web.Request) -> web.StreamResponse:
        removed = self._sim.remove_deployment(request.match_info["name"])
        return web.Response(status=200 if removed else 204)

    # ---- admin -------------------------------------------------------------------------------

    async def _admin_tuned(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        try:
            body = await _json_body(request)
        except ApiError as err:
            return _send(err)
        if not isinstance(body, dict):
            return errors.bad_request("the request body must be a JSON object")
        base_name, model, text = body.get("base"), body.get("model"), body.get("training_jsonl")
        if not isinstance(base_name, str) or not base_name:
            return errors.bad_request("'base' (an existing deployment) is required", "base")
        if not isinstance(model, str) or not model:
            return errors.bad_request("'model' (the tuned model's id) is required", "model")
        if not isinstance(text, str):
            return errors.bad_request("'training_jsonl' (chat JSONL text) is required")
        if not _NAME.match(name):
            return errors.bad_request(f"deployment name {name!r} is not valid", "name")
        base = self._sim.deployment_config(base_name)
        if base is None:
            return errors.deployment_not_found(base_name)
        if base.judge:
            return errors.bad_request(f"{base_name!r} is a judge; a judge is not tuned", "base")
        try:
            examples = parse_chat_jsonl(text.encode("utf-8", "surrogatepass"))
        except TrainingDataError as err:
            return errors.bad_request(err.message, "training_jsonl")
        config = tuned_config(name, base, model, examples_by_topic(examples), job="admin")
        new = self._sim.put_deployment(config)
        return web.json_response(config.model_dump(), status=201 if new else 200)
