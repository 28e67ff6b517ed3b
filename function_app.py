"""The switchboard: every trigger of the Function app, each handing plain data to `shared/`.

No logic lives here. Each function turns its trigger payload into a `shared` object and awaits
one handler; the handler's outcome or exception is what the host acts on. Every HTTP route that
names a tenant first awaits `unproven` (the tenant proof of shared/security/tenant_check.py).
"""

from __future__ import annotations

import azure.functions as func

from shared.batch.handlers import batch_progress_response, handle_batch_upload
from shared.drift.operator import drift_now
from shared.feedback.handler import http_body
from shared.finetune.operator import models_view, rollback_now
from shared.finetune.uploads import handle_training_upload
from shared.inference.handler import handle_inference_request
from shared.messages import InboundMessage
from shared.runtime import get_runtime
from shared.security.tenant_upload_sas import upload_sas_response
from shared.storage import names

app = func.FunctionApp()


async def unproven(req: func.HttpRequest, tenant_id: str) -> func.HttpResponse | None:
    """401 with the reason unless the request proves the route's tenant (HMAC headers,
    shared/security/tenant_check.py); None when it does."""
    refusal = await get_runtime().tenant_proofs.check_http(
        tenant_id, req.method, req.url, dict(req.headers), req.get_body()
    )
    if refusal is None:
        return None
    return func.HttpResponse(
        refusal.http_body(), status_code=refusal.http_status, mimetype="application/json"
    )


def inbound_message(msg: func.ServiceBusMessage) -> InboundMessage:
    """The trigger's message as the handlers take it."""
    return InboundMessage(
        body=msg.get_body(),
        message_id=msg.message_id or "",
        reply_to=msg.reply_to,
        reply_to_session_id=msg.reply_to_session_id,
        session_id=msg.session_id,
        correlation_id=msg.correlation_id,
        application_properties=dict(msg.application_properties or {}),
        delivery_count=msg.delivery_count,
        enqueued_time=msg.enqueued_time_utc,
    )


@app.function_name("infer")
@app.service_bus_queue_trigger(
    arg_name="msg",
    queue_name=names.INFERENCE_REQUESTS,
    connection=names.SERVICEBUS_CONNECTION,
)
async def infer(msg: func.ServiceBusMessage) -> None:
    """inference-requests -> result blob, usage line, reply. Returns: completed; raises: retried."""
    await handle_inference_request(inbound_message(msg))


@app.function_name("feedback")
@app.service_bus_queue_trigger(
    arg_name="msg",
    queue_name=names.FEEDBACK,
    connection=names.SERVICEBUS_CONNECTION,
)
async def feedback(msg: func.ServiceBusMessage) -> None:
    """feedback -> feedback record, rating stream, maybe a drift check. Rejections recorded."""
    await get_runtime().feedback.handle_message(inbound_message(msg))


