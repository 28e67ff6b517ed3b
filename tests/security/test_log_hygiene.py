"""Secrets and personal data never reach a log line: every record of an end-to-end-ish run, checked.

The run goes through the real handlers over the real clients: inference over HTTP to the model
simulator with `openai` and `azure-ai-inference` (answered, rejected for a bad field, an unknown
tenant, a reply queue it may not use, a reused request id, filtered by the content filter,
checked by Content Safety), feedback on the queue and over HTTP (recorded and refused), a batch
upload and a training upload, with an API key (the models' and Content Safety's), a bearer token
and a tenant key in the inputs and the application properties, and invented personal data
(email, phone, card, IBAN) in every text field. Every log record of every logger, at DEBUG, is
captured: its message, its arguments, its `extra=` fields, its exception and traceback, and the
JSON line `JsonLogFormatter` prints. None may hold any of them, in any spacing.

`test_the_check_finds_a_seeded_leak` feeds the same check a record that leaks (in the message,
in an `extra` field, in an exception): a check that cannot fail proves nothing.
"""

from __future__ import annotations

import json
import logging
import random
import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.models import RunningSimulator
from shared.batch.intake import Upload
from shared.inference.handler import handle_inference_request
from shared.inference.model_clients import ModelClients
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.security.content_safety import AzureContentSafety, ContentSafetyGuard
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.structured_logging import JsonLogFormatter, fields_of
from shared.tenancy.registry_source import StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import RecordingReplySender
from tests.fixtures.models import SimulatorFactory, make_models_config, stack_deployments
from tests.security.registries import devhost_registry
from tests.unit.finetune.test_training_uploads import make_intake, upload

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sim-apikey-5ecr3t-Q7W8E9R0T1Y2"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0YWlsd2luZCJ9.c2lnbmF0dXJlLTVlY3IzdA"
TENANT_KEY = "tk-9f8e7d6c5b4a3f2e1d0c-5ecr3t"
EMAIL = "jane.roe.8841@example.org"
PHONE = "+44 20 7946 0321"
CARD = "4111 1111 1111 1111"
IBAN = "GB82 WEST 1234 5698 7654 32"
SECRETS = {
    "api key": API_KEY,
    "bearer token": BEARER,
    "tenant key": TENANT_KEY,
    "email": EMAIL,
    "phone": PHONE,
    "card": CARD,
    "iban": IBAN,
}
PERSONAL = f"I am Jane Roe, {EMAIL}, call {PHONE}, card {CARD}, IBAN {IBAN}"
CREDENTIALS = f"Authorization: Bearer {BEARER} api-key: {API_KEY} tenant key {TENANT_KEY}"
PROPERTIES = {"authorization": f"Bearer {BEARER}", "api-key": API_KEY, "tenant_key": TENANT_KEY}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Every record of every logger, at DEBUG (propagating loggers reach the root; the ones that
    do not propagate get the handler too)."""
    handler = Capture()
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    isolated = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in isolated:
        logger.addHandler(handler)
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
        for logger in isolated:
            logger.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _variants(secret: str) -> set[str]:
    """The secret as written, without spaces, and without its `+`: a card or IBAN is the same
    number in any spacing."""
    squeezed = re.sub(r"\s+", "", secret)
    return {secret, squeezed, squeezed.lstrip("+"), secret.lower(), squeezed.lower()}


def rendered(record: logging.LogRecord) -> str:
    """All of a record a log sink may keep: message, arguments, extra fields, exception."""
    parts = [record.getMessage(), repr(record.msg), repr(record.args)]
    parts += [f"{k}={v!r} {v}" for k, v in fields_of(record).items()]
    if record.exc_info and record.exc_info[1] is not None:
        parts += traceback.format_exception(record.exc_info[1])
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    parts.append(JsonLogFormatter().format(record))
    return "\n".join(parts)


def leaks(records: list[logging.LogRecord]) -> list[tuple[str, str, str]]:
    """(what leaked, logger, event) for each secret found in a record."""
    found = []
    for record in records:
        text = rendered(record)
        lowered = text.lower()
        for what, secret in SECRETS.items():
            if any(v.lower() in lowered for v in _variants(secret)):
                event = str(getattr(record, "event", record.msg))[:80]
                found.append((what, record.name, event))
    return found


# ---- the run ---------------------------------------------------------------------------------


def message(body: dict[str, Any] | bytes, message_id: str, **fields: Any) -> InboundMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundMessage(
        body=raw,
        message_id=message_id,
        delivery_count=1,
        application_properties=PROPERTIES,
        **fields,
    )


def request(request_id: str, text: str = PERSONAL, tenant: str = "tailwind") -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [
            {"role": "system", "content": CREDENTIALS},
            {"role": "user", "content": text},
        ],
        "parameters": {"max_tokens": 30},
    }


async def run_everything(sim: RunningSimulator) -> Runtime:
    registry = devhost_registry(sim.url, content_safety=("phi-4-pool",))
    store = MemoryBlobStore()
    rt = Runtime(
        store=store,
        registry=StaticRegistry(registry),
        models=ContentSafetyGuard(
            ModelClients(api_key=API_KEY, timeout_s=10),
            AzureContentSafety(sim.url, api_key=API_KEY),
        ),
        replies=RecordingReplySender(),
        router=Router(random.Random(5)),
    )
    rt.drift_check_every = 1  # a drift evaluation on every first rating: its logs too
    handle = handle_inference_request
    replies = {"reply_to": "inference-results"}
    await handle(message(request("r-ok"), "m-ok", **replies), rt)
    bad_role = request("r-bad")
    bad_role["messages"][1]["role"] = EMAIL
    await handle(message(bad_role, "m-bad", **replies), rt)
    await handle(message(request("r-tenant", tenant=EMAIL), "m-tenant"), rt)
    await handle(message(request("r-reply"), "m-reply", reply_to=f"queue-{EMAIL}"), rt)
    await handle(message(request("r-ok", text=f"another {PERSONAL}"), "m-reuse", **replies), rt)
    await handle(message(request("r-filter", text=f"{PERSONAL} [sim:harm:violence]"), "m-f"), rt)
    await handle(message(b'{"tenant_id": "tailwind", "request_id": ' + EMAIL.encode(), "m-j"), rt)
    # The unfiltered model, behind Content Safety: answered, and refused.
    only_phi = devhost_registry(
        sim.url, content_safety=("phi-4-pool",), only={"tailwind": ("phi-4-pool",)}
    )
    rt.registry = StaticRegistry(only_phi)
    await handle(message(request("r-phi"), "m-phi"), rt)
    await handle(message(request("r-phi-x", text=f"{PERSONAL} [sim:jailbreak]"), "m-phi-x"), rt)
    rt.registry = StaticRegistry(registry)

    # Feedback: recorded (queue), refused for a bad field (queue), recorded and refused (HTTP).
    feedback = {"tenant_id": "tailwind", "request_id": "r-ok", "rating": "down"}
    await rt.feedback.handle_message(
        message({**feedback, "correction": f"{PERSONAL} {CREDENTIALS}"}, "fb-1")
    )
    await rt.feedback.handle_message(message({**feedback, "rating": EMAIL}, "fb-2"))
    await rt.feedback.handle_message(message({**feedback, "labels": [PHONE, CARD]}, "fb-3"))
    await rt.feedback.handle_http("tailwind", json.dumps({**feedback, "rating": 5}).encode())
    await rt.feedback.handle_http("tailwind", json.dumps({**feedback, EMAIL: IBAN}).encode())

    # A batch upload: one good row, one refused row, both full of personal data.
    rows = [
        json.dumps({"messages": [{"role": "user", "content": PERSONAL}]}),
        json.dumps({"messages": [{"role": CARD, "content": PERSONAL}]}),
    ]
    await store.put(names.UPLOADS_CONTAINER, "tailwind/batch/b.jsonl", "\n".join(rows).encode())
    await rt.batches.take(Upload("tailwind/batch/b.jsonl"))

    # A training upload (fabrikam may tune): rows kept scrubbed, a bad row reported.
    intake = make_intake(store, RecordingReplySender())
    example = {
        "messages": [
            {"role": "user", "content": PERSONAL},
            {"role": "assistant", "content": CREDENTIALS},
        ]
    }
    await upload(
        store, "fabrikam/training/t.jsonl", [json.dumps(example), json.dumps({"x": EMAIL})]
    )
    await intake.take("fabrikam/training/t.jsonl")
    return rt


@pytest.fixture
async def simulator(model_simulator_factory: SimulatorFactory) -> RunningSimulator:
    return await model_simulator_factory(
        make_models_config(*stack_deployments(), api_keys=(API_KEY,))
    )


async def test_no_secret_or_personal_data_reaches_any_log_record(
    simulator: RunningSimulator, capture: Capture
) -> None:
    rt = await run_everything(simulator)
    await rt.close()
    events = {getattr(r, "event", None) for r in capture.records}
    # The run did what it claims (so the absence below means something).
    for expected in (
        "inference.completed",
        "inference.rejected",
        "inference.filtered",
        "feedback.recorded",
        "feedback.rejected",
    ):
        assert expected in events, expected
    assert len(capture.records) > 30
    assert simulator.simulator.content_safety.calls["analyze"] >= 2  # the checks ran
    assert {"azure.core.pipeline.policies.http_logging_policy", "openai._base_client"} <= {
        r.name for r in capture.records
    }  # and the SDKs' own loggers were heard
    assert leaks(capture.records) == []


def test_the_check_finds_a_seeded_leak(capture: Capture) -> None:
    log = logging.getLogger("shared.inference.handler")
    log.info("inference.completed prompt=%s", PERSONAL)  # in the message
    log.info("inference.completed", extra={"event": "x", "answer": f"card {CARD}"})  # in extra
    try:
        raise ValueError(f"bad key {API_KEY}")
    except ValueError:
        log.exception("inference.failed")  # in the exception
    logging.getLogger("azure.core").debug("Authorization: Bearer %s", BEARER)  # another logger
    found = {what for what, _, _ in leaks(capture.records)}
    assert found == {"email", "phone", "card", "iban", "api key", "bearer token"}, found
    # The same number in another spacing is found too.
    logging.getLogger("x").warning("n=%s", CARD.replace(" ", "-").replace("-", ""))
    assert ("card", "x", "n=%s") in leaks(capture.records)