@app.function_name("feedback_http")
@app.route(
    route="tenants/{tenant_id}/feedback",
    methods=[func.HttpMethod.POST],
    auth_level=func.AuthLevel.FUNCTION,
)
async def feedback_http(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/tenants/{tenant_id}/feedback: 201 recorded, 200 revised, 4xx with a reason."""
    if refused := await unproven(req, req.route_params.get("tenant_id", "")):
        return refused
    answer = await get_runtime().feedback.handle_http(
        req.route_params.get("tenant_id", ""), req.get_body()
    )
    return func.HttpResponse(
        http_body(answer), status_code=answer.http_status, mimetype="application/json"
    )


@app.function_name("drift_evaluate_http")
@app.route(
    route="tenants/{tenant_id}/drift",
    methods=[func.HttpMethod.POST],
    auth_level=func.AuthLevel.ADMIN,
)
async def drift_evaluate_http(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/tenants/{tenant_id}/drift (master key: operators): evaluate the tenant's rating
    streams now; 200 with one summary per stream that had news, 404 for an unknown tenant."""
    if refused := await unproven(req, req.route_params.get("tenant_id", "")):
        return refused
    status, body = await drift_now(get_runtime(), req.route_params.get("tenant_id", ""))
    return func.HttpResponse(body, status_code=status, mimetype="application/json")


@app.function_name("drift_check")
@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
async def drift_check(timer: func.TimerRequest) -> None:
    """Every 5 minutes: evaluate every tenant's rating streams that have news (reports, actions)."""
    await get_runtime().drift.evaluate_all(trigger="timer")


@app.function_name("batch_upload")
@app.blob_trigger(
    arg_name="blob",
    path=f"{names.UPLOADS_CONTAINER}/{{tenant}}/batch/{{name}}",
    connection=names.STORAGE_CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
async def batch_upload(blob: func.InputStream) -> None:
    """uploads/<tenant>/batch/<name>.jsonl -> batch record, rows on inference-requests, errors
    file. The handler streams the blob itself (pinned to its ETag); raises: retried."""
    await handle_batch_upload(blob.name or "")


@app.function_name("batch_progress")
@app.route(
    route="tenants/{tenant_id}/batches/{batch_id}",
    methods=["GET"],
    auth_level=func.AuthLevel.FUNCTION,
)
async def batch_progress(req: func.HttpRequest) -> func.HttpResponse:
    """The batch record's progress: done / failed / pending, state, result and error files."""
    if refused := await unproven(req, req.route_params.get("tenant_id", "")):
        return refused
    status, body = await batch_progress_response(
        req.route_params.get("tenant_id", ""), req.route_params.get("batch_id", "")
    )
    return func.HttpResponse(body, status_code=status, mimetype="application/json")


@app.function_name("upload_sas_http")
@app.route(
    route="tenants/{tenant_id}/upload-sas",
    methods=[func.HttpMethod.POST],
    auth_level=func.AuthLevel.FUNCTION,
)
async def upload_sas_http(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/tenants/{tenant_id}/upload-sas {"kind": "batch"|"training", "file": "x.jsonl"}:
    201 with a SAS URL that can create that one blob under uploads/<tenant>/, for 15 minutes."""
    if refused := await unproven(req, req.route_params.get("tenant_id", "")):
        return refused
    status, body = await upload_sas_response(
        get_runtime(), req.route_params.get("tenant_id", ""), req.get_body()
    )
    return func.HttpResponse(body, status_code=status, mimetype="application/json")


@app.function_name("training_upload")
@app.blob_trigger(
    arg_name="blob",
    path=f"{names.UPLOADS_CONTAINER}/{{tenant}}/training/{{name}}",
    connection=names.STORAGE_CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
async def training_upload(blob: func.InputStream) -> None:
    """uploads/<tenant>/training/<name>.jsonl -> scrubbed rows in the tenant's training pool,
    bad rows in a rejection file, maybe a fine-tune request by policy; raises: retried."""
    await handle_training_upload(blob.name or "")


@app.function_name("finetune_request")
@app.service_bus_queue_trigger(
    arg_name="msg",
    queue_name=names.FINETUNE_JOBS,
    connection=names.SERVICEBUS_CONNECTION,
)
async def finetune_request(msg: func.ServiceBusMessage) -> None:
    """finetune-jobs -> a job record; submitted to a backend, or waiting for a GPU slot (the
    message rescheduled), or rejected with the reason. Raises only to be retried."""
    await get_runtime().finetune_intake.handle_message(inbound_message(msg))


@app.function_name("finetune_watch")
@app.timer_trigger(arg_name="timer", schedule="*/20 * * * * *", run_on_startup=False)
async def finetune_watch(timer: func.TimerRequest) -> None:
    """Every 20 s: advance jobs on the GPU, evaluate candidates, promote or reject, fill slots."""
    await get_runtime().job_watcher.tick()


@app.function_name("models_http")
@app.route(
    route="tenants/{tenant_id}/models",
    methods=[func.HttpMethod.GET],
    auth_level=func.AuthLevel.FUNCTION,
)
async def models_http(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/tenants/{tenant_id}/models: the version serving now, the timeline, the jobs."""
    if refused := await unproven(req, req.route_params.get("tenant_id", "")):
        return refused
    status, body = await models_view(get_runtime(), req.route_params.get("tenant_id", ""))
    return func.HttpResponse(body, status_code=status, mimetype="application/json")


@app.function_name("models_rollback_http")
@app.route(
    route="tenants/{tenant_id}/models/rollback",
    methods=[func.HttpMethod.POST],
    auth_level=func.AuthLevel.ADMIN,
)
async def models_rollback_http(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/tenants/{tenant_id}/models/rollback (master key) {"by", "why"}: serve the
    previous version again; 409 when there is none."""
    if refused := await unproven(req, req.route_params.get("tenant_id", "")):
        return refused
    status, body = await rollback_now(
        get_runtime(), req.route_params.get("tenant_id", ""), req.get_body()
    )
    return func.HttpResponse(body, status_code=status, mimetype="application/json")
